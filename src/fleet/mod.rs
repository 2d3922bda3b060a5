//! Work on a fleet of hosts.

pub mod artifact;
pub mod deploy;
pub mod exec;
pub mod rollout;

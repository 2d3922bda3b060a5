//! Results folders.

pub mod bench;
pub mod chart;
pub mod report;

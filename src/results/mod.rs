//! Results folders.

pub mod chart;
pub mod report;

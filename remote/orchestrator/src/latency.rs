//! Arrival-to-answer times of the last served requests (their percentiles:
//! [`agent_protocol::Percentiles::nearest_rank`]).

use std::collections::VecDeque;

/// How many of the most recent served requests the percentiles describe.
pub const WINDOW: usize = 10_000;

#[derive(Debug, Default)]
pub struct Latencies {
    /// Milliseconds, oldest first; at most [`WINDOW`].
    recent: VecDeque<f64>,
}

impl Latencies {
    pub fn record(&mut self, ms: f64) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(ms);
    }

    pub fn snapshot(&self) -> Vec<f64> {
        self.recent.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_window_counts() {
        let mut l = Latencies::default();
        for i in 0..WINDOW + 5 {
            l.record(i as f64);
        }
        let s = l.snapshot();
        assert_eq!(s.len(), WINDOW);
        assert_eq!(s[0], 5.0);
    }
}

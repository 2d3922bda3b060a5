//! Arrival-to-answer times of the last served requests, and their percentiles.

use std::collections::VecDeque;

use agent_protocol::Percentiles;

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

/// Nearest-rank percentiles (each is a time some request really took).
pub fn percentiles(mut ms: Vec<f64>) -> Percentiles {
    if ms.is_empty() {
        return Percentiles::default();
    }
    ms.sort_by(f64::total_cmp);
    let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Percentiles {
        p50: Some(rank(0.50)),
        p90: Some(rank(0.90)),
        p99: Some(rank(0.99)),
        max: ms.last().copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentiles(vec![]), Percentiles::default());
        let one = percentiles(vec![7.0]);
        assert_eq!((one.p50, one.p99, one.max), (Some(7.0), Some(7.0), Some(7.0)));
        let p = percentiles((1..=100).rev().map(f64::from).collect());
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max),
            (Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
    }

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

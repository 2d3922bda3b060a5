//! What the orchestrator is told: its workers and the bounds of queueing and waiting.

use std::collections::HashSet;
use std::time::Duration;

use axum::http::uri::Authority;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Worker processes as `address:port`, in the order requests are spread over them.
    pub workers: Vec<String>,
    /// Requests one worker process gets at a time (its model runs one at a time).
    pub slots_per_worker: usize,
    /// Requests that may wait for a free slot; one more is turned away with 503.
    pub queue_limit: usize,
    /// The longest one worker request may take, connect to last byte.
    pub worker_timeout: Duration,
    /// The longest a request waits for a free slot before it gets 503.
    pub queue_timeout: Duration,
    /// How often an unhealthy worker's `GET /health` is tried.
    pub probe_interval: Duration,
    /// The longest one health probe may take.
    pub probe_timeout: Duration,
}

impl Config {
    /// The defaults for `workers`.
    pub fn new(workers: Vec<String>) -> Self {
        Config {
            workers,
            slots_per_worker: 1,
            queue_limit: 64,
            worker_timeout: Duration::from_secs(30),
            queue_timeout: Duration::from_secs(60),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
        }
    }

    /// One line naming the first thing that makes this configuration unusable.
    pub fn check(&self) -> Result<(), String> {
        if self.workers.is_empty() {
            return Err("no workers: set AGENT_WORKERS or --workers".into());
        }
        let mut seen = HashSet::new();
        for worker in &self.workers {
            parse_worker(worker)?;
            if !seen.insert(worker) {
                return Err(format!("worker {worker} is listed twice"));
            }
        }
        if self.slots_per_worker == 0 {
            return Err("slots per worker must be 1 or more".into());
        }
        for (name, d) in [
            ("worker timeout", self.worker_timeout),
            ("queue timeout", self.queue_timeout),
            ("probe interval", self.probe_interval),
            ("probe timeout", self.probe_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be more than 0"));
            }
        }
        Ok(())
    }
}

/// A comma-separated `address:port` list, as `agent deploy` writes `AGENT_WORKERS`.
/// Blanks around entries and empty entries (a trailing comma) are ignored.
pub fn parse_workers(list: &str) -> Result<Vec<String>, String> {
    let workers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(parse_worker)
        .collect::<Result<_, _>>()?;
    let mut seen = HashSet::new();
    if let Some(twice) = workers.iter().find(|w| !seen.insert(*w)) {
        return Err(format!("worker {twice} is listed twice"));
    }
    Ok(workers)
}

/// `address:port` (IPv6 in brackets), as it goes into `http://{worker}/run_model`.
pub fn parse_worker(worker: &str) -> Result<String, String> {
    let bad = |why: &str| format!("worker {worker:?} {why}; expected address:port, e.g. 10.0.1.5:5000");
    let authority: Authority = worker.parse().map_err(|_| bad("is not an address"))?;
    if worker.contains('@') || authority.host().is_empty() {
        return Err(bad("is not an address"));
    }
    match authority.port_u16() {
        Some(0) | None => Err(bad("has no port")),
        Some(_) => Ok(worker.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_lists_parse_as_deploy_writes_them() {
        assert_eq!(
            parse_workers("10.0.1.5:5000, 10.0.1.5:5001,[::1]:5000,").unwrap(),
            ["10.0.1.5:5000", "10.0.1.5:5001", "[::1]:5000"]
        );
        assert_eq!(
            parse_workers("worker-1.internal:5000").unwrap(),
            ["worker-1.internal:5000"]
        );
        assert!(parse_workers("").unwrap().is_empty());
        for bad in [
            "10.0.1.5",
            "10.0.1.5:0",
            "10.0.1.5:70000",
            ":5000",
            "a b:5000",
            "u@h:5000",
        ] {
            let err = parse_workers(bad).unwrap_err();
            assert!(err.contains("expected address:port"), "{bad}: {err}");
        }
        assert_eq!(parse_workers("h:1,h:2,h:1").unwrap_err(), "worker h:1 is listed twice");
    }

    #[test]
    fn check_names_the_problem() {
        assert_eq!(
            Config::new(vec![]).check().unwrap_err(),
            "no workers: set AGENT_WORKERS or --workers"
        );
        let mut c = Config::new(vec!["h:1".into()]);
        assert_eq!(c.check(), Ok(()));
        c.slots_per_worker = 0;
        assert!(c.check().unwrap_err().contains("slots"));
        c.slots_per_worker = 1;
        c.worker_timeout = Duration::ZERO;
        assert_eq!(c.check().unwrap_err(), "worker timeout must be more than 0");
    }
}

//! What `agent` and the programs it deploys (`remote/`) agree on. Small on purpose: both
//! sides depend on it, so a change here is a change of the wire contract.

use serde::{Deserialize, Serialize};

/// Completes when the program is told to stop: SIGTERM (systemd's stop, as agent's units
/// use it) or Ctrl-C. Every remote program then finishes what it is serving and exits 0.
#[cfg(feature = "server")]
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Every remote program answers 200 here once it serves; `agent deploy` polls it.
pub const HEALTH_PATH: &str = "/health";

/// The web app's answer, as the course lab's Flask app wrote it.
pub fn responding(instance: &str) -> String {
    format!("Instance {instance} is responding now!")
}

/// Which instance wrote a [`responding`] body (used to see how a balancer spread the load).
pub fn responder(body: &str) -> Option<&str> {
    body.trim()
        .strip_prefix("Instance ")?
        .strip_suffix(" is responding now!")
        .filter(|id| !id.is_empty() && !id.contains(char::is_whitespace))
}

/// The worker classifies a text: `POST` with an empty body (it makes up 50 characters from
/// a–z and space, as the course lab's worker did) or a [`RunModel`] body.
pub const RUN_MODEL_PATH: &str = "/run_model";
/// The orchestrator queues a request for the next free worker: the body goes to the worker
/// unchanged; the answer is a [`Served`].
pub const NEW_REQUEST_PATH: &str = "/new_request";
/// The orchestrator's [`Status`].
pub const STATUS_PATH: &str = "/status";
/// The largest request body either program reads; larger gets 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The environment `agent deploy` writes for each program (its env file) and the program reads.
pub mod env {
    /// agent-web: the name it answers with off EC2.
    pub const WEB_NAME: &str = "AGENT_WEB_NAME";
    /// agent-orchestrator: every worker process, `address:port,...`.
    pub const WORKERS: &str = "AGENT_WORKERS";
    /// agent-worker: the model folder.
    pub const WORKER_MODEL: &str = "AGENT_WORKER_MODEL";
    /// agent-worker: worker processes on the host, which share its CPUs.
    pub const WORKER_PROCESSES: &str = "AGENT_WORKER_PROCESSES";
    /// agent-worker: the seed of the classification head (`agent-worker head`).
    pub const WORKER_HEAD_SEED: &str = "AGENT_WORKER_HEAD_SEED";
}

/// A model folder as agent installs it and the worker reads it (Hugging Face layout).
pub mod model {
    pub const CONFIG: &str = "config.json";
    pub const TOKENIZER: &str = "tokenizer.json";
    pub const WEIGHTS: &str = "model.safetensors";
    /// What every model folder needs.
    pub const FILES: [&str; 3] = [CONFIG, TOKENIZER, WEIGHTS];
    /// The seeded classification head `agent-worker head` writes when the weights have none.
    pub const HEAD: &str = "head.safetensors";
}

/// How a command agent runs during a deploy's setup (`agent-worker head`, the model fetch)
/// marks, at the start of a stdout line, that it changed the host.
pub const CHANGED: &str = "changed: ";

/// A `POST /run_model` body that names the text to classify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunModel {
    pub text: String,
}

/// The worker's answer, in the course lab's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub input_text: String,
    /// Softmax over the two labels; sums to 1.
    pub probabilities: Vec<f64>,
}

/// The orchestrator's answer: the worker's, with who served it and where the time went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    #[serde(flatten)]
    pub result: Classification,
    /// The worker process, as `address:port`.
    pub worker: String,
    /// From arrival at the orchestrator to dispatch.
    pub queued_ms: f64,
    /// From dispatch to the worker's answer (retries included).
    pub inference_ms: f64,
}

/// Every 4xx/5xx answer of both programs: one line saying what was wrong and what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
}

/// `GET /status` on the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub workers: Vec<WorkerStatus>,
    /// Requests waiting for a free worker now, and the most that may wait.
    pub queued: usize,
    pub queue_limit: usize,
    /// Answered with a worker's result.
    pub served: u64,
    /// Answered with an error after the worker failed (and the retry too).
    pub failed: u64,
    /// Turned away with 503: the queue was full, or no worker freed up in time.
    pub rejected: u64,
    /// Time from arrival to answer of served requests, in milliseconds.
    pub latency_ms: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// `address:port`.
    pub worker: String,
    pub state: WorkerState,
    pub in_flight: usize,
    pub served: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Free,
    Busy,
    Unhealthy,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    /// Nearest-rank percentiles: each is a value that really occurred. None for no values.
    pub fn nearest_rank(mut values: Vec<f64>) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Percentiles {
            p50: Some(rank(0.50)),
            p90: Some(rank(0.90)),
            p99: Some(rank(0.99)),
            max: values.last().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responding_round_trips() {
        let body = responding("i-0123456789abcdef0");
        assert_eq!(body, "Instance i-0123456789abcdef0 is responding now!");
        assert_eq!(responder(&body), Some("i-0123456789abcdef0"));
        assert_eq!(responder("Instance  is responding now!"), None);
        assert_eq!(responder("<html>502</html>"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Percentiles::nearest_rank(vec![]), Percentiles::default());
        let one = Percentiles::nearest_rank(vec![7.0]);
        assert_eq!((one.p50, one.p99, one.max), (Some(7.0), Some(7.0), Some(7.0)));
        let p = Percentiles::nearest_rank((1..=100).rev().map(f64::from).collect());
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max),
            (Some(50.0), Some(90.0), Some(99.0), Some(100.0))
        );
    }

    #[test]
    fn served_is_the_workers_answer_plus_timing() {
        let served = Served {
            result: Classification {
                input_text: "abc".into(),
                probabilities: vec![0.25, 0.75],
            },
            worker: "10.0.0.5:5001".into(),
            queued_ms: 1.5,
            inference_ms: 30.0,
        };
        let json = serde_json::to_value(&served).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"input_text": "abc", "probabilities": [0.25, 0.75],
                "worker": "10.0.0.5:5001", "queued_ms": 1.5, "inference_ms": 30.0})
        );
        assert!(serde_json::from_str::<RunModel>(r#"{"text": "x", "extra": 1}"#).is_err());
    }
}

//! `agent bench inference`: the course lab's client, measured. C concurrent clients send N
//! `POST /new_request` in all to the orchestrator (each client its share, one after another
//! on its own connection); the answers are checked (probabilities that sum to 1) and kept
//! like the clusters bench's: per request, per worker process, charts and report.

use std::path::PathBuf;
use std::time::Duration;

use agent_protocol::Served;
use hyper::Method;
use hyper::body::Bytes;
use tokio_util::sync::CancellationToken;

use super::Deployment;
use super::load::{Phase, Read, Stream};

#[derive(Debug, Clone)]
pub struct InferenceBench {
    /// The orchestrator, `http://host:port`.
    pub url: String,
    pub concurrency: usize,
    pub requests: usize,
    /// Classified by every request; `None`: an empty body, the worker's random lab text.
    pub text: Option<String>,
    /// Per request, queueing included.
    pub timeout: Duration,
    pub json: bool,
    pub out: Option<PathBuf>,
    pub deployment: Deployment,
}

/// C clients sharing N requests as evenly as whole requests allow.
pub fn streams(b: &InferenceBench) -> anyhow::Result<Vec<Stream>> {
    let url = format!("{}{}", b.url.trim_end_matches('/'), agent_protocol::NEW_REQUEST_PATH);
    let url: hyper::Uri = url.parse().map_err(|e| anyhow::anyhow!("--url {}: {e}", b.url))?;
    let body = match &b.text {
        Some(t) => Bytes::from(serde_json::to_vec(&agent_protocol::RunModel { text: t.clone() })?),
        None => Bytes::new(),
    };
    let clients = b.concurrency.clamp(1, b.requests.max(1));
    Ok((0..clients)
        .map(|i| Stream {
            name: format!("client {}", i + 1),
            group: "inference".into(),
            method: Method::POST,
            url: url.clone(),
            body: body.clone(),
            phases: vec![Phase::Requests(
                b.requests / clients + usize::from(i < b.requests % clients),
            )],
        })
        .collect())
}

/// An orchestrator answer: the worker's probabilities (which must sum to 1), who served it.
fn reading(body: &[u8]) -> Result<Read<'_>, String> {
    let served: Served = serde_json::from_slice(body).map_err(|e| format!("not an orchestrator answer: {e}"))?;
    let p = &served.result.probabilities;
    let sum: f64 = p.iter().sum();
    if p.is_empty() || (sum - 1.0).abs() > 1e-6 {
        return Err(format!("probabilities {p:?} do not sum to 1"));
    }
    Ok(Read {
        responder: Some(served.worker.into()),
        queued_ms: Some(served.queued_ms),
        inference_ms: Some(served.inference_ms),
    })
}

/// Runs the bench, saves the results, prints the summary (text or JSON). Exit 0 when every
/// request was answered with probabilities, 2 when some failed, 130 when interrupted.
pub async fn run(b: InferenceBench, cancel: CancellationToken) -> anyhow::Result<u8> {
    let streams = streams(&b)?;
    let run = super::drive("inference", b.url.clone(), streams, reading, b.timeout, b.json, cancel).await;
    let (summary, out) = super::conclude(&run, &b.deployment, b.out.clone())?;
    super::print(&summary, &out, b.json)?;
    Ok(summary.exit_status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_the_requests() {
        let b = InferenceBench {
            url: "http://10.0.0.5".into(),
            concurrency: 15,
            requests: 50,
            text: None,
            timeout: Duration::from_secs(60),
            json: false,
            out: None,
            deployment: Deployment::default(),
        };
        let s = streams(&b).unwrap();
        assert_eq!(s.len(), 15);
        assert_eq!(s.iter().map(Stream::requests).sum::<usize>(), 50);
        assert_eq!((s[0].requests(), s[14].requests()), (4, 3));
        assert_eq!(s[0].url, "http://10.0.0.5/new_request");
        let few = streams(&InferenceBench { requests: 3, ..b }).unwrap();
        assert_eq!(few.len(), 3);
    }

    #[test]
    fn answers_must_carry_probabilities() {
        let ok = br#"{"worker":"10.0.0.7:5001","queued_ms":1.5,"inference_ms":20.0,"input_text":"hi","probabilities":[0.25,0.75]}"#;
        let a = reading(ok).unwrap();
        assert_eq!(a.responder.as_deref(), Some("10.0.0.7:5001"));
        assert_eq!((a.queued_ms, a.inference_ms), (Some(1.5), Some(20.0)));
        let bad = br#"{"worker":"w","queued_ms":0,"inference_ms":0,"input_text":"hi","probabilities":[0.5,0.6]}"#;
        assert_eq!(reading(bad).unwrap_err(), "probabilities [0.5, 0.6] do not sum to 1");
    }
}

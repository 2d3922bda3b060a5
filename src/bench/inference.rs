//! `agent bench inference`: the course lab's client, measured. C concurrent clients send N
//! `POST /new_request` in all to the orchestrator (each client its share, one after another
//! on its own connection); the answers are checked (probabilities that sum to 1) and kept
//! like the clusters bench's: per request, per worker process, charts and report.

use agent_protocol::Served;
use hyper::Method;
use hyper::body::Bytes;

use super::load::{Phase, Read, Stream};

/// C clients sharing N requests as evenly as whole requests allow.
pub fn streams(base: &str, concurrency: usize, requests: usize, text: Option<&str>) -> anyhow::Result<Vec<Stream>> {
    let url = format!("{}{}", base.trim_end_matches('/'), agent_protocol::NEW_REQUEST_PATH);
    let url: hyper::Uri = url.parse().map_err(|e| anyhow::anyhow!("--url {base}: {e}"))?;
    let body = match text {
        Some(t) => Bytes::from(serde_json::to_vec(&agent_protocol::RunModel { text: t.to_owned() })?),
        None => Bytes::new(),
    };
    let clients = concurrency.clamp(1, requests.max(1));
    Ok((0..clients)
        .map(|i| Stream {
            name: format!("client {}", i + 1),
            group: "inference".into(),
            method: Method::POST,
            url: url.clone(),
            body: body.clone(),
            phases: vec![Phase::Requests(
                requests / clients + usize::from(i < requests % clients),
            )],
        })
        .collect())
}

/// An orchestrator answer: the worker's probabilities (which must sum to 1), who served it.
pub fn reading(body: &[u8]) -> Result<Read<'_>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_share_the_requests() {
        let s = streams("http://10.0.0.5", 15, 50, None).unwrap();
        assert_eq!(s.len(), 15);
        assert_eq!(s.iter().map(Stream::requests).sum::<usize>(), 50);
        assert_eq!((s[0].requests(), s[14].requests()), (4, 3));
        assert_eq!(s[0].url, "http://10.0.0.5/new_request");
        let few = streams("http://10.0.0.5", 15, 3, None).unwrap();
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

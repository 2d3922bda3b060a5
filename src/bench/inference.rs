//! `agent bench inference`: the course lab's client, measured. C concurrent clients send N
//! `POST /new_request` in all to the orchestrator; each answer is a [`Sample`] sent over a
//! channel to one aggregator, which owns the terminal (a progress line) and the summary:
//! throughput, latency percentiles, requests per worker process, errors. Ctrl-C stops new
//! requests and summarises what was answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent_protocol::{Failure, Percentiles, Served};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
}

/// One request's outcome.
#[derive(Debug)]
struct Sample {
    latency: Duration,
    result: Result<Served, String>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub url: String,
    pub concurrency: usize,
    pub requests: usize,
    pub answered: usize,
    pub errors: BTreeMap<String, usize>,
    pub seconds: f64,
    pub throughput: f64,
    /// Client-side latency of answered requests, milliseconds (none answered: null).
    pub latency_ms: Percentiles,
    /// Of that latency, the orchestrator's queueing and the worker's inference (medians).
    pub queued_ms_p50: Option<f64>,
    pub inference_ms_p50: Option<f64>,
    /// Answered requests per worker process.
    pub workers: BTreeMap<String, usize>,
    pub interrupted: bool,
}

/// Runs the bench; the summary is printed (text or JSON). Exit 0 when every request was
/// answered with probabilities, 2 when some failed, 130 when interrupted.
pub async fn run(b: InferenceBench, cancel: CancellationToken) -> anyhow::Result<u8> {
    let url = format!("{}{}", b.url.trim_end_matches('/'), agent_protocol::NEW_REQUEST_PATH);
    let uri: hyper::Uri = url.parse().map_err(|e| anyhow::anyhow!("--url {}: {e}", b.url))?;
    let body = match &b.text {
        Some(t) => Bytes::from(serde_json::to_vec(&agent_protocol::RunModel { text: t.clone() })?),
        None => Bytes::new(),
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let next = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::channel::<Sample>(1024);
    let started = Instant::now();
    for _ in 0..b.concurrency.min(b.requests) {
        let (client, uri, body, next, tx, cancel) = (
            client.clone(),
            uri.clone(),
            body.clone(),
            next.clone(),
            tx.clone(),
            cancel.clone(),
        );
        let (total, limit) = (b.requests, b.timeout);
        tokio::spawn(async move {
            while !cancel.is_cancelled() && next.fetch_add(1, Ordering::SeqCst) < total {
                let t = Instant::now();
                let result = tokio::select! {
                    r = tokio::time::timeout(limit, request(&client, &uri, body.clone())) => {
                        r.unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
                    }
                    () = cancel.cancelled() => break,
                };
                if tx
                    .send(Sample {
                        latency: t.elapsed(),
                        result,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
    drop(tx);

    let bar = progress(b.requests, b.json);
    let mut samples = Vec::with_capacity(b.requests);
    while let Some(s) = rx.recv().await {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        samples.push(s);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = summarise(&b, samples, started.elapsed(), cancel.is_cancelled());
    if b.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    Ok(if summary.interrupted {
        crate::EXIT_INTERRUPTED
    } else if summary.errors.is_empty() {
        0
    } else {
        crate::EXIT_FAILED
    })
}

fn progress(total: usize, json: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} requests, {per_sec}, {elapsed}")
            .expect("valid template"),
    );
    Some(bar)
}

async fn request(client: &Client<HttpConnector, Full<Bytes>>, uri: &hyper::Uri, body: Bytes) -> Result<Served, String> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("cannot reach the orchestrator: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("answer cut: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let why = serde_json::from_slice::<Failure>(&bytes)
            .map(|f| f.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(100).collect());
        return Err(format!("{}: {why}", status.as_u16()));
    }
    let served: Served = serde_json::from_slice(&bytes).map_err(|e| format!("not an orchestrator answer: {e}"))?;
    let sum: f64 = served.result.probabilities.iter().sum();
    if served.result.probabilities.is_empty() || (sum - 1.0).abs() > 1e-6 {
        return Err(format!(
            "probabilities {:?} do not sum to 1",
            served.result.probabilities
        ));
    }
    Ok(served)
}

fn summarise(b: &InferenceBench, samples: Vec<Sample>, elapsed: Duration, interrupted: bool) -> Summary {
    let mut latencies = Vec::new();
    let (mut queued, mut inference) = (Vec::new(), Vec::new());
    let mut workers = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for s in samples {
        match s.result {
            Ok(served) => {
                latencies.push(s.latency.as_secs_f64() * 1e3);
                queued.push(served.queued_ms);
                inference.push(served.inference_ms);
                *workers.entry(served.worker).or_insert(0) += 1;
            }
            // Errors are grouped by their kind (status and message), not per request.
            Err(e) => *errors.entry(e).or_insert(0) += 1,
        }
    }
    let answered = latencies.len();
    let seconds = elapsed.as_secs_f64();
    Summary {
        url: b.url.clone(),
        concurrency: b.concurrency,
        requests: b.requests,
        answered,
        errors,
        seconds,
        throughput: if seconds > 0.0 { answered as f64 / seconds } else { 0.0 },
        latency_ms: Percentiles::nearest_rank(latencies),
        queued_ms_p50: Percentiles::nearest_rank(queued).p50,
        inference_ms_p50: Percentiles::nearest_rank(inference).p50,
        workers,
        interrupted,
    }
}

impl Summary {
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} of {} requests answered in {:.2} s at concurrency {}{}: {:.1} requests/s",
            self.answered,
            self.requests,
            self.seconds,
            self.concurrency,
            if self.interrupted { " (interrupted)" } else { "" },
            self.throughput
        );
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "latency ms: p50 {}  p90 {}  p99 {}  max {}  (median queued {}, in inference {})",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max),
            ms(self.queued_ms_p50),
            ms(self.inference_ms_p50)
        );
        let _ = writeln!(s, "requests per worker process:");
        for (w, n) in &self.workers {
            let _ = writeln!(s, "  {w:<24} {n}");
        }
        for (e, n) in &self.errors {
            let _ = writeln!(s, "error ×{n}: {e}");
        }
        s
    }
}

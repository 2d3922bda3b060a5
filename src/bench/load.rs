//! The load generator: streams of HTTP requests, each stream on its own keep-alive
//! connection, one request after another, with pauses between phases (the course's thread
//! A and thread B). Every request's outcome is a [`Sample`] sent over a channel; the caller
//! aggregates and prints. Ctrl-C stops each stream after its current request.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What one stream does, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Requests(usize),
    Pause(Duration),
}

/// One client thread of the procedure.
#[derive(Debug, Clone)]
pub struct Stream {
    /// e.g. `cluster1 A`.
    pub name: String,
    /// What the results are grouped by (the path, or `inference`).
    pub group: String,
    pub method: Method,
    /// `http://host:port/path`.
    pub url: Uri,
    pub body: Bytes,
    pub phases: Vec<Phase>,
}

impl Stream {
    pub fn requests(&self) -> usize {
        self.phases
            .iter()
            .map(|p| match p {
                Phase::Requests(n) => *n,
                Phase::Pause(_) => 0,
            })
            .sum()
    }
}

/// What an answer body says; `Err` turns a 2xx answer into a failed request.
pub type Reading = for<'a> fn(&'a [u8]) -> Result<Read<'a>, String>;

/// What a [`Reading`] found in a body (borrowed from it where it can be).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Read<'a> {
    pub responder: Option<Cow<'a, str>>,
    pub queued_ms: Option<f64>,
    pub inference_ms: Option<f64>,
}

/// What the bench keeps of an answer body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// Which instance or worker answered (one allocation per instance, not per request).
    pub responder: Option<Arc<str>>,
    /// Inference only: the orchestrator's queueing and the worker's time, ms.
    pub queued_ms: Option<f64>,
    pub inference_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An HTTP answer; `answer` is read from 2xx bodies only.
    Status { code: u16, answer: Answer },
    /// No HTTP answer (connect, timeout, cut), or a 2xx body that is not what it should be.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Index into the streams.
    pub stream: usize,
    /// Since the bench started.
    pub start: Duration,
    pub latency: Duration,
    pub outcome: Reply,
}

impl Sample {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Reply::Status { code, .. } if (200..300).contains(&code))
    }
}

#[derive(Debug)]
pub enum Progress {
    /// Answers in order, sent in batches (a channel send per request would cost more than
    /// the request on loopback).
    Samples(Vec<Sample>),
    /// The stream sleeps this long before its next phase.
    Pausing(usize, Duration),
    /// The stream sent all its requests (or was stopped).
    Done(usize),
}

/// Runs every stream at once, from `started`; returns when all are done or cancelled.
pub async fn run(
    streams: Vec<Stream>,
    reading: Reading,
    timeout: Duration,
    started: Instant,
    tx: mpsc::Sender<Progress>,
    cancel: CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in streams.into_iter().enumerate() {
        let (tx, cancel) = (tx.clone(), cancel.clone());
        tasks.spawn(async move {
            stream(i, s, reading, timeout, started, &tx, &cancel).await;
            let _ = tx.send(Progress::Done(i)).await;
        });
    }
    drop(tx);
    while tasks.join_next().await.is_some() {}
}

async fn stream(
    i: usize,
    s: Stream,
    reading: Reading,
    timeout: Duration,
    started: Instant,
    tx: &mpsc::Sender<Progress>,
    cancel: &CancellationToken,
) {
    const BATCH: usize = 256;
    const FLUSH_EVERY: Duration = Duration::from_millis(100);
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    let mut seen: Vec<Arc<str>> = Vec::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushed = Instant::now();
    // One cancellation future and one timer for the whole stream, re-armed per request:
    // creating them per request costs more than a loopback request.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    for phase in &s.phases {
        match phase {
            Phase::Pause(d) => {
                if !batch.is_empty() && tx.send(Progress::Samples(std::mem::take(&mut batch))).await.is_err() {
                    return;
                }
                if tx.send(Progress::Pausing(i, *d)).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(*d) => {}
                    () = &mut cancelled => return,
                }
            }
            Phase::Requests(n) => {
                for _ in 0..*n {
                    if cancel.is_cancelled() {
                        break;
                    }
                    let t = Instant::now();
                    deadline.as_mut().reset((t + timeout).into());
                    let outcome = tokio::select! {
                        o = request(&mut conn, &s, reading, &mut seen) => o,
                        () = &mut deadline => {
                            // The connection's state is unknown: the next request dials anew.
                            conn = None;
                            Reply::Failed(format!("no answer within {timeout:?}"))
                        }
                        () = &mut cancelled => break,
                    };
                    batch.push(Sample {
                        stream: i,
                        start: t - started,
                        latency: t.elapsed(),
                        outcome,
                    });
                    if batch.len() == BATCH || flushed.elapsed() >= FLUSH_EVERY {
                        flushed = Instant::now();
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        if tx.send(Progress::Samples(full)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Progress::Samples(batch)).await;
    }
}

/// One request on the stream's connection, dialling it first if there is none (or the last
/// one closed). Errors drop the connection.
async fn request(
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    s: &Stream,
    reading: Reading,
    seen: &mut Vec<Arc<str>>,
) -> Reply {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        match dial(&s.url).await {
            Ok(c) => *conn = Some(c),
            Err(e) => return Reply::Failed(e),
        }
    }
    let sender = conn.as_mut().expect("dialled above");
    if sender.ready().await.is_err() {
        *conn = None;
        return Reply::Failed("connection closed".into());
    }
    let mut req = Request::builder()
        .method(s.method.clone())
        .uri(s.url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, s.url.authority().map_or("", |a| a.as_str()));
    if !s.body.is_empty() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(s.body.clone())).expect("valid request parts");
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            return Reply::Failed(format!("request failed: {e}"));
        }
    };
    let code = resp.status().as_u16();
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            *conn = None;
            return Reply::Failed(format!("answer cut: {e}"));
        }
    };
    if !(200..300).contains(&code) {
        return Reply::Status {
            code,
            answer: Answer::default(),
        };
    }
    match reading(&body) {
        Ok(read) => Reply::Status {
            code,
            answer: Answer {
                responder: read.responder.map(|r| intern(seen, &r)),
                queued_ms: read.queued_ms,
                inference_ms: read.inference_ms,
            },
        },
        Err(e) => Reply::Failed(e),
    }
}

/// The one shared copy of `name` (a stream hears from a handful of instances).
fn intern(seen: &mut Vec<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(a) = seen.iter().find(|a| ***a == *name) {
        return a.clone();
    }
    let a: Arc<str> = name.into();
    seen.push(a.clone());
    a
}

async fn dial(url: &Uri) -> Result<SendRequest<Full<Bytes>>, String> {
    let host = url.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = url.port_u16().unwrap_or(80);
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("cannot connect to {host}:{port} within 5 s"))?
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("cannot talk HTTP to {host}:{port}: {e}"))?;
    // The connection task ends when the sender is dropped or the peer closes.
    tokio::spawn(connection);
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_count_every_phase() {
        let s = Stream {
            name: "cluster1 B".into(),
            group: "/cluster1".into(),
            method: Method::GET,
            url: "http://127.0.0.1/cluster1".parse().unwrap(),
            body: Bytes::new(),
            phases: vec![
                Phase::Requests(500),
                Phase::Pause(Duration::from_secs(60)),
                Phase::Requests(1000),
            ],
        };
        assert_eq!(s.requests(), 1500);
    }
}

//! Talking to worker processes: `POST /run_model` and `GET /health`, every call bounded.
//!
//! A [`Link`] is one kept-alive HTTP/1.1 connection to a worker, driven by the task that
//! uses it rather than by a connection task of its own: the request is written during the
//! call's first poll, so a slot's next request reaches its worker before anything else the
//! orchestrator's one thread does next (see `dispatch`).

use std::error::Error;
use std::pin::{Pin, pin};
use std::time::Duration;

use agent_protocol::{Classification, Failure, HEALTH_PATH, RUN_MODEL_PATH};
use axum::body::Bytes;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A worker in the same network accepts within milliseconds; one that does not (host down,
/// packets dropped) should fail fast so the request is retried elsewhere.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A Classification is a few hundred bytes; anything far larger is not one.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What a worker answered, when it answered properly.
#[derive(Debug)]
pub enum Answer {
    Classified(Classification),
    /// A 4xx: the request was at fault, not the worker. Passed back to the client as is.
    Refused {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
}

type WorkerConnection = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One open connection to one worker, kept between requests.
pub struct Link {
    sender: SendRequest<Full<Bytes>>,
    /// `None` once the connection has ended: the link is then used up.
    connection: Option<Pin<Box<WorkerConnection>>>,
}

/// How one exchange on a link went wrong.
struct Broken {
    /// The worker sent no answer head: on a kept connection that may only mean the worker
    /// closed it while idle, which is worth one more try on a new connection.
    before_answer: bool,
    message: String,
}

impl Link {
    async fn open(worker: &str) -> Result<Link, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(worker))
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| format!("cannot connect: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| chain(&e))?;
        Ok(Link {
            sender,
            connection: Some(Box::pin(connection)),
        })
    }

    /// Sends `request` and reads the whole answer, polling the connection in this task.
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(axum::http::response::Parts, Bytes), Broken> {
        let Link { sender, connection } = self;
        let broken = |before_answer, message| Broken { before_answer, message };
        let work = async {
            sender.ready().await.map_err(|e| broken(true, chain(&e)))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| broken(true, chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await.map_err(|e| {
                broken(
                    false,
                    format!("answered {} but the body broke off: {}", parts.status, chain(&*e)),
                )
            })?;
            Ok((parts, body.to_bytes()))
        };
        let Some(open) = connection.as_mut() else {
            return Err(broken(true, "the connection is closed".to_owned()));
        };
        let mut work = pin!(work);
        // `biased`: the exchange first, so an answer read in full wins over the connection
        // closing right after it.
        let end = tokio::select! {
            biased;
            done = &mut work => return done,
            end = open.as_mut() => end,
        };
        // The connection ended. Dropping it ends the exchange too: an answer it read in
        // full (the worker said `Connection: close`) is still there, anything else fails.
        *connection = None;
        work.await.map_err(|e| match end {
            Ok(()) => e,
            Err(end) => broken(e.before_answer, chain(&end)),
        })
    }

    fn is_open(&self) -> bool {
        self.connection.is_some()
    }
}

/// Sends `body` unchanged to `worker` (an empty body asks it to make up a text) over `link`,
/// opening one when it is `None` or when the kept one turns out closed; on failure `link` is
/// left `None`. `Err` is one line saying how the worker failed: no connection, 5xx, a broken
/// answer, or silence.
pub async fn classify(link: &mut Option<Link>, worker: &str, body: Bytes, limit: Duration) -> Result<Answer, String> {
    let request = || {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(RUN_MODEL_PATH)
            .header(header::HOST, worker);
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        request.body(Full::new(body.clone())).map_err(|e| e.to_string())
    };
    let call = async {
        let (parts, body) = match link.take() {
            Some(mut kept) => match kept.exchange(request()?).await {
                Ok(answer) => {
                    *link = Some(kept).filter(Link::is_open);
                    answer
                }
                Err(e) if e.before_answer => fresh(link, worker, request()?).await?,
                Err(e) => return Err(e.message),
            },
            None => fresh(link, worker, request()?).await?,
        };
        if parts.status.is_success() {
            serde_json::from_slice(&body).map(Answer::Classified).map_err(|e| {
                format!(
                    "answered {} with a body that is not a classification ({e})",
                    parts.status
                )
            })
        } else if parts.status.is_client_error() {
            Ok(Answer::Refused {
                status: parts.status,
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body,
            })
        } else {
            Err(format!("answered {}{}", parts.status, detail(&body)))
        }
    };
    let outcome = tokio::time::timeout(limit, call)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?;
    if outcome.is_err() {
        // A worker that failed may have left anything on the connection.
        *link = None;
    }
    outcome
}

/// One exchange on a new connection, kept in `link` when it went through.
async fn fresh(
    link: &mut Option<Link>,
    worker: &str,
    request: Request<Full<Bytes>>,
) -> Result<(axum::http::response::Parts, Bytes), String> {
    let mut new = Link::open(worker).await?;
    let answer = new.exchange(request).await.map_err(|e| e.message)?;
    *link = Some(new).filter(Link::is_open);
    Ok(answer)
}

/// Whether `GET /health` answers 200 within `limit`, on a connection of its own.
pub async fn healthy(worker: &str, limit: Duration) -> bool {
    let probe = async {
        let request = Request::get(HEALTH_PATH)
            .header(header::HOST, worker)
            .body(Full::default())
            .ok()?;
        let mut link = Link::open(worker).await.ok()?;
        let (parts, _) = link.exchange(request).await.ok()?;
        Some(parts.status == StatusCode::OK)
    };
    matches!(tokio::time::timeout(limit, probe).await, Ok(Some(true)))
}

/// An error with its causes, e.g. "client error (Connect): tcp connect error: Connection
/// refused (os error 111)": the outer layers alone say too little.
fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// The worker's own explanation of a 5xx, when it gave one: its Failure message or the
/// first line of the body, shortened.
fn detail(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Failure>(body) {
        Ok(f) => f.error,
        Err(_) => String::from_utf8_lossy(body)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
    };
    match text.char_indices().nth(200) {
        _ if text.is_empty() => String::new(),
        Some((cut, _)) => format!(": {}…", &text[..cut]),
        None => format!(": {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_prefers_the_failure_message() {
        assert_eq!(detail(br#"{"error": "model not loaded"}"#), ": model not loaded");
        assert_eq!(detail(b"oops\nmore"), ": oops");
        assert_eq!(detail(b""), "");
        assert_eq!(detail("x".repeat(300).as_bytes()).chars().count(), 2 + 200 + 1);
    }
}

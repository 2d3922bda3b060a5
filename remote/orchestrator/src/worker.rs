//! Talking to worker processes: `POST /run_model` and `GET /health`, every call bounded.

use std::error::Error;
use std::time::Duration;

use agent_protocol::{Classification, Failure, HEALTH_PATH, RUN_MODEL_PATH};
use axum::body::Bytes;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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

/// One HTTP client for every worker: connections are kept and reused.
#[derive(Clone)]
pub struct Workers {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Workers {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Workers {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Workers {
    /// Sends `body` unchanged to `worker` (an empty body asks it to make up a text). `Err` is
    /// one line saying how the worker failed: no connection, 5xx, a broken answer, or silence.
    pub async fn classify(&self, worker: &str, body: Bytes, limit: Duration) -> Result<Answer, String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{worker}{RUN_MODEL_PATH}"));
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| chain(&e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("answered {} but the body broke off: {}", parts.status, chain(&*e)))?
                .to_bytes();
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
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| format!("no answer within {limit:?}"))?
    }

    /// Whether `GET /health` answers 200 within `limit`.
    pub async fn healthy(&self, worker: &str, limit: Duration) -> bool {
        let Ok(request) = Request::get(format!("http://{worker}{HEALTH_PATH}")).body(Full::default()) else {
            return false;
        };
        let probe = async {
            let response = self.client.request(request).await.ok()?;
            let ok = response.status() == StatusCode::OK;
            // Read to the end so the connection can be reused.
            response.into_body().collect().await.ok()?;
            Some(ok)
        };
        matches!(tokio::time::timeout(limit, probe).await, Ok(Some(true)))
    }
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

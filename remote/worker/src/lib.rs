//! The worker of the `inference` deployment: DistilBERT sequence classification over HTTP.
//!
//! `POST /run_model` with an empty body classifies 50 random characters from a–z and space
//! (as the course lab's worker did); with `{"text": "..."}` it classifies that text. The answer
//! is `{"input_text": ..., "probabilities": [p0, p1]}`. `GET /health` answers `ok`.
//!
//! Inference is CPU-bound, so it runs on blocking threads, at most `concurrency` at a time;
//! up to `queue` more requests wait, and beyond that the worker answers 503 at once (the
//! orchestrator sends one request at a time, so this bounds misuse, not normal load).
//!
//! Modules: [`model`] (the network and tokenizer), [`dense`] (its linear layers and the
//! kernel choice), `amx` (the AMX tile kernel), [`head`] (the reproducible classification
//! head).

#[cfg(target_arch = "x86_64")]
mod amx;
pub mod dense;
pub mod head;
pub mod model;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use agent_protocol::{Classification, Failure, RunModel};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use dense::Kernel;
pub use model::Model;

/// Characters of the lab's random input text.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz ";
const RANDOM_TEXT_CHARS: usize = 50;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Inferences running at once.
    pub concurrency: usize,
    /// Requests waiting for one of those, beyond which the answer is 503.
    pub queue: usize,
}

struct Worker {
    model: Model,
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
}

/// Serves until `shutdown` completes, then lets in-flight requests finish.
pub async fn run(
    listener: TcpListener,
    model: Model,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(model, limits))
        .with_graceful_shutdown(shutdown)
        .await
}

pub fn app(model: Model, limits: Limits) -> Router {
    let worker = Arc::new(Worker {
        model,
        running: Arc::new(Semaphore::new(limits.concurrency.max(1))),
        waiting: AtomicUsize::new(0),
        queue: limits.queue,
    });
    Router::new()
        .route(agent_protocol::RUN_MODEL_PATH, post(run_model))
        .route(agent_protocol::HEALTH_PATH, get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(agent_protocol::MAX_BODY_BYTES))
        .with_state(worker)
}

fn failure(status: StatusCode, error: String) -> Response {
    (status, axum::Json(Failure { error })).into_response()
}

async fn run_model(State(worker): State<Arc<Worker>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "body larger than {} bytes: send a shorter text",
                    agent_protocol::MAX_BODY_BYTES
                )
            } else {
                format!("cannot read the body: {rejection}")
            };
            return failure(status, error);
        }
    };
    let text = match text_of(&body) {
        Ok(t) => t,
        Err(error) => return failure(StatusCode::BAD_REQUEST, error),
    };
    // Count waiters before queueing, so a burst beyond the bound is refused at once.
    if worker.waiting.fetch_add(1, Ordering::SeqCst) >= worker.queue + worker.running.available_permits() {
        worker.waiting.fetch_sub(1, Ordering::SeqCst);
        let mut r = failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker busy: too many requests waiting; retry shortly".into(),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, "1".parse().expect("valid header"));
        return r;
    }
    let permit = worker
        .running
        .clone()
        .acquire_owned()
        .await
        .expect("semaphore never closed");
    worker.waiting.fetch_sub(1, Ordering::SeqCst);
    let w = worker.clone();
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let probabilities = w.model.probabilities(&text)?;
        Ok::<_, String>(Classification {
            input_text: text,
            probabilities,
        })
    })
    .await;
    match result {
        Ok(Ok(c)) => axum::Json(c).into_response(),
        Ok(Err(e)) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, format!("inference panicked: {e}")),
    }
}

/// The text to classify: the body's, or the lab's random one for an empty body.
fn text_of(body: &[u8]) -> Result<String, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(random_text());
    }
    serde_json::from_slice::<RunModel>(body)
        .map(|r| r.text)
        .map_err(|e| format!("body is not {{\"text\": \"...\"}} ({e}): send that, or an empty body for a random text"))
}

pub fn random_text() -> String {
    (0..RANDOM_TEXT_CHARS)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_means_a_random_lab_text() {
        let t = text_of(b"").unwrap();
        assert_eq!(t.len(), 50);
        assert!(t.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(text_of(b" \n").unwrap(), t, "50 random characters repeat");
        assert_eq!(text_of(br#"{"text": "hi"}"#).unwrap(), "hi");
    }

    #[test]
    fn a_body_that_is_not_a_text_says_what_to_send() {
        for bad in [&b"{"[..], br#"{"txt": "a"}"#, br#"{"text": 3}"#] {
            let e = text_of(bad).unwrap_err();
            assert!(e.starts_with("body is not {\"text\": \"...\"}"), "{e}");
            assert!(e.ends_with("or an empty body for a random text"), "{e}");
        }
    }
}

//! The inference deployment's front door: queues classification requests and dispatches
//! each to a free worker process.
//!
//! - `POST /new_request`: the body (empty or JSON, at most `MAX_BODY_BYTES`) waits in a
//!   bounded FIFO queue for a free worker slot (`slots_per_worker`, 1 by default), goes to
//!   that worker's `POST /run_model` unchanged, and the answer is a `Served`. Free workers
//!   take turns. A full queue gets 503 with `Retry-After: 1`; so does a request still waiting
//!   after `queue_timeout`. A worker's 4xx goes back to the client as is.
//! - A worker that fails a request (no connection, 5xx, no answer within `worker_timeout`)
//!   is left out until its `GET /health` answers 200 (probed every `probe_interval`); the
//!   request is retried once, first in the queue, on another worker. Both failing gives 502.
//! - `GET /status`: a `Status` (workers, queue, counts, latency percentiles). `GET /health`: ok.
//! - Shutdown is graceful: no new connections; in-flight and queued requests finish.

pub mod config;
pub mod dispatch;
pub mod latency;
pub mod pool;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use agent_protocol::{HEALTH_PATH, MAX_BODY_BYTES, NEW_REQUEST_PATH, STATUS_PATH};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

pub use config::Config;
use dispatch::failure;
use pool::{Pool, Refusal};

/// Serves until `shutdown` completes, then lets in-flight and queued requests finish.
/// A configuration [`Config::check`] refuses is an `InvalidInput` error.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    config
        .check()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    axum::serve(listener, app(config))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The routes, with their own pool of `config.workers` (all taken healthy at first).
pub fn app(config: Config) -> Router {
    Router::new()
        .route(NEW_REQUEST_PATH, post(new_request))
        .route(STATUS_PATH, get(status))
        .route(HEALTH_PATH, get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Arc::new(Pool::new(config)))
}

async fn status(State(pool): State<Arc<Pool>>) -> Json<agent_protocol::Status> {
    Json(pool.status())
}

async fn new_request(State(pool): State<Arc<Pool>>, body: Result<Bytes, BytesRejection>) -> Response {
    let arrival = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body is larger than {MAX_BODY_BYTES} bytes"),
            );
        }
        Err(e) => return failure(e.status(), e.body_text()),
    };
    // Only the syntax is checked here: the worker owns the shape and answers 400 itself.
    if !body.is_empty()
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
    {
        return failure(
            StatusCode::BAD_REQUEST,
            format!(r#"body is not JSON ({e}): send {{"text": "..."}} or an empty body"#),
        );
    }

    // The handler holds the job's ticket: a client that leaves drops out of the queue, but
    // a job already at a worker runs on (its slot is held until the worker answers).
    let ticket = match pool.submit(body, arrival) {
        Ok(ticket) => ticket,
        Err(refusal) => return refused(&pool, refusal),
    };
    match ticket.answer().await {
        Ok(response) => response,
        Err(refusal) => refused(&pool, refusal),
    }
}

/// The answer to a request no worker answered: 503 (with Retry-After) when it could not
/// be queued or waited too long, 502 when its retry found no other worker in time.
fn refused(pool: &Pool, refusal: Refusal) -> Response {
    let error = match refusal {
        Refusal::QueueFull => format!(
            "all workers are busy and {} requests are waiting already; try again shortly",
            pool.config.queue_limit
        ),
        Refusal::TimedOut(None) => format!(
            "no worker was free within {:?}; try again shortly",
            pool.config.queue_timeout
        ),
        Refusal::TimedOut(Some(first)) => {
            return failure(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{}; no other worker was free for the retry within {:?}",
                    dispatch::failed(pool, first.worker, &first.error),
                    pool.config.queue_timeout
                ),
            );
        }
        Refusal::Lost => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request's dispatch ended without an answer".into(),
            );
        }
    };
    let mut response = failure(StatusCode::SERVICE_UNAVAILABLE, error);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

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
pub mod latency;
pub mod pool;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_protocol::{Failure, HEALTH_PATH, MAX_BODY_BYTES, NEW_REQUEST_PATH, STATUS_PATH, Served};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

pub use config::Config;
use pool::{Place, Pool, Refusal};
use worker::Answer;

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

    // Waiting in the queue is the handler's: a client that leaves drops out of the queue.
    let slot = match pool.acquire(Place::Back, None).await {
        Ok(slot) => slot,
        Err(refusal) => return unavailable(&pool, refusal),
    };
    // Once dispatched, the request is a task of its own: if the client leaves now, the slot
    // is still held until the worker answers, so no worker ever gets a second request.
    tokio::spawn(dispatch(pool, slot, body, arrival))
        .await
        .unwrap_or_else(|e| failure(StatusCode::INTERNAL_SERVER_ERROR, format!("dispatch failed: {e}")))
}

/// Sends the request to the slot's worker, and once more to another worker if that fails.
async fn dispatch(pool: Arc<Pool>, slot: pool::Slot, body: Bytes, arrival: Instant) -> Response {
    let dispatched = Instant::now();
    let first = slot.worker;
    let first_error = match pool
        .workers
        .classify(pool.worker_name(first), body.clone(), pool.config.worker_timeout)
        .await
    {
        Ok(answer) => return answered(slot, answer, &pool, arrival, dispatched),
        Err(e) => {
            slot.failed();
            e
        }
    };
    let first_failed = format!("worker {} failed ({first_error})", pool.worker_name(first));

    if pool.config.workers.len() < 2 {
        pool.count_failed();
        return failure(
            StatusCode::BAD_GATEWAY,
            format!("{first_failed}; no other worker to retry on"),
        );
    }
    let slot = match pool.acquire(Place::Front, Some(first)).await {
        Ok(slot) => slot,
        Err(_) => {
            pool.count_failed();
            let waited = pool.config.queue_timeout;
            return failure(
                StatusCode::BAD_GATEWAY,
                format!("{first_failed}; no other worker was free for the retry within {waited:?}"),
            );
        }
    };
    let second = slot.worker;
    match pool
        .workers
        .classify(pool.worker_name(second), body, pool.config.worker_timeout)
        .await
    {
        Ok(answer) => answered(slot, answer, &pool, arrival, dispatched),
        Err(e) => {
            slot.failed();
            pool.count_failed();
            failure(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{first_failed}, and the retry on worker {} failed too ({e})",
                    pool.worker_name(second)
                ),
            )
        }
    }
}

/// The client's answer once a worker answered properly.
fn answered(slot: pool::Slot, answer: Answer, pool: &Pool, arrival: Instant, dispatched: Instant) -> Response {
    match answer {
        Answer::Classified(result) => {
            let answered = Instant::now();
            let served = Served {
                result,
                worker: pool.worker_name(slot.worker).to_owned(),
                queued_ms: ms(dispatched - arrival),
                inference_ms: ms(answered - dispatched),
            };
            slot.served(answered - arrival);
            Json(served).into_response()
        }
        // The client's fault: no retry, and the worker stays in service.
        Answer::Refused {
            status,
            content_type,
            body,
        } => {
            drop(slot);
            let mut response = (status, body).into_response();
            match content_type {
                Some(ct) => response.headers_mut().insert(header::CONTENT_TYPE, ct),
                None => response.headers_mut().remove(header::CONTENT_TYPE),
            };
            response
        }
    }
}

fn unavailable(pool: &Pool, refusal: Refusal) -> Response {
    let error = match refusal {
        Refusal::QueueFull => format!(
            "all workers are busy and {} requests are waiting already; try again shortly",
            pool.config.queue_limit
        ),
        Refusal::TimedOut => format!(
            "no worker was free within {:?}; try again shortly",
            pool.config.queue_timeout
        ),
    };
    let mut response = failure(StatusCode::SERVICE_UNAVAILABLE, error);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

fn failure(status: StatusCode, error: String) -> Response {
    (status, Json(Failure { error })).into_response()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

//! A busy worker slot: one task sending jobs to one worker over one kept connection, and
//! taking the next waiting job whenever one is done.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use agent_protocol::{Failure, Served};
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use crate::pool::{Job, Outcome, Pool, Retry};
use crate::worker::{self, Answer, Link};

/// Runs `job` on `worker`, then every job the slot takes after it, until the queue has none
/// for this worker or the worker fails.
pub async fn run(pool: Arc<Pool>, worker: usize, mut link: Option<Link>, mut job: Job) {
    // The previous job's answer, sent once the next job is on its way (below).
    let mut answered: Option<(oneshot::Sender<Response>, Response)> = None;
    loop {
        let dispatched = *job.dispatched.get_or_insert_with(Instant::now);
        let result = {
            let call = pin!(worker::classify(
                &mut link,
                pool.worker_name(worker),
                job.body.clone(),
                pool.config.worker_timeout
            ));
            match answered.take() {
                None => call.await,
                Some((reply, response)) => first_step_then(call, || drop(reply.send(response))).await,
            }
        };
        let (outcome, response) = match result {
            Ok(Answer::Classified(result)) => {
                let now = Instant::now();
                let served = Served {
                    result,
                    worker: pool.worker_name(worker).to_owned(),
                    queued_ms: ms(dispatched - job.arrival),
                    inference_ms: ms(now - dispatched),
                };
                (Outcome::Served(now - job.arrival), Json(served).into_response())
            }
            // The client's fault: no retry, and the worker stays in service.
            Ok(Answer::Refused {
                status,
                content_type,
                body,
            }) => {
                let mut response = (status, body).into_response();
                match content_type {
                    Some(ct) => response.headers_mut().insert(header::CONTENT_TYPE, ct),
                    None => response.headers_mut().remove(header::CONTENT_TYPE),
                };
                (Outcome::Refused, response)
            }
            Err(error) => {
                link = None;
                let response = match job.retry.take() {
                    None if pool.config.workers.len() > 1 => {
                        pool.finish(worker, None, Outcome::Failed);
                        job.retry = Some(Retry { worker, error });
                        pool.retry(job);
                        return;
                    }
                    None => failure(
                        StatusCode::BAD_GATEWAY,
                        format!("{}; no other worker to retry on", failed(&pool, worker, &error)),
                    ),
                    Some(first) => failure(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "{}, and the retry on worker {} failed too ({error})",
                            failed(&pool, first.worker, &first.error),
                            pool.worker_name(worker)
                        ),
                    ),
                };
                pool.count_failed();
                (Outcome::Failed, response)
            }
        };
        match pool.finish(worker, link.take(), outcome) {
            Some((next, kept)) => {
                answered = Some((job.reply, response));
                job = next;
                link = kept;
            }
            None => {
                // The client may be gone (it keeps no claim on a job at a worker).
                let _ = job.reply.send(response);
                return;
            }
        }
    }
}

/// Polls `call` once, runs `then`, and finishes `call`. The first poll writes the next
/// request to the worker; only then does the previous client's answer go out. In the other
/// order the worker idles while the answer is written and the client's handler runs
/// (benches/orchestrator: +0.1 ms of worker idle per request, 2–4 % of the throughput at
/// S = 5 ms).
async fn first_step_then<F: Future>(mut call: std::pin::Pin<&mut F>, then: impl FnOnce()) -> F::Output {
    let first = poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
    then();
    match first {
        Poll::Ready(output) => output,
        Poll::Pending => call.await,
    }
}

/// "worker A:P failed (why)", the first half of a 502's message.
pub fn failed(pool: &Pool, worker: usize, error: &str) -> String {
    format!("worker {} failed ({error})", pool.worker_name(worker))
}

pub fn failure(status: StatusCode, error: String) -> Response {
    (status, Json(Failure { error })).into_response()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

//! The orchestrator as a client sees it, in process on port 0, in front of fake workers
//! whose behaviour each test sets: answer after a service time, fail with 500, hang, break
//! the connection mid-answer, refuse with 400; optionally held at a gate until released.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use agent_orchestrator::Config;
use agent_protocol::{
    Classification, Failure, HEALTH_PATH, MAX_BODY_BYTES, NEW_REQUEST_PATH, RUN_MODEL_PATH, RunModel, STATUS_PATH,
    Served, Status, WorkerState,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};

// ---------------------------------------------------------------- fake workers

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Serve,
    Fail,
    Hang,
    /// Answers 200, then the connection dies before the body: a worker crashing mid-answer.
    Break,
    Reject,
    /// Answers, then closes the connection (`Connection: close`), as a worker restarting or
    /// timing out idle connections does between requests.
    ServeAndClose,
}

struct FakeState {
    mode: Mutex<Mode>,
    service: Duration,
    healthy: AtomicBool,
    calls: AtomicUsize,
    /// When gated, every request waits for a permit (the test's `release`) before answering.
    gated: bool,
    gate: Semaphore,
    entered: mpsc::UnboundedSender<String>,
}

struct Fake {
    addr: String,
    state: Arc<FakeState>,
    entered: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
}

const REJECTION: &str = r#"{"error":"text must not be empty"}"#;

impl Fake {
    async fn start(service: Duration, gated: bool) -> Fake {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(FakeState {
            mode: Mutex::new(Mode::Serve),
            service,
            healthy: AtomicBool::new(true),
            calls: AtomicUsize::new(0),
            gated,
            gate: Semaphore::new(0),
            entered: tx,
        });
        let app = Router::new()
            .route(RUN_MODEL_PATH, post(run_model))
            .route(
                HEALTH_PATH,
                get(|State(f): State<Arc<FakeState>>| async move {
                    match f.healthy.load(Ordering::SeqCst) {
                        true => StatusCode::OK,
                        false => StatusCode::SERVICE_UNAVAILABLE,
                    }
                }),
            )
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake {
            addr,
            state,
            entered: tokio::sync::Mutex::new(rx),
        }
    }

    fn set(&self, mode: Mode, healthy: bool) {
        *self.state.mode.lock().unwrap() = mode;
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// The text of the next request this worker received.
    async fn entered(&self) -> String {
        let next = async { self.entered.lock().await.recv().await.unwrap() };
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("no request reached the worker")
    }
}

async fn run_model(State(f): State<Arc<FakeState>>, body: Bytes) -> Response {
    let text = match body.is_empty() {
        true => "made up text".to_owned(),
        false => serde_json::from_slice::<RunModel>(&body).map_or("?".into(), |r| r.text),
    };
    f.calls.fetch_add(1, Ordering::SeqCst);
    let _ = f.entered.send(text.clone());
    if f.gated {
        f.gate.acquire().await.unwrap().forget();
    }
    let mode = *f.mode.lock().unwrap();
    match mode {
        Mode::Serve => {
            tokio::time::sleep(f.service).await;
            Json(Classification {
                input_text: text,
                probabilities: vec![0.25, 0.75],
            })
            .into_response()
        }
        Mode::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(Failure {
                error: "model crashed".into(),
            }),
        )
            .into_response(),
        Mode::ServeAndClose => (
            [(header::CONNECTION, "close")],
            Json(Classification {
                input_text: text,
                probabilities: vec![0.25, 0.75],
            }),
        )
            .into_response(),
        Mode::Hang => std::future::pending().await,
        Mode::Break => Response::new(Body::new(Broken)),
        Mode::Reject => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            REJECTION,
        )
            .into_response(),
    }
}

/// A body that fails at once: hyper drops the connection mid-answer.
struct Broken;

impl hyper::body::Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::other("worker died"))))
    }
}

// ---------------------------------------------------------------- orchestrator and client

struct Orchestrator {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn orchestrator(config: Config) -> Orchestrator {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(agent_orchestrator::run(listener, config, async {
        let _ = stopped.await;
    }));
    Orchestrator {
        addr,
        stop: Some(stop),
        done,
    }
}

/// Short bounds so failures show within a test's time.
fn config(fakes: &[&Fake]) -> Config {
    let mut c = Config::new(fakes.iter().map(|f| f.addr.clone()).collect());
    c.worker_timeout = Duration::from_secs(2);
    c.queue_timeout = Duration::from_secs(5);
    c.probe_interval = Duration::from_millis(50);
    c.probe_timeout = Duration::from_millis(500);
    c
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn served(&self) -> Served {
        assert_eq!(self.status, StatusCode::OK, "{:?}", self.body);
        serde_json::from_slice(&self.body).unwrap()
    }

    fn failure(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        serde_json::from_slice::<Failure>(&self.body).unwrap().error
    }
}

/// One request on its own connection, so each arrives as sent.
async fn call(addr: SocketAddr, method: Method, path: &str, body: impl Into<Bytes>) -> Answer {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(body.into()))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(8), client.request(request))
        .await
        .expect("no answer from the orchestrator")
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn new_request(addr: SocketAddr, body: impl Into<Bytes>) -> impl Future<Output = Answer> + Send + 'static {
    let body = body.into();
    async move { call(addr, Method::POST, NEW_REQUEST_PATH, body).await }
}

fn text(t: &str) -> String {
    serde_json::to_string(&RunModel { text: t.into() }).unwrap()
}

async fn status(addr: SocketAddr) -> Status {
    let answer = call(addr, Method::GET, STATUS_PATH, "").await;
    assert_eq!(answer.status, StatusCode::OK);
    serde_json::from_slice(&answer.body).unwrap()
}

/// Waits until `/status` shows `what` (a condition, not a guessed sleep).
async fn until(addr: SocketAddr, what: &str, cond: impl Fn(&Status) -> bool) -> Status {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = status(addr).await;
        if cond(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn states(s: &Status) -> Vec<WorkerState> {
    s.workers.iter().map(|w| w.state).collect()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatches_to_a_worker_and_answers_served() {
    let service = Duration::from_millis(50);
    let (a, b) = (Fake::start(service, false).await, Fake::start(service, false).await);
    let o = orchestrator(config(&[&a, &b])).await;

    let answer = new_request(o.addr, text("hello")).await;
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    let served = answer.served();
    assert_eq!(served.result.input_text, "hello");
    assert_eq!(served.result.probabilities, [0.25, 0.75]);
    assert!([&a.addr, &b.addr].contains(&&served.worker), "{served:?}");
    assert!(served.inference_ms >= 50.0, "{served:?}");
    assert!(served.queued_ms >= 0.0 && served.queued_ms < 50.0, "{served:?}");

    // An empty body goes through as is: the worker makes up a text.
    assert_eq!(new_request(o.addr, "").await.served().result.input_text, "made up text");

    let health = call(o.addr, Method::GET, HEALTH_PATH, "").await;
    assert_eq!((health.status, &health.body[..]), (StatusCode::OK, &b"ok"[..]));
    let s = status(o.addr).await;
    assert_eq!(
        (s.served, s.failed, s.rejected, s.queued, s.queue_limit),
        (2, 0, 0, 0, 64)
    );
    // Free workers take turns.
    assert_eq!(s.workers.iter().map(|w| w.served).collect::<Vec<_>>(), [1, 1]);
    assert_eq!(states(&s), [WorkerState::Free, WorkerState::Free]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_the_worker_closed_is_reopened_not_counted_as_a_failure() {
    // One worker, so a request failed on a stale connection would show as a 502.
    let w = Fake::start(Duration::ZERO, false).await;
    w.set(Mode::ServeAndClose, true);
    let o = orchestrator(config(&[&w])).await;
    for t in ["a", "b", "c"] {
        assert_eq!(new_request(o.addr, text(t)).await.served().result.input_text, t);
    }
    let s = status(o.addr).await;
    assert_eq!((s.served, s.failed, s.workers[0].failures), (3, 0, 0), "{s:#?}");
    assert_eq!(states(&s), [WorkerState::Free]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_are_served_in_arrival_order() {
    let w = Fake::start(Duration::ZERO, true).await;
    let o = orchestrator(config(&[&w])).await;
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let send = |i: usize| {
        let done_tx = done_tx.clone();
        let request = new_request(o.addr, text(&format!("r{i}")));
        tokio::spawn(async move {
            let served = request.await.served();
            done_tx.send((i, served.result.input_text)).unwrap();
        })
    };
    send(0);
    assert_eq!(w.entered().await, "r0");
    // Each is in the queue before the next is sent, so the arrival order is known.
    for i in 1..6 {
        send(i);
        until(o.addr, &format!("{i} queued"), |s| s.queued == i).await;
    }
    for i in 0..6 {
        w.release(1);
        assert_eq!(done.recv().await.unwrap(), (i, format!("r{i}")));
        if i < 5 {
            assert_eq!(w.entered().await, format!("r{}", i + 1));
        }
    }
    assert_eq!(status(o.addr).await.served, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_turns_requests_away_with_503() {
    let w = Fake::start(Duration::ZERO, true).await;
    let mut c = config(&[&w]);
    c.queue_limit = 2;
    let o = orchestrator(c).await;
    let first = tokio::spawn(new_request(o.addr, text("1")));
    w.entered().await;
    let second = tokio::spawn(new_request(o.addr, text("2")));
    until(o.addr, "1 queued", |s| s.queued == 1).await;
    let third = tokio::spawn(new_request(o.addr, text("3")));
    until(o.addr, "2 queued", |s| s.queued == 2).await;

    let fourth = new_request(o.addr, text("4")).await;
    assert_eq!(fourth.headers[header::RETRY_AFTER], "1");
    let error = fourth.failure(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        error,
        "all workers are busy and 2 requests are waiting already; try again shortly"
    );
    let s = status(o.addr).await;
    assert_eq!((s.rejected, s.queued, s.queue_limit), (1, 2, 2));

    w.release(3);
    for request in [first, second, third] {
        request.await.unwrap().served();
    }
    assert_eq!(w.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_worker_is_retried_elsewhere_left_out_and_probed_back() {
    let (a, b) = (
        Fake::start(Duration::ZERO, false).await,
        Fake::start(Duration::ZERO, false).await,
    );
    // Dead as a frozen process is: the request hangs, and so would its health check.
    a.set(Mode::Hang, false);
    let mut c = config(&[&a, &b]);
    c.worker_timeout = Duration::from_millis(300);
    let o = orchestrator(c).await;

    // A fresh orchestrator starts with the first worker.
    let served = new_request(o.addr, text("x")).await.served();
    assert_eq!(served.worker, b.addr);
    assert!(served.inference_ms >= 300.0, "retries count as inference: {served:?}");
    assert_eq!((a.calls(), b.calls()), (1, 1));
    let s = status(o.addr).await;
    assert_eq!(states(&s), [WorkerState::Unhealthy, WorkerState::Free]);
    assert_eq!((s.workers[0].failures, s.workers[0].in_flight), (1, 0));
    assert_eq!((s.served, s.failed), (1, 0));

    for _ in 0..3 {
        assert_eq!(new_request(o.addr, "").await.served().worker, b.addr);
    }
    assert_eq!(a.calls(), 1, "an unhealthy worker gets no traffic");

    a.set(Mode::Serve, true);
    until(o.addr, "a back", |s| s.workers[0].state == WorkerState::Free).await;
    let workers: Vec<String> = [
        new_request(o.addr, "").await.served().worker,
        new_request(o.addr, "").await.served().worker,
    ]
    .into();
    assert!(workers.contains(&a.addr), "{workers:?}");
    assert_eq!(status(o.addr).await.workers[0].served, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_breaks_the_connection_is_retried_elsewhere() {
    let (a, b) = (
        Fake::start(Duration::ZERO, false).await,
        Fake::start(Duration::ZERO, false).await,
    );
    a.set(Mode::Break, false);
    let o = orchestrator(config(&[&a, &b])).await;
    let started = Instant::now();
    assert_eq!(new_request(o.addr, text("x")).await.served().worker, b.addr);
    assert!(started.elapsed() < Duration::from_secs(1), "no wait for a timeout");
    assert_eq!((a.calls(), b.calls()), (1, 1));
    let s = status(o.addr).await;
    assert_eq!(states(&s), [WorkerState::Unhealthy, WorkerState::Free]);
    assert_eq!(s.workers[0].failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_the_front_of_the_queue() {
    let (a, b) = (
        Fake::start(Duration::ZERO, true).await,
        Fake::start(Duration::ZERO, true).await,
    );
    let o = orchestrator(config(&[&a, &b])).await;
    let ra = tokio::spawn(new_request(o.addr, text("A")));
    assert_eq!(a.entered().await, "A");
    let rb = tokio::spawn(new_request(o.addr, text("B")));
    assert_eq!(b.entered().await, "B");
    let rc = tokio::spawn(new_request(o.addr, text("C")));
    until(o.addr, "C queued", |s| s.queued == 1).await;

    // A fails on a while C waits: its retry goes ahead of C.
    a.set(Mode::Fail, false);
    a.release(1);
    until(o.addr, "A's retry queued", |s| s.queued == 2).await;
    b.release(1);
    rb.await.unwrap().served();
    assert_eq!(b.entered().await, "A");
    b.release(1);
    assert_eq!(ra.await.unwrap().served().worker, b.addr);
    assert_eq!(b.entered().await, "C");
    b.release(1);
    assert_eq!(rc.await.unwrap().served().worker, b.addr);
    assert_eq!((a.calls(), b.calls()), (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_finds_no_other_free_worker_in_time_gives_502() {
    let (a, b) = (
        Fake::start(Duration::ZERO, true).await,
        Fake::start(Duration::ZERO, true).await,
    );
    let mut c = config(&[&a, &b]);
    c.queue_timeout = Duration::from_millis(300);
    let o = orchestrator(c).await;
    let ra = tokio::spawn(new_request(o.addr, text("A")));
    a.entered().await;
    let rb = tokio::spawn(new_request(o.addr, text("B")));
    b.entered().await;
    a.set(Mode::Fail, false);
    a.release(1);
    assert_eq!(
        ra.await.unwrap().failure(StatusCode::BAD_GATEWAY),
        format!(
            "worker {} failed (answered 500 Internal Server Error: model crashed); \
             no other worker was free for the retry within 300ms",
            a.addr
        )
    );
    b.release(1);
    rb.await.unwrap().served();
    let s = status(o.addr).await;
    assert_eq!((s.served, s.failed, s.rejected), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_workers_failing_gives_502_naming_both() {
    let (a, b) = (
        Fake::start(Duration::ZERO, false).await,
        Fake::start(Duration::ZERO, false).await,
    );
    a.set(Mode::Fail, false);
    b.set(Mode::Break, false);
    let o = orchestrator(config(&[&a, &b])).await;
    let error = new_request(o.addr, text("x")).await.failure(StatusCode::BAD_GATEWAY);
    assert!(
        error.starts_with(&format!(
            "worker {} failed (answered 500 Internal Server Error: model crashed), and the retry on worker {} failed too (",
            a.addr, b.addr
        )),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    let s = status(o.addr).await;
    assert_eq!((s.served, s.failed), (0, 1));
    assert_eq!(states(&s), [WorkerState::Unhealthy, WorkerState::Unhealthy]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_healthy_worker_requests_wait_until_one_is_back_or_time_out() {
    let w = Fake::start(Duration::ZERO, false).await;
    w.set(Mode::Fail, false);
    let mut c = config(&[&w]);
    c.queue_timeout = Duration::from_millis(800);
    let o = orchestrator(c).await;

    let error = new_request(o.addr, "").await.failure(StatusCode::BAD_GATEWAY);
    assert_eq!(
        error,
        format!(
            "worker {} failed (answered 500 Internal Server Error: model crashed); no other worker to retry on",
            w.addr
        )
    );

    let started = Instant::now();
    let timed_out = new_request(o.addr, "").await;
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(timed_out.headers[header::RETRY_AFTER], "1");
    assert_eq!(
        timed_out.failure(StatusCode::SERVICE_UNAVAILABLE),
        "no worker was free within 800ms; try again shortly"
    );
    assert_eq!(w.calls(), 1);

    // A waiting request is dispatched as soon as the probe sees the worker back.
    let waiting = tokio::spawn(new_request(o.addr, text("y")));
    until(o.addr, "1 queued", |s| s.queued == 1).await;
    w.set(Mode::Serve, true);
    assert_eq!(waiting.await.unwrap().served().worker, w.addr);
    let s = status(o.addr).await;
    assert_eq!((s.served, s.failed, s.rejected), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_and_an_oversize_body_413() {
    let w = Fake::start(Duration::ZERO, false).await;
    let o = orchestrator(config(&[&w])).await;
    let error = new_request(o.addr, "hello").await.failure(StatusCode::BAD_REQUEST);
    assert_eq!(
        error,
        r#"body is not JSON (expected value at line 1 column 1): send {"text": "..."} or an empty body"#
    );
    let error = new_request(o.addr, r#"{"text": "a"} trailing"#)
        .await
        .failure(StatusCode::BAD_REQUEST);
    assert!(error.starts_with("body is not JSON (trailing characters"), "{error}");

    let oversize = format!("\"{}\"", "a".repeat(MAX_BODY_BYTES));
    let error = new_request(o.addr, oversize)
        .await
        .failure(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error, "body is larger than 65536 bytes");
    assert_eq!(w.calls(), 0);

    // The shape is the worker's business: any JSON goes through unchanged.
    assert_eq!(new_request(o.addr, "[1, 2]").await.served().result.input_text, "?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_4xx_goes_back_to_the_client_unretried() {
    let (a, b) = (
        Fake::start(Duration::ZERO, false).await,
        Fake::start(Duration::ZERO, false).await,
    );
    a.set(Mode::Reject, true);
    let o = orchestrator(config(&[&a, &b])).await;
    let answer = new_request(o.addr, text("")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(answer.body, REJECTION);
    assert_eq!((a.calls(), b.calls()), (1, 0));
    let s = status(o.addr).await;
    assert_eq!(states(&s), [WorkerState::Free, WorkerState::Free]);
    assert_eq!((s.workers[0].failures, s.served, s.failed), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_busy_workers_and_latency_percentiles() {
    let w = Fake::start(Duration::ZERO, true).await;
    let o = orchestrator(config(&[&w])).await;
    let first = tokio::spawn(new_request(o.addr, ""));
    w.entered().await;
    let s = status(o.addr).await;
    assert_eq!(states(&s), [WorkerState::Busy]);
    assert_eq!((s.workers[0].in_flight, s.served), (1, 0));
    assert_eq!(s.latency_ms.p50, None);

    w.release(5);
    first.await.unwrap().served();
    for _ in 0..4 {
        new_request(o.addr, "").await.served();
    }
    let s = status(o.addr).await;
    assert_eq!(states(&s), [WorkerState::Free]);
    assert_eq!((s.served, s.workers[0].served, s.workers[0].in_flight), (5, 5, 0));
    let p = &s.latency_ms;
    let (p50, p90, p99, max) = (p.p50.unwrap(), p.p90.unwrap(), p.p99.unwrap(), p.max.unwrap());
    assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_and_queued_requests_finish() {
    let w = Fake::start(Duration::ZERO, true).await;
    let mut o = orchestrator(config(&[&w])).await;
    let in_flight = tokio::spawn(new_request(o.addr, text("in flight")));
    assert_eq!(w.entered().await, "in flight");
    let queued = tokio::spawn(new_request(o.addr, text("queued")));
    until(o.addr, "1 queued", |s| s.queued == 1).await;

    o.stop.take().unwrap().send(()).unwrap();
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(o.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    w.release(2);
    assert_eq!(in_flight.await.unwrap().served().result.input_text, "in flight");
    assert_eq!(queued.await.unwrap().served().result.input_text, "queued");
    tokio::time::timeout(Duration::from_secs(5), o.done)
        .await
        .expect("run did not return after its requests finished")
        .unwrap()
        .unwrap();
}

/// A client that leaves while its request is at the worker must not free the worker's slot:
/// the next request waits until the worker has answered the abandoned one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_does_not_free_a_busy_worker() {
    let w = Fake::start(Duration::ZERO, true).await;
    let o = orchestrator(config(&[&w])).await;
    let leaving = tokio::spawn(new_request(o.addr, text("abandoned")));
    assert_eq!(w.entered().await, "abandoned");
    leaving.abort();
    let _ = leaving.await;
    let next = tokio::spawn(new_request(o.addr, text("next")));
    until(o.addr, "next queued", |s| s.queued == 1).await;
    // Still queued a while later: the worker is busy with the abandoned request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(o.addr).await.queued, 1);
    assert_eq!(w.calls(), 1);
    w.release(1);
    assert_eq!(w.entered().await, "next");
    w.release(1);
    assert_eq!(next.await.unwrap().served().result.input_text, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_config_without_workers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = agent_orchestrator::run(listener, Config::new(vec![]), async {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), "no workers: set AGENT_WORKERS or --workers");
}

// ---------------------------------------------------------------- the binary

#[test]
fn the_binary_exits_2_on_bad_configuration() {
    let run = |args: &[&str], workers: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agent-orchestrator"));
        cmd.args(["--port", "0"]).args(args).env_remove("AGENT_WORKERS");
        if let Some(w) = workers {
            cmd.env("AGENT_WORKERS", w);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(
        run(&[], None),
        (
            Some(2),
            "agent-orchestrator: no workers: set AGENT_WORKERS or --workers\n".into()
        )
    );
    assert_eq!(
        run(&["--slots", "many"], Some("10.0.1.5:5000")),
        (
            Some(2),
            "agent-orchestrator: --slots takes a number of requests per worker, 1 or more, not \"many\"\n".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_stops_on_sigterm() {
    use std::io::BufRead;

    let w = Fake::start(Duration::ZERO, false).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-orchestrator"))
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .env("AGENT_WORKERS", &w.addr)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stderr).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let addr = line
        .strip_prefix("agent-orchestrator: listening on ")
        .and_then(|rest| rest.split_once(','))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(addr.1.starts_with(" 1 worker, 1 slot each, queue 64"), "{line}");
    let addr: SocketAddr = addr.0.parse().unwrap();
    assert_eq!(new_request(addr, text("hi")).await.served().worker, w.addr);

    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");
}

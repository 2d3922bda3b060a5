//! The worker slots and the queue in front of them, under one lock.
//!
//! A request is a [`Job`]. [`Pool::submit`] starts it on a free slot (one of a worker's
//! `slots_per_worker`) or queues it, FIFO; the client's handler keeps a [`Ticket`] and awaits
//! the answer. Each busy slot is one task (`dispatch::run`) holding one kept connection to
//! its worker: when its request is done, the slot takes the oldest waiting job itself
//! ([`Pool::finish`]) instead of waking another task to send it. Nothing polls: the queue is
//! served whenever a slot frees, a worker comes back, or a retry is queued. A failed worker
//! is left out until a probe task sees its `GET /health` answer 200.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use agent_protocol::{Status, WorkerState, WorkerStatus};
use axum::body::Bytes;
use axum::response::Response;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::dispatch;
use crate::latency::Latencies;
use crate::worker::{self, Link};

pub struct Pool {
    pub config: Config,
    state: Mutex<State>,
}

/// One client request, from arrival to answer.
pub struct Job {
    id: u64,
    pub body: Bytes,
    pub arrival: Instant,
    /// When it was first sent to a worker (kept for the retry: inference time counts both).
    pub dispatched: Option<Instant>,
    /// Set once a worker failed it: the retry must go to another worker.
    pub retry: Option<Retry>,
    /// While queued: when it gives up waiting.
    deadline: Instant,
    pub reply: oneshot::Sender<Response>,
}

/// The first attempt of a job that is being retried.
#[derive(Debug, Clone)]
pub struct Retry {
    pub worker: usize,
    pub error: String,
}

/// How a slot's request ended, for [`Pool::finish`].
pub enum Outcome {
    /// The worker answered a classification, `arrival_to_answer` after the request came.
    Served(Duration),
    /// The worker answered 4xx: the client's fault, nothing counted.
    Refused,
    /// The worker failed: it is left out until its probe says otherwise.
    Failed,
}

/// Why a request got no answer from a worker.
#[derive(Debug)]
pub enum Refusal {
    /// The queue was full when it came (counted as rejected).
    QueueFull,
    /// It waited `queue_timeout` for a slot: a new request (counted as rejected), or a retry
    /// (counted as failed; its first attempt is given).
    TimedOut(Option<Retry>),
    /// Its slot task ended without answering; cannot happen unless that task panicked.
    Lost,
}

struct State {
    workers: Vec<Worker>,
    slots: usize,
    queue_limit: usize,
    waiting: VecDeque<Job>,
    next_job: u64,
    /// Where the search for a free worker starts, so equal workers take turns.
    cursor: usize,
    served: u64,
    failed: u64,
    rejected: u64,
    latencies: Latencies,
}

struct Worker {
    healthy: bool,
    /// A probe task is running for it (at most one).
    probing: bool,
    in_flight: usize,
    served: u64,
    failures: u64,
    /// Kept connections of its free slots (at most `slots`).
    links: Vec<Link>,
}

impl Pool {
    pub fn new(config: Config) -> Self {
        let state = State {
            workers: config
                .workers
                .iter()
                .map(|_| Worker {
                    healthy: true,
                    probing: false,
                    in_flight: 0,
                    served: 0,
                    failures: 0,
                    links: Vec::new(),
                })
                .collect(),
            slots: config.slots_per_worker,
            queue_limit: config.queue_limit,
            waiting: VecDeque::new(),
            next_job: 0,
            cursor: 0,
            served: 0,
            failed: 0,
            rejected: 0,
            latencies: Latencies::default(),
        };
        Pool {
            config,
            state: Mutex::new(state),
        }
    }

    /// A panic elsewhere cannot leave the counts half-updated (every change is a few
    /// assignments), so a poisoned lock is still good to use.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a new request on a free worker, or queues it behind the others if the queue
    /// has room.
    pub fn submit(self: &Arc<Self>, body: Bytes, arrival: Instant) -> Result<Ticket, Refusal> {
        let (reply, rx) = oneshot::channel();
        let mut s = self.lock();
        let id = s.next_job;
        s.next_job += 1;
        let job = Job {
            id,
            body,
            arrival,
            dispatched: None,
            retry: None,
            deadline: arrival + self.config.queue_timeout,
            reply,
        };
        // After every dispatch no waiting job can use any free slot, so a slot free now is
        // one nobody waiting can take: taking it skips no one.
        let deadline = job.deadline;
        let queued = if let Some(worker) = s.pick(None) {
            self.start(&mut s, worker, job);
            false
        } else if s.waiting.len() >= s.queue_limit {
            s.rejected += 1;
            return Err(Refusal::QueueFull);
        } else {
            s.waiting.push_back(job);
            true
        };
        Ok(Ticket {
            pool: self.clone(),
            id,
            rx,
            // At a worker: look again after `queue_timeout` (see `answer`).
            until: if queued {
                deadline
            } else {
                Instant::now() + self.config.queue_timeout
            },
            answered: false,
        })
    }

    /// Queues a job whose first worker failed it, first in line (it already waited its turn,
    /// and is never turned away), with `queue_timeout` to find another worker.
    pub fn retry(self: &Arc<Self>, mut job: Job) {
        job.deadline = Instant::now() + self.config.queue_timeout;
        let mut s = self.lock();
        s.waiting.push_front(job);
        self.start_waiting(&mut s);
    }

    /// Ends a slot's request on `worker`. Returns the next job for the same slot (the oldest
    /// waiting one it may take) with the slot's connection, or frees the slot.
    pub fn finish(
        self: &Arc<Self>,
        worker: usize,
        link: Option<Link>,
        outcome: Outcome,
    ) -> Option<(Job, Option<Link>)> {
        let mut s = self.lock();
        match outcome {
            Outcome::Served(arrival_to_answer) => {
                s.served += 1;
                s.workers[worker].served += 1;
                s.latencies.record(arrival_to_answer.as_secs_f64() * 1000.0);
            }
            Outcome::Refused => {}
            Outcome::Failed => self.fail(&mut s, worker),
        }
        if s.workers[worker].healthy
            && let Some(i) = s
                .waiting
                .iter()
                .position(|j| j.retry.as_ref().map(|r| r.worker) != Some(worker))
        {
            let job = s.waiting.remove(i).expect("index found above");
            return Some((job, link));
        }
        let w = &mut s.workers[worker];
        w.in_flight -= 1;
        if let Some(link) = link
            && w.healthy
        {
            w.links.push(link);
        }
        None
    }

    pub fn count_failed(&self) {
        self.lock().failed += 1;
    }

    pub fn worker_name(&self, worker: usize) -> &str {
        &self.config.workers[worker]
    }

    pub fn status(&self) -> Status {
        let (mut status, ms) = {
            let s = self.lock();
            let status = Status {
                workers: s
                    .workers
                    .iter()
                    .zip(&self.config.workers)
                    .map(|(w, name)| WorkerStatus {
                        worker: name.clone(),
                        state: if !w.healthy {
                            WorkerState::Unhealthy
                        } else if w.in_flight >= s.slots {
                            WorkerState::Busy
                        } else {
                            WorkerState::Free
                        },
                        in_flight: w.in_flight,
                        served: w.served,
                        failures: w.failures,
                    })
                    .collect(),
                queued: s.waiting.len(),
                queue_limit: s.queue_limit,
                served: s.served,
                failed: s.failed,
                rejected: s.rejected,
                latency_ms: Default::default(),
            };
            (status, s.latencies.snapshot())
        };
        // Sorting 10 000 numbers is done outside the lock.
        status.latency_ms = agent_protocol::Percentiles::nearest_rank(ms);
        status
    }

    /// Takes a slot of `worker` for `job` and starts the slot's task.
    fn start(self: &Arc<Self>, s: &mut State, worker: usize, job: Job) {
        let w = &mut s.workers[worker];
        w.in_flight += 1;
        let link = w.links.pop();
        tokio::spawn(dispatch::run(self.clone(), worker, link, job));
    }

    /// Starts waiting jobs on free slots, oldest first. A job that cannot use any free slot
    /// (a retry whose only free worker is the one that failed it) lets the next one by.
    fn start_waiting(self: &Arc<Self>, s: &mut State) {
        let mut i = 0;
        while i < s.waiting.len() && (0..s.workers.len()).any(|w| s.has_room(w)) {
            let Some(worker) = s.pick(s.waiting[i].retry.as_ref().map(|r| r.worker)) else {
                i += 1;
                continue;
            };
            let job = s.waiting.remove(i).expect("index checked above");
            self.start(s, worker, job);
        }
    }

    /// Marks `worker` unhealthy, drops its kept connections and starts its probe task
    /// unless one runs.
    fn fail(self: &Arc<Self>, s: &mut State, worker: usize) {
        let w = &mut s.workers[worker];
        w.failures += 1;
        w.healthy = false;
        w.links.clear();
        if !w.probing {
            w.probing = true;
            tokio::spawn(probe(Arc::downgrade(self), worker));
        }
    }
}

/// Probes an unhealthy worker every `probe_interval` until it answers; ends early when the
/// orchestrator is gone (it holds only a weak reference).
async fn probe(pool: Weak<Pool>, worker: usize) {
    loop {
        let Some(interval) = pool.upgrade().map(|p| p.config.probe_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        if worker::healthy(pool.worker_name(worker), pool.config.probe_timeout).await {
            let mut s = pool.lock();
            let w = &mut s.workers[worker];
            w.healthy = true;
            w.probing = false;
            pool.start_waiting(&mut s);
            return;
        }
    }
}

impl State {
    /// The free healthy worker with the fewest requests in flight; among equals, the next
    /// in turn after the last one picked.
    fn pick(&mut self, exclude: Option<usize>) -> Option<usize> {
        let n = self.workers.len();
        let chosen = (0..n)
            .map(|k| (self.cursor + k) % n)
            .filter(|&i| Some(i) != exclude && self.has_room(i))
            .min_by_key(|&i| self.workers[i].in_flight)?;
        self.cursor = (chosen + 1) % n;
        Some(chosen)
    }

    fn has_room(&self, worker: usize) -> bool {
        let w = &self.workers[worker];
        w.healthy && w.in_flight < self.slots
    }
}

/// A client's claim on its job's answer. Dropped (the client went away) it takes the job
/// out of the queue; a job already at a worker runs on and keeps its slot until the worker
/// answers, so no worker ever gets a second request.
pub struct Ticket {
    pool: Arc<Pool>,
    id: u64,
    rx: oneshot::Receiver<Response>,
    /// When to look at the job again: its deadline while queued.
    until: Instant,
    /// The answer came, so the job is in no queue (nothing for `drop` to look for).
    answered: bool,
}

impl Ticket {
    /// The answer, or why there is none. A job gives up only while queued, when its
    /// deadline passes; at a worker it is bounded by `worker_timeout` per attempt.
    pub async fn answer(mut self) -> Result<Response, Refusal> {
        loop {
            match tokio::time::timeout_at(self.until.into(), &mut self.rx).await {
                Ok(Ok(response)) => {
                    self.answered = true;
                    return Ok(response);
                }
                Ok(Err(_)) => return Err(Refusal::Lost),
                Err(_) => {
                    let mut s = self.pool.lock();
                    let now = Instant::now();
                    match s.waiting.iter().position(|j| j.id == self.id) {
                        Some(i) if s.waiting[i].deadline <= now => {
                            let job = s.waiting.remove(i).expect("index found above");
                            match job.retry {
                                None => s.rejected += 1,
                                Some(_) => s.failed += 1,
                            }
                            return Err(Refusal::TimedOut(job.retry));
                        }
                        // Back in the queue for its retry, with a new deadline.
                        Some(i) => self.until = s.waiting[i].deadline,
                        // At a worker: it may come back to the queue for its retry.
                        None => self.until = now + self.pool.config.queue_timeout,
                    }
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut s = self.pool.lock();
        if let Some(i) = s.waiting.iter().position(|j| j.id == self.id) {
            s.waiting.remove(i);
        }
    }
}

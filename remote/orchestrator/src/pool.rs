//! The worker slots and the queue in front of them, under one lock.
//!
//! A request takes a [`Slot`] (one of a worker's `slots_per_worker`) or waits in a FIFO
//! queue for one. Whenever a slot frees or a worker comes back, [`State::dispatch`] hands
//! free slots to waiters, oldest first, through each waiter's oneshot channel: nothing polls.
//! A failed worker is left out until a probe task sees its `GET /health` answer 200.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use agent_protocol::{Status, WorkerState, WorkerStatus};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::latency::Latencies;
use crate::worker::Workers;

pub struct Pool {
    pub config: Config,
    pub workers: Workers,
    state: Mutex<State>,
}

/// Where a waiting request joins the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A new request: behind everyone, and only if the queue has room.
    Back,
    /// A retry: it already waited its turn, so it goes first and is never turned away.
    Front,
}

/// Why no slot was given. A new request's refusal counts as `rejected`; a retry's is left
/// to the caller (it is a failed request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    QueueFull,
    /// Waited `queue_timeout` without a free slot.
    TimedOut,
}

struct State {
    workers: Vec<Worker>,
    slots: usize,
    queue_limit: usize,
    waiting: VecDeque<Waiter>,
    next_waiter: u64,
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
}

struct Waiter {
    id: u64,
    /// A retry must not go back to the worker that just failed it.
    exclude: Option<usize>,
    /// Gets the worker whose slot this waiter now holds.
    tx: oneshot::Sender<usize>,
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
                })
                .collect(),
            slots: config.slots_per_worker,
            queue_limit: config.queue_limit,
            waiting: VecDeque::new(),
            next_waiter: 0,
            cursor: 0,
            served: 0,
            failed: 0,
            rejected: 0,
            latencies: Latencies::default(),
        };
        Pool {
            config,
            workers: Workers::default(),
            state: Mutex::new(state),
        }
    }

    /// A panic elsewhere cannot leave the counts half-updated (every change is a few
    /// assignments), so a poisoned lock is still good to use.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot on a free healthy worker (never `exclude`), now or after waiting in the queue.
    pub async fn acquire(self: &Arc<Self>, place: Place, exclude: Option<usize>) -> Result<Slot, Refusal> {
        let mut waiting = {
            let mut s = self.lock();
            // After every dispatch no waiter can use any free slot, so a slot free now is
            // one nobody waiting can take: taking it skips no one.
            if let Some(worker) = s.pick(exclude) {
                s.workers[worker].in_flight += 1;
                return Ok(self.slot(worker));
            }
            if place == Place::Back && s.waiting.len() >= s.queue_limit {
                s.rejected += 1;
                return Err(Refusal::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let id = s.next_waiter;
            s.next_waiter += 1;
            let waiter = Waiter { id, exclude, tx };
            match place {
                Place::Back => s.waiting.push_back(waiter),
                Place::Front => s.waiting.push_front(waiter),
            }
            Waiting {
                pool: self.clone(),
                id,
                rx,
            }
        };
        match tokio::time::timeout(self.config.queue_timeout, &mut waiting.rx).await {
            Ok(Ok(worker)) => Ok(self.slot(worker)),
            // The sender is only dropped after a send or by `Waiting::drop`, so this cannot
            // happen; answering as a timeout is the safe reading.
            Ok(Err(_)) | Err(_) => {
                drop(waiting);
                // A retry that times out is a failed request (the caller counts it), not a
                // turned-away one.
                if place == Place::Back {
                    self.lock().rejected += 1;
                }
                Err(Refusal::TimedOut)
            }
        }
    }

    fn slot(self: &Arc<Self>, worker: usize) -> Slot {
        Slot {
            pool: self.clone(),
            worker,
            failed: false,
        }
    }

    pub fn worker_name(&self, worker: usize) -> &str {
        &self.config.workers[worker]
    }

    pub fn count_failed(&self) {
        self.lock().failed += 1;
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

    /// Marks `worker` unhealthy and starts its probe task unless one runs.
    fn fail(self: &Arc<Self>, s: &mut State, worker: usize) {
        let w = &mut s.workers[worker];
        w.failures += 1;
        w.healthy = false;
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
        if pool
            .workers
            .healthy(pool.worker_name(worker), pool.config.probe_timeout)
            .await
        {
            let mut s = pool.lock();
            let w = &mut s.workers[worker];
            w.healthy = true;
            w.probing = false;
            s.dispatch();
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

    /// Hands free slots to waiters, oldest first. A waiter that cannot use any free slot
    /// (a retry whose only free worker is the one that failed it) lets the next one by.
    fn dispatch(&mut self) {
        let mut i = 0;
        while i < self.waiting.len() && (0..self.workers.len()).any(|w| self.has_room(w)) {
            let Some(worker) = self.pick(self.waiting[i].exclude) else {
                i += 1;
                continue;
            };
            let waiter = self.waiting.remove(i).expect("index checked above");
            self.workers[worker].in_flight += 1;
            if waiter.tx.send(worker).is_err() {
                // Its receiver is gone (see `Waiting::drop`, which makes this unreachable).
                self.workers[worker].in_flight -= 1;
            }
        }
    }

    fn release(&mut self, worker: usize) {
        self.workers[worker].in_flight -= 1;
        self.dispatch();
    }
}

/// A request's place in the queue. Dropped (timed out, or the client went away) it leaves
/// the queue, or gives back the slot it was sent but never took.
struct Waiting {
    pool: Arc<Pool>,
    id: u64,
    rx: oneshot::Receiver<usize>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut s = self.pool.lock();
        if let Some(i) = s.waiting.iter().position(|w| w.id == self.id) {
            s.waiting.remove(i);
        } else if let Ok(worker) = self.rx.try_recv() {
            s.release(worker);
        }
    }
}

/// One request's hold on one worker slot; dropping it frees the slot and wakes the next
/// waiter. Dropped without [`Slot::served`] or [`Slot::failed`] (the client went away, the
/// worker answered 4xx) it counts nothing.
pub struct Slot {
    pool: Arc<Pool>,
    pub worker: usize,
    failed: bool,
}

impl Slot {
    pub fn served(self, arrival_to_answer: Duration) {
        let mut s = self.pool.lock();
        s.served += 1;
        s.workers[self.worker].served += 1;
        s.latencies.record(arrival_to_answer.as_secs_f64() * 1000.0);
    }

    /// The worker failed this request: no more requests for it until a probe says so.
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.pool.lock();
        if self.failed {
            // Before the release, so dispatch does not hand it the next request.
            self.pool.fail(&mut s, self.worker);
        }
        s.release(self.worker);
    }
}

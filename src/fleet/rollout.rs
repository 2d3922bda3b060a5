//! Rolling deploys (`--rolling N` or `N%`): the balancer host first (it must be up to take
//! servers out), then each role's hosts in batches. A batch of a role the balancer routes to
//! is taken out of it and drained, deployed, health-checked (the pipeline's last step), put
//! back, and waited for until the balancer itself sees it up; only then does the next batch
//! start. Roles behind no balancer roll with the health gate alone. A failed batch stops the
//! rollout: the hosts not reached keep their old version and say so.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::deploy::{Shared, deploy_one, record_key};
use crate::event::{Event, HostId, Outcome, Stage, describe};
use crate::plan::{HostPlan, Plan};
use crate::script::step;
use crate::transport::connect::{self, Connection, Target};
use crate::transport::{Output, Session};

/// How many hosts of a role go at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Hosts(usize),
    /// A share of the role's hosts, at least one.
    Percent(u32),
}

impl Batch {
    pub fn size(self, hosts: usize) -> usize {
        match self {
            Batch::Hosts(n) => n.max(1),
            Batch::Percent(p) => (hosts * p as usize).div_ceil(100).max(1),
        }
    }
}

/// A balancer agent does not run on a host (EC2's ALB), driven by whoever made it: for each
/// of `roles`, `shift(Out | Back, role, host names)` takes those hosts out (and waits for
/// them to drain) or puts them back (and waits until the balancer sees them healthy).
pub struct External {
    pub roles: Vec<String>,
    pub shift: ShiftFn,
}

/// `External::shift`: (what, role, host names) → done or why not.
pub type ShiftFn = Box<dyn FnMut(Shift, String, Vec<String>) -> BoxFuture<'static, Result<(), String>> + Send>;

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    Out,
    Back,
}

/// The balancer a rollout drains through.
enum Gate {
    Haproxy(Haproxy),
    External(External),
}

impl Gate {
    fn routes(&self, balanced: &[String], role: &str) -> bool {
        match self {
            Gate::Haproxy(_) => balanced.iter().any(|r| r == role),
            Gate::External(e) => e.roles.iter().any(|r| r == role),
        }
    }

    async fn take_out(&mut self, role: &str, hosts: &[&str]) -> Result<(), String> {
        match self {
            Gate::Haproxy(h) => h.take_out(role, hosts).await,
            Gate::External(e) => {
                (e.shift)(
                    Shift::Out,
                    role.to_owned(),
                    hosts.iter().map(|h| (*h).to_owned()).collect(),
                )
                .await
            }
        }
    }

    async fn put_back(&mut self, role: &str, hosts: &[&str]) -> Result<(), String> {
        match self {
            Gate::Haproxy(h) => h.put_back(role, hosts).await,
            Gate::External(e) => {
                (e.shift)(
                    Shift::Back,
                    role.to_owned(),
                    hosts.iter().map(|h| (*h).to_owned()).collect(),
                )
                .await
            }
        }
    }
}

/// How long a server taken out may take to finish its requests, and one put back to be
/// seen up by the balancer's own checks.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
const UP_LIMIT: Duration = Duration::from_secs(30);

pub(super) async fn run(
    plan: Plan,
    targets: Vec<Target>,
    batch: Batch,
    external: Option<External>,
    shared: &Shared,
    tx: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
) {
    let balanced = plan.balanced;
    let hosts: Vec<(HostId, HostPlan, Target)> = plan
        .hosts
        .into_iter()
        .zip(targets)
        .enumerate()
        .map(|(id, (p, t))| (id, p, t))
        .collect();
    // The balancer host goes first; a rollout it cannot drain through does not start (the
    // routed hosts would restart under live traffic).
    let mut stopped: Option<String> = None;
    let mut gate = None;
    for (id, p, t) in hosts.iter().filter(|(_, p, _)| p.balancer) {
        if deploy_one(*id, p, t, shared, tx, cancel).await.is_success() {
            gate = Some((*id, t.clone()));
        } else {
            stopped = Some(format!("the rollout stopped: the balancer {} failed", p.host));
        }
    }
    let mut balancer = match (external, gate) {
        (Some(e), _) => Some(Gate::External(e)),
        (None, Some((id, target))) => {
            let opened = Haproxy::open(id, &target, shared, tx, cancel).await;
            if opened.is_none() {
                stopped = Some(format!(
                    "the rollout stopped: no connection to the balancer {}",
                    target.host.name
                ));
            }
            opened.map(Gate::Haproxy)
        }
        (None, None) => None,
    };
    let mut roles: Vec<&str> = Vec::new();
    for (_, p, _) in hosts.iter().filter(|(_, p, _)| !p.balancer) {
        if !roles.contains(&p.role.as_str()) {
            roles.push(&p.role);
        }
    }
    for role in roles {
        let group: Vec<&(HostId, HostPlan, Target)> =
            hosts.iter().filter(|(_, p, _)| !p.balancer && p.role == role).collect();
        let routed = balancer.as_ref().is_some_and(|b| b.routes(&balanced, role));
        for chunk in group.chunks(batch.size(group.len())) {
            if let Some(why) = &stopped {
                for (id, _, t) in chunk {
                    not_reached(*id, t, why, shared, tx).await;
                }
                continue;
            }
            if cancel.is_cancelled() {
                return;
            }
            let names: Vec<&str> = chunk.iter().map(|(_, p, _)| p.host.as_str()).collect();
            let lb = balancer.as_mut().filter(|_| routed);
            if let Some(lb) = lb
                && let Err(e) = lb.take_out(role, &names).await
            {
                stopped = Some(format!("the balancer could not take {} out: {e}", names.join(", ")));
                for (id, _, t) in chunk {
                    not_reached(*id, t, stopped.as_deref().unwrap_or_default(), shared, tx).await;
                }
                continue;
            }
            let outcomes =
                futures::future::join_all(chunk.iter().map(|(id, p, t)| deploy_one(*id, p, t, shared, tx, cancel)))
                    .await;
            let failed: Vec<&str> = names
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| !o.is_success())
                .map(|(n, _)| *n)
                .collect();
            if !failed.is_empty() {
                // The failed hosts stay out of the balancer; the rest of the batch goes back.
                stopped = Some(format!("the rollout stopped: {} failed", failed.join(", ")));
            }
            let healthy: Vec<&str> = names.iter().copied().filter(|n| !failed.contains(n)).collect();
            if let Some(lb) = balancer.as_mut().filter(|_| routed)
                && !healthy.is_empty()
                && let Err(e) = lb.put_back(role, &healthy).await
            {
                stopped.get_or_insert(format!("the balancer did not take {} back: {e}", healthy.join(", ")));
            }
        }
    }
    if let Some(why) = &stopped
        && let Some((id, _, _)) = hosts.iter().find(|(_, p, _)| p.balancer)
    {
        let _ = tx
            .send(Event::Notice {
                host: *id,
                message: why.clone(),
            })
            .await;
    }
}

/// A host the rollout stopped before: its old version keeps serving, and the record says so.
async fn not_reached(id: HostId, target: &Target, why: &str, shared: &Shared, tx: &mpsc::Sender<Event>) {
    let reason = format!("not deployed: {why}; it still runs the version before");
    shared
        .record
        .note(&record_key(target), |h| h.result = Some(reason.clone()));
    let _ = tx
        .send(Event::Finished {
            host: id,
            outcome: Outcome::Failed {
                stage: Stage::Connecting,
                reason,
            },
            elapsed: Duration::ZERO,
        })
        .await;
}

/// The balancer host's HAProxy, driven through its runtime API over SSH.
struct Haproxy {
    session: Connection,
    output: Output,
    cancel: CancellationToken,
}

impl Haproxy {
    async fn open(
        id: HostId,
        target: &Target,
        shared: &Shared,
        tx: &mpsc::Sender<Event>,
        cancel: &CancellationToken,
    ) -> Option<Haproxy> {
        let session = connect::connect(id, target, shared.known_hosts.clone(), &shared.ssh, tx, cancel)
            .await
            .ok()?;
        Some(Haproxy {
            session,
            output: Output::new(id, tx.clone()),
            cancel: cancel.clone(),
        })
    }

    async fn admin(&mut self, commands: &[String]) -> Result<Vec<String>, String> {
        self.output.capture();
        let outcome = self
            .session
            .exec(&step::haproxy_admin(commands), &[], &mut self.output, &self.cancel)
            .await;
        let lines = self.output.take_captured();
        match outcome {
            Outcome::Exited { code: 0 } => Ok(lines),
            other => Err(describe(&other)),
        }
    }

    /// No new requests to these servers; returns once their requests in flight are done.
    async fn take_out(&mut self, backend: &str, servers: &[&str]) -> Result<(), String> {
        let set: Vec<String> = servers
            .iter()
            .map(|s| format!("set server {backend}/{s} state maint"))
            .collect();
        self.admin(&set).await?;
        self.wait(backend, servers, DRAIN_LIMIT, |status, sessions| {
            status.starts_with("MAINT") && sessions == 0
        })
        .await
    }

    /// Back in; returns once HAProxy's own checks see them up.
    async fn put_back(&mut self, backend: &str, servers: &[&str]) -> Result<(), String> {
        let set: Vec<String> = servers
            .iter()
            .map(|s| format!("set server {backend}/{s} state ready"))
            .collect();
        self.admin(&set).await?;
        self.wait(backend, servers, UP_LIMIT, |status, _| status == "UP").await
    }

    async fn wait(
        &mut self,
        backend: &str,
        servers: &[&str],
        limit: Duration,
        done: impl Fn(&str, u64) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let stat = step::parse_show_stat(&self.admin(&["show stat".to_owned()]).await?);
            let pending: Vec<String> = servers
                .iter()
                .filter_map(|s| {
                    let (status, sessions) = stat.get(&(backend.to_owned(), (*s).to_owned()))?;
                    (!done(status, *sessions)).then(|| format!("{s} {status}"))
                })
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline || self.cancel.is_cancelled() {
                return Err(format!("after {}s: {}", limit.as_secs(), pending.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_at_least_one_host() {
        assert_eq!(Batch::Hosts(1).size(9), 1);
        assert_eq!(Batch::Hosts(0).size(9), 1);
        assert_eq!(Batch::Percent(25).size(9), 3);
        assert_eq!(Batch::Percent(25).size(4), 1);
        assert_eq!(Batch::Percent(1).size(4), 1);
        assert_eq!(Batch::Percent(100).size(5), 5);
    }
}

//! Runs one command on many hosts: a task per host, a semaphore bounding how many are in
//! flight, every result sent as an [`Event`]. Nothing here prints.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, HostId, Outcome, Stage};
use crate::inventory::{Host, Transport};
use crate::script::RemoteCommand;
use crate::transport::ssh::key::ClientKey;
use crate::transport::ssh::known_hosts::KnownHosts;
use crate::transport::ssh::{SshSession, SshSettings};
use crate::transport::{Duplex, LocalSession, Output, Payload, Session};

/// A host and the key that opens it (none for local hosts).
#[derive(Debug, Clone)]
pub struct Target {
    pub host: Host,
    pub key: Option<ClientKey>,
}

/// Everything `agent exec` needs, resolved: no parsing or file reading left to do.
pub struct ExecJob {
    pub targets: Vec<Target>,
    pub command: RemoteCommand,
    /// Written to the command's stdin on every host (`agent copy`: the file).
    pub input: Vec<Payload>,
    pub parallel: usize,
    pub ssh: SshSettings,
    pub known_hosts: Arc<KnownHosts>,
}

/// Runs the job to completion or cancellation. Hosts not yet started when `cancel` fires
/// never send [`Event::Finished`]; the renderer reports them as not reached.
pub async fn run(job: ExecJob, tx: mpsc::Sender<Event>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(job.parallel.max(1)));
    let work = Arc::new(Work {
        command: job.command,
        input: job.input,
        ssh: job.ssh,
    });
    let mut tasks = JoinSet::new();
    for (id, target) in job.targets.into_iter().enumerate() {
        let (permits, work, known_hosts) = (permits.clone(), work.clone(), job.known_hosts.clone());
        let (tx, cancel) = (tx.clone(), cancel.clone());
        tasks.spawn(async move {
            let _permit = tokio::select! {
                p = permits.acquire_owned() => p.expect("semaphore is never closed"),
                _ = cancel.cancelled() => return,
            };
            let started = Instant::now();
            let outcome = on_host(id, &target, &work, known_hosts, &tx, &cancel).await;
            let _ = tx
                .send(Event::Finished {
                    host: id,
                    outcome,
                    elapsed: started.elapsed(),
                })
                .await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// What every host runs, shared by the host tasks.
struct Work {
    command: RemoteCommand,
    input: Vec<Payload>,
    ssh: SshSettings,
}

async fn on_host(
    id: HostId,
    target: &Target,
    work: &Work,
    known_hosts: Arc<KnownHosts>,
    tx: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
) -> Outcome {
    let mut output = Output::new(id, tx.clone());
    match connect(id, target, known_hosts, &work.ssh, tx, cancel).await {
        Ok(session) => {
            let _ = tx
                .send(Event::Stage {
                    host: id,
                    stage: Stage::Running,
                })
                .await;
            run_in(session, &work.command, &work.input, &mut output, cancel).await
        }
        Err(outcome) => outcome,
    }
}

/// A line to one host, whichever its transport.
pub enum Connection {
    Local(LocalSession),
    Ssh(SshSession),
}

impl Connection {
    /// SHA256 fingerprint of the host key this connection verified (none for local hosts).
    pub fn host_key_fingerprint(&self) -> Option<String> {
        match self {
            Connection::Local(_) => None,
            Connection::Ssh(s) => s.host_key_fingerprint(),
        }
    }
}

impl Session for Connection {
    async fn exec(
        &mut self,
        command: &RemoteCommand,
        input: &[Payload],
        output: &mut Output,
        cancel: &CancellationToken,
    ) -> Outcome {
        match self {
            Connection::Local(s) => s.exec(command, input, output, cancel).await,
            Connection::Ssh(s) => s.exec(command, input, output, cancel).await,
        }
    }

    async fn connect_port(&mut self, port: u16) -> std::io::Result<Box<dyn Duplex>> {
        match self {
            Connection::Local(s) => s.connect_port(port).await,
            Connection::Ssh(s) => s.connect_port(port).await,
        }
    }

    fn is_alive(&self) -> bool {
        match self {
            Connection::Local(s) => s.is_alive(),
            Connection::Ssh(s) => s.is_alive(),
        }
    }

    async fn close(self) {
        match self {
            Connection::Local(s) => s.close().await,
            Connection::Ssh(s) => s.close().await,
        }
    }
}

/// Opens the line to `target` (retrying a host that is still booting, checking its key),
/// reporting [`Stage::Connecting`] and notices (a pinned key, a retry) as events. Fails with
/// the host's outcome: unreachable, or interrupted by `cancel`.
pub async fn connect(
    id: HostId,
    target: &Target,
    known_hosts: Arc<KnownHosts>,
    ssh: &SshSettings,
    tx: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
) -> Result<Connection, Outcome> {
    let key = match (&target.host.transport, &target.key) {
        (Transport::Local, _) => return Ok(Connection::Local(LocalSession)),
        (Transport::Ssh, Some(key)) => key,
        (Transport::Ssh, None) => {
            return Err(Outcome::Unreachable {
                reason: "no key for this host: pass --key".into(),
            });
        }
    };
    let _ = tx
        .send(Event::Stage {
            host: id,
            stage: Stage::Connecting,
        })
        .await;
    // Notices are rare (a pinned key, a retry); never block the connect on them.
    let notify = |message: String| {
        let _ = tx.try_send(Event::Notice { host: id, message });
    };
    match SshSession::connect(&target.host, key, known_hosts, ssh, &notify, cancel).await {
        Ok(session) => Ok(Connection::Ssh(session)),
        Err(_) if cancel.is_cancelled() => Err(Outcome::Interrupted),
        Err(e) => Err(Outcome::Unreachable { reason: e.to_string() }),
    }
}

async fn run_in(
    mut session: impl Session,
    command: &RemoteCommand,
    input: &[Payload],
    output: &mut Output,
    cancel: &CancellationToken,
) -> Outcome {
    let outcome = session.exec(command, input, output, cancel).await;
    session.close().await;
    outcome
}

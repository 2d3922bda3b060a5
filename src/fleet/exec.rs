//! Runs one command on many hosts: a task per host, a semaphore bounding how many are in
//! flight, every result sent as an [`Event`]. Nothing here prints.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, HostId, Outcome, Stage};
use crate::script::RemoteCommand;
use crate::transport::connect::{Target, connect};
use crate::transport::ssh::SshSettings;
use crate::transport::ssh::known_hosts::KnownHosts;
use crate::transport::{Output, Payload, Session};

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

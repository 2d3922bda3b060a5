//! Runs a [`Plan`] on its hosts: per host one pipeline of bounded steps (connect → inspect →
//! cloud-init → packages → files → services → health), hosts in parallel under a semaphore.
//! Every step ends in an [`Event::Step`]; every host in an [`Event::Finished`]. The record is
//! saved before each step acts and after it ends. Nothing here prints.

use crate::event;
use crate::record;
use crate::transport::connect;
use crate::transport::ssh::known_hosts;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, HostId, Outcome, Stage, StepStatus};
use crate::fleet::artifact::{Blob, sha256_hex};
use crate::inventory::Init;
use crate::plan::{HealthCheck, HostPlan, Plan, Source};
use crate::record::RecordStore;
use crate::script::RemoteCommand;
use crate::script::step::{self, Facts, ServiceActions, Upload};
use crate::transport::connect::{Connection, Target};
use crate::transport::ssh::SshSettings;
use crate::transport::ssh::known_hosts::KnownHosts;
use crate::transport::{Output, Payload, Session};

/// Everything `agent deploy` needs, resolved and built: no parsing or compiling left to do.
pub struct DeployJob {
    pub plan: Plan,
    /// One per plan host, in the same order.
    pub targets: Vec<Target>,
    /// The remote programs' binaries, by name.
    pub programs: BTreeMap<String, Blob>,
    pub parallel: usize,
    pub ssh: SshSettings,
    pub known_hosts: Arc<KnownHosts>,
    pub record: Arc<RecordStore>,
    /// How long each health check may take to pass.
    pub health_timeout: Duration,
    /// Roll out in batches instead of all at once.
    pub rolling: Option<super::rollout::Batch>,
    /// With `rolling`: the balancer agent does not run on a host (EC2's ALB).
    pub external: Option<super::rollout::External>,
}

/// Runs the deployment to completion or cancellation: every host at once (bounded by
/// `parallel`), the balancer last; or, with `rolling`, in batches (see [`super::rollout`]).
pub async fn run(job: DeployJob, tx: mpsc::Sender<Event>, cancel: CancellationToken) {
    assert_eq!(job.plan.hosts.len(), job.targets.len(), "one target per planned host");
    let permits = Arc::new(Semaphore::new(job.parallel.max(1)));
    let shared = Arc::new(Shared {
        programs: job.programs,
        ssh: job.ssh,
        known_hosts: job.known_hosts,
        record: job.record,
        health_timeout: job.health_timeout,
    });
    if let Some(batch) = job.rolling {
        super::rollout::run(job.plan, job.targets, batch, job.external, &shared, &tx, &cancel).await;
        return;
    }
    // Balancers wait until every other host is done (`backends` counts those left).
    let others = job.plan.hosts.iter().filter(|h| !h.balancer).count();
    let (backend_done, backends) = tokio::sync::watch::channel(others);
    let backend_done = Arc::new(backend_done);
    let mut tasks = JoinSet::new();
    for (id, (plan, target)) in job.plan.hosts.into_iter().zip(job.targets).enumerate() {
        let (permits, shared, tx, cancel) = (permits.clone(), shared.clone(), tx.clone(), cancel.clone());
        let (backend_done, mut backends) = (backend_done.clone(), backends.clone());
        tasks.spawn(async move {
            if plan.balancer {
                tokio::select! {
                    _ = backends.wait_for(|left| *left == 0) => {}
                    _ = cancel.cancelled() => return,
                }
            }
            // However this host ends, the balancer stops waiting for it.
            let _done = (!plan.balancer).then(|| Decrement(backend_done));
            let _permit = tokio::select! {
                p = permits.acquire_owned() => p.expect("semaphore is never closed"),
                _ = cancel.cancelled() => return,
            };
            deploy_one(id, &plan, &target, &shared, &tx, &cancel).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One host's pipeline, start to end: its `Finished` event sent and its result recorded.
pub(super) async fn deploy_one(
    id: HostId,
    plan: &HostPlan,
    target: &Target,
    shared: &Shared,
    tx: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
) -> Outcome {
    let started = Instant::now();
    let key = record_key(target);
    let mut host = HostRun {
        id,
        plan,
        shared,
        output: Output::new(id, tx.clone()),
        tx,
        cancel,
        key: &key,
    };
    let outcome = host.deploy(target).await;
    let result = event::describe(&outcome);
    shared.record.note(&key, |h| h.result = Some(result));
    let _ = tx
        .send(Event::Finished {
            host: id,
            outcome: outcome.clone(),
            elapsed: started.elapsed(),
        })
        .await;
    outcome
}

struct Decrement(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.send_modify(|left| *left -= 1);
    }
}

pub(super) fn record_key(t: &Target) -> String {
    format!("{}@{}:{}", t.host.user, t.host.address, t.host.port)
}

pub(super) struct Shared {
    programs: BTreeMap<String, Blob>,
    pub(super) ssh: SshSettings,
    pub(super) known_hosts: Arc<KnownHosts>,
    pub(super) record: Arc<RecordStore>,
    health_timeout: Duration,
}

/// One host's pipeline.
struct HostRun<'a> {
    id: HostId,
    plan: &'a HostPlan,
    shared: &'a Shared,
    output: Output,
    tx: &'a mpsc::Sender<Event>,
    cancel: &'a CancellationToken,
    key: &'a str,
}

/// A step that stops the pipeline ends the host with this outcome.
type StepResult<T> = Result<T, Outcome>;

impl HostRun<'_> {
    async fn deploy(&mut self, target: &Target) -> Outcome {
        let started = Instant::now();
        let known_hosts = self.shared.known_hosts.clone();
        let connected = connect::connect(self.id, target, known_hosts, &self.shared.ssh, self.tx, self.cancel).await;
        let session = match connected {
            Ok(session) => session,
            Err(outcome) => {
                if matches!(outcome, Outcome::Unreachable { .. }) {
                    self.step(Stage::Connecting, StepStatus::Failed, String::new(), started)
                        .await;
                }
                return outcome;
            }
        };
        let (status, detail) = match &session {
            Connection::Ssh(_) => (
                StepStatus::Unchanged,
                format!("ssh {}@{}", target.host.user, target.host.address),
            ),
            Connection::Local(_) => (StepStatus::Skipped, "this machine".to_owned()),
        };
        self.shared.record.note(self.key, |h| {
            h.name = target.host.name.clone();
            h.role = target.host.role.clone().unwrap_or_default();
            h.host_key = session.host_key_fingerprint();
        });
        self.step(Stage::Connecting, status, detail, started).await;
        self.pipeline(session).await
    }

    async fn pipeline(&mut self, mut session: impl Session) -> Outcome {
        // A failed step has already recorded itself (see `step`).
        let outcome = match self.steps(&mut session).await {
            Ok(()) => Outcome::Deployed,
            Err(outcome) => outcome,
        };
        session.close().await;
        outcome
    }

    async fn steps(&mut self, session: &mut impl Session) -> StepResult<()> {
        let mut facts = self.inspect(session).await?;
        self.ready(session, &facts).await?;
        self.host_key(session).await?;
        if self.packages(session, &facts).await? {
            // A package may start its own service (haproxy's does, on its default config):
            // what runs now decides between start and restart.
            facts.services = self.services_now(session, Stage::Packages).await?;
        }
        let changed = self.files(session, &facts).await?;
        self.setup(session).await?;
        self.services(session, &facts, &changed).await?;
        self.health(session, &facts).await
    }

    async fn inspect(&mut self, session: &mut impl Session) -> StepResult<Facts> {
        let started = self.stage(Stage::Inspect).await;
        let (outcome, lines) = self.captured(session, &step::inspect(self.plan)).await;
        // The script itself cannot fail; exit 1 is sudo refusing to run it without a password.
        if let Outcome::Exited { code: 1 } = outcome {
            let reason = "the inspect script failed: does the login user have passwordless sudo?";
            return Err(self.fail(Stage::Inspect, reason.into(), started).await);
        }
        self.check(Stage::Inspect, outcome, started).await?;
        let facts = match step::parse_facts(&lines) {
            Ok(f) => f,
            Err(e) => return Err(self.fail(Stage::Inspect, e.to_string(), started).await),
        };
        self.shared.record.note(self.key, |h| h.init = Some(facts.init));
        let detail = match facts.init {
            Init::Systemd => "systemd runs the services".to_owned(),
            Init::Supervisor => "no systemd: agent supervises the services".to_owned(),
        };
        self.step(Stage::Inspect, StepStatus::Unchanged, detail, started).await;
        Ok(facts)
    }

    /// The planned services' state once more, within `stage`, after a step changed the host
    /// (files are not hashed again: one a package put at a planned path is uploaded anyway,
    /// since the facts had no checksum for it).
    async fn services_now(
        &mut self,
        session: &mut impl Session,
        stage: Stage,
    ) -> StepResult<BTreeMap<String, step::ServiceState>> {
        let started = Instant::now();
        let services_only = HostPlan {
            packages: Vec::new(),
            files: Vec::new(),
            ..self.plan.clone()
        };
        let (outcome, lines) = self.captured(session, &step::inspect(&services_only)).await;
        self.check(stage, outcome, started).await?;
        match step::parse_facts(&lines) {
            Ok(f) => Ok(f.services),
            Err(e) => Err(self.fail(stage, e.to_string(), started).await),
        }
    }

    /// Runs `command` with its stdout kept instead of shown (stderr still streams).
    async fn captured(&mut self, session: &mut impl Session, command: &RemoteCommand) -> (Outcome, Vec<String>) {
        self.output.capture();
        let outcome = session.exec(command, &[], &mut self.output, self.cancel).await;
        (outcome, self.output.take_captured())
    }

    async fn ready(&mut self, session: &mut impl Session, facts: &Facts) -> StepResult<()> {
        let started = self.stage(Stage::Ready).await;
        if !facts.cloud_init {
            self.step(Stage::Ready, StepStatus::Skipped, "no cloud-init".into(), started)
                .await;
            return Ok(());
        }
        let (outcome, lines) = self.captured(session, &step::ready()).await;
        self.check(Stage::Ready, outcome, started).await?;
        let (status, detail) = match step::parse_ready(&lines) {
            step::CloudInit::Done => (StepStatus::Unchanged, "cloud-init done".to_owned()),
            step::CloudInit::NotRun(how) => (
                StepStatus::Skipped,
                format!("cloud-init is installed but {how} here: nothing to wait for"),
            ),
            // The host answers SSH, so it is usable; the operator should still know.
            step::CloudInit::Errors { status, detail } => {
                let detail = if detail.is_empty() {
                    format!("cloud-init ended with status '{status}'")
                } else {
                    format!("cloud-init ended with status '{status}': {detail}")
                };
                self.output.notice(format!("warning: {detail}")).await;
                (StepStatus::Unchanged, detail)
            }
        };
        self.step(Stage::Ready, status, detail, started).await;
        Ok(())
    }

    /// EC2: the host key the instance's user data carries gives way to one made on the host,
    /// over this connection (whose key was verified). The new key is pinned beside the old
    /// before sshd uses it, and alone after: a run stopped in between still connects.
    async fn host_key(&mut self, session: &mut impl Session) -> StepResult<()> {
        let Some(pin) = self.plan.host_key.clone() else {
            return Ok(());
        };
        let started = self.stage(Stage::HostKey).await;
        let (outcome, lines) = self.captured(session, &step::host_key_renew()).await;
        self.check(Stage::HostKey, outcome, started).await?;
        let known = self.shared.known_hosts.clone();
        let (line, renewed) = match step::parse_host_key(&lines) {
            Some(step::HostKeyAnswer::New(line)) => (line, true),
            Some(step::HostKeyAnswer::Kept(line)) => (line, false),
            None => {
                let reason = "the host key check printed nothing (is ssh-keygen installed?)".to_owned();
                return Err(self.fail(Stage::HostKey, reason, started).await);
            }
        };
        let key = match russh::keys::PublicKey::from_openssh(&line) {
            Ok(k) => k,
            Err(e) => {
                let reason = format!("the host printed a host key agent cannot read ({e}): {line:?}");
                return Err(self.fail(Stage::HostKey, reason, started).await);
            }
        };
        let fingerprint = known_hosts::fingerprint(&key);
        let only = [(pin.pattern.clone(), vec![key.clone()], pin.label.clone())];
        if !renewed {
            // The pin becomes exactly the key this connection verified, which the user data
            // does not know: after a rotation stopped past the swap both keys are on file,
            // and a key trusted at first use has no label yet.
            let verified = self.shared.record.host(self.key).host_key;
            let on_file = known.labelled(&pin.label).unwrap_or_default();
            let exact = on_file.len() == 1 && on_file[0].key_data() == key.key_data();
            if verified.as_deref() == Some(fingerprint.as_str())
                && !exact
                && let Err(e) = known.pin(&only)
            {
                return Err(self.fail(Stage::HostKey, e.to_string(), started).await);
            }
            let detail = format!("{fingerprint}, made on the host");
            self.step(Stage::HostKey, StepStatus::Unchanged, detail, started).await;
            return Ok(());
        }
        if let Err(e) = known.add(&pin.pattern, &key, &pin.label) {
            return Err(self.fail(Stage::HostKey, e.to_string(), started).await);
        }
        self.run(Stage::HostKey, session, &step::host_key_install(), &[], started)
            .await?;
        if let Err(e) = known.pin(&only) {
            return Err(self.fail(Stage::HostKey, e.to_string(), started).await);
        }
        let detail = format!("replaced the user data's key with {fingerprint}");
        self.step(Stage::HostKey, StepStatus::Changed, detail, started).await;
        Ok(())
    }

    /// Installs the missing packages; says whether it installed any.
    async fn packages(&mut self, session: &mut impl Session, facts: &Facts) -> StepResult<bool> {
        let started = self.stage(Stage::Packages).await;
        if self.plan.packages.is_empty() {
            self.step(Stage::Packages, StepStatus::Skipped, String::new(), started)
                .await;
            return Ok(false);
        }
        if facts.missing_packages.is_empty() {
            let detail = format!("{} already installed", self.plan.packages.join(", "));
            self.step(Stage::Packages, StepStatus::Unchanged, detail, started).await;
            return Ok(false);
        }
        let missing = facts.missing_packages.join(", ");
        if !facts.apt {
            let reason = format!("{missing} missing, and this host has no apt-get: install it by hand");
            return Err(self.fail(Stage::Packages, reason, started).await);
        }
        let (outcome, lines) = self.captured(session, &step::apt_update()).await;
        if let Outcome::Exited { code: 100 } = outcome {
            let reason = step::parse_update_failure(&lines);
            return Err(self.fail(Stage::Packages, reason, started).await);
        }
        self.check(Stage::Packages, outcome, started).await?;
        self.run(
            Stage::Packages,
            session,
            &step::install_packages(&facts.missing_packages),
            &[],
            started,
        )
        .await?;
        self.step(
            Stage::Packages,
            StepStatus::Changed,
            format!("installed {missing}"),
            started,
        )
        .await;
        Ok(true)
    }

    /// Uploads the files whose checksum differs on the host; returns their plans' indexes.
    async fn files(&mut self, session: &mut impl Session, facts: &Facts) -> StepResult<Vec<usize>> {
        let started = self.stage(Stage::Files).await;
        let mut uploads = Vec::new();
        let mut input: Vec<Payload> = Vec::new();
        let mut changed = Vec::new();
        let mut sums = BTreeMap::new();
        for (i, f) in self.plan.files.iter().enumerate() {
            let (bytes, sha) = match &f.source {
                Source::Text(t) => {
                    let b = Bytes::from(t.clone());
                    let sha = sha256_hex(&b);
                    (b, sha)
                }
                Source::Program(p) => {
                    let blob = &self.shared.programs[*p];
                    (blob.bytes.clone(), blob.sha256.clone())
                }
                Source::Local(p) => {
                    let blob = &self.shared.programs[p.as_str()];
                    (blob.bytes.clone(), blob.sha256.clone())
                }
            };
            sums.insert(f.path.clone(), sha.clone());
            if facts.checksums.get(&f.path) == Some(&sha) {
                continue;
            }
            uploads.push(Upload {
                path: f.path.clone(),
                mode: f.mode,
                size: bytes.len() as u64,
                validate: f.validate.clone(),
            });
            input.push(Payload::Bytes(bytes));
            changed.push(i);
        }
        if uploads.is_empty() {
            self.shared.record.note(self.key, |h| h.files = sums);
            let detail = format!("{} files up to date", self.plan.files.len());
            self.step(Stage::Files, StepStatus::Unchanged, detail, started).await;
            return Ok(changed);
        }
        // Before acting: these services owe a restart until the services step has run, even
        // if this run stops right after the upload.
        let owed: BTreeSet<String> = changed
            .iter()
            .flat_map(|&i| self.plan.files[i].restarts.iter().cloned())
            .collect();
        self.commit(Stage::Files, |h| h.pending_restart.extend(owed)).await?;
        let total: u64 = uploads.iter().map(|u| u.size).sum();
        // Generous for slow links: two minutes plus a second per MB.
        let limit = Duration::from_secs(120 + total / 1_000_000);
        self.run(
            Stage::Files,
            session,
            &step::upload(&uploads, limit, true),
            &input,
            started,
        )
        .await?;
        self.shared.record.note(self.key, |h| h.files = sums);
        let detail = format!(
            "uploaded {} of {} files, {}",
            uploads.len(),
            self.plan.files.len(),
            size(total)
        );
        self.step(Stage::Files, StepStatus::Changed, detail, started).await;
        Ok(changed)
    }

    /// Runs the setup commands in order. Each is idempotent and says what it did on stdout.
    async fn setup(&mut self, session: &mut impl Session) -> StepResult<()> {
        let started = self.stage(Stage::Setup).await;
        if self.plan.setup.is_empty() {
            self.step(Stage::Setup, StepStatus::Skipped, String::new(), started)
                .await;
            return Ok(());
        }
        let mut said = Vec::new();
        let mut changed = false;
        for s in &self.plan.setup {
            let (outcome, lines) = self.captured(session, &step::setup(s)).await;
            let done = lines.iter().any(|l| l.starts_with(agent_protocol::CHANGED));
            if done {
                // As for uploaded files: owed until the services step has restarted them.
                let owed = s.restarts.clone();
                self.commit(Stage::Setup, |h| h.pending_restart.extend(owed)).await?;
            }
            changed |= done;
            said.extend(lines);
            self.check(Stage::Setup, outcome, started).await?;
        }
        let detail: Vec<&str> = said
            .iter()
            .map(|l| l.trim_start_matches(agent_protocol::CHANGED))
            .collect();
        let status = if changed {
            StepStatus::Changed
        } else {
            StepStatus::Unchanged
        };
        self.step(Stage::Setup, status, detail.join("; "), started).await;
        Ok(())
    }

    async fn services(&mut self, session: &mut impl Session, facts: &Facts, changed: &[usize]) -> StepResult<()> {
        let started = self.stage(Stage::Services).await;
        let units_changed = changed
            .iter()
            .any(|&i| self.plan.files[i].path.starts_with("/etc/systemd/system/"));
        let owed = self.shared.record.host(self.key).pending_restart;
        let actions = ServiceActions::decide(&self.plan.services, facts, units_changed, &owed);
        if actions.is_noop() {
            self.step(Stage::Services, StepStatus::Unchanged, actions.summary(), started)
                .await;
            return Ok(());
        }
        let cmd = step::services(facts.init, &actions, &self.plan.services);
        let outcome = session.exec(&cmd, &[], &mut self.output, self.cancel).await;
        if let Outcome::Exited { code: 1 } = outcome
            && facts.init == Init::Systemd
        {
            // The script printed the journal; systemd says best why a unit did not stay up.
            for unit in &actions.check {
                if let Some(failing) = self.unit_failure(session, unit).await {
                    return Err(self.fail(Stage::Services, failing, started).await);
                }
            }
        }
        self.check(Stage::Services, outcome, started).await?;
        // Not waited for: if it is lost, the next run merely restarts these once more.
        self.shared.record.note(self.key, |h| h.pending_restart.clear());
        self.step(Stage::Services, StepStatus::Changed, actions.summary(), started)
            .await;
        Ok(())
    }

    async fn health(&mut self, session: &mut impl Session, facts: &Facts) -> StepResult<()> {
        let started = self.stage(Stage::Health).await;
        if self.plan.health.is_empty() {
            self.step(Stage::Health, StepStatus::Skipped, String::new(), started)
                .await;
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.shared.health_timeout;
        for check in &self.plan.health {
            if let Err(reason) = self.poll(session, check, facts.init, deadline).await {
                if self.cancel.is_cancelled() {
                    return Err(Outcome::Interrupted);
                }
                if !session.is_alive() {
                    let reason = "connection lost during the health check".to_owned();
                    self.step(Stage::Health, StepStatus::Failed, reason.clone(), started)
                        .await;
                    return Err(Outcome::Unreachable { reason });
                }
                let logs = step::logs(facts.init, &check.service);
                let _ = session.exec(&logs, &[], &mut self.output, self.cancel).await;
                return Err(self.fail(Stage::Health, reason, started).await);
            }
        }
        let detail = self
            .plan
            .health
            .iter()
            .map(|c| format!(":{}{} {}", c.port, c.path, c.status))
            .collect::<Vec<_>>()
            .join(", ");
        self.step(Stage::Health, StepStatus::Unchanged, detail, started).await;
        Ok(())
    }

    /// Asks `check` until it answers as expected, `deadline` passes, or (under systemd) its
    /// service is seen failing; the error says why, with what the last attempt got.
    async fn poll(
        &mut self,
        session: &mut impl Session,
        check: &HealthCheck,
        init: Init,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        // Asked at most once a second, and only while the check does not pass.
        let mut ask_systemd = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let attempt = tokio::time::timeout(Duration::from_secs(2), get(session, check)).await;
            let last = match attempt {
                Ok(Ok(status)) if status == check.status => return Ok(()),
                Ok(Ok(status)) => format!("answered {status}, not {}", check.status),
                Ok(Err(e)) => format!("failed: {e}"),
                Err(_) => "got no answer within 2s".to_owned(),
            };
            let now = tokio::time::Instant::now();
            if init == Init::Systemd && now >= ask_systemd {
                ask_systemd = now + Duration::from_secs(1);
                if let Some(failing) = self.unit_failure(session, &check.service).await {
                    return Err(format!("{failing}; GET {} on port {} {last}", check.path, check.port));
                }
            }
            if !session.is_alive() || now + Duration::from_millis(200) >= deadline {
                return Err(format!(
                    "GET {} on port {} {last} after {:.0?}",
                    check.path, check.port, self.shared.health_timeout
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.cancel.cancelled() => return Err("interrupted".into()),
            }
        }
    }

    /// Why systemd says `unit` is failing, if it does.
    async fn unit_failure(&mut self, session: &mut impl Session, unit: &str) -> Option<String> {
        let (outcome, lines) = self.captured(session, &step::unit_state(unit)).await;
        if !outcome.is_success() {
            return None;
        }
        step::unit_failure(unit, &lines)
    }

    /// Runs a command whose output streams to the operator; anything but exit 0 fails the step.
    async fn run(
        &mut self,
        stage: Stage,
        session: &mut impl Session,
        command: &RemoteCommand,
        input: &[Payload],
        started: Instant,
    ) -> StepResult<()> {
        let outcome = session.exec(command, input, &mut self.output, self.cancel).await;
        self.check(stage, outcome, started).await
    }

    async fn check(&mut self, stage: Stage, outcome: Outcome, started: Instant) -> StepResult<()> {
        match outcome {
            o if o.is_success() => Ok(()),
            Outcome::Interrupted => Err(Outcome::Interrupted),
            Outcome::Unreachable { reason } => {
                self.step(stage, StepStatus::Failed, reason.clone(), started).await;
                Err(Outcome::Unreachable { reason })
            }
            other => {
                let reason = other.command_failure().unwrap_or_else(|| event::describe(&other));
                Err(self.fail(stage, reason, started).await)
            }
        }
    }

    async fn fail(&mut self, stage: Stage, reason: String, started: Instant) -> Outcome {
        self.step(stage, StepStatus::Failed, reason.clone(), started).await;
        Outcome::Failed { stage, reason }
    }

    async fn stage(&self, stage: Stage) -> Instant {
        let _ = self.tx.send(Event::Stage { host: self.id, stage }).await;
        Instant::now()
    }

    async fn step(&self, stage: Stage, status: StepStatus, detail: String, started: Instant) {
        self.shared.record.note(self.key, |h| {
            h.steps.insert(stage.name().into(), status.name().into());
        });
        let _ = self
            .tx
            .send(Event::Step {
                host: self.id,
                stage,
                status,
                detail,
                elapsed: started.elapsed(),
            })
            .await;
    }

    /// Saves a change to this host's record before going on; a record that cannot be saved
    /// stops the host, since the next run would not know what this one did.
    async fn commit(&self, stage: Stage, change: impl FnOnce(&mut record::HostRecord)) -> StepResult<()> {
        self.shared
            .record
            .commit(self.key, change)
            .await
            .map_err(|e| Outcome::Failed {
                stage,
                reason: format!(
                    "cannot save the deployment record {}: {e}",
                    self.shared.record.path().display()
                ),
            })
    }
}

async fn get(session: &mut impl Session, check: &HealthCheck) -> std::io::Result<u16> {
    let mut stream = session.connect_port(check.port).await?;
    stream
        .write_all(step::health_request(&check.path, check.port).as_bytes())
        .await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    step::http_status(&head).ok_or_else(|| std::io::Error::other("the answer is not HTTP"))
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

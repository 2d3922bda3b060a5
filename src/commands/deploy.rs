//! `agent deploy`: onto an inventory's hosts over SSH, or (without `-i`) onto EC2: launch
//! the spec's instances and load balancer ([`crate::aws`]), pin the host keys agent
//! generated for them, run the same deploy over SSH, then wait for the load balancer's
//! targets.

use crate::aws;
use crate::transport::ssh::key;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::OutputSettings;
use crate::aws::launch::{self, Launched};
use crate::aws::{Aws, Interrupted, Progress, alb};
use crate::exit;
use crate::fleet::artifact::{self, ProgramSource};
use crate::fleet::deploy as pipeline;
use crate::fleet::rollout::{Batch, External, Shift};
use crate::inventory::{Host, Transport};
use crate::plan::{self, Plan};
use crate::printer::{self, hosts::Renderer};
use crate::record::{Access, RecordStore};
use crate::spec::Spec;
use crate::transport::connect::Target;
use crate::transport::ssh::SshSettings;
use crate::transport::ssh::known_hosts::KnownHosts;

pub struct DeploySettings {
    /// The hosts to act on (the plan may have been narrowed by --host/--role).
    pub plan: Plan,
    /// One per plan host, same order.
    pub targets: Vec<Target>,
    pub parallel: usize,
    pub ssh: SshSettings,
    pub known_hosts: Arc<KnownHosts>,
    pub health_timeout: Duration,
    pub output: OutputSettings,
    /// Printed after the summary (the load balancer's address).
    pub footer: Vec<String>,
    /// What the record keeps to reach these hosts again by the deployment's name.
    pub access: Access,
    /// Roll out in batches (`--rolling`) instead of all at once.
    pub rolling: Option<Batch>,
    /// On EC2, with `rolling`: the ALB the batches leave and rejoin.
    pub external: Option<External>,
}

pub struct CloudDeploySettings {
    pub launch: launch::LaunchSettings,
    pub region: Option<String>,
    /// Opens the instances (`--key`); its public half is the imported key pair.
    pub key: key::ClientKey,
    pub user: String,
    pub trust_first_use: bool,
    pub record: PathBuf,
    pub known_hosts: PathBuf,
    pub parallel: usize,
    pub ssh: SshSettings,
    pub programs: ProgramSource,
    /// The spec as the user named it (a built-in or a file), for the record.
    pub spec: String,
    pub rolling: Option<Batch>,
    /// Where the workers get their model.
    pub model: plan::ModelSource,
    pub health_timeout: Duration,
    pub output: OutputSettings,
}

/// Onto an inventory: the programs are built and the record opened before any host is
/// touched.
pub async fn on_inventory(
    deploy: DeploySettings,
    record: &Path,
    programs: &ProgramSource,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let mut blobs = artifact::programs(&deploy.plan.programs(), programs)?;
    blobs.extend(artifact::local_files(&deploy.plan.local_files())?);
    let record = Arc::new(RecordStore::open(
        record,
        &deploy.plan.deployment,
        deploy.known_hosts.path(),
    )?);
    deploy_hosts(deploy, blobs, record, cancel).await
}

/// Deploys onto resolved hosts. The caller has built the programs and opened the record
/// (local work first: a program that does not build, or a record that cannot be written,
/// stops before any host is touched).
async fn deploy_hosts(
    s: DeploySettings,
    programs: std::collections::BTreeMap<String, artifact::Blob>,
    record: Arc<RecordStore>,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    record.remember(s.access.clone());
    let hosts = s.targets.iter().map(|t| t.host.clone()).collect();
    let renderer = Renderer::new(s.output.mode, hosts, s.output.title, s.output.log_dir)
        .per_host_lines()
        .footer(s.footer);
    let printer = renderer.start();
    let job = pipeline::DeployJob {
        plan: s.plan,
        targets: s.targets,
        programs,
        parallel: s.parallel,
        ssh: s.ssh,
        known_hosts: s.known_hosts,
        record: record.clone(),
        health_timeout: s.health_timeout,
        rolling: s.rolling,
        external: s.external,
    };
    pipeline::run(job, printer.tx.clone(), cancel.clone()).await;
    let report = printer.finish().await?;
    record
        .flush()
        .await
        .with_context(|| format!("cannot write deployment record {}", record.path().display()))?;
    Ok(exit::of_hosts(&report.tally(), cancel.is_cancelled()))
}

/// Onto EC2: launch (or find) the instances and the load balancer, then deploy over SSH.
pub async fn on_ec2(s: CloudDeploySettings, cancel: CancellationToken) -> anyhow::Result<u8> {
    let deployment = s.launch.deployment.clone();
    let spec = s.launch.spec.clone();
    // On EC2 the load balancer is an ALB, not a host running HAProxy.
    let mut on_hosts = spec.clone();
    on_hosts.balancer = None;
    on_hosts.name = deployment.clone();

    // Region and credentials first: they are read locally (nothing is created) and, when
    // missing, say so at once instead of after minutes of building.
    let aws = Aws::connect(s.region.as_deref()).await?;
    // Then local work: programs that do not build stop the deploy before anything is created.
    let mut names: Vec<&str> = spec.roles.values().map(|r| plan::binary(r.program)).collect();
    names.sort();
    names.dedup();
    let mut programs = artifact::programs(&names, &s.programs)?;
    if let plan::ModelSource::Upload(paths) = &s.model {
        programs.extend(artifact::local_files(
            &paths.iter().map(String::as_str).collect::<Vec<_>>(),
        )?);
    }
    let record = Arc::new(RecordStore::open(&s.record, &deployment, &s.known_hosts)?);
    let known_hosts = Arc::new(KnownHosts::new(s.known_hosts.clone(), []));

    let printer = printer::cloud::start(s.output.mode);
    let progress = Progress {
        tx: &printer.tx,
        record: Some(&record),
        known_hosts: Some(&known_hosts),
    };
    let provisioned = async {
        let launched = launch::launch(&aws, &s.launch, &progress, &cancel).await?;
        let alb = alb::ensure(&aws, &deployment, &spec, &launched, &progress, &cancel).await?;
        let targets = hosts(&s, &launched, &known_hosts, &progress).await?;
        anyhow::Ok((launched, alb, targets))
    }
    .await;
    printer.finish().await?;
    let (launched, alb, targets) = match provisioned.and_then(|done| {
        aws::interrupted(&cancel)?;
        Ok(done)
    }) {
        Ok(done) => done,
        Err(e) => return stopped(e, &deployment, &record, &cancel),
    };

    let hosts_planned: Vec<_> = targets.iter().map(|t| t.host.clone()).collect();
    let mut plan = plan::build_with(&on_hosts, &hosts_planned, &s.model)?;
    // Every instance's key is checked against its user data, and replaced while it is that one.
    for h in &mut plan.hosts {
        let target = targets
            .iter()
            .find(|t| t.host.name == h.host)
            .expect("planned from these hosts");
        let instance = launched.instances.iter().find(|i| i.name == h.host).expect("launched");
        h.host_key = Some(plan::HostKeyPin {
            pattern: target.host.known_hosts_pattern(),
            label: instance.id.clone(),
        });
    }
    let targets = plan
        .hosts
        .iter()
        .map(|h| {
            targets
                .iter()
                .find(|t| t.host.name == h.host)
                .cloned()
                .expect("planned from these hosts")
        })
        .collect();
    let footer = alb
        .as_ref()
        .zip(spec.balancer.as_ref())
        .map(|(alb, b)| match alb.port {
            80 => b.footer(&alb.dns),
            port => b.footer(&format!("{}:{port}", alb.dns)),
        })
        .into_iter()
        .collect();
    let mode = s.output.mode;
    let settings = DeploySettings {
        plan,
        targets,
        parallel: s.parallel,
        ssh: s.ssh,
        known_hosts: known_hosts.clone(),
        health_timeout: s.health_timeout,
        output: s.output,
        footer,
        external: alb_gate(&aws, alb.as_ref(), &launched, &spec),
        rolling: s.rolling,
        access: Access {
            spec: s.spec.clone(),
            hosts: hosts_planned
                .iter()
                .map(|h| Host {
                    key: Some(s.key.path.clone()),
                    ..h.clone()
                })
                .collect(),
            instances: launched
                .instances
                .iter()
                .map(|i| (i.name.clone(), i.id.clone()))
                .collect(),
            region: Some(aws.region.clone()),
        },
    };
    let code = deploy_hosts(settings, programs, record.clone(), cancel.clone()).await?;

    let printer = printer::cloud::start(mode);
    let progress = Progress {
        tx: &printer.tx,
        record: None,
        known_hosts: None,
    };
    launch::retag_host_keys(&aws, &launched, &known_hosts, &progress).await;
    let healthy = match alb.filter(|_| code == 0) {
        Some(alb) => alb::wait_healthy(&aws, &alb, s.launch.timeout, &progress, &cancel).await,
        None => Ok(()),
    };
    printer.finish().await?;
    match healthy {
        Ok(()) => Ok(code),
        Err(e) => stopped(e, &deployment, &record, &cancel),
    }
}

/// The exit of a deploy stopped by an error or Ctrl-C: what was created is tagged and
/// recorded, so the operator can resume or remove it.
fn stopped(e: anyhow::Error, deployment: &str, record: &RecordStore, cancel: &CancellationToken) -> anyhow::Result<u8> {
    let created = record.resources().len();
    if e.is::<Interrupted>() || cancel.is_cancelled() {
        printer::notice(&format!(
            "interrupted; the {created} resources created are tagged and recorded: agent deploy resumes, agent terminate {deployment} removes them"
        ));
        return Ok(exit::INTERRUPTED);
    }
    if created == 0 {
        return Err(e);
    }
    Err(e.context(format!(
        "deploy stopped ({created} resources recorded: deploy again to resume, or agent terminate {deployment})"
    )))
}

/// The launched instances as SSH targets, each host key pinned under the address agent
/// dials. The keys come from agent's own known_hosts, written at launch (and after each
/// rotation); an instance's `agent:host-key` tag, which anyone allowed to tag in the
/// account can change, only seeds a record this machine lacks, and the output says so.
async fn hosts(
    s: &CloudDeploySettings,
    launched: &Launched,
    known_hosts: &KnownHosts,
    progress: &Progress<'_>,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    let mut pins = Vec::new();
    let mut unknown = Vec::new();
    for i in &launched.instances {
        let (address, what) = if s.launch.private_ssh {
            (i.private_ip.clone(), "private IP")
        } else {
            (i.public_dns.clone(), "public DNS name")
        };
        let address = address.with_context(|| {
            format!(
                "instance {} ({}) has no {what}: use --ssh-address {}",
                i.id,
                i.name,
                if s.launch.private_ssh {
                    "public"
                } else {
                    "private (from inside the VPC), or a subnet that assigns public addresses"
                }
            )
        })?;
        let host = Host {
            name: i.name.clone(),
            address,
            private_address: i.private_ip.clone(),
            port: 22,
            user: s.user.clone(),
            role: Some(i.role.clone()),
            key: None,
            transport: Transport::Ssh,
        };
        let on_file = known_hosts.labelled(&i.id)?;
        if !on_file.is_empty() {
            pins.push((host.known_hosts_pattern(), on_file, i.id.clone()));
        } else if let Some(k) = &i.host_key {
            progress
                .notice(format!(
                    "host key of {} ({}) taken from its agent:host-key tag: {} has no record of it (launched from another machine?)",
                    i.id,
                    i.name,
                    known_hosts.path().display()
                ))
                .await;
            pins.push((host.known_hosts_pattern(), vec![k.clone()], i.id.clone()));
        } else {
            unknown.push(format!("{} ({})", i.id, i.name));
        }
        targets.push(Target {
            host,
            key: Some(s.key.clone()),
        });
    }
    if !unknown.is_empty() && !s.trust_first_use {
        anyhow::bail!(
            "no host key known for {} (not launched by this agent): pass --trust-first-use to accept the key each presents at first contact",
            unknown.join(", ")
        );
    }
    known_hosts.pin(&pins)?;
    Ok(targets)
}

/// The ALB as a rolling deploy's balancer: a batch's instances leave their role's target
/// group (drained) and come back (healthy) through it.
fn alb_gate(aws: &Aws, alb: Option<&alb::Alb>, launched: &Launched, spec: &Spec) -> Option<External> {
    let alb = alb?;
    let groups = alb.target_groups.clone();
    let ports: std::collections::BTreeMap<String, u16> =
        spec.roles.iter().map(|(name, r)| (name.clone(), r.ports[0])).collect();
    let ids: std::collections::BTreeMap<String, String> = launched
        .instances
        .iter()
        .map(|i| (i.name.clone(), i.id.clone()))
        .collect();
    let aws = aws.clone();
    Some(External {
        roles: groups.keys().cloned().collect(),
        shift: Box::new(move |shift, role, hosts| {
            let (aws, group, port) = (aws.clone(), groups.get(&role).cloned(), ports.get(&role).copied());
            let instances: Vec<String> = hosts.iter().filter_map(|h| ids.get(h).cloned()).collect();
            Box::pin(async move {
                let (Some(group), Some(port)) = (group, port) else {
                    return Ok(());
                };
                match shift {
                    Shift::Out => alb::take_out(&aws, &group, port, &instances).await,
                    Shift::Back => alb::put_back(&aws, &group, port, &instances).await,
                }
            })
        }),
    })
}

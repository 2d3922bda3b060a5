//! From parsed arguments to settings: every input read and checked (inventory, keys,
//! spec, paths, the output mode) before any work starts. The state folder's layout and the
//! terminal check live here and nowhere else.

use crate::aws::launch;
use crate::bench;
use crate::bench::Deployment;
use crate::commands::bench_clusters;
use crate::commands::bench_inference;
use crate::commands::deploy::{CloudDeploySettings, DeploySettings};
use crate::commands::exec::ExecSettings;
use crate::commands::metrics;
use crate::commands::ssh;
use crate::commands::{OutputSettings, Settings};
use crate::fleet::artifact::ProgramSource;
use crate::fleet::exec::ExecJob;
use crate::format;
use crate::inventory::{self, Host, Transport};
use crate::plan;
use crate::printer;
use crate::printer::Mode;
use crate::record::{self, Access, Record};
use crate::script::RemoteCommand;
use crate::script::step;
use crate::spec::Program;
use crate::spec::Spec;
use crate::transport::Payload;
use crate::transport::connect::Target;
use crate::transport::ssh::SshSettings;
use crate::transport::ssh::key::ClientKey;
use crate::transport::ssh::known_hosts::KnownHosts;
use anyhow::{Context, bail};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{
    BenchClustersArgs, BenchCommand, BenchInferenceArgs, Cli, Command, CopyArgs, DeployArgs, ExecArgs, HostArgs,
    LogsArgs, MetricsArgs, OutputArgs, SshAddress, SshArgs,
};

impl Cli {
    /// Resolves arguments into settings, reading every input (inventory, keys) up front so
    /// bad input fails before any host is touched.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        match self.command {
            Command::Exec(args) => resolve_exec(*args).map(Settings::Exec),
            Command::Copy(args) => resolve_copy(*args).map(Settings::Exec),
            Command::Logs(args) => resolve_logs(*args).map(Settings::Exec),
            Command::Ssh(args) => resolve_ssh(*args).map(|s| Settings::Ssh(Box::new(s))),
            Command::Deploy(args) if args.hosts.inventory.is_none() && args.hosts.hosts.is_empty() => {
                resolve_cloud_deploy(*args).map(|s| Settings::CloudDeploy(Box::new(s)))
            }
            Command::Deploy(args) => resolve_deploy(*args),
            Command::Terminate(args) => Ok(Settings::Terminate {
                deployment: check_deployment_name(&args.deployment)?,
                region: args.region,
                timeout: args.timeout,
                mode: output_mode(args.json),
                record: record_path(&args.deployment, true),
                known_hosts: cloud_known_hosts(&args.deployment),
            }),
            Command::Status(args) => {
                let deployment = check_deployment_name(&args.deployment)?;
                // A deployment made on an inventory: what its record says of its hosts.
                if args.region.is_none()
                    && record::read(&record_path(&deployment, true))?.is_none()
                    && let Some(record) = record::read(&record_path(&deployment, false))?
                {
                    return Ok(Settings::RecordStatus {
                        record: Box::new(record),
                        json: args.json,
                    });
                }
                Ok(Settings::Status {
                    known_hosts: cloud_known_hosts(&deployment),
                    deployment,
                    region: args.region,
                    json: args.json,
                })
            }
            Command::Bench(BenchCommand::Inference(args)) => {
                Ok(Settings::BenchInference(resolve_bench_inference(args)?))
            }
            Command::Bench(BenchCommand::Clusters(args)) => {
                Ok(Settings::BenchClusters(Box::new(resolve_bench_clusters(args)?)))
            }
            Command::Metrics(args) => resolve_metrics(args),
            Command::Plan(args) => {
                let spec = Spec::load(&args.spec)?;
                let hosts = inventory::load(&args.inventory)?;
                Ok(Settings::Plan {
                    plan: plan::build(&spec, &hosts)?,
                    json: args.json,
                })
            }
        }
    }
}

fn resolve_exec(mut args: ExecArgs) -> anyhow::Result<ExecSettings> {
    args.hosts
        .name(args.name.take(), "agent exec NAME -- CMD, or -d NAME")?;
    let script = args.command.join(" ");
    if script.trim().is_empty() {
        bail!("empty command: pass it after --, e.g. agent exec -- uname -a");
    }
    if args.timeout.is_zero() {
        bail!("--timeout must be more than zero (every command is bounded)");
    }
    let (targets, known_hosts) = resolve_targets(&args.hosts, None)?;
    let output = resolve_output(&args.output, "exec", format!("agent exec -- {script}"));
    Ok(ExecSettings {
        job: ExecJob {
            targets,
            command: RemoteCommand::new(script, args.timeout).sudo(args.sudo),
            input: Vec::new(),
            parallel: usize::from(args.hosts.parallel),
            ssh: SshSettings {
                pty: args.pty,
                ..args.hosts.ssh()
            },
            known_hosts,
        },
        output,
    })
}

fn resolve_ssh(mut args: SshArgs) -> anyhow::Result<ssh::SshSettingsOne> {
    args.hosts.name(args.name.take(), "agent ssh NAME [HOST], or -d NAME")?;
    if let Some(host) = args.host.take() {
        args.hosts.hosts.push(host);
    }
    let (mut targets, known_hosts) = resolve_targets(&args.hosts, None)?;
    let target = match targets.len() {
        1 => targets.remove(0),
        _ => {
            let names: Vec<String> = targets.iter().map(|t| t.host.name.clone()).collect();
            match printer::terminal::choose(&names)? {
                Some(i) => targets.swap_remove(i),
                None => bail!(
                    "{} hosts: name one, e.g. agent ssh {} {} ({})",
                    names.len(),
                    args.hosts.deployment.as_deref().unwrap_or("NAME"),
                    names[0],
                    names.join(", ")
                ),
            }
        }
    };
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    Ok(ssh::SshSettingsOne {
        target,
        command,
        ssh: args.hosts.ssh(),
        known_hosts,
    })
}

fn resolve_logs(mut args: LogsArgs) -> anyhow::Result<ExecSettings> {
    args.hosts.name(args.name.take(), "agent logs NAME, or -d NAME")?;
    let (targets, known_hosts) = resolve_targets(&args.hosts, None)?;
    let output = resolve_output(&args.output, "logs", "agent logs".to_owned());
    Ok(ExecSettings {
        job: ExecJob {
            targets,
            command: step::program_logs(args.lines, args.since, args.follow),
            input: Vec::new(),
            parallel: usize::from(args.hosts.parallel),
            ssh: args.hosts.ssh(),
            known_hosts,
        },
        output,
    })
}

fn resolve_copy(args: CopyArgs) -> anyhow::Result<ExecSettings> {
    use std::os::unix::fs::PermissionsExt;
    let src = &args.source;
    let meta = std::fs::metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file: copy takes one file", src.display());
    }
    let mut dest = args.dest.clone();
    if !dest.starts_with('/') {
        bail!("remote path {dest:?} is not absolute: give the full path, e.g. /tmp/{dest}");
    }
    if dest.ends_with('/') {
        let name = src.file_name().context("the local path has no file name")?;
        dest.push_str(&name.to_string_lossy());
    }
    let mode = match &args.mode {
        None => meta.permissions().mode() & 0o777,
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .with_context(|| format!("--mode {m:?} is not an octal mode such as 644"))?,
    };
    if args.timeout.is_zero() {
        bail!("--timeout must be more than zero (every command is bounded)");
    }
    // Streamed from disk to each host; a file that changes size meanwhile is refused there.
    std::fs::File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    let upload = step::Upload {
        path: dest.clone(),
        mode,
        size: meta.len(),
        validate: None,
    };
    let (targets, known_hosts) = resolve_targets(&args.hosts, None)?;
    let output = resolve_output(&args.output, "copy", format!("agent copy {} {dest}", src.display()));
    Ok(ExecSettings {
        job: ExecJob {
            targets,
            command: step::upload(&[upload], args.timeout, args.sudo),
            input: vec![Payload::File(src.clone())],
            parallel: usize::from(args.hosts.parallel),
            ssh: args.hosts.ssh(),
            known_hosts,
        },
        output,
    })
}

/// Deployment names become AWS resource names (security groups, ELB names of at most 32).
fn check_deployment_name(name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!("deployment name {name:?}: use 1-20 lowercase letters, digits and '-' (it names AWS resources)");
    }
    Ok(name.to_owned())
}

/// `deployments/<name>.json`; EC2 deployments keep theirs apart from inventory ones of the
/// same spec (`<name>.aws.json`).
fn record_path(name: &str, cloud: bool) -> PathBuf {
    let file = if cloud {
        format!("{name}.aws.json")
    } else {
        format!("{name}.json")
    };
    state_dir().join("deployments").join(file)
}

fn cloud_known_hosts(deployment: &str) -> PathBuf {
    state_dir()
        .join("deployments")
        .join(format!("{deployment}.known_hosts"))
}

fn resolve_cloud_deploy(args: DeployArgs) -> anyhow::Result<CloudDeploySettings> {
    let spec = Spec::load(&args.spec)?;
    let model = resolve_model(&spec, args.model.as_deref())?;
    let c = &args.cloud;
    let deployment = check_deployment_name(c.name.as_deref().unwrap_or(&spec.name))?;
    if !args.hosts.roles.is_empty() {
        bail!("--role narrows an inventory; an EC2 deploy (no -i) acts on every role of the spec");
    }
    let Some(key_path) = &args.hosts.key else {
        bail!(
            "an EC2 deploy needs the key pair's private key: pass --key FILE (e.g. --key labsuser.pem), or -i FILE to deploy onto an inventory"
        );
    };
    let passphrase = std::env::var("AGENT_KEY_PASSPHRASE").ok();
    let key = ClientKey::load(key_path, passphrase.as_deref())?;
    let public_key = key
        .key
        .public_key()
        .to_openssh()
        .with_context(|| format!("cannot derive the public key of {}", key_path.display()))?;
    if let Some(cidr) = &c.ssh_cidr {
        check_cidr(cidr)?;
    }
    if c.max_instances == 0 || c.max_vcpus == 0 {
        bail!("--max-instances and --max-vcpus must be at least 1");
    }
    if c.launch_timeout.is_zero() {
        bail!("--launch-timeout must be more than zero");
    }
    let known_hosts = match &args.hosts.known_hosts {
        Some(p) => p.clone(),
        None => cloud_known_hosts(&deployment),
    };
    let output = resolve_output(
        &args.output,
        "deploy",
        format!("agent deploy {} (EC2, {deployment})", args.spec),
    );
    Ok(CloudDeploySettings {
        launch: launch::LaunchSettings {
            deployment: deployment.clone(),
            spec,
            key_name: c.key_name.clone(),
            public_key,
            ami: c.ami.clone(),
            ssh_cidr: c.ssh_cidr.clone(),
            private_ssh: c.ssh_address == SshAddress::Private,
            subnet: c.subnet.clone(),
            timeout: c.launch_timeout,
            limits: launch::Limits {
                instances: c.max_instances,
                vcpus: c.max_vcpus,
            },
            detailed_monitoring: c.detailed_monitoring,
        },
        region: c.region.clone(),
        key,
        user: args
            .hosts
            .user
            .clone()
            .unwrap_or_else(|| inventory::DEFAULT_USER.to_owned()),
        trust_first_use: c.trust_first_use,
        record: record_path(&deployment, true),
        known_hosts,
        parallel: usize::from(args.hosts.parallel),
        ssh: SshSettings {
            // Fresh instances take a minute or two to boot and start sshd.
            wait: args.hosts.ssh_wait.max(Duration::from_secs(180)),
            ..args.hosts.ssh()
        },
        programs: args
            .programs
            .map_or_else(ProgramSource::default_build, ProgramSource::Dir),
        spec: spec_arg(&args.spec),
        rolling: args.rolling,
        model,
        health_timeout: args.health_timeout,
        output,
    })
}

fn resolve_bench_inference(args: BenchInferenceArgs) -> anyhow::Result<bench_inference::InferenceBench> {
    let mut deployment = Deployment::default();
    let url = match (args.url, &args.inventory) {
        (None, None) if args.name.is_some() => {
            let name = args.name.as_deref().unwrap_or_default();
            let (_, access) = deployment_hosts(name)?;
            let spec = Spec::load(&access.spec)?;
            let Some((role, port)) = spec
                .roles
                .iter()
                .find(|(_, r)| r.program == Program::Orchestrator)
                .map(|(name, r)| (name.clone(), r.ports[0]))
            else {
                bail!("deployment {name} (spec {}) runs no orchestrator", spec.name);
            };
            let Some(h) = access.hosts.iter().find(|h| h.role.as_deref() == Some(role.as_str())) else {
                bail!("deployment {name} has no {role} host in its record: deploy it again");
            };
            deployment = bench::Deployment {
                name: name.to_owned(),
                description: spec.description.clone(),
                place: access
                    .region
                    .as_ref()
                    .map_or_else(|| "local fleet".to_owned(), |r| format!("EC2 {r}")),
                instances: access
                    .hosts
                    .iter()
                    .map(|h| bench::Instance {
                        id: access.instances.get(&h.name).cloned().unwrap_or_else(|| h.name.clone()),
                        name: h.name.clone(),
                        role: h.role.clone().unwrap_or_default(),
                        instance_type: String::new(),
                        address: h.address.clone(),
                    })
                    .collect(),
            };
            format!("http://{}:{port}", h.address)
        }
        (Some(url), _) => {
            if !url.starts_with("http://") {
                bail!("--url {url:?}: give the orchestrator as http://HOST[:PORT]");
            }
            url
        }
        (None, Some(inventory)) => {
            let spec = Spec::load("inference")?;
            let (role, port) = spec
                .roles
                .iter()
                .find(|(_, r)| r.program == Program::Orchestrator)
                .map(|(name, r)| (name.clone(), r.ports[0]))
                .expect("the inference spec has an orchestrator");
            let hosts = inventory::load(inventory)?;
            let Some(h) = hosts.iter().find(|h| h.role.as_deref() == Some(role.as_str())) else {
                bail!("{}: no host has role {role:?}; pass --url instead", inventory.display());
            };
            deployment = fleet_deployment(&spec, inventory, &hosts);
            format!("http://{}:{port}", h.address)
        }
        (None, None) => bail!("which orchestrator? name the deployment, or pass --url http://HOST or -i INVENTORY"),
    };
    Ok(bench_inference::InferenceBench {
        url,
        concurrency: usize::from(args.concurrency),
        requests: args.requests as usize,
        text: args.text,
        timeout: args.timeout,
        mode: output_mode(args.json),
        out: args.out,
        deployment,
    })
}

/// The report's description of a deployment on the local fleet.
fn fleet_deployment(spec: &Spec, inventory: &Path, hosts: &[Host]) -> bench::Deployment {
    bench::Deployment {
        name: spec.name.clone(),
        description: spec.description.clone(),
        place: format!("local fleet, inventory {}", inventory.display()),
        instances: hosts
            .iter()
            .map(|h| bench::Instance {
                id: h.name.clone(),
                name: h.name.clone(),
                role: h.role.clone().unwrap_or_default(),
                instance_type: "static host".into(),
                address: h.address.clone(),
            })
            .collect(),
    }
}

fn resolve_bench_clusters(args: BenchClustersArgs) -> anyhow::Result<bench_clusters::ClustersBench> {
    if !(args.scale.is_finite() && args.scale > 0.0 && args.scale <= 100.0) {
        bail!(
            "--scale {}: give a factor above 0 and at most 100 (0.01 for a quick run)",
            args.scale
        );
    }
    if args.timeout.is_zero() {
        bail!("--timeout must be more than zero (every request is bounded)");
    }
    let spec = Spec::load(&args.spec)?;
    let Some(balancer) = &spec.balancer else {
        bail!(
            "spec {} has no load balancer routes to bench; use a spec with [balancer] (e.g. clusters)",
            spec.name
        );
    };
    let mut clusters: Vec<(String, std::collections::BTreeSet<String>)> = balancer
        .routes
        .iter()
        .map(|r| (r.path.clone(), Default::default()))
        .collect();
    let mut base = match args.url {
        Some(url) if !url.starts_with("http://") => {
            bail!("--url {url:?}: give the load balancer as http://HOST[:PORT]")
        }
        other => other,
    };
    let mut deployment = bench::Deployment {
        name: spec.name.clone(),
        description: spec.description.clone(),
        ..Default::default()
    };
    if let Some(inventory) = &args.inventory {
        let hosts = inventory::load(inventory)?;
        let Some(lb) = hosts.iter().find(|h| h.role.as_deref() == Some(balancer.role.as_str())) else {
            bail!(
                "{}: no host has role {:?} (the load balancer); pass --url instead",
                inventory.display(),
                balancer.role
            );
        };
        base.get_or_insert_with(|| format!("http://{}:{}", lb.address, balancer.port));
        for ((_, expected), route) in clusters.iter_mut().zip(&balancer.routes) {
            expected.extend(
                hosts
                    .iter()
                    .filter(|h| h.role.as_deref() == Some(route.role.as_str()))
                    .map(|h| h.name.clone()),
            );
        }
        deployment = fleet_deployment(&spec, inventory, &hosts);
    }
    // On EC2 (no inventory; no --url unless --deployment names it): the load balancer, the
    // instances and the metrics come from AWS.
    let ec2 = match (&args.inventory, &base, args.deployment) {
        (None, None, d) => Some(d.unwrap_or_else(|| spec.name.clone())),
        (_, _, Some(d)) => Some(d),
        _ => None,
    };
    let ec2 = ec2
        .map(|d| {
            check_deployment_name(&d).map(|deployment| metrics::MetricsSettings {
                deployment,
                region: args.region.clone(),
                wait: args.metrics_wait,
            })
        })
        .transpose()?;
    Ok(bench_clusters::ClustersBench {
        base,
        routes: balancer
            .routes
            .iter()
            .map(|r| (r.path.clone(), r.role.clone()))
            .collect(),
        clusters,
        scale: args.scale,
        pause: args.pause,
        timeout: args.timeout,
        out: args.out,
        mode: output_mode(args.json),
        deployment,
        ec2,
        metrics: !args.no_metrics,
    })
}

fn resolve_metrics(args: MetricsArgs) -> anyhow::Result<Settings> {
    let deployment = check_deployment_name(&args.deployment)?;
    let (window, out) = match (&args.bench, &args.since, &args.until) {
        (Some(dir), _, _) => {
            let path = dir.join("summary.json");
            let summary: bench::Summary = serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("--bench {}: no bench results there", dir.display()))?,
            )
            .with_context(|| format!("{} is not a bench summary", path.display()))?;
            let window = metrics::Window {
                start: rfc3339(&summary.started, "summary.json started")?,
                end: rfc3339(&summary.ended, "summary.json ended")?,
            };
            (window, args.out.clone().unwrap_or_else(|| dir.clone()))
        }
        (None, Some(since), Some(until)) => {
            let window = metrics::Window {
                start: rfc3339(since, "--since")?,
                end: rfc3339(until, "--until")?,
            };
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| bench::default_out("metrics", &deployment, SystemTime::now()));
            (window, out)
        }
        _ => bail!("which window? pass --bench DIR (a bench's results) or --since TIME --until TIME"),
    };
    if window.end <= window.start {
        bail!("the window ends before it starts: --until must be after --since");
    }
    Ok(Settings::Metrics {
        metrics: metrics::MetricsSettings {
            deployment,
            region: args.region,
            wait: args.wait,
        },
        window,
        out,
        mode: output_mode(args.json),
    })
}

/// Unix seconds of an RFC 3339 time.
fn rfc3339(s: &str, what: &str) -> anyhow::Result<i64> {
    format::parse_rfc3339(s)
        .ok_or_else(|| anyhow::anyhow!("{what} {s:?} is not an RFC 3339 time (e.g. 2026-11-22T14:00:00Z)"))
}

/// `$XDG_STATE_HOME/agent` (default `~/.local/state/agent`): logs and ad-hoc known hosts.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("agent");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/agent")
}

/// `--model`: a URL the workers fetch from, or a local model folder whose files are uploaded.
fn resolve_model(spec: &Spec, arg: Option<&str>) -> anyhow::Result<plan::ModelSource> {
    let Some(arg) = arg else {
        return Ok(plan::ModelSource::default());
    };
    if !spec.roles.values().any(|r| r.program == Program::Worker) {
        bail!("--model: spec {} runs no worker; drop --model", spec.name);
    }
    if arg.starts_with("http://") || arg.starts_with("https://") {
        return Ok(plan::ModelSource::Fetch(arg.trim_end_matches('/').to_owned()));
    }
    let dir = std::fs::canonicalize(arg).with_context(|| {
        format!("--model {arg}: no such folder (give a Hugging Face model folder or an https:// URL)")
    })?;
    let mut files = Vec::new();
    for f in agent_protocol::model::FILES {
        let path = dir.join(f);
        if !path.is_file() {
            bail!(
                "--model {arg}: {f} is missing; a model folder needs {}",
                agent_protocol::model::FILES.join(", ")
            );
        }
        files.push(path);
    }
    let head = dir.join(agent_protocol::model::HEAD);
    if head.is_file() {
        files.push(head);
    }
    files
        .into_iter()
        .map(|p| {
            p.into_os_string()
                .into_string()
                .map_err(|p| anyhow::anyhow!("--model: {} is not UTF-8", p.to_string_lossy()))
        })
        .collect::<anyhow::Result<_>>()
        .map(plan::ModelSource::Upload)
}

fn check_cidr(cidr: &str) -> anyhow::Result<()> {
    let ok = cidr.split_once('/').is_some_and(|(ip, bits)| {
        ip.parse::<std::net::Ipv4Addr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 32)
    });
    if !ok {
        bail!("--ssh-cidr {cidr:?} is not an IPv4 CIDR such as 203.0.113.7/32");
    }
    Ok(())
}

fn resolve_deploy(args: DeployArgs) -> anyhow::Result<Settings> {
    let spec = Spec::load(&args.spec)?;
    let Some(inventory) = &args.hosts.inventory else {
        bail!("deploy needs an inventory: pass -i FILE (or set AGENT_INVENTORY)");
    };
    // The plan covers the whole inventory (a balancer lists every server); --host and
    // --role only narrow which hosts are acted on.
    let model = resolve_model(&spec, args.model.as_deref())?;
    let all = inventory::load(inventory)?;
    let plan = plan::build_with(&spec, &all, &model)?;
    let access = Access {
        spec: spec_arg(&args.spec),
        hosts: all
            .iter()
            .map(|h| Host {
                key: args.hosts.key.clone().or_else(|| h.key.clone()).map(absolute),
                ..h.clone()
            })
            .collect(),
        ..Access::default()
    };
    let (targets, known_hosts) = resolve_targets(&args.hosts, Some(all))?;
    let mut hosts = Vec::new();
    let mut chosen = Vec::new();
    for h in plan.hosts {
        if let Some(t) = targets.iter().find(|t| t.host.name == h.host) {
            chosen.push(t.clone());
            hosts.push(h);
        }
    }
    if hosts.is_empty() {
        bail!("none of the selected hosts has a role in spec {}", spec.name);
    }
    let plan = plan::Plan { hosts, ..plan };
    let footer = spec
        .balancer
        .as_ref()
        .and_then(|b| {
            let lb = chosen.iter().find(|t| t.host.role.as_deref() == Some(&b.role))?;
            Some(b.footer(&format!("{}:{}", lb.host.address, b.port)))
        })
        .into_iter()
        .collect();
    let output = resolve_output(
        &args.output,
        "deploy",
        format!("agent deploy {} -i {}", args.spec, inventory.display()),
    );
    let deploy = DeploySettings {
        plan,
        targets: chosen,
        parallel: usize::from(args.hosts.parallel),
        ssh: args.hosts.ssh(),
        known_hosts,
        health_timeout: args.health_timeout,
        output,
        footer,
        access,
        rolling: args.rolling,
        external: None,
    };
    Ok(Settings::Deploy {
        deploy: Box::new(deploy),
        record: record_path(&spec.name, false),
        programs: args
            .programs
            .map_or_else(ProgramSource::default_build, ProgramSource::Dir),
    })
}

/// The selected hosts with their keys; `loaded` is the inventory if the caller already read it.
fn resolve_targets(args: &HostArgs, loaded: Option<Vec<Host>>) -> anyhow::Result<(Vec<Target>, Arc<KnownHosts>)> {
    let user = args.user.as_deref().unwrap_or(inventory::DEFAULT_USER);
    let mut known_hosts_path = None;
    let hosts: Vec<Host> = match (&args.deployment, &args.inventory) {
        (Some(_), Some(_)) => bail!("give a deployment's name or -i FILE, not both"),
        (Some(name), None) => {
            let (record, access) = deployment_hosts(name)?;
            known_hosts_path = Some(record.known_hosts.clone());
            // Instance ids name hosts too.
            let names: Vec<String> = args
                .hosts
                .iter()
                .map(|h| {
                    access
                        .instances
                        .iter()
                        .find(|(_, id)| *id == h)
                        .map_or_else(|| h.clone(), |(name, _)| name.clone())
                })
                .collect();
            inventory::select(access.hosts, &args.roles, &names)?
        }
        (None, _) => match &args.inventory {
            Some(path) => {
                let all = match loaded {
                    Some(hosts) => hosts,
                    None => inventory::load(path)?,
                };
                inventory::select(all, &args.roles, &args.hosts)?
            }
            None if !args.roles.is_empty() => bail!("--role needs an inventory (-i FILE)"),
            None if args.hosts.is_empty() => {
                bail!("no hosts: pass an inventory with -i FILE (or AGENT_INVENTORY), or --host ADDRESS")
            }
            None => {
                let hosts = args
                    .hosts
                    .iter()
                    .map(|h| inventory::parse_host_arg(h, user))
                    .collect::<Result<Vec<_>, _>>()?;
                inventory::check_unique(&hosts)?;
                hosts
            }
        },
    };
    if hosts.is_empty() {
        bail!("the inventory lists no hosts");
    }

    let passphrase = std::env::var("AGENT_KEY_PASSPHRASE").ok();
    let mut keys: HashMap<PathBuf, ClientKey> = HashMap::new();
    let mut targets = Vec::with_capacity(hosts.len());
    for host in hosts {
        let key = match (host.transport, args.key.as_ref().or(host.key.as_ref())) {
            (Transport::Local, _) => None,
            (Transport::Ssh, None) => bail!(
                "no key for host {}: pass --key FILE (e.g. --key labsuser.pem) or set key in the inventory",
                host.name
            ),
            (Transport::Ssh, Some(path)) => Some(match keys.get(path) {
                Some(k) => k.clone(),
                None => {
                    let k = ClientKey::load(path, passphrase.as_deref())?;
                    keys.insert(path.clone(), k.clone());
                    k
                }
            }),
        };
        targets.push(Target { host, key });
    }

    let mut repin = Vec::new();
    for name in &args.repin {
        let host = targets
            .iter()
            .map(|t| &t.host)
            .find(|h| &h.name == name || &h.address == name)
            .with_context(|| format!("--repin-host-key {name}: no such host among the selected ones"))?;
        repin.push(host.known_hosts_pattern());
    }
    let path = match (&args.known_hosts, &args.inventory, known_hosts_path) {
        (Some(p), _, _) => p.clone(),
        (None, _, Some(p)) => p,
        (None, Some(inv), None) => known_hosts_beside(inv),
        (None, None, None) => state_dir().join("known_hosts"),
    };
    Ok((targets, Arc::new(KnownHosts::new(path, repin))))
}

impl HostArgs {
    /// The deployment named by a command's positional NAME, which `-d NAME` may not also give.
    fn name(&mut self, name: Option<String>, forms: &str) -> anyhow::Result<()> {
        if let Some(name) = name {
            if self.deployment.is_some() {
                bail!("give the deployment once: {forms}");
            }
            self.deployment = Some(name);
        }
        Ok(())
    }
}

/// A deployment's record (made on an inventory, or on EC2) and the hosts it remembers.
fn deployment_hosts(name: &str) -> anyhow::Result<(Record, Access)> {
    let name = check_deployment_name(name)?;
    let local = record::read(&record_path(&name, false))?;
    let ec2 = record::read(&record_path(&name, true))?;
    let record = match (local, ec2) {
        (Some(_), Some(_)) => bail!(
            "deployment {name} exists both on an inventory and on EC2: pass -i FILE for the first, or agent terminate {name} the second"
        ),
        (Some(r), None) | (None, Some(r)) => r,
        (None, None) => bail!(
            "no deployment {name} here ({}): deploy it first (agent deploy SPEC), or pass -i FILE",
            state_dir().join("deployments").display()
        ),
    };
    let access = record.access.clone().with_context(|| {
        format!("deployment {name} was made by an older agent, which did not record its hosts: deploy it again")
    })?;
    Ok((record, access))
}

/// The spec as the record keeps it: a built-in's name, or a file's absolute path.
fn spec_arg(spec: &str) -> String {
    let path = Path::new(spec);
    if path.exists() {
        absolute(path.to_path_buf()).display().to_string()
    } else {
        spec.to_owned()
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// `fleet/inventory.toml` pins its hosts' keys in `fleet/inventory.known_hosts`.
fn known_hosts_beside(inventory: &Path) -> PathBuf {
    let stem = inventory.file_stem().unwrap_or_default().to_string_lossy();
    inventory.with_file_name(format!("{stem}.known_hosts"))
}

fn output_mode(json: bool) -> Mode {
    if json {
        Mode::Json
    } else if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
        Mode::Tty {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    } else {
        Mode::Plain
    }
}

fn resolve_output(args: &OutputArgs, kind: &str, title: String) -> OutputSettings {
    let mode = output_mode(args.json);
    let log_dir = match (&args.log_dir, args.no_logs) {
        (_, true) => None,
        (Some(d), false) => Some(d.clone()),
        (None, false) => Some(state_dir().join("logs").join(format!(
            "{}-{kind}-{}",
            format::stamp(SystemTime::now()),
            std::process::id()
        ))),
    };
    OutputSettings { mode, log_dir, title }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn known_hosts_path_follows_inventory() {
        assert_eq!(
            known_hosts_beside(Path::new("/x/fleet/inventory.toml")),
            PathBuf::from("/x/fleet/inventory.known_hosts")
        );
    }
}

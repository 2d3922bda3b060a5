//! Command-line types (clap) and their resolution into [`Settings`]. Clap stays here.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::commands::deploy::{CloudDeploySettings, DeploySettings};
use crate::commands::exec::ExecSettings;
use crate::commands::{OutputSettings, Settings};
use crate::fleet::artifact::ProgramSource;
use crate::fleet::exec::ExecJob;
use crate::format::{self, parse_duration};
use crate::inventory::{self, Host, Transport};
use crate::plan;
use crate::printer::Mode;
use crate::script::RemoteCommand;
use crate::spec::Spec;
use crate::transport::connect::Target;
use crate::transport::ssh::SshSettings;
use crate::transport::ssh::key::ClientKey;
use crate::transport::ssh::known_hosts::KnownHosts;

#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about = "Deploy small fleets over SSH, and run commands on them."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a shell command on every selected host, streaming output live.
    ///
    /// Exit status: 0 all ok, 2 the command failed on some host, 3 some host was
    /// unreachable (wins over 2), 130 interrupted, 1 bad input.
    Exec(Box<ExecArgs>),
    /// Copy a local file to the same path on every selected host, atomically (a temporary
    /// file beside the target, fsynced, then renamed), as pscp or Ansible's copy would.
    ///
    /// Exit status as for exec.
    Copy(Box<CopyArgs>),
    /// Deploy a spec onto the inventory's hosts: upload the programs and their rendered
    /// files, install packages, start the services, check their health.
    ///
    /// Re-running converges: unchanged files are not sent, untouched services not
    /// restarted. Exit status as for exec (2: a step failed on some host).
    Deploy(Box<DeployArgs>),
    /// Show what `deploy` would upload, install, start and check on each host, touching nothing.
    Plan(PlanArgs),
    /// Remove everything an EC2 deployment created, found by its tags: load balancer, target
    /// groups, instances, security groups, the imported key pair, pinned host keys.
    ///
    /// Idempotent: a second run removes nothing and exits 0.
    Terminate(TerminateArgs),
    /// List an EC2 deployment's resources and their health.
    Status(StatusArgs),
    /// Measure a deployment as the course's benchmark did.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Fetch an EC2 deployment's CloudWatch metrics over a bench's window (instances' CPU and
    /// network out, the load balancer's and each target group's request count and response
    /// time, period 60 s), waiting until CloudWatch has posted them; save CSV, JSON, charts
    /// and add them to the bench's report.
    ///
    /// Exit status: 0 the window is covered, 2 CloudWatch had not covered it by --wait
    /// (what it had is saved), 130 interrupted, 1 bad input.
    Metrics(MetricsArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Send N requests, C at a time, to the inference deployment's orchestrator
    /// (POST /new_request); print throughput, latency percentiles, requests per worker
    /// process and errors.
    ///
    /// Exit status: 0 every request answered, 2 some failed, 130 interrupted, 1 bad input.
    Inference(BenchInferenceArgs),
    /// The course's Lab 1 benchmark against the load balancer: per cluster path, thread A
    /// sends 1000 GETs one after another, thread B 500, pauses 60 s, then 1000 more; all at
    /// once. Saves every request, HDR percentiles, which instance answered, charts and a
    /// report; on EC2 then fetches the CloudWatch metrics of the window (see `agent metrics`).
    ///
    /// Exit status: 0 all answered by their cluster's instances, 2 errors or answers from
    /// another cluster, 130 interrupted, 1 bad input.
    Clusters(BenchClustersArgs),
}

#[derive(Debug, Args)]
struct BenchClustersArgs {
    /// The inventory the deployment runs on (the local fleet): the balancer host, and which
    /// host should answer which path. Without it: the EC2 deployment (see --deployment).
    #[arg(short = 'i', long, value_name = "FILE", env = "AGENT_INVENTORY")]
    inventory: Option<PathBuf>,
    /// Send the requests here instead (http://HOST[:PORT]); paths come from the spec.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The EC2 deployment: its load balancer and instances, and its CloudWatch metrics
    /// afterwards [default: the spec's name, unless -i or --url is given].
    #[arg(long, value_name = "NAME")]
    deployment: Option<String>,
    /// AWS region [default: from AWS_REGION or ~/.aws/config].
    #[arg(long)]
    region: Option<String>,
    /// The spec whose balancer routes are the cluster paths.
    #[arg(long, default_value = "clusters", value_name = "SPEC")]
    spec: String,
    /// Multiply the request counts and the pause (0.01: 10, 5 + 10 requests, 0.6 s pause).
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    scale: f64,
    /// Thread B's pause [default: 60 s × scale].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pause: Option<Duration>,
    /// Per request.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// The results folder [default: bench/clusters-YYYYMMDD-HHMMSS].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// On EC2, skip the CloudWatch metrics.
    #[arg(long)]
    no_metrics: bool,
    /// How long to wait for CloudWatch to post the window's data points.
    #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
    metrics_wait: Duration,
    /// Print the summary as one JSON object (no progress bars).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct MetricsArgs {
    /// The EC2 deployment (a spec name, or what --name gave deploy).
    deployment: String,
    /// A bench's results folder: its window, and where the metrics go.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "since",
        conflicts_with = "since"
    )]
    bench: Option<PathBuf>,
    /// Or the window: RFC 3339 times, e.g. 2026-11-22T14:00:00Z.
    #[arg(long, value_name = "TIME", requires = "until")]
    since: Option<String>,
    #[arg(long, value_name = "TIME", requires = "since")]
    until: Option<String>,
    /// AWS region [default: from AWS_REGION or ~/.aws/config].
    #[arg(long)]
    region: Option<String>,
    /// Where to save [default: the --bench folder, or metrics/DEPLOYMENT-YYYYMMDD-HHMMSS].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Give up waiting for CloudWatch after this long (what it had is saved).
    #[arg(long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
    wait: Duration,
    /// No progress line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct BenchInferenceArgs {
    /// The orchestrator's base URL (e.g. http://203.0.113.7).
    #[arg(long, value_name = "URL", conflicts_with = "inventory")]
    url: Option<String>,
    /// Or the inventory the deployment runs on: its orchestrator host, port 80.
    #[arg(short = 'i', long, value_name = "FILE", env = "AGENT_INVENTORY")]
    inventory: Option<PathBuf>,
    /// Requests in flight at once (the course lab used 5 to 15).
    #[arg(short = 'c', long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    concurrency: u16,
    /// Requests in all.
    #[arg(short = 'n', long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    requests: u32,
    /// Classify this text [default: an empty body: each worker makes up 50 random characters,
    /// as in the lab].
    #[arg(long)]
    text: Option<String>,
    /// Per request, time in the orchestrator's queue included.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// The results folder [default: bench/inference-YYYYMMDD-HHMMSS].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TerminateArgs {
    /// The deployment (a spec name, or what --name gave deploy).
    deployment: String,
    /// AWS region [default: from AWS_REGION or ~/.aws/config].
    #[arg(long)]
    region: Option<String>,
    /// Give up waiting for instances to end and dependencies to clear after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Print NDJSON events instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The deployment (a spec name, or what --name gave deploy).
    deployment: String,
    /// AWS region [default: from AWS_REGION or ~/.aws/config].
    #[arg(long)]
    region: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Where agent connects to EC2 instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SshAddress {
    /// Public DNS names (agent runs outside the VPC).
    Public,
    /// Private IPs (agent runs inside the VPC).
    Private,
}

/// Without an inventory, `deploy` launches its hosts on EC2.
#[derive(Debug, Args)]
struct CloudArgs {
    /// AWS region [default: from AWS_REGION or ~/.aws/config].
    #[arg(long)]
    region: Option<String>,
    /// Name of the deployment on AWS (tags, resource names) [default: the spec's name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// EC2 key pair whose private key --key is; imported from --key if it does not exist.
    #[arg(long, default_value = "vockey", value_name = "NAME")]
    key_name: String,
    /// AMI to launch [default: the current Ubuntu 24.04 amd64 AMI from Canonical].
    #[arg(long, value_name = "AMI")]
    ami: Option<String>,
    /// Where SSH may come from [default: your public address as checkip.amazonaws.com sees
    /// it; with --ssh-address private, the VPC].
    #[arg(long, value_name = "CIDR")]
    ssh_cidr: Option<String>,
    /// Connect to instances by public DNS name or by private IP.
    #[arg(long, value_enum, default_value_t = SshAddress::Public)]
    ssh_address: SshAddress,
    /// Launch into this subnet (and its VPC) [default: a default subnet of the default VPC].
    #[arg(long, value_name = "SUBNET")]
    subnet: Option<String>,
    /// How long instances may take to be running, and load balancer targets healthy.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    launch_timeout: Duration,
    /// For instances agent finds without a host key it generated (launched by an older
    /// agent or by hand): accept the key each presents at first contact, and report it.
    #[arg(long)]
    trust_first_use: bool,
    /// Refuse to launch when the region would then run more instances than this (pending
    /// and running, every deployment's). The default is the AWS Academy Learner Lab's limit,
    /// past which the lab terminates instances; raise it on other accounts.
    #[arg(long, default_value_t = 9, value_name = "N")]
    max_instances: u32,
    /// As --max-instances, for the instances' vCPUs together (the Learner Lab's: 32).
    #[arg(long, default_value_t = 32, value_name = "N")]
    max_vcpus: u32,
    /// CloudWatch detailed monitoring: 1-minute EC2 metrics instead of basic monitoring's
    /// 5-minute ones (billed per instance and month on AWS accounts).
    #[arg(long)]
    detailed_monitoring: bool,
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// A built-in spec (clusters, inference) or the path of a spec file.
    spec: String,
    /// Inventory file (TOML); hosts take part by their role.
    #[arg(short, long, env = "AGENT_INVENTORY", value_name = "FILE")]
    inventory: PathBuf,
    /// Print the plan as JSON, rendered files included.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct HostArgs {
    /// Inventory file (TOML) listing the hosts.
    #[arg(short, long, env = "AGENT_INVENTORY", value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// With an inventory: act only on this host (name or address; repeatable). Without:
    /// a host to contact, as [user@]address[:port].
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Act only on hosts with this role (repeatable).
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<String>,
    /// Private key (e.g. labsuser.pem); overrides the inventory's. An encrypted key reads
    /// its passphrase from AGENT_KEY_PASSPHRASE.
    #[arg(long, env = "AGENT_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Login user for hosts given with --host (default ubuntu).
    #[arg(long)]
    user: Option<String>,
    /// agent's own known_hosts file [default: beside the inventory, or in ~/.local/state/agent].
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// Forget the pinned host key of HOST and pin the one it presents now (repeatable).
    #[arg(long = "repin-host-key", value_name = "HOST")]
    repin: Vec<String>,
    /// Limit for each stage of a connection attempt (TCP, SSH handshake, authentication).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    connect_timeout: Duration,
    /// How long to keep retrying hosts that refuse, reset or stay silent (still booting).
    #[arg(long, default_value = "20s", value_parser = parse_duration, value_name = "DURATION")]
    ssh_wait: Duration,
    /// How many hosts to work on at once.
    #[arg(short, long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Print NDJSON events (host, event, stream, line, outcome) instead of text.
    #[arg(long)]
    json: bool,
    /// Where per-host logs go [default: ~/.local/state/agent/logs/<run>].
    #[arg(long, value_name = "DIR", conflicts_with = "no_logs")]
    log_dir: Option<PathBuf>,
    /// Do not write per-host logs.
    #[arg(long)]
    no_logs: bool,
}

#[derive(Debug, Args)]
struct CopyArgs {
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Limit for the copy on each host, enforced on the host too.
    #[arg(short, long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Write as root (sudo -n) and make root the owner; otherwise the login user writes it.
    #[arg(long)]
    sudo: bool,
    /// Mode of the remote file, in octal [default: the local file's].
    #[arg(long, value_name = "OCTAL")]
    mode: Option<String>,
    /// The local file.
    source: PathBuf,
    /// The remote path (absolute); ending in `/`, the file keeps its name in that folder.
    dest: String,
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// A built-in spec (clusters, inference) or the path of a spec file.
    spec: String,
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    cloud: CloudArgs,
    /// A folder with prebuilt binaries of the remote programs (agent-web, ...), instead of
    /// building them with cargo in agent's source tree.
    #[arg(long, value_name = "DIR")]
    programs: Option<PathBuf>,
    /// The workers' DistilBERT model: a local Hugging Face folder (config.json,
    /// tokenizer.json, model.safetensors; uploaded) or a base URL each worker host downloads
    /// those files from once [default: distilbert-base-uncased from huggingface.co].
    #[arg(long, value_name = "DIR|URL")]
    model: Option<String>,
    /// How long each health check may take to pass once the services started.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    health_timeout: Duration,
}

#[derive(Debug, Args)]
struct ExecArgs {
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Limit for the command on each host, enforced on the host too.
    #[arg(short, long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Run the command as root (sudo -n: never prompts).
    #[arg(long)]
    sudo: bool,
    /// Allocate a pseudo-terminal (stderr merges into stdout).
    #[arg(long)]
    pty: bool,
    /// The command, after `--`. Words are joined with spaces and read by the host's shell,
    /// as ssh does.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

impl HostArgs {
    fn ssh(&self) -> SshSettings {
        SshSettings {
            connect_timeout: self.connect_timeout,
            wait: self.ssh_wait,
            ..SshSettings::default()
        }
    }
}

impl Cli {
    /// Resolves arguments into settings, reading every input (inventory, keys) up front so
    /// bad input fails before any host is touched.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        match self.command {
            Command::Exec(args) => resolve_exec(*args).map(Settings::Exec),
            Command::Copy(args) => resolve_copy(*args).map(Settings::Exec),
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
            Command::Status(args) => Ok(Settings::Status {
                deployment: check_deployment_name(&args.deployment)?,
                region: args.region,
                json: args.json,
                known_hosts: cloud_known_hosts(&args.deployment),
            }),
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

fn resolve_exec(args: ExecArgs) -> anyhow::Result<ExecSettings> {
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
    let upload = crate::script::step::Upload {
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
            command: crate::script::step::upload(&[upload], args.timeout, args.sudo),
            input: vec![crate::transport::Payload::File(src.clone())],
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
        launch: crate::aws::launch::LaunchSettings {
            deployment: deployment.clone(),
            spec,
            key_name: c.key_name.clone(),
            public_key,
            ami: c.ami.clone(),
            ssh_cidr: c.ssh_cidr.clone(),
            private_ssh: c.ssh_address == SshAddress::Private,
            subnet: c.subnet.clone(),
            timeout: c.launch_timeout,
            limits: crate::aws::launch::Limits {
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
        model,
        health_timeout: args.health_timeout,
        output,
    })
}

fn resolve_bench_inference(
    args: BenchInferenceArgs,
) -> anyhow::Result<crate::commands::bench_inference::InferenceBench> {
    let mut deployment = crate::bench::Deployment::default();
    let url = match (args.url, &args.inventory) {
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
                .find(|(_, r)| r.program == crate::spec::Program::Orchestrator)
                .map(|(name, r)| (name.clone(), r.ports[0]))
                .expect("the inference spec has an orchestrator");
            let hosts = inventory::load(inventory)?;
            let Some(h) = hosts.iter().find(|h| h.role.as_deref() == Some(role.as_str())) else {
                bail!("{}: no host has role {role:?}; pass --url instead", inventory.display());
            };
            deployment = fleet_deployment(&spec, inventory, &hosts);
            format!("http://{}:{port}", h.address)
        }
        (None, None) => bail!("which orchestrator? pass --url http://HOST or -i INVENTORY"),
    };
    Ok(crate::commands::bench_inference::InferenceBench {
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
fn fleet_deployment(spec: &Spec, inventory: &Path, hosts: &[Host]) -> crate::bench::Deployment {
    crate::bench::Deployment {
        name: spec.name.clone(),
        description: spec.description.clone(),
        place: format!("local fleet, inventory {}", inventory.display()),
        instances: hosts
            .iter()
            .map(|h| crate::bench::Instance {
                id: h.name.clone(),
                name: h.name.clone(),
                role: h.role.clone().unwrap_or_default(),
                instance_type: "static host".into(),
                address: h.address.clone(),
            })
            .collect(),
    }
}

fn resolve_bench_clusters(args: BenchClustersArgs) -> anyhow::Result<crate::commands::bench_clusters::ClustersBench> {
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
    let mut deployment = crate::bench::Deployment {
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
            check_deployment_name(&d).map(|deployment| crate::commands::metrics::MetricsSettings {
                deployment,
                region: args.region.clone(),
                wait: args.metrics_wait,
            })
        })
        .transpose()?;
    Ok(crate::commands::bench_clusters::ClustersBench {
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
            let summary: crate::bench::Summary = serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("--bench {}: no bench results there", dir.display()))?,
            )
            .with_context(|| format!("{} is not a bench summary", path.display()))?;
            let window = crate::commands::metrics::Window {
                start: rfc3339(&summary.started, "summary.json started")?,
                end: rfc3339(&summary.ended, "summary.json ended")?,
            };
            (window, args.out.clone().unwrap_or_else(|| dir.clone()))
        }
        (None, Some(since), Some(until)) => {
            let window = crate::commands::metrics::Window {
                start: rfc3339(since, "--since")?,
                end: rfc3339(until, "--until")?,
            };
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| crate::bench::default_out("metrics", &deployment, SystemTime::now()));
            (window, out)
        }
        _ => bail!("which window? pass --bench DIR (a bench's results) or --since TIME --until TIME"),
    };
    if window.end <= window.start {
        bail!("the window ends before it starts: --until must be after --since");
    }
    Ok(Settings::Metrics {
        metrics: crate::commands::metrics::MetricsSettings {
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
    if !spec.roles.values().any(|r| r.program == crate::spec::Program::Worker) {
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
    let hosts: Vec<Host> = match &args.inventory {
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
    let path = match (&args.known_hosts, &args.inventory) {
        (Some(p), _) => p.clone(),
        (None, Some(inv)) => known_hosts_beside(inv),
        (None, None) => state_dir().join("known_hosts"),
    };
    Ok((targets, Arc::new(KnownHosts::new(path, repin))))
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

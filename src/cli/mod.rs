//! Command-line types (clap) and their resolution into [`Settings`]. Clap stays here.

mod resolve;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::fleet::rollout::Batch;
use crate::format::parse_duration;
use crate::transport::ssh::SshSettings;

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
    /// An interactive shell on one host of a deployment (or `-- CMD` with a pty), through
    /// its pinned key; the remote exit status is agent's.
    Ssh(Box<SshArgs>),
    /// The deployed programs' logs from every selected host at once, prefixed by host:
    /// journalctl on systemd hosts, agent's supervisor's log files elsewhere.
    ///
    /// Exit status as for exec; 130 after Ctrl-C with --follow.
    Logs(Box<LogsArgs>),
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
    /// The deployment (on an inventory or on EC2): its orchestrator, found from its record.
    #[arg(value_name = "NAME", conflicts_with_all = ["url", "inventory"])]
    name: Option<String>,
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
    /// A deployment by name (the spec's, or what deploy's --name gave it), on an inventory
    /// or on EC2: its hosts and pinned keys come from its record.
    #[arg(short = 'd', long = "deployment", value_name = "NAME")]
    deployment: Option<String>,
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
    /// Roll out N hosts of a role at a time (or N% of them): a batch behind the balancer is
    /// taken out and drained, deployed, health-checked and put back before the next one.
    #[arg(long, value_parser = parse_batch, value_name = "N|N%")]
    rolling: Option<Batch>,
}

fn parse_batch(s: &str) -> Result<Batch, String> {
    let bad = || format!("{s:?}: give a number of hosts (1) or a share of them (25%)");
    match s.strip_suffix('%') {
        Some(p) => match p.parse::<u32>() {
            Ok(p) if (1..=100).contains(&p) => Ok(Batch::Percent(p)),
            _ => Err(bad()),
        },
        None => match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Batch::Hosts(n)),
            _ => Err(bad()),
        },
    }
}

#[derive(Debug, Args)]
struct SshArgs {
    /// The deployment (as -d NAME).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The host: its name, address or instance id [default: the only one, or asked].
    #[arg(value_name = "HOST")]
    host: Option<String>,
    #[command(flatten)]
    hosts: HostArgs,
    /// Run this on the host (with a pty) instead of a login shell.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// The deployment (as -d NAME).
    #[arg(value_name = "NAME")]
    name: Option<String>,
    #[command(flatten)]
    hosts: HostArgs,
    #[command(flatten)]
    output: OutputArgs,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Only lines this recent (systemd hosts; e.g. 10m).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    since: Option<Duration>,
    /// Lines per host to start with.
    #[arg(short = 'n', long, default_value_t = 100, value_name = "N")]
    lines: u32,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// The deployment to run it on (as -d NAME).
    #[arg(value_name = "NAME")]
    name: Option<String>,
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

//! Plain, resolved settings: what a command will do, decided before any work starts.
//! The CLI module builds these; nothing downstream sees clap types.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use crate::fleet::artifact::ProgramSource;
use crate::fleet::exec::{ExecJob, Target};
use crate::plan::Plan;
use crate::printer::Mode;
use crate::transport::ssh::SshSettings;
use crate::transport::ssh::known_hosts::KnownHosts;

pub enum Settings {
    Exec(ExecSettings),
    /// Deploy onto an inventory: what to deploy, the record's file, where programs come from
    /// (on EC2 these are resolved inside `CloudDeploySettings`).
    Deploy {
        deploy: Box<DeploySettings>,
        record: PathBuf,
        programs: ProgramSource,
    },
    /// Launch the spec's hosts on EC2, then deploy onto them.
    CloudDeploy(Box<CloudDeploySettings>),
    Terminate {
        deployment: String,
        region: Option<String>,
        timeout: Duration,
        mode: Mode,
        record: PathBuf,
        known_hosts: PathBuf,
    },
    /// Load the inference deployment's orchestrator and summarise.
    BenchInference(super::bench_inference::InferenceBench),
    /// The course's Lab 1 benchmark against the load balancer.
    BenchClusters(Box<super::bench_clusters::ClustersBench>),
    /// CloudWatch metrics over a window, saved into `out`.
    Metrics {
        metrics: crate::commands::metrics::MetricsSettings,
        window: crate::commands::metrics::Window,
        out: PathBuf,
        mode: Mode,
    },
    Status {
        deployment: String,
        region: Option<String>,
        json: bool,
        /// Where deploy pinned the instances' host keys.
        known_hosts: std::path::PathBuf,
    },
    /// Print what a deployment would do; touches nothing.
    Plan {
        plan: Plan,
        json: bool,
    },
}

pub struct ExecSettings {
    pub job: ExecJob,
    pub output: OutputSettings,
}

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
}

pub struct CloudDeploySettings {
    pub launch: crate::aws::launch::LaunchSettings,
    pub region: Option<String>,
    /// Opens the instances (`--key`); its public half is the imported key pair.
    pub key: crate::transport::ssh::key::ClientKey,
    pub user: String,
    pub trust_first_use: bool,
    pub record: PathBuf,
    pub known_hosts: PathBuf,
    pub parallel: usize,
    pub ssh: SshSettings,
    pub programs: ProgramSource,
    /// Where the workers get their model.
    pub model: crate::plan::ModelSource,
    pub health_timeout: Duration,
    pub output: OutputSettings,
}

pub struct OutputSettings {
    pub mode: Mode,
    /// Per-host logs go here; `None` disables them.
    pub log_dir: Option<PathBuf>,
    /// What the run is, for log headers and the JSON summary.
    pub title: String,
}

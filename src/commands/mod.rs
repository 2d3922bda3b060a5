//! One module per subcommand: its settings (plain data, resolved by the CLI before any
//! work) and its composition of the workers (fleet, aws, bench), the printer and the
//! results. This is the only floor that chooses an exit status (from [`crate::exit`]).
//!
//! `exec` and `copy` share [`exec`]: a copy is an exec whose command reads the file on stdin.

pub mod bench_clusters;
pub mod bench_inference;
pub mod deploy;
pub mod exec;
pub mod metrics;
pub mod plan;
pub mod ssh;
pub mod status;
pub mod terminate;

use crate::results;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bench;
use crate::exit;
use crate::fleet::artifact::ProgramSource;
use crate::plan::Plan;
use crate::printer::{self, Mode};
use crate::record::Record;

/// What the command line asked for, resolved.
pub enum Settings {
    Exec(exec::ExecSettings),
    /// Deploy onto an inventory: what to deploy, the record's file, where programs come from
    /// (on EC2 these are resolved inside `CloudDeploySettings`).
    Deploy {
        deploy: Box<deploy::DeploySettings>,
        record: PathBuf,
        programs: ProgramSource,
    },
    /// Launch the spec's hosts on EC2, then deploy onto them.
    CloudDeploy(Box<deploy::CloudDeploySettings>),
    Terminate {
        deployment: String,
        region: Option<String>,
        timeout: Duration,
        mode: Mode,
        record: PathBuf,
        known_hosts: PathBuf,
    },
    /// Load the inference deployment's orchestrator and summarise.
    BenchInference(bench_inference::InferenceBench),
    /// The course's Lab 1 benchmark against the load balancer.
    BenchClusters(Box<bench_clusters::ClustersBench>),
    /// CloudWatch metrics over a window, saved into `out`.
    Metrics {
        metrics: metrics::MetricsSettings,
        window: metrics::Window,
        out: PathBuf,
        mode: Mode,
    },
    Status {
        deployment: String,
        region: Option<String>,
        json: bool,
        /// Where deploy pinned the instances' host keys.
        known_hosts: PathBuf,
    },
    /// `agent status` of a deployment made on an inventory: its record.
    RecordStatus {
        record: Box<Record>,
        json: bool,
    },
    /// An interactive session on one host.
    Ssh(Box<ssh::SshSettingsOne>),
    /// Print what a deployment would do; touches nothing.
    Plan {
        plan: Plan,
        json: bool,
    },
}

pub struct OutputSettings {
    pub mode: Mode,
    /// Per-host logs go here; `None` disables them.
    pub log_dir: Option<PathBuf>,
    /// What the run is, for log headers and the JSON summary.
    pub title: String,
}

/// Runs resolved settings; returns the process exit status.
pub async fn run(settings: Settings) -> anyhow::Result<u8> {
    let cancel = CancellationToken::new();
    tokio::spawn(watch_ctrl_c(cancel.clone()));
    match settings {
        Settings::Exec(s) => exec::run(s, cancel).await,
        Settings::Deploy {
            deploy,
            record,
            programs,
        } => deploy::on_inventory(*deploy, &record, &programs, cancel).await,
        Settings::CloudDeploy(s) => deploy::on_ec2(*s, cancel).await,
        Settings::Terminate {
            deployment,
            region,
            timeout,
            mode,
            record,
            known_hosts,
        } => {
            terminate::run(
                &deployment,
                region.as_deref(),
                timeout,
                mode,
                &record,
                &known_hosts,
                cancel,
            )
            .await
        }
        Settings::Status {
            deployment,
            region,
            json,
            known_hosts,
        } => status::run(&deployment, region.as_deref(), json, &known_hosts).await,
        Settings::BenchInference(b) => bench_inference::run(b, cancel).await,
        Settings::BenchClusters(b) => bench_clusters::run(*b, cancel).await,
        Settings::Metrics {
            metrics,
            window,
            out,
            mode,
        } => metrics::run(&metrics, window, &out, mode, cancel).await,
        Settings::Plan { plan, json } => plan::run(&plan, json),
        Settings::Ssh(s) => ssh::run(*s, cancel).await,
        Settings::RecordStatus { record, json } => status::of_record(&record, json),
    }
}

/// First Ctrl-C: stop remote commands and report what was interrupted. Second: leave now.
async fn watch_ctrl_c(cancel: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_ok() {
        printer::notice("interrupted; stopping remote commands (Ctrl-C again to quit now)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    }
}

/// The end of every bench: summarise, save into `out` (default `bench/KIND-…`); the summary
/// and the folder.
fn conclude(
    run: &bench::Run,
    deployment: &bench::Deployment,
    out: Option<std::path::PathBuf>,
) -> anyhow::Result<(bench::Summary, std::path::PathBuf)> {
    let summary = run.summary();
    let out = out.unwrap_or_else(|| bench::default_out("bench", run.kind, run.started));
    results::bench::save(run, &summary, deployment, &out)?;
    Ok((summary, out))
}

/// A bench's exit: 0 all answered as expected, 2 errors or answers from the wrong
/// instances, 130 interrupted.
fn bench_exit(summary: &bench::Summary) -> u8 {
    if summary.interrupted {
        exit::INTERRUPTED
    } else if summary.as_expected() {
        exit::OK
    } else {
        exit::FAILED
    }
}

//! `agent`: deploy small fleets over SSH, and run commands on them.
//!
//! Data flows one way:
//!
//! ```text
//! cli ──► settings ──► plan ──► deploy | job ──► session (ssh | local) ──► event ──► render
//! ```
//!
//! - [`cli`]: clap types, resolved into plain [`settings`] before any work (inventory read,
//!   keys loaded and checked, spec validated and planned).
//! - [`inventory`]: hosts from a TOML file or `--host`.
//! - [`command`]: remote commands as pure values (rendered strings, unit-tested).
//! - [`job`]: `exec` and `copy` fan-out over hosts with a semaphore; emits [`event::Event`]s.
//! - [`deploy`]: per-host deploy pipelines of bounded steps; the remote side of each step is
//!   a value from [`step`]; progress saved in the [`record`]; programs from [`artifact`].
//! - [`session`]: the `Session` trait (run a command with stdin, stream output, reach a port
//!   on the host); [`ssh`] implements it over russh with pinned host keys
//!   ([`ssh::known_hosts`]) and checked keys ([`ssh::key`]).
//! - [`render`]: the one printer (TTY bars, plain lines, NDJSON), per-host logs, summary.
//! - [`spec`]: deployment specs (roles, programs, ports, load balancer routes); the course
//!   labs' `clusters` and `inference` are built in (`remote/specs/`).
//! - [`plan`]: what a deployment does on each host, as pure data (`agent plan` prints it).
//! - [`balancer`]: the HAProxy config of the load-balancer host off AWS.
//! - [`bench`]: the course's benchmarks (a load generator; results per request, HDR
//!   percentiles, per instance); [`metrics`]: CloudWatch over a bench's window
//!   ([`aws::metrics`] asks); [`chart`] draws PNG/SVG; [`report`] writes `report.md`.
//! - [`unit`]: systemd units, environment files and run scripts for the remote programs
//!   (askama templates in `remote/templates/`).
//!
//! See ARCHITECTURE.md for the invariants.

pub mod artifact;
pub mod aws;
pub mod balancer;
pub mod bench;
pub mod chart;
pub mod cli;
pub mod cloud;
pub mod cloud_init;
pub mod command;
pub mod deploy;
pub mod event;
pub mod inventory;
pub mod job;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod render;
pub mod report;
pub mod session;
pub mod settings;
pub mod spec;
pub mod ssh;
pub mod step;
pub mod unit;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::render::{Renderer, Report};
use crate::settings::Settings;

/// Exit status for "the command failed on some host".
pub const EXIT_FAILED: u8 = 2;
/// Exit status for "some host was unreachable" (wins over [`EXIT_FAILED`]).
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit status after Ctrl-C, as shells report SIGINT.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs resolved settings; returns the process exit status.
pub async fn run(settings: Settings) -> anyhow::Result<u8> {
    let cancel = CancellationToken::new();
    tokio::spawn(watch_ctrl_c(cancel.clone()));
    match settings {
        Settings::Exec(s) => {
            let hosts = s.job.targets.iter().map(|t| t.host.clone()).collect();
            let renderer = Renderer::new(s.output.mode, hosts, s.output.title, s.output.log_dir);
            let (tx, rx) = mpsc::channel(4096);
            let printer = tokio::spawn(renderer.run(rx));
            job::run(s.job, tx, cancel.clone()).await;
            let report = printer.await??;
            Ok(exit_status(&report, cancel.is_cancelled()))
        }
        Settings::Deploy {
            deploy,
            record,
            programs,
        } => {
            let mut blobs = artifact::programs(&deploy.plan.programs(), &programs)?;
            blobs.extend(artifact::local_files(&deploy.plan.local_files())?);
            let record = std::sync::Arc::new(record::RecordStore::open(
                &record,
                &deploy.plan.deployment,
                deploy.known_hosts.path(),
            )?);
            deploy_hosts(*deploy, blobs, record, cancel).await
        }
        Settings::CloudDeploy(s) => cloud::deploy(*s, cancel).await,
        Settings::Terminate {
            deployment,
            region,
            timeout,
            mode,
            record,
            known_hosts,
        } => {
            cloud::terminate(
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
        } => cloud::status(&deployment, region.as_deref(), json, &known_hosts).await,
        Settings::BenchInference(b) => bench::inference::run(b, cancel).await,
        Settings::BenchClusters(b) => bench::clusters::run(*b, cancel).await,
        Settings::Metrics {
            metrics,
            window,
            out,
            json,
        } => {
            let status = metrics::fetch(&metrics, window, &out, json, cancel).await?;
            if !json {
                println!(
                    "metrics: {} (metrics.csv, metrics.json, charts, report.md)",
                    out.display()
                );
            }
            Ok(status)
        }
        Settings::Plan { plan, json } => {
            render::plan(&plan, json)?;
            Ok(0)
        }
    }
}

/// Deploys onto resolved hosts. The caller has built the programs and opened the record
/// (local work first: a program that does not build, or a record that cannot be written,
/// stops before any host is touched).
pub(crate) async fn deploy_hosts(
    s: settings::DeploySettings,
    programs: std::collections::BTreeMap<String, artifact::Blob>,
    record: std::sync::Arc<record::RecordStore>,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let hosts = s.targets.iter().map(|t| t.host.clone()).collect();
    let renderer = Renderer::new(s.output.mode, hosts, s.output.title, s.output.log_dir)
        .per_host_lines()
        .footer(s.footer);
    let (tx, rx) = mpsc::channel(4096);
    let printer = tokio::spawn(renderer.run(rx));
    let job = deploy::DeployJob {
        plan: s.plan,
        targets: s.targets,
        programs,
        parallel: s.parallel,
        ssh: s.ssh,
        known_hosts: s.known_hosts,
        record: record.clone(),
        health_timeout: s.health_timeout,
    };
    deploy::run(job, tx, cancel.clone()).await;
    let report = printer.await??;
    record
        .flush()
        .await
        .with_context(|| format!("cannot write deployment record {}", record.path().display()))?;
    Ok(exit_status(&report, cancel.is_cancelled()))
}

/// First Ctrl-C: stop remote commands and report what was interrupted. Second: leave now.
async fn watch_ctrl_c(cancel: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("agent: interrupted; stopping remote commands (Ctrl-C again to quit now)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    }
}

pub fn exit_status(report: &Report, interrupted: bool) -> u8 {
    let t = report.tally();
    if interrupted || t.interrupted > 0 {
        EXIT_INTERRUPTED
    } else if t.unreachable > 0 {
        EXIT_UNREACHABLE
    } else if t.failed > 0 {
        EXIT_FAILED
    } else {
        0
    }
}

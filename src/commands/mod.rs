//! One module per subcommand.

pub mod bench_clusters;
pub mod bench_inference;
pub mod cloud;
pub mod metrics;
pub mod settings;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bench;
use crate::exit;
use crate::fleet::{artifact, deploy, exec as job};
use crate::printer::{self, Renderer};
use crate::record;
use settings::Settings;

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
            Ok(exit::of_hosts(&report.tally(), cancel.is_cancelled()))
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
        Settings::BenchInference(b) => bench_inference::run(b, cancel).await,
        Settings::BenchClusters(b) => bench_clusters::run(*b, cancel).await,
        Settings::Metrics {
            metrics,
            window,
            out,
            mode,
        } => {
            let status = metrics::fetch(&metrics, window, &out, mode, cancel).await?;
            printer::metrics_saved(&out, mode)?;
            Ok(status)
        }
        Settings::Plan { plan, json } => {
            printer::plan(&plan, json)?;
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
    Ok(exit::of_hosts(&report.tally(), cancel.is_cancelled()))
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
    crate::results::bench::save(run, &summary, deployment, &out)?;
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

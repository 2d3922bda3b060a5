//! `agent exec` and `agent copy`: one command (a copy: the file on its stdin) on every host,
//! output streamed as events to the printer.

use tokio_util::sync::CancellationToken;

use super::OutputSettings;
use crate::exit;
use crate::fleet::exec::{self as job, ExecJob};
use crate::printer::hosts::Renderer;

pub struct ExecSettings {
    pub job: ExecJob,
    pub output: OutputSettings,
}

pub async fn run(s: ExecSettings, cancel: CancellationToken) -> anyhow::Result<u8> {
    let hosts = s.job.targets.iter().map(|t| t.host.clone()).collect();
    let renderer = Renderer::new(s.output.mode, hosts, s.output.title, s.output.log_dir);
    let printer = renderer.start();
    job::run(s.job, printer.tx.clone(), cancel.clone()).await;
    let report = printer.finish().await?;
    Ok(exit::of_hosts(&report.tally(), cancel.is_cancelled()))
}

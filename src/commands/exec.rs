//! `agent exec` and `agent copy`: one command (a copy: the file on its stdin) on every host,
//! output streamed as events to the printer.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::OutputSettings;
use crate::exit;
use crate::fleet::exec::{self as job, ExecJob};
use crate::printer::Renderer;

pub struct ExecSettings {
    pub job: ExecJob,
    pub output: OutputSettings,
}

pub async fn run(s: ExecSettings, cancel: CancellationToken) -> anyhow::Result<u8> {
    let hosts = s.job.targets.iter().map(|t| t.host.clone()).collect();
    let renderer = Renderer::new(s.output.mode, hosts, s.output.title, s.output.log_dir);
    let (tx, rx) = mpsc::channel(4096);
    let printer = tokio::spawn(renderer.run(rx));
    job::run(s.job, tx, cancel.clone()).await;
    let report = printer.await??;
    Ok(exit::of_hosts(&report.tally(), cancel.is_cancelled()))
}

//! `agent bench inference`: C clients send N requests in all to the orchestrator; the
//! answers are checked, kept, summarised and charted.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bench::{self, Deployment, inference};
use crate::printer::{self, Mode};

#[derive(Debug, Clone)]
pub struct InferenceBench {
    /// The orchestrator, `http://host:port`.
    pub url: String,
    pub concurrency: usize,
    pub requests: usize,
    /// Classified by every request; `None`: an empty body, the worker's random lab text.
    pub text: Option<String>,
    /// Per request, queueing included.
    pub timeout: Duration,
    pub mode: Mode,
    pub out: Option<PathBuf>,
    pub deployment: Deployment,
}

/// Runs the bench, saves the results, prints the summary (text or JSON). Exit 0 when every
/// request was answered with probabilities, 2 when some failed, 130 when interrupted.
pub async fn run(b: InferenceBench, cancel: CancellationToken) -> anyhow::Result<u8> {
    let streams = inference::streams(&b.url, b.concurrency, b.requests, b.text.as_deref())?;
    let bars = printer::bench::Bars::new(&streams, b.mode);
    let run = bench::drive(
        "inference",
        b.url.clone(),
        streams,
        inference::reading,
        b.timeout,
        &bars,
        cancel,
    )
    .await;
    bars.clear();
    let (summary, out) = super::conclude(&run, &b.deployment, b.out.clone())?;
    printer::bench::summary(&summary, &out, b.mode)?;
    Ok(super::bench_exit(&summary))
}

//! `agent terminate`: everything the deployment created on AWS, found by tag, removed in
//! dependency order; then its host keys and record are forgotten.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::aws::{Aws, Interrupted, Progress, teardown};
use crate::exit;
use crate::printer::{self, Mode};
use crate::transport::ssh::known_hosts::KnownHosts;

pub async fn run(
    deployment: &str,
    region: Option<&str>,
    timeout: Duration,
    mode: Mode,
    record: &std::path::Path,
    known_hosts: &std::path::Path,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let aws = Aws::connect(region).await?;
    let printer = printer::cloud::start(mode);
    let progress = Progress {
        tx: &printer.tx,
        record: None,
        known_hosts: None,
    };
    let result = teardown::terminate(&aws, deployment, timeout, &progress, &cancel).await;
    let deleted = printer.finish().await?;
    let instances = match result {
        Ok(ids) => ids,
        Err(e) if e.is::<Interrupted>() || cancel.is_cancelled() => {
            printer::notice(&format!(
                "interrupted after removing {deleted} resources: run agent terminate {deployment} again"
            ));
            return Ok(exit::INTERRUPTED);
        }
        Err(e) => return Err(e),
    };
    // Everything is gone: so are the instances' host keys (by instance id) and the record.
    let store = KnownHosts::new(known_hosts.to_owned(), []);
    store.forget(&instances)?;
    if std::fs::read_to_string(known_hosts).is_ok_and(|t| t.trim().is_empty()) {
        let _ = std::fs::remove_file(known_hosts);
    }
    match std::fs::remove_file(record) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove deployment record {}", record.display()));
        }
        _ => {}
    }
    printer::cloud::terminated(mode, deployment, &aws.region, deleted)?;
    Ok(exit::OK)
}

//! `agent status`: the deployment's instances, pinned host keys (and what their consoles
//! say), load balancer and target health, found by tag.

use crate::aws::{Aws, teardown};
use crate::exit;
use crate::printer;
use crate::record::Record;
use crate::transport::ssh::known_hosts::KnownHosts;

pub async fn run(
    deployment: &str,
    region: Option<&str>,
    json: bool,
    known_hosts: &std::path::Path,
) -> anyhow::Result<u8> {
    let aws = Aws::connect(region).await?;
    let known_hosts = KnownHosts::new(known_hosts.to_owned(), []);
    let status = teardown::status(&aws, deployment, &known_hosts).await?;
    printer::cloud::status(&status, json)?;
    Ok(exit::OK)
}

/// A deployment made on an inventory: each host as the last deploy left it.
pub fn of_record(record: &Record, json: bool) -> anyhow::Result<u8> {
    printer::record_status(record, json)?;
    Ok(exit::OK)
}

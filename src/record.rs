//! The deployment record: what agent did to each host, saved after every step so a later
//! run (after Ctrl-C, a crash or a failed host) resumes where this one stopped. The hosts
//! themselves stay the truth for file contents (checked by checksum every run); the record
//! adds what a host cannot tell: which services still owe a restart for files already
//! uploaded, and which host keys were pinned.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::step::Init;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub deployment: String,
    /// Where the hosts' keys are pinned.
    pub known_hosts: PathBuf,
    /// Unix seconds of the last save.
    pub updated: u64,
    /// By `user@address:port`.
    pub hosts: BTreeMap<String, HostRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub role: String,
    /// SHA256 fingerprint of the host key seen on the last connection.
    pub host_key: Option<String>,
    pub init: Option<Init>,
    /// sha256 of each file as last uploaded or found, by path.
    pub files: BTreeMap<String, String>,
    /// Services whose files changed and that have not been restarted since: a run that
    /// stopped between upload and restart leaves them here for the next one.
    pub pending_restart: BTreeSet<String>,
    /// Each step's last status (`changed`, `unchanged`, `skipped`, `failed`).
    pub steps: BTreeMap<String, String>,
    /// `ok`, or why the last run failed on this host.
    pub result: Option<String>,
}

/// The record on disk, shared by every host's task; each update is written through
/// atomically (temporary file, fsync, rename).
#[derive(Debug)]
pub struct RecordStore {
    path: PathBuf,
    record: Mutex<Record>,
}

impl RecordStore {
    /// Opens the record at `path` (a new one if absent) and writes it back at once, so a
    /// record that cannot be saved stops the deploy before any host is touched.
    pub fn open(path: &Path, deployment: &str, known_hosts: &Path) -> anyhow::Result<Self> {
        let mut record = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<Record>(&bytes).with_context(|| {
                format!(
                    "deployment record {} is not valid: fix it or remove it (the next deploy re-checks every host)",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read deployment record {}", path.display())),
        };
        record.deployment = deployment.to_owned();
        record.known_hosts = known_hosts.to_owned();
        let store = RecordStore {
            path: path.to_owned(),
            record: Mutex::new(record),
        };
        store
            .save(&store.lock())
            .with_context(|| format!("cannot write deployment record {}", path.display()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn host(&self, key: &str) -> HostRecord {
        self.lock().hosts.get(key).cloned().unwrap_or_default()
    }

    /// Changes one host's entry and saves the record before returning.
    pub fn update(&self, key: &str, change: impl FnOnce(&mut HostRecord)) -> std::io::Result<()> {
        let mut record = self.lock();
        change(record.hosts.entry(key.to_owned()).or_default());
        self.save(&record)
    }

    fn save(&self, record: &Record) -> std::io::Result<()> {
        let mut record = record.clone();
        record.updated = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, &record)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_on_disk_at_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deployments/clusters.json");
        let store = RecordStore::open(&path, "clusters", Path::new("/k")).unwrap();
        assert!(path.exists(), "written before any host is touched");
        store
            .update("ubuntu@10.0.0.4:22", |h| {
                h.pending_restart.insert("agent-web.service".into());
            })
            .unwrap();
        let again = RecordStore::open(&path, "clusters", Path::new("/k")).unwrap();
        assert_eq!(
            again.host("ubuntu@10.0.0.4:22").pending_restart,
            BTreeSet::from(["agent-web.service".to_string()])
        );
        std::fs::write(&path, "{not json").unwrap();
        let err = RecordStore::open(&path, "clusters", Path::new("/k")).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not valid: fix it or remove it"),
            "{err:#}"
        );
    }
}

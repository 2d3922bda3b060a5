//! The deployment record: what agent did to each host, saved after every step so a later
//! run (after Ctrl-C, a crash or a failed host) resumes where this one stopped. The hosts
//! themselves stay the truth for file contents (checked by checksum every run); the record
//! adds what a host cannot tell: which services still owe a restart for files already
//! uploaded, and which host keys were pinned.

use crate::resource;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::inventory::{Host, Init};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub deployment: String,
    /// Where the hosts' keys are pinned.
    pub known_hosts: PathBuf,
    /// Unix seconds of the last save.
    pub updated: u64,
    /// By `user@address:port`.
    pub hosts: BTreeMap<String, HostRecord>,
    /// Cloud resources this deployment created, each saved before the next was created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<resource::Resource>,
    /// How to reach the deployment again by its name (`agent exec NAME`, `logs`, `ssh`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
}

/// A deployment's hosts as the last deploy reached them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// The spec deployed (a built-in name or a file's path).
    pub spec: String,
    /// Every host as agent dials it, each with the key that opens it (an absolute path).
    pub hosts: Vec<Host>,
    /// EC2: instance id by host name (pins are labelled by it, and `--host` takes it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, String>,
    /// EC2: its region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
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

/// The record, shared by every host's task. [`RecordStore::note`] changes it in memory;
/// [`RecordStore::commit`] also makes it durable before returning (temporary file, fsync,
/// rename), group-committed: while one save runs, later changes queue and the next save
/// writes them all at once, so 50 hosts do not mean 50 fsyncs in a row.
#[derive(Debug)]
pub struct RecordStore {
    path: PathBuf,
    state: Mutex<State>,
    /// The version last written to disk; held while writing, so one save runs at a time.
    saved: tokio::sync::Mutex<u64>,
}

#[derive(Debug)]
struct State {
    record: Record,
    /// Bumped by every change.
    version: u64,
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
        write(path, record.clone()).with_context(|| format!("cannot write deployment record {}", path.display()))?;
        Ok(RecordStore {
            path: path.to_owned(),
            state: Mutex::new(State { record, version: 0 }),
            saved: tokio::sync::Mutex::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn host(&self, key: &str) -> HostRecord {
        self.lock().record.hosts.get(key).cloned().unwrap_or_default()
    }

    /// Changes one host's entry in memory; the next commit or flush writes it.
    pub fn note(&self, key: &str, change: impl FnOnce(&mut HostRecord)) -> u64 {
        let mut state = self.lock();
        change(state.record.hosts.entry(key.to_owned()).or_default());
        state.version += 1;
        state.version
    }

    /// Changes one host's entry and returns once the change is on disk.
    pub async fn commit(&self, key: &str, change: impl FnOnce(&mut HostRecord)) -> std::io::Result<()> {
        let mine = self.note(key, change);
        self.save_from(mine).await
    }

    /// Adds a created cloud resource and returns once it is on disk.
    pub async fn commit_resource(&self, resource: resource::Resource) -> std::io::Result<()> {
        let mine = {
            let mut state = self.lock();
            let list = &mut state.record.resources;
            list.retain(|r| r.id != resource.id);
            list.push(resource);
            state.version += 1;
            state.version
        };
        self.save_from(mine).await
    }

    /// Remembers how to reach the deployment: hosts of this run replace their entries by
    /// name, the others stay (a deploy narrowed by `--role` keeps the rest).
    pub fn remember(&self, access: Access) {
        let mut state = self.lock();
        let mut hosts = state.record.access.take().map(|a| a.hosts).unwrap_or_default();
        hosts.retain(|h| !access.hosts.iter().any(|n| n.name == h.name));
        hosts.extend(access.hosts.iter().cloned());
        state.record.access = Some(Access { hosts, ..access });
        state.version += 1;
    }

    pub fn resources(&self) -> Vec<resource::Resource> {
        self.lock().record.resources.clone()
    }

    /// Writes whatever changed since the last save.
    pub async fn flush(&self) -> std::io::Result<()> {
        let now = self.lock().version;
        self.save_from(now).await
    }

    /// Makes version `v` (at least) durable.
    async fn save_from(&self, v: u64) -> std::io::Result<()> {
        let mut saved = self.saved.lock().await;
        if *saved >= v {
            return Ok(()); // a save that started after our change already wrote it
        }
        let (record, version) = {
            let state = self.lock();
            (state.record.clone(), state.version)
        };
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write(&path, record))
            .await
            .map_err(std::io::Error::other)??;
        *saved = version;
        Ok(())
    }
}

/// The record at `path`, if there is one.
pub fn read(path: &Path) -> anyhow::Result<Option<Record>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("deployment record {} is not valid: fix it or remove it", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read deployment record {}", path.display())),
    }
}

fn write(path: &Path, mut record: Record) -> std::io::Result<()> {
    record.updated = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    // One write: serde_json on an unbuffered file makes a syscall per token.
    let mut text = serde_json::to_vec_pretty(&record)?;
    text.push(b'\n');
    tmp.write_all(&text)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_are_on_disk_at_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deployments/clusters.json");
        let store = RecordStore::open(&path, "clusters", Path::new("/k")).unwrap();
        assert!(path.exists(), "written before any host is touched");
        store.note("ubuntu@10.0.0.5:22", |h| h.name = "noted".into());
        let on_disk = || std::fs::read_to_string(&path).unwrap();
        assert!(!on_disk().contains("noted"), "a note waits for the next save");
        // Many hosts committing at once: every one returns with its change on disk.
        let store = std::sync::Arc::new(store);
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .commit(&format!("ubuntu@10.0.1.{i}:22"), |h| h.name = format!("h{i}"))
                        .await
                        .unwrap();
                    assert!(
                        std::fs::read_to_string(store.path())
                            .unwrap()
                            .contains(&format!("\"h{i}\""))
                    );
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(on_disk().contains("noted"));
        store
            .commit("ubuntu@10.0.0.4:22", |h| {
                h.pending_restart.insert("agent-web.service".into());
            })
            .await
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

//! The programs of `remote/` as bytes ready to upload: built here in release mode for
//! x86_64 Linux with cargo (or taken from a folder of prebuilt binaries), checksummed once
//! and shared by every host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The target the remote programs run on (EC2 Ubuntu amd64; the local fleet is this machine).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where program binaries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramSource {
    /// `cargo build --release` in agent's own source tree.
    Build { workspace: PathBuf },
    /// A folder that already holds the binaries, by name.
    Dir(PathBuf),
}

impl ProgramSource {
    /// agent's source tree, as it was when this binary was built.
    pub fn default_build() -> Self {
        ProgramSource::Build {
            workspace: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }
    }
}

/// A file's bytes and its sha256 (lowercase hex).
#[derive(Debug, Clone)]
pub struct Blob {
    pub bytes: Bytes,
    pub sha256: String,
}

impl Blob {
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let sha256 = sha256_hex(&bytes);
        Blob { bytes, sha256 }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds (or finds) each named program and reads it into memory.
pub fn programs(names: &[&str], source: &ProgramSource) -> anyhow::Result<BTreeMap<String, Blob>> {
    let paths = match source {
        ProgramSource::Dir(dir) => names
            .iter()
            .map(|n| (n.to_string(), dir.join(n)))
            .collect::<BTreeMap<_, _>>(),
        ProgramSource::Build { workspace } => build(names, workspace)?,
    };
    let mut out = BTreeMap::new();
    for (name, path) in paths {
        let bytes = std::fs::read(&path).with_context(|| match source {
            ProgramSource::Dir(_) => format!("program {name}: cannot read {}", path.display()),
            ProgramSource::Build { .. } => {
                format!("program {name}: cargo built it, yet {} is unreadable", path.display())
            }
        })?;
        if !bytes.starts_with(b"\x7fELF") {
            bail!("program {name}: {} is not a Linux executable (ELF)", path.display());
        }
        out.insert(name, Blob::new(bytes));
    }
    Ok(out)
}

/// Reads the operator's files a plan uploads (a model folder's), keyed by their path.
pub fn local_files(paths: &[&str]) -> anyhow::Result<BTreeMap<String, Blob>> {
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {p}"))?;
            Ok((p.to_string(), Blob::new(bytes)))
        })
        .collect()
}

/// `cargo build --release --target x86_64-unknown-linux-gnu -p NAME...`, reading where each
/// executable landed from cargo's JSON messages (CARGO_TARGET_DIR and the like included).
fn build(names: &[&str], workspace: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    // Without `-p`, cargo would build the whole workspace, agent included (minutes).
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    if !workspace.join("Cargo.toml").is_file() {
        bail!(
            "cannot build the remote programs: agent's source tree {} is gone; pass --programs DIR with prebuilt binaries",
            workspace.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--quiet", "--locked", "--target", TARGET])
        .args(["--message-format", "json-render-diagnostics"]);
    for n in names {
        cmd.args(["-p", n, "--bin", n]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}: is Rust (cargo) installed?", cargo.to_string_lossy()))?;
    if !out.status.success() {
        bail!("building {} with cargo failed (its errors are above)", names.join(", "));
    }
    let mut found = BTreeMap::new();
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
            && names.contains(&name)
        {
            found.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    for n in names {
        if !found.contains_key(*n) {
            bail!("cargo built no executable named {n}");
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_sha256() {
        assert_eq!(
            Blob::new(&b"hello\n"[..]).sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }

    #[test]
    fn no_program_needs_no_build() {
        let gone = ProgramSource::Build {
            workspace: "/nonexistent/agent".into(),
        };
        assert!(programs(&[], &gone).unwrap().is_empty());
        assert!(programs(&["agent-web"], &gone).is_err());
    }

    #[test]
    fn a_folder_of_binaries_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent-web"), "#!/bin/sh\n").unwrap();
        let err = programs(&["agent-web"], &ProgramSource::Dir(dir.path().into())).unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a Linux executable (ELF)"),
            "{err:#}"
        );
        let err = programs(&["agent-worker"], &ProgramSource::Dir(dir.path().into())).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("program agent-worker: cannot read "),
            "{err:#}"
        );
    }
}

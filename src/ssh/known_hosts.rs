//! agent's own known_hosts (OpenSSH format), one per inventory or deployment; never
//! `~/.ssh/known_hosts`. Trust on first use is reported; a changed key is refused.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use russh::keys::{HashAlg, PublicKey};

/// What the store says about a key a host presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The key is on file for this host.
    Known,
    /// The key has now been pinned: first contact, or `replaced` an old key on request.
    Pinned { fingerprint: String, replaced: bool },
    /// Another key is on file. Whatever its type: a host that switched from ed25519 to RSA
    /// is just as suspicious as one that changed its ed25519 key.
    Changed { pinned: Vec<String>, presented: String },
}

#[derive(Debug, thiserror::Error)]
#[error("known hosts file {path}: {source}")]
pub struct StoreError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub struct KnownHosts {
    path: PathBuf,
    /// Host patterns whose pinned keys are replaced at the next contact (`--repin-host-key`).
    repin: Mutex<HashSet<String>>,
    /// Serialises appends within this process; `File::lock` covers other processes.
    write: Mutex<()>,
}

impl KnownHosts {
    pub fn new(path: PathBuf, repin: impl IntoIterator<Item = String>) -> Self {
        KnownHosts {
            path,
            repin: Mutex::new(repin.into_iter().collect()),
            write: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks `key` for `pattern` (`host` or `[host]:port`), pinning it on first contact
    /// (or when the operator asked to re-pin this host).
    pub fn check(&self, pattern: &str, key: &PublicKey) -> Result<Verdict, StoreError> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let err = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        file.lock().map_err(err)?;
        let text = std::fs::read_to_string(&self.path).map_err(err)?;
        let presented = fingerprint(key);
        let repin = self.repin.lock().unwrap_or_else(|e| e.into_inner()).remove(pattern);
        if repin {
            let kept: String = text
                .lines()
                .filter(|l| parse_line(l).is_none_or(|(hosts, _)| !hosts.contains(&pattern)))
                .map(|l| format!("{l}\n"))
                .collect();
            // The rename replaces the inode `file` has open, so the new line goes in with it.
            let replaced = kept.len() != text.len();
            rewrite(&self.path, &(kept + &entry(pattern, key).map_err(err)?)).map_err(err)?;
            return Ok(Verdict::Pinned {
                fingerprint: presented,
                replaced,
            });
        }
        let pinned: Vec<PublicKey> = text
            .lines()
            .filter_map(parse_line)
            .filter(|(hosts, _)| hosts.contains(&pattern))
            .map(|(_, k)| k)
            .collect();
        if pinned.iter().any(|k| k.key_data() == key.key_data()) {
            return Ok(Verdict::Known);
        }
        if !pinned.is_empty() {
            return Ok(Verdict::Changed {
                pinned: pinned.iter().map(fingerprint).collect(),
                presented,
            });
        }
        let mut file = &file;
        file.write_all(entry(pattern, key).map_err(err)?.as_bytes())
            .map_err(err)?;
        file.sync_data().map_err(err)?;
        Ok(Verdict::Pinned {
            fingerprint: presented,
            replaced: false,
        })
    }

    /// Removes every key pinned for `pattern` (the host is gone).
    pub fn forget(&self, pattern: &str) -> Result<bool, StoreError> {
        let _guard = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let err = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Ok(false);
        };
        let kept: String = text
            .lines()
            .filter(|l| parse_line(l).is_none_or(|(hosts, _)| !hosts.contains(&pattern)))
            .map(|l| format!("{l}\n"))
            .collect();
        let changed = kept.len() != text.len();
        if changed {
            rewrite(&self.path, &kept).map_err(err)?;
        }
        Ok(changed)
    }
}

pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `host1,host2 type base64 [comment]`. Comments, markers (@revoked, @cert-authority) and
/// hashed names are not ours to write; they are skipped rather than misread.
fn parse_line(line: &str) -> Option<(Vec<&str>, PublicKey)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
        return None;
    }
    let (hosts, key) = line.split_once(char::is_whitespace)?;
    let key = PublicKey::from_openssh(key.trim()).ok()?;
    Some((hosts.split(',').collect(), key))
}

/// One known_hosts line, without the key's comment.
fn entry(pattern: &str, key: &PublicKey) -> std::io::Result<String> {
    let mut key = key.clone();
    key.set_comment("");
    Ok(format!(
        "{pattern} {}\n",
        key.to_openssh().map_err(std::io::Error::other)?.trim_end()
    ))
}

/// Replaces the file atomically so a crash never leaves it half-written.
fn rewrite(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        let k = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        PublicKey::from(k.public)
    }

    #[test]
    fn pins_then_knows_then_refuses_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = KnownHosts::new(dir.path().join("sub/known_hosts"), []);
        assert!(matches!(
            store.check("10.0.0.4", &key(1)).unwrap(),
            Verdict::Pinned { .. }
        ));
        assert_eq!(store.check("10.0.0.4", &key(1)).unwrap(), Verdict::Known);
        // Another host is independent; a port makes another entry.
        assert!(matches!(
            store.check("[10.0.0.4]:2222", &key(2)).unwrap(),
            Verdict::Pinned { .. }
        ));
        match store.check("10.0.0.4", &key(3)).unwrap() {
            Verdict::Changed { pinned, presented } => {
                assert_eq!(pinned, vec![fingerprint(&key(1))]);
                assert_eq!(presented, fingerprint(&key(3)));
                assert!(presented.starts_with("SHA256:"));
            }
            v => panic!("{v:?}"),
        }
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("10.0.0.4 ssh-ed25519 AAAA"), "{text}");
        assert!(text.contains("[10.0.0.4]:2222 ssh-ed25519 "), "{text}");
    }

    #[test]
    fn a_key_of_another_type_is_a_change_not_a_new_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        // An RSA key pinned by OpenSSH for this host, in its own format with a comment.
        let rsa = "AAAAB3NzaC1yc2EAAAADAQABAAAAgQDPiH7w6LSg/C4EvxBgbE3rH0iHlWQihm4oYV0IN11UDhfiAFyMbNxCLlV3GTkm5ltebb08dD+OvasfT0EPgJcAT4vJPlp7orMXwnC47vPnlN/JX5rAAMjxR+K/cL4SHzn6imFNnPIsyrMrTut+DVAzXmlK5b5cFGjtXneY3kSFPQ==";
        std::fs::write(&path, format!("# comment\n10.0.0.9 ssh-rsa {rsa} root@old\n")).unwrap();
        let store = KnownHosts::new(path, []);
        assert!(matches!(
            store.check("10.0.0.9", &key(1)).unwrap(),
            Verdict::Changed { .. }
        ));
    }

    #[test]
    fn repin_replaces_only_that_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        KnownHosts::new(path.clone(), []).check("a", &key(1)).unwrap();
        KnownHosts::new(path.clone(), []).check("b", &key(2)).unwrap();
        let store = KnownHosts::new(path.clone(), ["a".to_owned()]);
        assert!(matches!(
            store.check("a", &key(3)).unwrap(),
            Verdict::Pinned { replaced: true, .. }
        ));
        assert_eq!(store.check("a", &key(3)).unwrap(), Verdict::Known);
        assert_eq!(store.check("b", &key(2)).unwrap(), Verdict::Known);
        assert!(store.forget("a").unwrap());
        assert!(!store.forget("a").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }
}

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
    state: Mutex<State>,
}

struct State {
    /// `(host pattern, key)` pairs, read from the file at the first check. Every handshake
    /// consults these; the file is touched again only to pin a key.
    entries: Option<Vec<(String, PublicKey)>>,
    /// Host patterns whose pinned keys are replaced at the next contact (`--repin-host-key`).
    repin: HashSet<String>,
}

impl KnownHosts {
    pub fn new(path: PathBuf, repin: impl IntoIterator<Item = String>) -> Self {
        KnownHosts {
            path,
            state: Mutex::new(State {
                entries: None,
                repin: repin.into_iter().collect(),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks `key` for `pattern` (`host` or `[host]:port`), pinning it on first contact
    /// (or when the operator asked to re-pin this host).
    pub fn check(&self, pattern: &str, key: &PublicKey) -> Result<Verdict, StoreError> {
        let err = |source| StoreError {
            path: self.path.clone(),
            source,
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let repin = state.repin.remove(pattern);
        if state.entries.is_none() {
            let text = match std::fs::read_to_string(&self.path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                r => r.map_err(err)?,
            };
            state.entries = Some(parse(&text));
        }
        let entries = state.entries.as_mut().expect("loaded above");
        if !repin && let Some(v) = judge(entries, pattern, key) {
            return Ok(v);
        }
        // Pinning: under the file lock, re-read the file so a key another agent process pinned
        // meanwhile is judged, not overwritten.
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
        *entries = parse(&text);
        let line = entry(pattern, key).map_err(err)?;
        let fingerprint = fingerprint(key);
        if repin {
            let kept: String = text
                .lines()
                .filter(|l| parse_line(l).is_none_or(|(hosts, _)| !hosts.contains(&pattern)))
                .map(|l| format!("{l}\n"))
                .collect();
            let replaced = kept.len() != text.len();
            rewrite(&self.path, &(kept + &line)).map_err(err)?;
            entries.retain(|(p, _)| p != pattern);
            entries.push((pattern.to_owned(), key.clone()));
            return Ok(Verdict::Pinned { fingerprint, replaced });
        }
        if let Some(v) = judge(entries, pattern, key) {
            return Ok(v);
        }
        let mut file = &file;
        file.write_all(line.as_bytes()).map_err(err)?;
        file.sync_data().map_err(err)?;
        entries.push((pattern.to_owned(), key.clone()));
        Ok(Verdict::Pinned {
            fingerprint,
            replaced: false,
        })
    }
}

/// The verdict when keys are on file for `pattern`; `None` when none is (first contact).
fn judge(entries: &[(String, PublicKey)], pattern: &str, key: &PublicKey) -> Option<Verdict> {
    let pinned: Vec<&PublicKey> = entries.iter().filter(|(p, _)| p == pattern).map(|(_, k)| k).collect();
    if pinned.iter().any(|k| k.key_data() == key.key_data()) {
        Some(Verdict::Known)
    } else if pinned.is_empty() {
        None
    } else {
        Some(Verdict::Changed {
            pinned: pinned.into_iter().map(fingerprint).collect(),
            presented: fingerprint(key),
        })
    }
}

fn parse(text: &str) -> Vec<(String, PublicKey)> {
    text.lines()
        .filter_map(parse_line)
        .flat_map(|(hosts, key)| hosts.into_iter().map(move |h| (h.to_owned(), key.clone())))
        .collect()
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
    fn a_key_pinned_by_another_process_meanwhile_is_judged_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        let mine = KnownHosts::new(path.clone(), []);
        assert!(matches!(mine.check("a", &key(1)).unwrap(), Verdict::Pinned { .. }));
        // Another agent run pins host b after this store read the file.
        KnownHosts::new(path.clone(), []).check("b", &key(2)).unwrap();
        assert!(matches!(mine.check("b", &key(3)).unwrap(), Verdict::Changed { .. }));
        assert_eq!(mine.check("b", &key(2)).unwrap(), Verdict::Known);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
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
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        // A new store (the next run) reads the re-pinned key from the file.
        assert_eq!(
            KnownHosts::new(path.clone(), []).check("a", &key(3)).unwrap(),
            Verdict::Known
        );
        assert!(matches!(
            KnownHosts::new(path, []).check("a", &key(1)).unwrap(),
            Verdict::Changed { .. }
        ));
    }
}

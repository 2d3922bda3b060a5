//! The operator's private key (labsuser.pem and friends), checked the way OpenSSH checks it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::PrivateKey;

/// A loaded private key and where it came from (for messages).
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub path: PathBuf,
    pub key: Arc<PrivateKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {path} not found: pass the private key file with --key (e.g. --key labsuser.pem)")]
    Missing { path: PathBuf },
    #[error("cannot read key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("key {path} is readable by others (mode {mode:04o}); ssh refuses such keys: run chmod 400 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is a public key; pass the private key file (the one without .pub)")]
    Public { path: PathBuf },
    #[error("key {path} is encrypted: set AGENT_KEY_PASSPHRASE to its passphrase")]
    Encrypted { path: PathBuf },
    #[error("key {path}: wrong passphrase in AGENT_KEY_PASSPHRASE")]
    WrongPassphrase { path: PathBuf },
    #[error("{path} is not a private key agent can read ({reason}); expected a PEM or OpenSSH private key")]
    Invalid { path: PathBuf, reason: String },
}

impl ClientKey {
    /// Loads `path`, refusing what OpenSSH refuses (group/other-readable files) and naming the
    /// fix for each way it can go wrong.
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<ClientKey, KeyError> {
        let path_buf = path.to_owned();
        let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => KeyError::Missing { path: path_buf.clone() },
            _ => KeyError::Read {
                path: path_buf.clone(),
                source,
            },
        })?;
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path_buf.clone(),
            source,
        })?;
        let trimmed = text.trim_start();
        if trimmed.starts_with("ssh-") || trimmed.starts_with("ecdsa-") || trimmed.starts_with("-----BEGIN PUBLIC KEY")
        {
            return Err(KeyError::Public { path: path_buf });
        }
        // Checked after the public-key case: a .pub file is normally world-readable.
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path_buf, mode });
        }
        let encrypted = text.contains("Proc-Type: 4,ENCRYPTED") || is_encrypted_openssh(&text);
        match russh::keys::decode_secret_key(&text, passphrase) {
            Ok(key) => Ok(ClientKey {
                path: path_buf,
                key: Arc::new(key),
            }),
            Err(_) if encrypted && passphrase.is_none() => Err(KeyError::Encrypted { path: path_buf }),
            Err(_) if encrypted => Err(KeyError::WrongPassphrase { path: path_buf }),
            Err(russh::keys::Error::KeyIsEncrypted) => Err(KeyError::Encrypted { path: path_buf }),
            Err(e) => Err(KeyError::Invalid {
                path: path_buf,
                reason: e.to_string().to_lowercase(),
            }),
        }
    }

    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string()
    }
}

/// OpenSSH-format keys say whether they are encrypted in their header (cipher name != "none").
fn is_encrypted_openssh(text: &str) -> bool {
    if !text.contains("BEGIN OPENSSH PRIVATE KEY") {
        return false;
    }
    russh::keys::ssh_key::PrivateKey::from_openssh(text).is_ok_and(|k| k.is_encrypted())
}

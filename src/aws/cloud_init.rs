//! Host keys known before the first connection: agent generates each instance's SSH host
//! key, hands it to cloud-init in the user data (cloud-config `ssh_keys`), and pins its public
//! half before the instance boots. The console output, where cloud-init prints the host keys
//! it installed, confirms it afterwards.
//!
//! The private host key travels in the user data, which the instance's metadata service and
//! principals allowed `ec2:DescribeInstanceAttribute` can read (README: Security).

use std::io::Read;

use russh::keys::PublicKey;
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::{LineEnding, PrivateKey};

/// A freshly generated ed25519 host key.
pub struct HostKey {
    private: PrivateKey,
}

impl HostKey {
    pub fn generate(comment: &str) -> std::io::Result<HostKey> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        let mut private = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        private.set_comment(comment);
        Ok(HostKey { private })
    }

    pub fn public(&self) -> PublicKey {
        self.private.public_key().clone()
    }

    /// The public key as one OpenSSH line (`ssh-ed25519 AAAA… comment`).
    pub fn public_line(&self) -> String {
        self.public().to_openssh().expect("an ed25519 key always encodes")
    }

    /// cloud-config that makes this the instance's only host key. `ssh_genkeytypes` names
    /// only the type it brings: cloud-init generates a type only where no key file exists, and
    /// an empty list is invalid from cloud-init 23.4 on (its schema has `minItems: 1`).
    pub fn user_data(&self, description: &str) -> String {
        let private = self
            .private
            .to_openssh(LineEnding::LF)
            .expect("an ed25519 key always encodes");
        let indented: String = private.lines().map(|l| format!("    {l}\n")).collect();
        format!(
            "#cloud-config\n\
             # {description}: written by agent, which pinned this host key before launch.\n\
             ssh_deletekeys: true\n\
             ssh_genkeytypes: [ed25519]\n\
             ssh_keys:\n  \
             ed25519_private: |\n{indented}  \
             ed25519_public: {}\n",
            self.public_line()
        )
    }
}

/// The host keys cloud-init printed to the console between `-----BEGIN SSH HOST KEY KEYS-----`
/// and `-----END SSH HOST KEY KEYS-----`; empty when the console does not show them (yet).
pub fn console_host_keys(console: &str) -> Vec<PublicKey> {
    let Some((_, rest)) = console.split_once("-----BEGIN SSH HOST KEY KEYS-----") else {
        return Vec::new();
    };
    let block = rest.split("-----END SSH HOST KEY KEYS-----").next().unwrap_or_default();
    block
        .lines()
        // Serial consoles may prefix lines with a timestamp or `ec2: `.
        .filter_map(|l| l.find("ssh-").or_else(|| l.find("ecdsa-")).map(|i| &l[i..]))
        .filter_map(|l| PublicKey::from_openssh(l.trim()).ok())
        .collect()
}

/// What the console says about the key agent pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleCheck {
    /// cloud-init printed exactly the pinned key.
    Matches,
    /// No host-key block yet (Xen types post the console minutes after boot).
    NotPosted,
    /// cloud-init printed other keys: the instance did not boot with the pinned key.
    Differs,
}

pub fn check_console(console: &str, pinned: &PublicKey) -> ConsoleCheck {
    let keys = console_host_keys(console);
    if keys.is_empty() {
        ConsoleCheck::NotPosted
    } else if keys.iter().all(|k| k.key_data() == pinned.key_data()) {
        ConsoleCheck::Matches
    } else {
        ConsoleCheck::Differs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_is_cloud_config_with_the_key_indented_as_a_block() {
        let key = HostKey::generate("agent:clusters/cluster1-1").unwrap();
        let text = key.user_data("clusters cluster1-1");
        assert!(text.starts_with("#cloud-config\n"), "{text}");
        assert!(text.contains("\nssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n"));
        assert!(text.contains("    -----END OPENSSH PRIVATE KEY-----\n  ed25519_public: ssh-ed25519 AAAA"));
        assert!(text.ends_with(" agent:clusters/cluster1-1\n"), "{text}");
        // Every line of the block scalar is indented deeper than its key.
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("ed25519_private"))
            .skip(1)
            .take_while(|l| !l.contains("ed25519_public"))
            .collect();
        assert!(
            block.len() >= 5 && block.iter().all(|l| l.starts_with("    ")),
            "{block:?}"
        );
        // The private key in the block is the one whose public half is pinned.
        let pem: String = block.iter().map(|l| format!("{}\n", l.trim_start())).collect();
        let back = PrivateKey::from_openssh(pem).unwrap();
        assert_eq!(back.public_key().key_data(), key.public().key_data());
        assert_ne!(
            HostKey::generate("x").unwrap().public().key_data(),
            key.public().key_data()
        );
    }

    /// The console block as cloud-init's keys-to-console writes it on Ubuntu 24.04.
    fn console(keys: &[String]) -> String {
        let mut s = String::from(
            "[   12.345678] cloud-init[812]: Cloud-init v. 24.4 running 'modules:config'\n\
             <14>Nov 22 10:00:01 cloud-init: #############################################################\n\
             <14>Nov 22 10:00:01 cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n\
             <14>Nov 22 10:00:01 cloud-init: 256 SHA256:abc root@ip-10-0-0-4 (ED25519)\n\
             <14>Nov 22 10:00:01 cloud-init: -----END SSH HOST KEY FINGERPRINTS-----\n\
             -----BEGIN SSH HOST KEY KEYS-----\n",
        );
        for k in keys {
            s.push_str(k);
            s.push('\n');
        }
        s.push_str("-----END SSH HOST KEY KEYS-----\n[   13.0] cloud-init[812]: Cloud-init v. 24.4 finished\n");
        s
    }

    #[test]
    fn console_confirms_or_contradicts_the_pinned_key() {
        let key = HostKey::generate("root@ip-10-0-0-4").unwrap();
        let other = HostKey::generate("root@ip-10-0-0-4").unwrap();
        let pinned = key.public();
        assert_eq!(
            check_console(&console(&[key.public_line()]), &pinned),
            ConsoleCheck::Matches
        );
        assert_eq!(
            check_console(&console(&[other.public_line()]), &pinned),
            ConsoleCheck::Differs
        );
        // A second key beside ours means cloud-init generated keys of its own.
        assert_eq!(
            check_console(&console(&[key.public_line(), other.public_line()]), &pinned),
            ConsoleCheck::Differs
        );
        assert_eq!(
            check_console("Xen version 4.2 booting\n", &pinned),
            ConsoleCheck::NotPosted
        );
        assert_eq!(console_host_keys(&console(&[key.public_line()])).len(), 1);
    }
}

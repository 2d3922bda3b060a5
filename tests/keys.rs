//! Private keys as users have them: labsuser.pem (PKCS#1), OpenSSH RSA and ed25519, encrypted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Fleet, agent, run};

fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-f"])
        .arg(&path)
        .args(args)
        .status()
        .unwrap();
    assert!(ok.success());
    path
}

#[test]
fn every_key_format_authenticates_and_bad_keys_say_how_to_fix() {
    let fleet = Fleet::up("keys", 1, 20);
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rsa = keygen(dir.path(), "id_rsa", &["-t", "rsa", "-b", "2048", "-N", ""]);
    let ed = keygen(dir.path(), "id_ed25519", &["-t", "ed25519", "-N", ""]);
    let locked = keygen(dir.path(), "locked", &["-t", "ed25519", "-N", "s3cret"]);
    let locked_pem = keygen(
        dir.path(),
        "locked.pem",
        &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "s3cret"],
    );
    assert!(
        std::fs::read_to_string(&rsa)
            .unwrap()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
    );
    assert!(
        std::fs::read_to_string(fleet.key())
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );

    // Authorize the new keys, using the fleet's labsuser.pem.
    let pubs: String = [&rsa, &ed, &locked, &locked_pem]
        .iter()
        .map(|k| std::fs::read_to_string(k.with_extension(pub_ext(k))).unwrap())
        .collect();
    let mut c = agent(state.path());
    c.arg("exec").arg("-i").arg(fleet.inventory()).arg("--no-logs");
    c.args(["--", &format!("printf '%s' '{pubs}' >> ~/.ssh/authorized_keys")]);
    assert_eq!(run(c).code, 0);

    let exec = |key: &Path, passphrase: Option<&str>| {
        let mut c = agent(state.path());
        c.arg("exec").arg("-i").arg(fleet.inventory()).arg("--key").arg(key);
        c.args(["--no-logs", "--", "echo authenticated"]);
        if let Some(p) = passphrase {
            c.env("AGENT_KEY_PASSPHRASE", p);
        }
        run(c)
    };
    for key in [&rsa, &ed] {
        let r = exec(key, None);
        assert_eq!(r.code, 0, "{}: {}{}", key.display(), r.stdout, r.stderr);
        assert!(r.stdout.contains("| authenticated"));
    }
    for key in [&locked, &locked_pem] {
        let r = exec(key, None);
        assert_eq!(r.code, 1, "{}", r.stdout);
        assert_eq!(
            r.stderr.trim(),
            format!(
                "agent: key {} is encrypted: set AGENT_KEY_PASSPHRASE to its passphrase",
                key.display()
            )
        );
        let r = exec(key, Some("wrong"));
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
        let r = exec(key, Some("s3cret"));
        assert_eq!(r.code, 0, "{}: {}{}", key.display(), r.stdout, r.stderr);
    }

    let missing = dir.path().join("nope.pem");
    let r = exec(&missing, None);
    assert_eq!((r.code, r.stderr.lines().count()), (1, 1));
    assert!(
        r.stderr.contains("not found: pass the private key file with --key"),
        "{}",
        r.stderr
    );

    let r = exec(&ed.with_extension("pub"), None);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("is a public key; pass the private key file"),
        "{}",
        r.stderr
    );

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "hello\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o400)).unwrap();
    let r = exec(&junk, None);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not a private key agent can read"), "{}", r.stderr);
}

/// `locked.pem` → `locked.pem.pub`, `id_rsa` → `id_rsa.pub`.
fn pub_ext(k: &Path) -> String {
    match k.extension() {
        Some(e) => format!("{}.pub", e.to_string_lossy()),
        None => "pub".into(),
    }
}

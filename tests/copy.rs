//! `agent copy` on the local fleet: the bytes arrive whole, with their mode and owner,
//! atomically; refusals leave nothing behind.

mod common;

use common::{Fleet, agent, events, run};

fn exec(fleet: &Fleet, state: &std::path::Path, script: &str) -> Vec<String> {
    let mut c = agent(state);
    c.arg("exec").arg("-i").arg(fleet.inventory());
    c.args(["--json", "--no-logs", "--sudo", "--", script]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let mut lines: Vec<String> = events(&r.stdout)
        .iter()
        .filter(|e| e["event"] == "line")
        .map(|e| format!("{} {}", e["host"].as_str().unwrap(), e["line"].as_str().unwrap()))
        .collect();
    lines.sort();
    lines
}

#[test]
fn copies_whole_files_with_mode_and_owner() {
    let fleet = Fleet::up("cp", 3, 32);
    let state = tempfile::tempdir().unwrap();
    let src = state.path().join("payload.bin");
    let body: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &body).unwrap();
    let sum: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect()
    };

    let mut c = agent(state.path());
    c.arg("copy").arg("-i").arg(fleet.inventory());
    c.args(["--no-logs", "--mode", "640"]).arg(&src).arg("/tmp/");
    let r = run(c);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let got = exec(
        &fleet,
        state.path(),
        "sha256sum < /tmp/payload.bin | cut -c1-64; stat -c '%a %U' /tmp/payload.bin",
    );
    let want: Vec<String> = (0..3)
        .flat_map(|i| [format!("cp-{i} 640 ubuntu"), format!("cp-{i} {sum}")])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got, want);

    // As root into a root-owned folder.
    let mut c = agent(state.path());
    c.arg("copy").arg("-i").arg(fleet.inventory());
    c.args(["--no-logs", "--sudo"]).arg(&src).arg("/opt/agent-test/p.bin");
    assert_eq!(run(c).code, 0);
    let got = exec(&fleet, state.path(), "stat -c '%U %s' /opt/agent-test/p.bin");
    assert!(got.iter().all(|l| l.ends_with(" root 3000000")), "{got:?}");

    // Without sudo the login user cannot write there: the copy fails on every host and
    // leaves no temporary file.
    let mut c = agent(state.path());
    c.arg("copy").arg("-i").arg(fleet.inventory());
    c.args(["--no-logs"]).arg(&src).arg("/opt/agent-test/q.bin");
    let r = run(c);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("3 hosts: 0 ok, 3 failed"), "{}", r.stdout);
    let left = exec(&fleet, state.path(), "ls -A /opt/agent-test");
    assert!(left.iter().all(|l| l.ends_with(" p.bin")), "{left:?}");

    // Bad input: one line, exit 1.
    for (args, expected) in [
        (
            vec![src.to_str().unwrap(), "tmp/x"],
            "remote path \"tmp/x\" is not absolute",
        ),
        (vec!["/nonexistent/file", "/tmp/"], "cannot read /nonexistent/file"),
        (
            vec!["--mode", "9z", src.to_str().unwrap(), "/tmp/"],
            "--mode \"9z\" is not an octal mode",
        ),
    ] {
        let mut c = agent(state.path());
        c.arg("copy").arg("-i").arg(fleet.inventory()).args(&args);
        let r = run(c);
        assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{}", r.stderr);
        assert!(r.stderr.contains(expected), "{}", r.stderr);
    }
}

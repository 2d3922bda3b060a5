//! `agent exec` end to end against real OpenSSH hosts of the local fleet.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Fleet, agent, events, finished, run};

#[test]
fn one_host_streams_output_and_writes_its_log() {
    let fleet = Fleet::up("ex1", 1, 1);
    let state = tempfile::tempdir().unwrap();
    let logs = state.path().join("logs");
    let mut c = agent(state.path());
    c.arg("exec")
        .arg("-i")
        .arg(fleet.inventory())
        .arg("--log-dir")
        .arg(&logs);
    c.args(["--", "echo out; echo err >&2; id -un"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let name = fleet.host_name(0);
    assert!(r.stdout.contains(&format!("{name} | out")), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("{name} ! err")), "{}", r.stdout);
    assert!(r.stdout.contains(&format!("{name} | ubuntu")), "{}", r.stdout);
    assert!(
        r.stdout.contains("1 hosts: 1 ok, 0 failed, 0 unreachable"),
        "{}",
        r.stdout
    );
    // First contact pins the host key, and says so.
    assert!(
        r.stdout.contains("first contact: pinned host key SHA256:"),
        "{}",
        r.stdout
    );
    let pinned = std::fs::read_to_string(fleet.dir.join("inventory.known_hosts")).unwrap();
    assert!(
        pinned.starts_with(&format!("{} ssh-ed25519 ", fleet.addresses[0])),
        "{pinned}"
    );
    let log = std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap();
    assert!(
        log.contains("\nout\n") && log.contains("[stderr] err") && log.contains("# ok after"),
        "{log}"
    );

    // Second contact: the pinned key is known, no notice.
    let mut c = agent(state.path());
    c.arg("exec")
        .arg("-i")
        .arg(fleet.inventory())
        .args(["--no-logs", "--", "true"]);
    let r = run(c);
    assert_eq!(r.code, 0);
    assert!(!r.stdout.contains("pinned"), "{}", r.stdout);
}

#[test]
fn twenty_hosts_each_answer_from_their_own_address() {
    let fleet = Fleet::up("ex20", 20, 2);
    let state = tempfile::tempdir().unwrap();
    let mut c = agent(state.path());
    c.arg("exec").arg("-i").arg(fleet.inventory());
    c.args(["--json", "--parallel", "8", "--", "hostname -I"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let ev = events(&r.stdout);
    for (i, addr) in fleet.addresses.iter().enumerate() {
        let host = fleet.host_name(i);
        let line = ev
            .iter()
            .find(|e| e["event"] == "line" && e["host"] == host.as_str())
            .unwrap_or_else(|| panic!("no output from {host}"));
        assert_eq!(line["line"].as_str().unwrap().trim(), addr);
        assert_eq!(finished(&ev, &host)["outcome"]["result"], "exited");
    }
    let summary = ev.last().unwrap();
    assert_eq!(
        (summary["event"].as_str(), summary["ok"].as_u64()),
        (Some("summary"), Some(20))
    );
    // --parallel bounds the hosts in flight (a host holds its slot until its `finished` is sent).
    let (mut active, mut most) = (0, 0);
    for e in &ev {
        match (e["event"].as_str(), e["stage"].as_str()) {
            (Some("stage"), Some("connecting")) => active += 1,
            (Some("finished"), _) => active -= 1,
            _ => {}
        }
        most = most.max(active);
    }
    assert!((2..=8).contains(&most), "{most} hosts in flight with --parallel 8");

    // Selection: by name or address from the inventory; a role nobody has is an error.
    let mut c = agent(state.path());
    c.arg("exec").arg("-i").arg(fleet.inventory());
    c.args([
        "--json",
        "--host",
        &fleet.host_name(3),
        "--host",
        &fleet.addresses[7],
        "--",
        "true",
    ]);
    let ev = events(&run(c).stdout);
    let mut done: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "finished")
        .map(|e| e["host"].as_str().unwrap().to_owned())
        .collect();
    done.sort();
    assert_eq!(done, [fleet.host_name(3), fleet.host_name(7)]);
    let mut c = agent(state.path());
    c.arg("exec")
        .arg("-i")
        .arg(fleet.inventory())
        .args(["--role", "db", "--", "true"]);
    let r = run(c);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        "agent: no host has role \"db\" (roles in the inventory: web)"
    );

    // Without an inventory: ad-hoc hosts, keys pinned in the state folder.
    let mut c = agent(state.path());
    c.args(["exec", "--host", &format!("ubuntu@{}", fleet.addresses[0]), "--key"])
        .arg(fleet.key());
    c.args(["--no-logs", "--", "echo adhoc"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!("{} | adhoc", fleet.addresses[0])),
        "{}",
        r.stdout
    );
    assert!(state.path().join("agent/known_hosts").exists());
}

#[test]
fn lines_arrive_while_the_command_still_runs() {
    let fleet = Fleet::up("exlive", 1, 3);
    let state = tempfile::tempdir().unwrap();
    let mut c = agent(state.path());
    c.arg("exec").arg("-i").arg(fleet.inventory());
    c.args(["--json", "--", "echo first; sleep 5; echo second"])
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains(r#""event":"line""#))
        .expect("a line event");
    assert!(first.contains(r#""line":"first""#), "{first}");
    // The remote command is still sleeping: the line was streamed, not buffered to the end.
    assert!(child.try_wait().unwrap().is_none(), "agent had already finished");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest.iter().any(|l| l.contains(r#""line":"second""#)));
    assert!(child.wait().unwrap().success());
}

#[test]
fn exit_codes_signals_and_time_limits_are_reported() {
    let fleet = Fleet::up("excode", 1, 4);
    let state = tempfile::tempdir().unwrap();
    let host = fleet.host_name(0);
    let outcome = |script: &str, extra: &[&str]| {
        let mut c = agent(state.path());
        c.arg("exec")
            .arg("-i")
            .arg(fleet.inventory())
            .args(["--json", "--no-logs"]);
        c.args(extra).args(["--", script]);
        let r = run(c);
        (r.code, finished(&events(&r.stdout), &host)["outcome"].clone())
    };
    let (code, o) = outcome("exit 7", &[]);
    assert_eq!(
        (code, o["result"].as_str(), o["code"].as_u64()),
        (2, Some("exited"), Some(7))
    );
    let (code, o) = outcome("kill -TERM $$", &[]);
    assert_eq!(
        (code, o["result"].as_str(), o["signal"].as_str()),
        (2, Some("signaled"), Some("TERM"))
    );
    let (code, o) = outcome("sleep 30", &["--timeout", "1s"]);
    assert_eq!((code, o["result"].as_str()), (2, Some("timed_out")));
    // A command that ignores TERM is killed after the grace period, and still reported as a timeout.
    let (code, o) = outcome("trap '' TERM; sleep 30", &["--timeout", "1s"]);
    assert_eq!((code, o["result"].as_str()), (2, Some("timed_out")));
    // Only with --pty is stdout a terminal.
    let (code, _) = outcome("test -t 1", &["--pty"]);
    assert_eq!(code, 0);
    let (code, o) = outcome("test -t 1", &[]);
    assert_eq!((code, o["code"].as_u64()), (2, Some(1)));
}

#[test]
fn sudo_runs_as_root() {
    let fleet = Fleet::up("exsudo", 1, 5);
    let state = tempfile::tempdir().unwrap();
    let mut c = agent(state.path());
    c.arg("exec")
        .arg("-i")
        .arg(fleet.inventory())
        .args(["--sudo", "--no-logs", "--", "id -un"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!("{} | root", fleet.host_name(0))),
        "{}",
        r.stdout
    );
}

#[test]
fn a_host_lost_mid_run_is_unreachable_and_the_others_finish() {
    let fleet = Fleet::up("exkill", 3, 6);
    let state = tempfile::tempdir().unwrap();
    // Wait until every host is running the command, then take host 1 away.
    let (mut child, mut out, seen) =
        common::exec_until_started(&fleet, state.path(), "echo started; sleep 4; echo done");
    fleet.host("kill", 1);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    let ev = events(&(seen + &rest));
    let lost = &finished(&ev, &fleet.host_name(1))["outcome"];
    assert_eq!(lost["result"], "unreachable");
    assert!(lost["reason"].as_str().unwrap().contains("connection lost"), "{lost}");
    for i in [0, 2] {
        assert_eq!(finished(&ev, &fleet.host_name(i))["outcome"]["code"], 0);
    }
    // And a stopped host is reported unreachable at connect, bounded by --ssh-wait.
    let mut c = agent(state.path());
    c.arg("exec")
        .arg("-i")
        .arg(fleet.inventory())
        .args(["--no-logs", "--ssh-wait", "1s", "--", "true"]);
    let r = run(c);
    assert_eq!(r.code, 3);
    assert!(r.stdout.contains("unreachable: connection refused"), "{}", r.stdout);
}

#[test]
fn a_listener_that_never_speaks_ssh_is_bounded() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept and hold connections without a word.
    let held = std::thread::spawn(move || listener.incoming().take(4).map(|s| s.unwrap()).collect::<Vec<_>>());
    let state = tempfile::tempdir().unwrap();
    let key = tempfile::tempdir().unwrap();
    let pem = key.path().join("k.pem");
    keygen(&pem, "rsa", "");
    let started = Instant::now();
    let mut c = agent(state.path());
    c.args(["exec", "--host", &format!("127.0.0.1:{port}"), "--key"])
        .arg(&pem);
    c.args(["--connect-timeout", "1s", "--ssh-wait", "0", "--no-logs", "--", "true"]);
    let r = run(c);
    assert_eq!(r.code, 3, "{}", r.stdout);
    assert!(r.stdout.contains("no SSH handshake within 1s"), "{}", r.stdout);
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(held);
}

#[test]
fn a_changed_host_key_is_refused_until_repinned() {
    let fleet = Fleet::up("exrkey", 2, 7);
    let state = tempfile::tempdir().unwrap();
    let exec = |extra: &[&str]| {
        let mut c = agent(state.path());
        c.arg("exec")
            .arg("-i")
            .arg(fleet.inventory())
            .arg("--no-logs")
            .args(extra);
        run(c)
    };
    assert_eq!(exec(&["--", "true"]).code, 0);
    let before = std::fs::read_to_string(fleet.dir.join("inventory.known_hosts")).unwrap();
    fleet.host("rekey", 1);
    let r = exec(&["--", "echo ran"]);
    assert_eq!(r.code, 3);
    let name = fleet.host_name(1);
    assert!(
        !r.stdout.contains(&format!("{name} | ran")),
        "command ran on a host with a changed key"
    );
    let line = r.stdout.lines().find(|l| l.contains("host key of")).unwrap();
    assert!(
        line.contains("changed: pinned SHA256:") && line.contains("presented SHA256:"),
        "{line}"
    );
    assert!(line.contains(&format!("--repin-host-key {name}")), "{line}");
    // The pinned key was not replaced behind the operator's back.
    assert_eq!(
        std::fs::read_to_string(fleet.dir.join("inventory.known_hosts")).unwrap(),
        before
    );
    let r = exec(&["--repin-host-key", &name, "--", "true"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("re-pinned on request"), "{}", r.stdout);
    assert_eq!(exec(&["--", "true"]).code, 0);
}

#[test]
fn wrong_and_badly_protected_keys_fail_clearly() {
    let fleet = Fleet::up("exkey", 1, 8);
    let state = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let other = keys.path().join("other.pem");
    keygen(&other, "ed25519", "");
    let exec = |key: &std::path::Path| {
        let mut c = agent(state.path());
        c.arg("exec")
            .arg("-i")
            .arg(fleet.inventory())
            .arg("--key")
            .arg(key)
            .args(["--no-logs", "--", "true"]);
        run(c)
    };
    let r = exec(&other);
    assert_eq!(r.code, 3);
    // Authentication failure is final: no retries until --ssh-wait runs out.
    assert!(!r.stdout.contains("retrying"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!(
            "authentication failed for user ubuntu with key {}",
            other.display()
        )),
        "{}",
        r.stdout
    );
    // The fleet's own key, made world-readable: refused before any connection, like ssh does.
    let pem = fleet.key();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = exec(&pem);
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("mode 0644") && r.stderr.contains(&format!("chmod 400 {}", pem.display())),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
}

#[test]
fn ctrl_c_stops_remote_commands_and_reports_them() {
    let fleet = Fleet::up("exint", 2, 9);
    let state = tempfile::tempdir().unwrap();
    let (mut child, mut out, mut text) = common::exec_until_started(&fleet, state.path(), "echo started; sleep 37.5");
    assert!(remote_sleeps() > 0);
    let started = Instant::now();
    unsafe_kill(child.id(), "INT");
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(started.elapsed() < Duration::from_secs(10));
    let ev = events(&text);
    for i in 0..2 {
        assert_eq!(finished(&ev, &fleet.host_name(i))["outcome"]["result"], "interrupted");
    }
    assert_eq!(ev.last().unwrap()["interrupted"], 2);
    // The remote commands are gone, not orphaned.
    let deadline = Instant::now() + Duration::from_secs(5);
    while remote_sleeps() > 0 {
        assert!(Instant::now() < deadline, "remote sleep still running after Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fleet hosts share this machine's process table, so their processes are visible here.
fn remote_sleeps() -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 37.5$"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn unsafe_kill(pid: u32, sig: &str) {
    assert!(
        std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
}

fn keygen(path: &std::path::Path, kind: &str, passphrase: &str) {
    let mut c = std::process::Command::new("ssh-keygen");
    c.args(["-q", "-t", kind, "-N", passphrase, "-f"]).arg(path);
    if kind == "rsa" {
        c.args(["-b", "2048", "-m", "PEM"]);
    }
    assert!(c.status().unwrap().success());
}

#[test]
fn local_hosts_run_without_ssh() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = local_inventory(dir.path());
    let mut c = agent(dir.path());
    c.arg("exec").arg("-i").arg(&inventory);
    c.args(["--json", "--no-logs", "--", "echo $((6 * 7)); echo oops >&2; exit 4"]);
    let r = run(c);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let ev = events(&r.stdout);
    let lines: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "line")
        .map(|e| (e["stream"].as_str().unwrap(), e["line"].as_str().unwrap()))
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines.contains(&("stdout", "42")) && lines.contains(&("stderr", "oops")),
        "{lines:?}"
    );
    assert_eq!(finished(&ev, "here")["outcome"]["code"], 4);
    assert!(
        !dir.path().join("inventory.known_hosts").exists(),
        "no SSH, no host key"
    );

    // By default each run's logs go to a folder of their own in the state folder.
    let mut c = agent(dir.path());
    c.arg("exec")
        .arg("-i")
        .arg(&inventory)
        .args(["--json", "--", "echo logged"]);
    let ev = events(&run(c).stdout);
    let logs = std::path::PathBuf::from(ev.last().unwrap()["logs"].as_str().unwrap());
    assert!(logs.starts_with(dir.path().join("agent/logs")), "{}", logs.display());
    assert!(
        std::fs::read_to_string(logs.join("here.log"))
            .unwrap()
            .contains("\nlogged\n")
    );
}

#[test]
fn a_terminal_gets_colours_and_a_progress_bar_unless_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = local_inventory(dir.path());
    // `script` gives agent a real pseudo-terminal, as an operator's terminal would.
    let on_tty = |no_color: bool| {
        let cmd = format!(
            "{} exec -i {} --no-logs -- 'echo hello; sleep 0.3'",
            env!("CARGO_BIN_EXE_agent"),
            inventory.display()
        );
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &cmd, "/dev/null"])
            .env("XDG_STATE_HOME", dir.path())
            .env("TERM", "xterm");
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_tty(false);
    assert!(coloured.contains("\u{1b}[38;5;6mhere\u{1b}[0m | hello"), "{coloured:?}");
    assert!(coloured.contains("/1 hosts"), "no progress bar: {coloured:?}");
    let plain = on_tty(true);
    assert!(
        plain.contains("here | hello") && !plain.contains("\u{1b}[38;5"),
        "{plain:?}"
    );
    assert!(plain.contains("/1 hosts"), "no progress bar: {plain:?}");
}

/// An inventory of one host, "here": this machine, without SSH.
fn local_inventory(dir: &std::path::Path) -> std::path::PathBuf {
    let inventory = dir.join("inventory.toml");
    let text = "[[hosts]]\nname = \"here\"\naddress = \"localhost\"\ntransport = \"local\"\n";
    std::fs::write(&inventory, text).unwrap();
    inventory
}

#[test]
fn a_host_still_booting_is_retried_until_it_answers() {
    let fleet = Fleet::up("exboot", 1, 10);
    fleet.host("kill", 0);
    let state = tempfile::tempdir().unwrap();
    let mut c = agent(state.path());
    c.arg("exec").arg("-i").arg(fleet.inventory());
    c.args(["--json", "--no-logs", "--ssh-wait", "60s", "--", "echo up"])
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    // The refused connection is reported as a retry, not a failure...
    while !text.contains("retrying for up to 60s") {
        assert!(out.read_line(&mut text).unwrap() > 0, "agent ended early: {text}");
    }
    assert!(child.try_wait().unwrap().is_none());
    // ...and once sshd is up, the command runs.
    fleet.host("start", 0);
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{text}");
    assert!(text.contains(r#""line":"up""#), "{text}");
}

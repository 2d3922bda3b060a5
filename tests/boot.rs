//! `agent deploy` on hosts that boot like EC2 instances (`tests/fleet up --boot`): systemd as
//! PID 1, cloud-init from a NoCloud seed, the login user and host key made by cloud-init, an
//! image holding nothing of this machine's, and apt that really installs (through the
//! fleet's proxy). The programs run as systemd's unprivileged dynamic users.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Fleet, agent, answering, events, exec_stdout, http_get, run};
use serde_json::Value;

fn deploy(fleet: &Fleet, state: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut c = agent(state);
    c.arg("deploy").args(args).arg("-i").arg(fleet.inventory());
    c.args(["--json", "--no-logs"]);
    let r = run(c);
    assert!(r.code == 0 || !r.stdout.is_empty(), "exit {}: {}", r.code, r.stderr);
    (r.code, events(&r.stdout), r.stderr)
}

fn step<'a>(events: &'a [Value], host: &str, stage: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == "step" && e["host"] == host && e["stage"] == stage)
        .unwrap_or_else(|| panic!("no {stage} step for {host} in {events:#?}"))
}

fn changed(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["status"] == "changed")
        .collect()
}

#[test]
fn clusters_on_booting_hosts() {
    let fleet = Fleet::booting("bc", 10, 60, "cluster1:5,cluster2:4,lb:1");
    let state = tempfile::tempdir().unwrap();
    let (code, ev, stderr) = deploy(&fleet, state.path(), &["clusters"]);
    assert_eq!(code, 0, "{stderr}\n{ev:#?}");
    for i in 0..10 {
        let host = fleet.host_name(i);
        assert_eq!(common::finished(&ev, &host)["outcome"]["result"], "deployed");
        assert_eq!(step(&ev, &host, "inspect")["detail"], "systemd runs the services");
        assert_eq!(step(&ev, &host, "ready")["detail"], "cloud-init done");
    }
    // The image has no HAProxy: the balancer host installed Debian's package for real.
    let lb_packages = step(&ev, &fleet.host_name(9), "packages");
    assert_eq!(
        (&lb_packages["status"], &lb_packages["detail"]),
        (&Value::from("changed"), &Value::from("installed haproxy"))
    );

    let lb = &fleet.addresses[9];
    let names = |r: std::ops::Range<usize>| r.map(|i| fleet.host_name(i)).collect::<BTreeSet<_>>();
    assert_eq!(answering(lb, "/cluster1", 15), names(0..5));
    assert_eq!(answering(lb, "/cluster2", 12), names(5..9));
    assert_eq!(http_get(lb, 80, "/"), (404, "Not Found".to_string()));

    // Programs run as unprivileged users: agent-web as the unit's dynamic user, HAProxy's
    // worker as the package's.
    let web_hosts = ["--role", "cluster1", "--role", "cluster2"];
    for (host, users) in exec_stdout(&fleet, state.path(), &web_hosts, "ps -o user= -C agent-web") {
        let users: Vec<&str> = users.lines().collect();
        assert_eq!(users.len(), 1, "{host}: {users:?}");
        assert_ne!(users[0], "root", "{host}");
    }
    let lb_users = exec_stdout(
        &fleet,
        state.path(),
        &["--role", "lb"],
        "ps -o user= -C haproxy | sort -u",
    );
    assert_eq!(lb_users[&fleet.host_name(9)], "haproxy\nroot\n");

    // kill -9: systemd brings agent-web back within seconds, enabled for the next boot.
    let host = fleet.host_name(0);
    let one = ["--host", host.as_str()];
    let show = "systemctl show -p MainPID --value agent-web; systemctl is-enabled agent-web";
    let before = exec_stdout(&fleet, state.path(), &one, show)[&host].clone();
    let (pid, enabled) = before.split_once('\n').unwrap();
    assert_eq!(enabled, "enabled\n");
    exec_stdout(
        &fleet,
        state.path(),
        &one,
        &format!("sudo -n kill -9 {pid}; echo killed"),
    );
    let killed = Instant::now();
    loop {
        let now = exec_stdout(&fleet, state.path(), &one, show)[&host].clone();
        let new_pid = now.lines().next().unwrap();
        if new_pid != pid && new_pid != "0" && http_get(&fleet.addresses[0], 80, "/health").0 == 200 {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "not restarted: {now}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The deployment by name: its hosts and pinned keys come from its record; no inventory,
    // no key on the command line.
    let mut c = agent(state.path());
    c.args(["exec", "clusters", "--no-logs", "--", "hostname"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let answered: BTreeSet<String> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(host, _)| host.trim().to_owned()))
        .collect();
    assert_eq!(answered, names(0..10), "{}", r.stdout);
    let mut c = agent(state.path());
    c.args([
        "exec",
        "clusters",
        "--role",
        "cluster2",
        "--no-logs",
        "--json",
        "--",
        "true",
    ]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.matches(r#""event":"finished""#).count(), 4, "{}", r.stdout);
    // status by name, for a deployment made on an inventory: its record's view of each host.
    let mut c = agent(state.path());
    c.args(["status", "clusters"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.matches("\n  host ").count(), 10, "{}", r.stdout);
    assert_eq!(r.stdout.matches(" ok\n").count(), 10, "{}", r.stdout);
    assert_eq!(r.stdout.matches("    host key SHA256:").count(), 10, "{}", r.stdout);

    // copy takes the name as -d (its positionals are the file and where it goes).
    let note = state.path().join("note.txt");
    std::fs::write(&note, "by name\n").unwrap();
    let mut c = agent(state.path());
    c.args(["copy", "-d", "clusters", "--role", "lb", "--no-logs"])
        .arg(&note)
        .arg("/tmp/");
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let lb_note = exec_stdout(&fleet, state.path(), &["--role", "lb"], "cat /tmp/note.txt");
    assert_eq!(lb_note[&fleet.host_name(9)], "by name\n");
    let mut c = agent(state.path());
    c.args(["exec", "nosuch", "--", "true"]);
    let r = run(c);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no deployment nosuch here"), "{}", r.stderr);

    // A shell on one host: a pty there, the remote exit status as agent's.
    let mut c = agent(state.path());
    c.args([
        "ssh",
        "clusters",
        &fleet.host_name(2),
        "--",
        "tty; echo cols $(stty size); exit 7",
    ]);
    let r = run(c);
    assert_eq!(r.code, 7, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("/dev/pts/"), "a pty on the host: {}", r.stdout);
    assert!(r.stdout.contains("cols 24 80"), "80 x 24 off a terminal: {}", r.stdout);
    // Through a terminal (util-linux's script gives agent one): raw mode, keys typed go to
    // the host's login shell, its exit status comes back.
    let mut typed = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("{} ssh clusters {}", env!("CARGO_BIN_EXE_agent"), fleet.host_name(3)),
            "/dev/null",
        ])
        .env("XDG_STATE_HOME", state.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut keys = typed.stdin.take().unwrap();
        std::thread::sleep(Duration::from_secs(2)); // the login shell starts
        keys.write_all(b"echo typed-$((6*7)); exit 5\r").unwrap();
        std::thread::sleep(Duration::from_secs(3));
    }
    let out = typed.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{screen}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(screen.contains("typed-42"), "{screen}");

    let mut c = agent(state.path());
    c.args(["ssh", "clusters"]);
    let r = run(c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("10 hosts: name one, e.g. agent ssh clusters "),
        "{}",
        r.stderr
    );

    // Its programs' logs, followed: a restart of one host's service shows up live.
    let follow = tempfile::NamedTempFile::new().unwrap();
    let mut c = agent(state.path());
    c.args([
        "logs",
        "clusters",
        "--host",
        host.as_str(),
        "-n",
        "5",
        "-f",
        "--no-logs",
    ]);
    let mut logs = c
        .stdout(follow.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marks = || {
        std::fs::read_to_string(follow.path())
            .unwrap()
            .matches("listening on")
            .count()
    };
    let seen = Instant::now();
    while marks() == 0 {
        assert!(seen.elapsed() < Duration::from_secs(20), "no log lines");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = marks();
    exec_stdout(
        &fleet,
        state.path(),
        &one,
        "sudo -n systemctl restart agent-web; echo restarted",
    );
    let restarted = Instant::now();
    while marks() == before {
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "the restart's line never came: {}",
            std::fs::read_to_string(follow.path()).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(follow.path()).unwrap();
    assert!(text.lines().all(|l| l.starts_with(&format!("{host} | "))), "{text}");
    // SAFETY: plain kill(2) on our own child.
    unsafe { kill(logs.id() as i32, 2) };
    let status = logs.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{text}");

    // Nothing changed: nothing is uploaded, installed or restarted. Rolling, so the drain
    // through HAProxy's runtime API runs under systemd (Debian's unit, its own user).
    let (code, again, stderr) = deploy(&fleet, state.path(), &["clusters", "--rolling", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(changed(&again).is_empty(), "{:#?}", changed(&again));

    // A program that cannot run: the health step ends as soon as systemd reports the unit
    // failing, long before --health-timeout, and shows its journal.
    let broken = tempfile::tempdir().unwrap();
    std::fs::copy("/usr/bin/false", broken.path().join("agent-web")).unwrap();
    let other_state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut c = agent(other_state.path());
    c.args([
        "deploy",
        "clusters",
        "--host",
        &fleet.host_name(8),
        "--health-timeout",
        "120s",
        "-i",
    ]);
    c.arg(fleet.inventory()).arg("--programs").arg(broken.path());
    let r = run(c);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
    // (It may already show at the services step, right after the start.)
    assert!(
        r.stdout.contains(": agent-web.service keeps failing (exit status 1"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("agent-web.service: Main process exited, code=exited, status=1/FAILURE"),
        "the journal is shown: {}",
        r.stdout
    );
}

/// The tiny random DistilBERT the worker's parity test uses.
fn tiny_model() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("remote/worker/fixtures/tiny")
}

#[test]
fn inference_on_booting_hosts() {
    let fleet = Fleet::booting("bi", 5, 61, "orchestrator:1,worker:4");
    let state = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let args = ["inference", "--model", model.to_str().unwrap()];
    let (code, ev, stderr) = deploy(&fleet, state.path(), &args);
    assert_eq!(code, 0, "{stderr}\n{ev:#?}");
    for i in 0..5 {
        assert_eq!(
            common::finished(&ev, &fleet.host_name(i))["outcome"]["result"],
            "deployed"
        );
    }
    // Each worker process runs as its unit's dynamic user and reads the model folder.
    let workers = exec_stdout(
        &fleet,
        state.path(),
        &["--role", "worker"],
        "ps -o user= -C agent-worker",
    );
    assert_eq!(workers.len(), 4);
    for (host, users) in workers {
        let users: Vec<&str> = users.lines().collect();
        assert_eq!(users.len(), 2, "{host}: {users:?}");
        assert!(users.iter().all(|u| *u != "root"), "{host}: {users:?}");
    }

    // The lab's client: 50 requests, 15 at a time, answered by every worker process.
    let mut c = agent(state.path());
    c.args(["bench", "inference", "-i"]).arg(fleet.inventory());
    c.args(["--concurrency", "15", "--requests", "50", "--json", "--out"])
        .arg(state.path().join("bench"));
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.stdout);
    let summary: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(summary["ok"].as_u64(), Some(50), "{summary:#}");
    let served: BTreeSet<String> = summary["groups"][0]["responders"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let expected: BTreeSet<String> = fleet.addresses[1..]
        .iter()
        .flat_map(|a| [format!("{a}:5000"), format!("{a}:5001")])
        .collect();
    assert_eq!(served, expected, "every worker process served some");

    let (code, again, stderr) = deploy(&fleet, state.path(), &args);
    assert_eq!(code, 0, "{stderr}");
    assert!(changed(&again).is_empty(), "{:#?}", changed(&again));
}

#[test]
fn an_archive_out_of_reach_fails_the_packages_step_in_seconds() {
    let fleet = Fleet::booting("bn", 3, 62, "cluster1:1,cluster2:1,lb:1");
    let state = tempfile::tempdir().unwrap();
    let lb = fleet.host_name(2);
    // Without the fleet's proxy, the balancer host has no way out, as in an EC2 subnet with
    // no internet or NAT gateway.
    let proxy = "/etc/apt/apt.conf.d/01agent-fleet-proxy";
    exec_stdout(
        &fleet,
        state.path(),
        &["--host", &lb],
        &format!("sudo -n rm {proxy}; echo removed"),
    );
    let started = Instant::now();
    let (code, ev, stderr) = deploy(&fleet, state.path(), &["clusters", "--host", &lb]);
    assert_eq!(code, 2, "{stderr}\n{ev:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    let packages = step(&ev, &lb, "packages");
    assert_eq!(packages["status"], "failed", "{packages}");
    let detail = packages["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("cannot reach the package archive http://deb.debian.org/debian ("),
        "{detail}"
    );
    assert!(detail.ends_with("the host needs a route to it (on EC2, a subnet with an internet or NAT gateway)"));
    assert!(!detail.contains('\n'), "one line: {detail}");
    // Nothing was uploaded: the step before the files stopped the host.
    assert!(
        ev.iter().all(|e| !(e["event"] == "step" && e["stage"] == "files")),
        "{ev:#?}"
    );
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

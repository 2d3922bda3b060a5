//! `agent deploy` end to end on the local fleet: real sshd hosts, the real agent-web binary
//! (built in release mode by agent itself), HAProxy on the load-balancer host.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use common::{Fleet, agent, answering, events, http_get, run};
use serde_json::Value;

fn deploy(fleet: &Fleet, state: &Path, spec: &str) -> (i32, Vec<Value>) {
    let mut c = agent(state);
    c.args(["deploy", spec, "-i"]).arg(fleet.inventory());
    c.args(["--json", "--no-logs"]);
    let r = run(c);
    assert!(r.stderr.is_empty() || r.code != 0, "stderr: {}", r.stderr);
    assert!(r.code == 0 || !r.stdout.is_empty(), "exit {}: {}", r.code, r.stderr);
    (r.code, events(&r.stdout))
}

/// (host, stage) of every step that changed a host.
fn changed(events: &[Value]) -> BTreeSet<(String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["status"] == "changed")
        .map(|e| (e["host"].as_str().unwrap().into(), e["stage"].as_str().unwrap().into()))
        .collect()
}

fn outcome(events: &[Value], host: &str) -> String {
    common::finished(events, host)["outcome"]["result"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Pid file contents per host, read through `agent exec` (the supervisor's view of which
/// process runs).
fn pids(fleet: &Fleet, state: &Path) -> BTreeMap<String, String> {
    common::exec_stdout(fleet, state, &["--sudo"], "cat /var/lib/agent/run/*.pid")
}

#[test]
fn clusters_behind_haproxy_then_reruns_converge() {
    let fleet = Fleet::with_roles("dc", 10, 30, "cluster1:5,cluster2:4,lb:1");
    let state = tempfile::tempdir().unwrap();
    let (code, ev) = deploy(&fleet, state.path(), "clusters");
    assert_eq!(code, 0, "{ev:#?}");
    for i in 0..10 {
        assert_eq!(outcome(&ev, &fleet.host_name(i)), "deployed");
    }
    // Every host got its files and started its service; the supervisor was chosen and said so.
    let first = changed(&ev);
    for i in 0..10 {
        assert!(first.contains(&(fleet.host_name(i), "files".into())), "{first:?}");
        assert!(first.contains(&(fleet.host_name(i), "services".into())), "{first:?}");
    }
    assert!(
        ev.iter()
            .any(|e| e["stage"] == "inspect" && e["detail"] == "no systemd: agent supervises the services")
    );
    let summary = ev.last().unwrap();
    assert_eq!(
        (summary["ok"].as_u64(), summary["changed"].as_u64()),
        (Some(10), Some(10))
    );

    // Through HAProxy: each path reaches every host of its cluster and no other; `/` is 404.
    let lb = &fleet.addresses[9];
    let names = |r: std::ops::Range<usize>| r.map(|i| fleet.host_name(i)).collect::<BTreeSet<_>>();
    assert_eq!(answering(lb, "/cluster1", 15), names(0..5));
    assert_eq!(answering(lb, "/cluster2", 12), names(5..9));
    // HAProxy's own 404 for unrouted paths says so in its body (the app's 404 is empty).
    assert_eq!(http_get(lb, 80, "/"), (404, "Not Found".to_string()));
    assert_eq!(http_get(lb, 80, "/cluster3"), (404, "Not Found".to_string()));

    // The course's benchmark through HAProxy, shrunk to 2 %: thread A 20 requests, thread B
    // 10, a 1.2 s pause, 20 more, per cluster. Exact counts, every instance of a cluster
    // answered and none of the other, results a user can open.
    let out = state.path().join("bench");
    let mut c = agent(state.path());
    c.args(["bench", "clusters", "-i"]).arg(fleet.inventory());
    c.args(["--scale", "0.02", "--json", "--out"]).arg(&out);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let summary: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(
        (summary["planned"].as_u64(), summary["ok"].as_u64()),
        (Some(100), Some(100))
    );
    for (path, hosts) in [("/cluster1", names(0..5)), ("/cluster2", names(5..9))] {
        let g = summary["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == path)
            .unwrap();
        assert_eq!((g["sent"].as_u64(), g["ok"].as_u64()), (Some(50), Some(50)), "{g:#}");
        let answered: BTreeSet<String> = g["responders"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(answered, hosts, "{g:#}");
        assert_eq!(
            g["responders"]
                .as_object()
                .unwrap()
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum::<u64>(),
            50
        );
        assert_eq!(
            (
                g["missing"].as_array().unwrap().len(),
                g["unexpected"].as_array().unwrap().len()
            ),
            (0, 0)
        );
        assert!(g["latency_ms"]["p99"].as_f64().unwrap() > 0.0, "{g:#}");
    }
    let csv = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    assert_eq!(csv.lines().count(), 101);
    assert_eq!(
        csv.lines()
            .filter(|l| l.contains(",/cluster2,") && l.contains(",200,dc-"))
            .count(),
        50
    );
    // Thread B paused between its two phases.
    let b_starts: Vec<f64> = csv
        .lines()
        .filter(|l| l.starts_with("cluster1 B,"))
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(b_starts.len(), 30);
    assert!(b_starts[10] - b_starts[9] >= 1150.0, "{b_starts:?}");
    for chart in ["latency", "percentiles", "instances"] {
        common::assert_chart(&out, chart);
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| /cluster1 | 50 | 0 |")
            && report.contains("![requests answered per instance](instances.png)"),
        "{report}"
    );
    assert!(
        report.contains("| dc-9 | dc-9 | lb | static host | 10.210.30.13 |"),
        "{report}"
    );

    // Ctrl-C during thread B's pause: every thread stops, what was answered is kept (130).
    let partial = state.path().join("partial");
    let mut c = agent(state.path());
    c.args(["bench", "clusters", "-i"]).arg(fleet.inventory());
    c.args(["--scale", "0.02", "--pause", "60s", "--json", "--out"])
        .arg(&partial);
    let child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Threads A (20 each) and B's first 10 take well under a second here.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let started = std::time::Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let r = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stopped in {:?}",
        started.elapsed()
    );
    assert_eq!(r.status.code(), Some(130), "{}", String::from_utf8_lossy(&r.stderr));
    let summary: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(
        (
            summary["interrupted"].as_bool(),
            summary["planned"].as_u64(),
            summary["ok"].as_u64()
        ),
        (Some(true), Some(100), Some(60)),
        "{summary:#}"
    );
    assert_eq!(
        std::fs::read_to_string(partial.join("requests.csv"))
            .unwrap()
            .lines()
            .count(),
        61
    );
    assert!(partial.join("report.md").exists());

    // A second deploy with nothing changed: no upload, no restart, and it says so.
    let before = pids(&fleet, state.path());
    let mut c = agent(state.path());
    let logs = state.path().join("logs");
    c.args(["deploy", "clusters", "-i"])
        .arg(fleet.inventory())
        .arg("--log-dir")
        .arg(&logs);
    let r = run(c);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("10 hosts: 10 ok, 0 failed, 0 unreachable · nothing changed: no upload, no install, no restart"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(
        "load balancer: http://10.210.30.13:80/ (/cluster1 → cluster1, /cluster2 → cluster2; anything else 404)"
    ));
    assert_eq!(pids(&fleet, state.path()), before, "nothing restarted");
    // Per-host logs carry every step.
    let log = std::fs::read_to_string(logs.join("dc-0.log")).unwrap();
    for line in [
        "# files: unchanged 4 files up to date",
        "# services: unchanged 1 running, nothing to restart",
    ] {
        assert!(log.contains(line), "{log}");
    }

    // One file drifts on one host: only that file goes back, only that service restarts.
    let mut c = agent(state.path());
    c.arg("exec").arg("-i").arg(fleet.inventory());
    c.args([
        "--host",
        "dc-2",
        "--sudo",
        "--no-logs",
        "--",
        "echo AGENT_WEB_NAME=drifted >> /etc/agent/agent-web.env",
    ]);
    assert_eq!(run(c).code, 0);
    let (code, ev) = deploy(&fleet, state.path(), "clusters");
    assert_eq!(code, 0, "{ev:#?}");
    assert_eq!(
        changed(&ev),
        BTreeSet::from([("dc-2".into(), "files".into()), ("dc-2".into(), "services".into())])
    );
    let step = ev
        .iter()
        .find(|e| e["host"] == "dc-2" && e["stage"] == "services" && e["event"] == "step")
        .unwrap();
    assert_eq!(step["detail"], "restarted agent-web.service");
    let after = pids(&fleet, state.path());
    for (host, pid) in &before {
        assert_eq!(host == "dc-2", after[host] != *pid, "{host}: {pid} -> {}", after[host]);
    }

    // A spec whose balancer changes: only the HAProxy host's config and service change.
    let spec = state.path().join("clusters.toml");
    let text = include_str!("../remote/specs/clusters.toml").replace(
        r#"{ path = "/cluster2", role = "cluster2" },"#,
        r#"{ path = "/cluster2", role = "cluster2" },
  { path = "/second", role = "cluster2" },"#,
    );
    std::fs::write(&spec, text).unwrap();
    let (code, ev) = deploy(&fleet, state.path(), spec.to_str().unwrap());
    assert_eq!(code, 0, "{ev:#?}");
    assert_eq!(
        changed(&ev),
        BTreeSet::from([("dc-9".into(), "files".into()), ("dc-9".into(), "services".into())])
    );
    // /second is routed to cluster2, whose app has no such page: the app's empty 404, not
    // HAProxy's "Not Found".
    assert_eq!(http_get(lb, 80, "/second"), (404, String::new()));
    assert_eq!(answering(lb, "/cluster2", 4), names(5..9));
}

#[test]
fn a_host_lost_mid_deploy_fails_alone_and_the_rerun_converges() {
    let fleet = Fleet::with_roles("dk", 4, 31, "cluster1:2,cluster2:1,lb:1");
    let state = tempfile::tempdir().unwrap();
    // Something squats dk-1's port 80 and never answers, so its health check keeps trying:
    // the host is mid-deploy, deterministically, when its sshd and every process on it die.
    let mut squatter = squat_port_80("dk-1");
    let mut c = agent(state.path());
    c.args(["deploy", "clusters", "-i"]).arg(fleet.inventory());
    c.args(["--json", "--no-logs"]).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "agent ended early: {text}");
        text.push_str(&line);
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["host"] == "dk-1" && e["event"] == "stage" && e["stage"] == "health" {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    fleet.host("kill", 1);
    let _ = squatter.kill();
    let _ = squatter.wait();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    text.push_str(&rest);
    let status = child.wait().unwrap();
    let ev = events(&text);
    assert_eq!(status.code(), Some(3), "unreachable: {ev:#?}");
    let lost = &common::finished(&ev, "dk-1")["outcome"];
    assert_eq!(lost["result"], "unreachable", "{lost}");
    for h in ["dk-0", "dk-2", "dk-3"] {
        assert_eq!(outcome(&ev, h), "deployed");
    }

    // The host comes back; the next deploy brings it up and leaves the others alone.
    fleet.host("start", 1);
    let (code, ev) = deploy(&fleet, state.path(), "clusters");
    assert_eq!(code, 0, "{ev:#?}");
    assert!(changed(&ev).iter().all(|(h, _)| h == "dk-1"), "{:?}", changed(&ev));
    assert!(changed(&ev).contains(&("dk-1".into(), "services".into())));
    // A run that crashed between upload and restart leaves the new files on the host (so
    // checksums match the plan) and, in the record, the service that still owes a restart.
    // The next deploy uploads nothing and restarts exactly that service.
    let record_path = state.path().join("agent/deployments/clusters.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    let key = format!("ubuntu@{}:22", fleet.addresses[0]);
    record["hosts"][&key]["pending_restart"] = serde_json::json!(["agent-web.service"]);
    std::fs::write(&record_path, record.to_string()).unwrap();
    let (code, ev) = deploy(&fleet, state.path(), "clusters");
    assert_eq!(code, 0, "{ev:#?}");
    let services: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "step" && e["stage"] == "services" && e["status"] == "changed")
        .map(|e| (e["host"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(services, [("dk-0", "restarted agent-web.service")]);
    assert!(
        !changed(&ev).iter().any(|(_, stage)| stage == "files"),
        "{:?}",
        changed(&ev)
    );
    let record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(record["hosts"][&key]["pending_restart"], serde_json::json!([]));

    // HAProxy takes dk-1 back once its checks pass again (rise 2, every 2 s).
    let want = BTreeSet::from(["dk-0".to_string(), "dk-1".to_string()]);
    let t0 = std::time::Instant::now();
    while answering(&fleet.addresses[3], "/cluster1", 6) != want {
        assert!(t0.elapsed().as_secs() < 15, "dk-1 never rejoined the balancer");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Bad input: one line naming what and where, exit 1, and no host contacted (the addresses
/// route nowhere; no known_hosts file or deployment record appears).
#[test]
fn bad_specs_fail_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let inv = d.join("inventory.toml");
    std::fs::write(
        &inv,
        "[[hosts]]\nname = \"a\"\naddress = \"10.210.99.4\"\nrole = \"cluster1\"\n\n\
         [[hosts]]\nname = \"b\"\naddress = \"10.210.99.5\"\nrole = \"cluster2\"\n\n\
         [[hosts]]\nname = \"lb\"\naddress = \"10.210.99.6\"\nrole = \"lb\"\n",
    )
    .unwrap();
    let key = d.join("key.pem");
    let gen_key = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(gen_key.success());
    let clusters = include_str!("../remote/specs/clusters.toml");
    let write = |name: &str, text: String| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let cases = [
        (
            write(
                "role.toml",
                clusters.replace(r#"role = "cluster2" }"#, r#"role = "cluster3" }"#),
            ),
            "balancer: route /cluster2 goes to unknown role \"cluster3\" (roles: cluster1, cluster2)",
        ),
        (
            write("port.toml", clusters.replacen("ports = [80]", "ports = [70000]", 1)),
            "invalid value: integer `70000`, expected u16 (at line 9)",
        ),
        (
            d.join("missing.toml").to_str().unwrap().to_owned(),
            "missing.toml: No such file or directory (os error 2) (built-in specs: clusters, inference)",
        ),
        ("inference".to_owned(), "spec inference needs hosts with role"),
    ];
    for (spec, expected) in cases {
        let state = d.join("state");
        let mut c = agent(&state);
        c.args(["deploy", &spec, "-i"]).arg(&inv).arg("--key").arg(&key);
        let r = run(c);
        assert_eq!(r.code, 1, "{spec}: {}{}", r.stdout, r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{spec}: {}", r.stderr);
        assert!(
            r.stderr.starts_with("agent: ") && r.stderr.contains(expected),
            "{spec}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty());
        assert!(
            !d.join("inventory.known_hosts").exists() && !state.exists(),
            "{spec}: something was written"
        );
    }

    // Programs that are not there: one line, nothing written on any host.
    let state = d.join("state");
    let mut c = agent(&state);
    c.args(["deploy", "clusters", "-i"]).arg(&inv).arg("--key").arg(&key);
    c.arg("--programs").arg(d.join("no-such-dir"));
    let r = run(c);
    assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{}", r.stderr);
    assert!(r.stderr.contains("program agent-web: cannot read "), "{}", r.stderr);
    assert!(!d.join("inventory.known_hosts").exists());
}

/// A program that cannot start: its health check fails within --health-timeout, and the
/// output shows why, from the last lines of that service's log.
#[test]
fn a_failed_health_check_shows_the_service_log() {
    let fleet = Fleet::with_roles("dh", 3, 33, "cluster1:1,cluster2:1,lb:1");
    let state = tempfile::tempdir().unwrap();
    // Port 80 of dh-0 is taken, so agent-web cannot bind it.
    let mut squatter = squat_port_80("dh-0");
    let mut c = agent(state.path());
    c.args(["deploy", "clusters", "-i"]).arg(fleet.inventory());
    c.args(["--no-logs", "--health-timeout", "3s"]);
    let r = run(c);
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let out = &r.stdout;
    assert!(
        out.contains("dh-0 ! agent: last lines of agent-web.service's log:"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("dh-0 ! ") && l.contains("Address already in use")),
        "{out}"
    );
    assert!(
        out.contains("dh-0 ! agent: failed at health: GET /health on port 80"),
        "{out}"
    );
    assert!(out.contains("3 hosts: 2 ok, 1 failed, 0 unreachable"), "{out}");
}

/// Something in netns `host` that takes port 80 and never answers (for 120 s).
fn squat_port_80(host: &str) -> std::process::Child {
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", host, "perl", "-MIO::Socket::INET", "-e"])
        .arg("my $s = IO::Socket::INET->new(LocalPort => 80, Listen => 5, ReuseAddr => 1) or die $!; sleep 120")
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

/// `deploy --rolling 1` of a changed program while the clusters bench sends requests
/// through HAProxy: no request fails (the bench's CSV), and the hosts restarted one after
/// another, each batch only once the one before was back (a plain deploy restarts them all
/// within the same instant, and HAProxy's retries alone could hide that in the count).
#[test]
fn a_rolling_deploy_under_load_fails_no_request() {
    let fleet = Fleet::with_roles("dr", 10, 11, "cluster1:5,cluster2:4,lb:1");
    let state = tempfile::tempdir().unwrap();
    let (code, ev) = deploy(&fleet, state.path(), "clusters");
    assert_eq!(code, 0, "{ev:#?}");

    // A changed program: the built agent-web with bytes appended (it runs the same, its
    // checksum differs, so every web host gets it and restarts).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let built = target.join("x86_64-unknown-linux-gnu/release/agent-web");
    let programs = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&built).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
    bytes.extend_from_slice(b"\0agent rolling test\0");
    std::fs::write(programs.path().join("agent-web"), &bytes).unwrap();
    let mode: std::fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(programs.path().join("agent-web"), mode).unwrap();

    // Load through the balancer for as long as the rollout lasts, then Ctrl-C.
    let out = state.path().join("bench");
    let mut bench = agent(state.path());
    bench.args(["bench", "clusters", "-i"]).arg(fleet.inventory());
    bench
        .args(["--scale", "100", "--pause", "0s", "--json", "--out"])
        .arg(&out);
    let bench = bench.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));

    let mut c = agent(state.path());
    c.args(["deploy", "clusters", "--rolling", "1", "--json", "--no-logs", "-i"])
        .arg(fleet.inventory())
        .arg("--programs")
        .arg(programs.path());
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let rolled = events(&r.stdout);
    let restarted: Vec<String> = changed(&rolled)
        .into_iter()
        .filter(|(_, stage)| stage == "services")
        .map(|(host, _)| host)
        .collect();
    assert_eq!(restarted.len(), 9, "{:#?}", changed(&rolled));

    let kill = std::process::Command::new("kill")
        .args(["-INT", &bench.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let b = bench.wait_with_output().unwrap();
    let summary: Value =
        serde_json::from_slice(&b.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&b.stderr)));
    assert_eq!(
        summary["interrupted"], true,
        "the load outlasted the rollout: {summary:#}"
    );
    let csv = std::fs::read_to_string(out.join("requests.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(rows.len() > 1000, "{} requests", rows.len());
    let failed: Vec<&&str> = rows
        .iter()
        .filter(|l| l.split(',').nth(4).is_none_or(|s| s != "200"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed, e.g. {:?}",
        failed.len(),
        rows.len(),
        &failed[..failed.len().min(5)]
    );

    // The restarts, in kernel clock ticks since boot (the fleet's hosts share one kernel):
    // one after another, each well after the one before.
    let ticks = common::exec_stdout(
        &fleet,
        state.path(),
        &["--role", "cluster1", "--role", "cluster2", "--sudo"],
        "for f in /var/lib/agent/run/agent-web*.pid; do awk '{print $22}' /proc/$(cat $f)/stat; done",
    );
    let mut starts: Vec<u64> = ticks.values().map(|t| t.trim().parse().unwrap()).collect();
    starts.sort();
    let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= 50),
        "restarts less than 0.5 s apart: {gaps:?} ticks"
    );
}

/// A batch that fails stops the rollout: the hosts after it are not touched, say they keep
/// the version before, and the record says where the rollout stopped.
#[test]
fn a_failed_batch_stops_the_rollout() {
    let fleet = Fleet::with_roles("dx", 4, 12, "cluster1:2,cluster2:1,lb:1");
    let state = tempfile::tempdir().unwrap();
    // Port 80 of the second cluster1 host is taken: agent-web cannot start there.
    let mut squatter = squat_port_80("dx-1");
    let mut c = agent(state.path());
    c.args([
        "deploy",
        "clusters",
        "--rolling",
        "1",
        "--json",
        "--no-logs",
        "--health-timeout",
        "3s",
        "-i",
    ])
    .arg(fleet.inventory());
    let r = run(c);
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    let ev = events(&r.stdout);
    assert_eq!(outcome(&ev, "dx-3"), "deployed", "the balancer first");
    assert_eq!(outcome(&ev, "dx-0"), "deployed", "the first batch");
    let failed = &common::finished(&ev, "dx-1")["outcome"];
    assert_eq!(
        (&failed["result"], &failed["stage"]),
        (&Value::from("failed"), &Value::from("health")),
        "{failed}"
    );
    let rest = &common::finished(&ev, "dx-2")["outcome"];
    assert!(
        rest["reason"]
            .as_str()
            .unwrap()
            .contains("not deployed: the rollout stopped: dx-1 failed; it still runs the version before"),
        "{rest}"
    );
    assert!(changed(&ev).iter().all(|(host, _)| host != "dx-2"), "dx-2 untouched");
    let record: Value =
        serde_json::from_slice(&std::fs::read(state.path().join("agent/deployments/clusters.json")).unwrap()).unwrap();
    let results: Vec<String> = record["hosts"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|h| h["result"].as_str().map(String::from))
        .collect();
    assert!(
        results
            .iter()
            .any(|r| r.starts_with("not deployed: the rollout stopped")),
        "{record:#}"
    );
}

//! `agent deploy` on EC2, `agent status` and `agent terminate`, against moto's server on
//! loopback (AWS_ENDPOINT_URL; no seam in the product). For the SSH part, the local fleet
//! plays the instances: moto gives instances launched into a subnet sequential private
//! addresses from .4, the fleet's hosts have exactly those. They boot like EC2 instances
//! (systemd, cloud-init): when an instance appears in moto, the fleet host at its address
//! boots from that instance's own user data and id, read back from moto, and real cloud-init
//! installs the host key agent generated and pinned before launch.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::aws::{FaultProxy, LATEST_NOBLE_AMD64, Moto};
use common::{Fleet, Run, agent, http_get, run};

fn aws_agent(state: &Path, moto: &Moto, endpoint: Option<&str>) -> Command {
    let mut c = agent(state);
    moto.configure(&mut c);
    if let Some(e) = endpoint {
        c.env("AWS_ENDPOINT_URL", e);
    }
    c
}

/// `agent deploy SPEC` on EC2 through moto, instances in `subnet`. With `fleet`, SSH goes to
/// the private IPs (the fleet's hosts); without, to public DNS names, which instances in
/// these subnets do not have: the deploy stops before dialing anything.
fn deploy_cmd(state: &Path, moto: &Moto, spec: &str, key: &Path, subnet: &str, fleet: bool) -> Command {
    let mut c = aws_agent(state, moto, None);
    c.args(["deploy", spec, "--json", "--no-logs", "--subnet", subnet]);
    if fleet {
        c.args(["--ssh-address", "private"]);
    } else {
        c.args(["--ssh-address", "public", "--ssh-cidr", "198.51.100.7/32"]);
    }
    c.arg("--key").arg(key);
    c.args(["--ssh-wait", "60s", "--connect-timeout", "5s"]);
    c
}

fn terminate(state: &Path, moto: &Moto, deployment: &str) -> Run {
    let mut c = aws_agent(state, moto, None);
    c.args(["terminate", deployment]);
    run(c)
}

/// Boots every instance moto has that sits on a fleet address and is not booted yet, from
/// that instance's own user data and id, as EC2 would: real cloud-init on the host installs
/// the host key agent generated (the fleet's hosts boot systemd and cloud-init).
fn boot_new(fleet: &Fleet, moto: &Moto, deployment: &str, booted: &mut BTreeSet<usize>) {
    let found = moto.resources(deployment);
    for i in found["instances"].as_array().unwrap() {
        let ip = i["private_ip"].as_str().unwrap_or_default();
        let Some(n) = fleet.addresses.iter().position(|a| a == ip) else {
            panic!("instance at {ip}, outside the fleet {:?}", fleet.addresses)
        };
        if booted.contains(&n) {
            continue;
        }
        fleet.launch(n, i["user_data"].as_str().unwrap(), i["id"].as_str().unwrap());
        booted.insert(n);
    }
}

/// Runs `c` (a deploy) while booting the fleet host of each instance it launches.
fn deploy_booting(mut c: Command, fleet: &Fleet, moto: &Moto, deployment: &str, booted: &mut BTreeSet<usize>) -> Run {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = c
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        boot_new(fleet, moto, deployment, booted);
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "deploy did not end in 300 s");
        std::thread::sleep(Duration::from_millis(300));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out.path()).unwrap(),
        stderr: std::fs::read_to_string(err.path()).unwrap(),
    }
}

/// Resource events of a `--json` run: (action, kind, name).
fn resource_events(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "resource")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (s("action"), s("kind"), s("name"))
        })
        .collect()
}

/// Starts a deploy with `--json` and sends it SIGINT right after its `n`-th `created` event.
fn interrupt_after(mut c: Command, n: usize) -> (Run, usize) {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child: Child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let mut created = 0;
    while created < n {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.contains(r#""event":"resource""#) && line.contains(r#""action":"created""#) {
            created += 1;
        }
        text.push_str(&line);
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc_kill(child.id() as i32, 2) };
    let output = child.wait_with_output().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    text.push_str(&rest);
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    (
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: text,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        created,
    )
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn names<'a>(v: &'a serde_json::Value, key: &str) -> Vec<&'a str> {
    let mut n: Vec<&str> = v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    n.sort();
    n
}

#[test]
fn clusters_on_ec2_deploy_over_ssh_resume_and_terminate_to_nothing() {
    // AWS as it behaves right after each create, too: not found once.
    let moto = Moto::start_eventual(&[
        ("MOTO_ENABLE_AMI_VALIDATION", "true"),
        ("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true"),
        ("MOTO_ENABLE_KEYPAIR_VALIDATION", "true"),
    ]);
    let fleet = Fleet::unbooted("awsc", 9, 40);
    let net = moto.network("10.210.40.0/24");
    let state = tempfile::tempdir().unwrap();
    let deploy = || deploy_cmd(state.path(), &moto, "clusters", &fleet.key(), &net.subnet_a, true);

    // Interrupted after the third instance: everything so far is tagged and recorded.
    let (r, _) = interrupt_after(deploy(), 7); // key pair, 3 groups, 3 instances
    assert_eq!(r.code, 130, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("agent deploy resumes, agent terminate clusters removes them"),
        "{}",
        r.stderr
    );
    let partial = moto.resources("clusters");
    let launched = partial["instances"].as_array().unwrap().len();
    assert!((3..9).contains(&launched), "{partial:#}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("agent/deployments/clusters.aws.json")).unwrap())
            .unwrap();
    assert_eq!(
        record["resources"].as_array().unwrap().len(),
        partial["count"].as_u64().unwrap() as usize,
        "{record:#}"
    );

    // The next deploy resumes: it finds what exists, launches the rest, deploys over SSH.
    let mut booted = BTreeSet::new();
    let r = deploy_booting(deploy(), &fleet, &moto, "clusters", &mut booted);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let events = resource_events(&r.stdout);
    let count = |action: &str, kind: &str| events.iter().filter(|(a, k, _)| a == action && k == kind).count();
    assert_eq!(count("found", "instance"), launched, "{events:?}");
    assert_eq!(count("created", "instance"), 9 - launched, "{events:?}");
    assert_eq!(count("found", "security-group"), 3, "{events:?}");
    assert_eq!(booted.len(), 9);

    let all = moto.resources("clusters");
    let instances = all["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 9, "{all:#}");
    for i in instances {
        let role = i["tags"]["agent:role"].as_str().unwrap();
        let want = if role == "cluster1" { "m4.large" } else { "t2.large" };
        assert_eq!(i["instance_type"], want, "{i:#}");
        assert_eq!(i["image_id"], LATEST_NOBLE_AMD64);
        assert_eq!(i["key_name"], "vockey");
        assert!(
            i["tags"]["Name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("clusters-{role}-"))
        );
        assert!(
            i["tags"]["agent:host-key"]
                .as_str()
                .unwrap()
                .starts_with("ssh-ed25519 ")
        );
        assert!(i["user_data"].as_str().unwrap().starts_with("#cloud-config\n"));
        // IMDSv2 only, one hop: nothing on the instance relays the metadata service.
        assert_eq!(i["metadata_options"]["HttpTokens"], "required", "{i:#}");
        assert_eq!(i["metadata_options"]["HttpPutResponseHopLimit"], 1, "{i:#}");
        assert_eq!(i["metadata_options"]["HttpEndpoint"], "enabled", "{i:#}");
        assert_eq!(i["monitoring"], "disabled", "basic monitoring by default: {i:#}");
    }
    assert_eq!(names(&all, "key_pairs"), ["vockey"]);
    assert_eq!(
        names(&all, "security_groups"),
        ["clusters-cluster1", "clusters-cluster2", "clusters-lb"]
    );
    let sg = |name: &str| {
        all["security_groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()
            .clone()
    };
    let lb_group = sg("clusters-lb")["id"].as_str().unwrap().to_owned();
    for name in ["clusters-cluster1", "clusters-cluster2"] {
        let rules = sg(name)["ingress"].clone();
        let ssh: Vec<_> = rules
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["from_port"] == 22)
            .collect();
        assert_eq!(ssh.len(), 1, "{rules:#}");
        assert_eq!(
            ssh[0]["cidrs"],
            serde_json::json!(["10.210.0.0/16"]),
            "SSH only from the VPC: {rules:#}"
        );
        let http: Vec<_> = rules
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["from_port"] == 80)
            .collect();
        assert_eq!(http.len(), 1, "{rules:#}");
        assert_eq!(
            http[0]["cidrs"],
            serde_json::json!([]),
            "port 80 not open to the world: {rules:#}"
        );
        assert_eq!(http[0]["source_groups"], serde_json::json!([lb_group]), "{rules:#}");
    }
    let lbs = all["load_balancers"].as_array().unwrap();
    assert_eq!(lbs.len(), 1, "{all:#}");
    assert_eq!(lbs[0]["scheme"], "internet-facing");
    assert_eq!(
        lbs[0]["subnets"].as_array().unwrap().len(),
        2,
        "two zones: {:#}",
        lbs[0]
    );
    assert_eq!(names(&all, "target_groups"), ["clusters-cluster1", "clusters-cluster2"]);
    for tg in all["target_groups"].as_array().unwrap() {
        assert_eq!(tg["health_check_path"], "/health");
        let want = if tg["name"] == "clusters-cluster1" { 5 } else { 4 };
        assert_eq!(tg["targets"].as_array().unwrap().len(), want, "{tg:#}");
    }
    let listener = &all["listeners"][0];
    assert_eq!(listener["port"], 80);
    assert_eq!(listener["default_actions"][0]["type"], "fixed-response", "{listener:#}");
    let mut rules: Vec<Vec<String>> = all["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_value(r["path_patterns"].clone()).unwrap())
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        [vec!["/cluster1", "/cluster1/*"], vec!["/cluster2", "/cluster2/*"]]
    );

    // The app runs on every instance, and says which one it is.
    for (n, address) in fleet.addresses.iter().enumerate() {
        let (status, body) = http_get(address, 80, "/cluster1");
        assert_eq!(status, 200, "host {n}: {body}");
    }
    // Host keys. The one agent generated (in the user data, pinned at launch under the
    // instance id) let it verify the first contact; over that connection the host made a new
    // key, agent pinned it, and sshd took it up. The user data's key no longer identifies the host.
    let known_path = state.path().join("agent/deployments/clusters.known_hosts");
    let known = std::fs::read_to_string(&known_path).unwrap();
    assert_eq!(known.lines().count(), 9, "{known}");
    let words = |k: &str| k.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let retagged = moto.resources("clusters");
    for i in instances {
        let id = i["id"].as_str().unwrap();
        let ip = i["private_ip"].as_str().unwrap();
        let n = fleet.addresses.iter().position(|a| a == ip).unwrap();
        let etc_ssh = fleet.host_dir(n).join("root/etc/ssh");
        let mut keys: Vec<String> = std::fs::read_dir(&etc_ssh)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| f.starts_with("ssh_host_"))
            .collect();
        keys.sort();
        assert_eq!(keys, ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"], "{ip}");
        let public = words(&std::fs::read_to_string(etc_ssh.join("ssh_host_ed25519_key.pub")).unwrap());
        let user_data = i["user_data"].as_str().unwrap();
        let booted_with = words(
            user_data
                .lines()
                .find_map(|l| l.trim().strip_prefix("ed25519_public: "))
                .unwrap(),
        );
        assert_ne!(public, booted_with, "{ip} still has the user data's key");
        assert!(known.contains(&format!("{ip} {public} {id}\n")), "{ip}: {known}");
        let tag = retagged["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()["tags"]["agent:host-key"]
            .clone();
        assert_eq!(words(tag.as_str().unwrap()), public, "the tag follows the rotation");
        // OpenSSH agrees: the user data's key fails to authenticate the host, the pinned one does.
        let old = state.path().join("user-data.known_hosts");
        std::fs::write(&old, format!("{ip} {booted_with}\n")).unwrap();
        let ssh = |known_hosts: &Path| {
            Command::new("ssh")
                .args([
                    "-F",
                    "/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=yes",
                ])
                .args(["-o", "ConnectTimeout=10", "-o", "HostKeyAlgorithms=ssh-ed25519"])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
                .arg("-i")
                .arg(fleet.key())
                .arg(format!("ubuntu@{ip}"))
                .arg("true")
                .output()
                .unwrap()
        };
        let out = ssh(&old);
        assert!(
            !out.status.success(),
            "{ip}: the user data's key still authenticates it"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
            "{ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = ssh(&known_path);
        assert!(out.status.success(), "{ip}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let hostkey_steps = |stdout: &str, status: &str| {
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "step" && e["stage"] == "hostkey" && e["status"] == status)
            .count()
    };
    assert_eq!(hostkey_steps(&r.stdout, "changed"), 9, "{}", r.stdout);
    // The deployment by name, with nothing else: hosts, key and the rotated pins from the record.
    let mut c = agent(state.path());
    c.args(["exec", "clusters", "--json", "--no-logs", "--", "cat /etc/hostname"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let answered = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "finished" && e["outcome"]["code"] == 0)
        .count();
    assert_eq!(answered, 9, "{}", r.stdout);
    let id0 = instances[0]["id"].as_str().unwrap();
    let mut c = agent(state.path());
    c.args(["exec", "clusters", "--host", id0, "--json", "--no-logs", "--", "true"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout.matches(r#""event":"finished""#).count(),
        1,
        "an instance id names its host: {}",
        r.stdout
    );
    // Every create was not found once right after it, as AWS answers; the deploy retried.
    let answers = moto.not_found_answers();
    for (code, n) in [
        ("InvalidGroup.NotFound", 3),
        ("InvalidInstanceID.NotFound", 1),
        ("TargetGroupNotFound", 2),
        ("LoadBalancerNotFound", 1),
    ] {
        assert_eq!(
            answers.iter().filter(|a| a.starts_with(code)).count(),
            n,
            "{code}: {answers:#?}"
        );
    }

    // A second deploy creates nothing and changes nothing.
    let r = deploy_booting(deploy(), &fleet, &moto, "clusters", &mut booted);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        resource_events(&r.stdout).iter().all(|(a, _, _)| a == "found"),
        "{}",
        r.stdout
    );
    assert_eq!(hostkey_steps(&r.stdout, "unchanged"), 9, "{}", r.stdout);

    // A rolling deploy of a changed agent-web: one instance at a time leaves its target group
    // (deregistered), is deployed, comes back (registered) and is seen healthy.
    let programs = tempfile::tempdir().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut web = std::fs::read(target.join("x86_64-unknown-linux-gnu/release/agent-web")).unwrap();
    web.extend_from_slice(b"\0agent rolling on ec2\0");
    std::fs::write(programs.path().join("agent-web"), &web).unwrap();
    let mode: std::fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(programs.path().join("agent-web"), mode).unwrap();
    let before = moto.actions().len();
    let mut c = deploy();
    c.args(["--rolling", "1", "--programs"]).arg(programs.path());
    let r = deploy_booting(c, &fleet, &moto, "clusters", &mut booted);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let shifts: Vec<String> = moto.actions()[before..]
        .iter()
        .filter(|a| *a == "DeregisterTargets" || *a == "RegisterTargets")
        .cloned()
        .collect();
    // Nine instances left one at a time: never two deregistrations without a registration
    // between them, and the last one put back.
    assert_eq!(
        shifts.iter().filter(|a| *a == "DeregisterTargets").count(),
        9,
        "{shifts:?}"
    );
    assert!(
        shifts
            .windows(2)
            .all(|w| !(w[0] == "DeregisterTargets" && w[1] == "DeregisterTargets")),
        "{shifts:?}"
    );
    assert_eq!(shifts.last().map(String::as_str), Some("RegisterTargets"), "{shifts:?}");

    // Pins come from this machine's known_hosts: a tag anyone in the account can change
    // does not move them.
    let id = instances[0]["id"].as_str().unwrap();
    let ip0 = instances[0]["private_ip"].as_str().unwrap();
    let forged = lab_key(state.path()).with_extension("pem.pub");
    let forged = words(&std::fs::read_to_string(forged).unwrap());
    moto.fixture(&["tag", id, "--key", "agent:host-key", "--value", &forged]);
    let r = deploy_booting(deploy(), &fleet, &moto, "clusters", &mut booted);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let sorted = |text: &str| {
        let mut l: Vec<String> = text.lines().map(String::from).collect();
        l.sort();
        l
    };
    assert_eq!(
        sorted(&std::fs::read_to_string(&known_path).unwrap()),
        sorted(&known),
        "pins unchanged"
    );
    let tags = moto.resources("clusters");
    let tag = &tags["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap()["tags"]["agent:host-key"];
    assert_ne!(
        words(tag.as_str().unwrap()),
        forged,
        "the deploy put the pinned key back in the tag"
    );
    // Without a record here (another machine), the tag seeds one, and the output says so:
    // a forged tag then gives a key the host does not have.
    moto.fixture(&["tag", id, "--key", "agent:host-key", "--value", &forged]);
    let without = |text: &str, id: &str| -> String {
        text.lines()
            .filter(|l| !l.ends_with(&format!(" {id}")))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    std::fs::write(&known_path, without(&known, id)).unwrap();
    let r = deploy_booting(deploy(), &fleet, &moto, "clusters", &mut booted);
    assert_ne!(
        r.code, 0,
        "a forged tag seeds a key the host does not have: {}\n{}",
        r.stdout, r.stderr
    );
    assert!(r.stdout.contains(&format!("host key of {id} (")), "{}", r.stdout);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains(&format!("host key of {ip0} changed")),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let current = known.lines().find(|l| l.ends_with(&format!(" {id}"))).unwrap();
    moto.fixture(&[
        "tag",
        id,
        "--key",
        "agent:host-key",
        "--value",
        &words(&current[ip0.len() + 1..]),
    ]);
    std::fs::write(&known_path, without(&known, id)).unwrap();
    let r = deploy_booting(deploy(), &fleet, &moto, "clusters", &mut booted);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!("host key of {id} (")) && r.stdout.contains("taken from its agent:host-key tag"),
        "{}",
        r.stdout
    );
    assert_eq!(std::fs::read_to_string(&known_path).unwrap().lines().count(), 9);

    // An instance with no host key from agent (launched by hand, tagged later) is refused
    // unless the operator asks for trust on first use.
    moto.fixture(&["untag", id, "--key", "agent:host-key"]);
    let known = std::fs::read_to_string(&known_path).unwrap();
    std::fs::write(&known_path, without(&known, id)).unwrap();
    let r = deploy_booting(deploy(), &fleet, &moto, "clusters", &mut booted);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!("no host key known for {id}")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("pass --trust-first-use"), "{}", r.stderr);
    let mut c = deploy();
    c.arg("--trust-first-use");
    let r = deploy_booting(c, &fleet, &moto, "clusters", &mut booted);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let mut c = aws_agent(state.path(), &moto, None);
    c.args(["status", "clusters"]);
    let s = run(c);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert_eq!(s.stdout.matches("  instance i-").count(), 9, "{}", s.stdout);
    assert!(
        s.stdout.contains("target group clusters-cluster1: 5/5 healthy"),
        "{}",
        s.stdout
    );
    // The key shown is the one pinned here (for the instance launched "by hand", the one it
    // presented at first contact); moto's console is an old Xen boot log, with no host key
    // block to compare it with.
    assert_eq!(s.stdout.matches("(console: not posted)").count(), 9, "{}", s.stdout);

    // Terminate leaves nothing, forgets the host keys and the record; again: nothing to do.
    let t = terminate(state.path(), &moto, "clusters");
    assert_eq!(t.code, 0, "{}\n{}", t.stdout, t.stderr);
    assert!(
        t.stdout.contains("removed 19 resources of deployment clusters"),
        "{}",
        t.stdout
    );
    let left = moto.resources("clusters");
    assert_eq!(left["count"], 0, "{left:#}");
    assert!(!state.path().join("agent/deployments/clusters.known_hosts").exists());
    assert!(!state.path().join("agent/deployments/clusters.aws.json").exists());
    let t = terminate(state.path(), &moto, "clusters");
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert!(t.stdout.contains("nothing to remove"), "{}", t.stdout);
}

/// Interrupting a deploy after any provisioning step leaves only tagged, recorded resources,
/// and terminate removes all of them. The inference spec has no load balancer (its workers
/// accept their ports only from the orchestrator's group); clusters adds the ALB's steps.
#[test]
fn interrupted_at_every_step_then_terminated_leaves_nothing() {
    let moto = Moto::start(&[]);
    let net = moto.network("10.210.41.0/24");
    let state = tempfile::tempdir().unwrap();
    let key = lab_key(state.path());
    let programs = programs_dir(state.path());
    // Interrupted right after its n-th creation, then terminated: nothing may be left. After
    // the last creation the launch may finish before Ctrl-C lands; the deploy then stops at
    // the missing public address instead. Returns what moto held before terminate.
    let interrupt_then_terminate = |spec: &str, n: usize, last: usize| {
        let mut c = deploy_cmd(state.path(), &moto, spec, &key, &net.subnet_a, false);
        c.arg("--programs").arg(&programs);
        if spec == "inference" {
            c.arg("--detailed-monitoring");
        }
        let (r, created) = interrupt_after(c, n);
        assert!(created == n, "run {n}: {}\n{}", r.stdout, r.stderr);
        let stopped_later = n == last && r.code == 1 && r.stderr.contains("has no public DNS name");
        assert!(r.code == 130 || stopped_later, "run {n}: {}\n{}", r.stdout, r.stderr);
        let found = moto.resources(spec);
        assert!(found["count"].as_u64().unwrap() >= n as u64, "{found:#}");
        let t = terminate(state.path(), &moto, spec);
        assert_eq!(t.code, 0, "run {n}: {}\n{}", t.stdout, t.stderr);
        let left = moto.resources(spec);
        assert_eq!(left["count"], 0, "after interrupt {n}: {left:#}");
        found
    };
    // inference: 1 key pair + 2 groups + 5 instances.
    for n in 1..=8 {
        let found = interrupt_then_terminate("inference", n, 8);
        if n == 8 {
            let groups = found["security_groups"].as_array().unwrap();
            let orch = groups.iter().find(|g| g["name"] == "inference-orchestrator").unwrap();
            let worker = groups.iter().find(|g| g["name"] == "inference-worker").unwrap();
            let from_orch: Vec<_> = worker["ingress"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["source_groups"] == serde_json::json!([orch["id"]]))
                .map(|r| r["from_port"].as_u64().unwrap())
                .collect();
            assert_eq!(from_orch, [5000, 5001], "{worker:#}");
            assert!(
                worker["ingress"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["from_port"] == 22 || r["cidrs"] == serde_json::json!([]))
            );
            let types: Vec<_> = found["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["instance_type"].as_str().unwrap())
                .collect();
            assert_eq!(types, ["t2.large"; 5]);
            for i in found["instances"].as_array().unwrap() {
                assert_eq!(i["monitoring"], "enabled", "--detailed-monitoring: {i:#}");
            }
        }
    }
    // clusters: 1 key pair + 3 groups + 9 instances, then the load balancer, 2 target groups,
    // the listener and 2 rules (creations 14 to 19).
    for n in 14..=19 {
        interrupt_then_terminate("clusters", n, 19);
    }
}

/// A fresh operator key (`lab.pem`) in `dir`, for runs that never log in.
fn lab_key(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("lab.pem");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(&key)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen failed");
    key
}

/// Prebuilt "programs" for the inference spec: any ELF binary passes agent's checks, and
/// these runs never get as far as starting them.
fn programs_dir(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("programs");
    std::fs::create_dir_all(&p).unwrap();
    for name in ["agent-orchestrator", "agent-worker", "agent-web"] {
        std::fs::copy("/bin/true", p.join(name)).unwrap();
    }
    p
}

#[test]
fn security_groups_are_deleted_once_aws_stops_seeing_a_dependency() {
    let moto = Moto::start(&[]);
    let net = moto.network("10.210.42.0/24");
    let state = tempfile::tempdir().unwrap();
    let key = lab_key(state.path());
    let mut c = deploy_cmd(state.path(), &moto, "inference", &key, &net.subnet_a, false);
    c.arg("--programs").arg(programs_dir(state.path()));
    let r = run(c);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("has no public DNS name: use --ssh-address private"),
        "{}",
        r.stderr
    );
    assert_eq!(moto.resources("inference")["count"], 8);

    // AWS keeps answering DependencyViolation for a while after the instances are gone.
    let proxy = FaultProxy::start(&moto.endpoint, 3);
    let mut c = aws_agent(state.path(), &moto, Some(&proxy.endpoint));
    c.args(["terminate", "inference"]);
    let t = run(c);
    assert_eq!(t.code, 0, "{}\n{}", t.stdout, t.stderr);
    assert_eq!(proxy.log().lines().count(), 3, "{}", proxy.log());
    assert_eq!(
        t.stdout.matches("DependencyViolation (retrying in").count(),
        3,
        "{}",
        t.stdout
    );
    assert_eq!(moto.resources("inference")["count"], 0);
}

#[test]
fn bad_input_gets_one_line_and_creates_nothing() {
    let moto = Moto::start(&[
        ("MOTO_ENABLE_AMI_VALIDATION", "true"),
        ("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true"),
    ]);
    let net = moto.network("10.210.43.0/24");
    let state = tempfile::tempdir().unwrap();
    let key = lab_key(state.path());
    let spec = state.path().join("bogus.toml");
    std::fs::write(
        &spec,
        "name = \"bogus\"\n[roles.web]\nprogram = \"web\"\ninstance_type = \"t3.bogus\"\nports = [80]\n",
    )
    .unwrap();
    let programs = programs_dir(state.path());
    let one_line = |r: &Run, want: &str| {
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains(want), "want {want:?} in {}", r.stderr);
    };
    let attempt = |args: &[&str], spec: &str, key: &Path| {
        let mut c = deploy_cmd(state.path(), &moto, spec, key, &net.subnet_a, false);
        c.arg("--programs").arg(&programs).args(args);
        run(c)
    };

    one_line(
        &attempt(&["--ami", "ami-00000000000000000"], "clusters", &key),
        "AMI ami-00000000000000000 does not exist in us-east-1",
    );
    let zoned = state.path().join("zoned.toml");
    std::fs::write(
        &zoned,
        "name = \"zoned\"\n[roles.web]\nprogram = \"web\"\nzone = \"us-east-1b\"\nports = [80]\n",
    )
    .unwrap();
    one_line(
        &attempt(&[], zoned.to_str().unwrap(), &key),
        "role web asks for zone us-east-1b, but --subnet",
    );
    one_line(
        &attempt(&[], spec.to_str().unwrap(), &key),
        "instance type \"t3.bogus\" (role web) is not offered in us-east-1",
    );
    one_line(
        &attempt(&[], "clusters", &state.path().join("missing.pem")),
        "missing.pem not found",
    );
    let mut c = aws_agent(state.path(), &moto, None);
    c.args([
        "deploy",
        "clusters",
        "--subnet",
        "subnet-0000",
        "--ssh-cidr",
        "10.0.0.0/8",
    ]);
    c.arg("--key").arg(&key).arg("--programs").arg(&programs);
    one_line(&run(c), "subnet subnet-0000 does not exist");
    let mut c = aws_agent(state.path(), &moto, None);
    c.args(["deploy", "clusters", "--ssh-cidr", "everyone"]);
    c.arg("--key").arg(&key).arg("--programs").arg(&programs);
    one_line(&run(c), "--ssh-cidr \"everyone\" is not an IPv4 CIDR");
    assert_eq!(moto.resources("clusters")["count"], 0);
    assert_eq!(moto.resources("bogus")["count"], 0);

    // No region: said at once, before any program is built or read (these do not exist).
    let mut c = deploy_cmd(state.path(), &moto, "clusters", &key, &net.subnet_a, false);
    c.env_remove("AWS_REGION").env_remove("AWS_DEFAULT_REGION");
    c.arg("--programs").arg(state.path().join("no-programs-here"));
    one_line(&run(c), "no AWS region: pass --region");

    // No credentials anywhere (not even the metadata service, which the chain tries last):
    // one short line saying where agent looked, at once.
    let mut c = deploy_cmd(state.path(), &moto, "clusters", &key, &net.subnet_a, false);
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        c.env_remove(k);
    }
    c.arg("--programs").arg(state.path().join("no-programs-here"));
    let r = run(c);
    one_line(&r, "no AWS credentials: agent looked in AWS_ACCESS_KEY_ID");
    assert!(
        r.stderr.contains("aws-credentials"),
        "names the file it read: {}",
        r.stderr
    );
    assert!(r.stderr.len() < 400, "{} characters: {}", r.stderr.len(), r.stderr);

    // Outside the Learner Lab's regions and sizes its policy denies every call explicitly:
    // the hint says what the lab allows, without the kilobytes of encoded policy message.
    let deny = FaultProxy::launch(&moto.endpoint, &["--fail", "0", "--deny", "*"]);
    let mut c = aws_agent(state.path(), &moto, Some(&deny.endpoint));
    c.args(["deploy", "inference", "--ssh-cidr", "10.0.0.0/8"]);
    c.arg("--key").arg(&key).arg("--programs").arg(&programs);
    let r = run(c);
    one_line(&r, "AWS denies it explicitly (UnauthorizedOperation");
    assert!(
        r.stderr
            .contains("Learner Lab allows only regions us-east-1 and us-west-2"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.len() < 700, "{} characters: {}", r.stderr.len(), r.stderr);

    // Nine instances already run (Lab 1's): the Learner Lab would terminate what agent adds,
    // so the deploy is refused before anything is created.
    moto.python(&format!(
        "import boto3; boto3.client('ec2', region_name='us-east-1').run_instances(ImageId='{LATEST_NOBLE_AMD64}', InstanceType='t2.micro', MinCount=9, MaxCount=9)"
    ));
    let mut c = deploy_cmd(state.path(), &moto, "inference", &key, &net.subnet_a, false);
    c.arg("--programs").arg(&programs);
    let r = run(c);
    one_line(
        &r,
        "us-east-1 would run 14 instances, over the limit of 9 (the Learner Lab's",
    );
    assert!(
        r.stderr
            .contains("9 other instances (9 vCPUs) are pending or running, and inference needs 5 (10 vCPUs)"),
        "{}",
        r.stderr
    );
    assert_eq!(moto.resources("inference")["count"], 0);
    // vCPUs count too: 9 + 5 instances fit under 20, not 19 vCPUs.
    let mut c = deploy_cmd(state.path(), &moto, "inference", &key, &net.subnet_a, false);
    c.arg("--programs")
        .arg(&programs)
        .args(["--max-instances", "20", "--max-vcpus", "18"]);
    one_line(&run(c), "us-east-1 would run 19 vCPUs, over the limit of 18:");
    assert_eq!(moto.resources("inference")["count"], 0);

    // The lab session ended: AWS refuses the credentials.
    let expired = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let mut c = aws_agent(state.path(), &expired, None);
    c.args([
        "deploy",
        "clusters",
        "--ssh-address",
        "private",
        "--ssh-cidr",
        "10.0.0.0/8",
    ]);
    c.arg("--key").arg(&key).arg("--programs").arg(&programs);
    let r = run(c);
    one_line(&r, "AWS refused the credentials");
    assert!(r.stderr.contains("AuthFailure"), "{}", r.stderr);
    assert!(r.stderr.contains("~/.aws/credentials"), "{}", r.stderr);
    let mut c = aws_agent(state.path(), &expired, None);
    c.args(["terminate", "clusters"]);
    one_line(&run(c), "AWS refused the credentials");
}

#[test]
fn metrics_are_the_series_the_course_graphs_need() {
    assert_eq!(common::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    let moto = Moto::start(&[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // An hour ago, on a 5-minute boundary (basic EC2 monitoring's period).
    let start = (now - 3600) / 300 * 300;
    let seed = moto.fixture(&["metrics-seed", "--deployment", "labm", "--start", &start.to_string()]);
    let state = tempfile::tempdir().unwrap();
    let out = state.path().join("metrics");
    let mut c = aws_agent(state.path(), &moto, None);
    c.args(["metrics", "labm", "--since", &common::rfc3339(start)]);
    c.args([
        "--until",
        &common::rfc3339(start + 90),
        "--wait",
        "30s",
        "--json",
        "--out",
    ]);
    c.arg(&out);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let series: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let find = |metric: &str, dims: &[(&str, &str)]| {
        let want: Vec<serde_json::Value> = dims.iter().map(|(k, v)| serde_json::json!([k, v])).collect();
        let s = series
            .iter()
            .find(|s| s["metric"] == metric && s["dimensions"].as_array().unwrap() == &want)
            .unwrap_or_else(|| panic!("no {metric} {dims:?} in {series:#?}"));
        let points: Vec<(i64, f64)> = s["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_i64().unwrap() - start, p[1].as_f64().unwrap()))
            .collect();
        (
            s["stat"].as_str().unwrap().to_owned(),
            s["label"].as_str().unwrap().to_owned(),
            points,
        )
    };
    let i1 = seed["instances"]["cluster1"].as_str().unwrap();
    let lb = seed["load_balancer"].as_str().unwrap();
    let tg1 = seed["target_groups"]["cluster1"].as_str().unwrap();
    let tg2 = seed["target_groups"]["cluster2"].as_str().unwrap();
    // The real dimension forms, taken from the ARNs.
    assert!(lb.starts_with("app/labm/"), "{lb}");
    assert!(tg1.starts_with("targetgroup/labm-cluster1/"), "{tg1}");
    // cluster1's instance has basic monitoring: one point per 5 minutes, CPU the average of
    // the three seeded (20, 40, 50), bytes their sum. Never shown as a minute's.
    let (stat, label, cpu) = find("CPUUtilization", &[("InstanceId", i1)]);
    assert_eq!((stat.as_str(), label), ("Average", format!("cluster1-0 ({i1})")));
    assert_eq!(cpu.len(), 1, "{cpu:?}");
    assert_eq!(cpu[0].0, 0);
    assert!((cpu[0].1 - 110.0 / 3.0).abs() < 1e-9, "{cpu:?}");
    assert_eq!(
        find("NetworkOut", &[("InstanceId", i1)]),
        ("Sum".into(), format!("cluster1-0 ({i1})"), vec![(0, 4500.0)])
    );
    // cluster2's has detailed monitoring: points per minute (two in the first: 21 and 41).
    let i2 = seed["instances"]["cluster2"].as_str().unwrap();
    assert_eq!(
        find("CPUUtilization", &[("InstanceId", i2)]).2,
        vec![(0, 31.0), (60, 50.0)]
    );
    assert_eq!(
        find("NetworkOut", &[("InstanceId", i2)]).2,
        vec![(0, 4001.0), (60, 500.0)]
    );
    // The load balancer's count: the decoy under the full ARN (1000) is not in it.
    assert_eq!(
        find("RequestCount", &[("LoadBalancer", lb)]),
        ("Sum".into(), "load balancer".into(), vec![(0, 8.0), (60, 7.0)])
    );
    let (stat, _, rt) = find("TargetResponseTime", &[("LoadBalancer", lb)]);
    assert_eq!(stat, "Average");
    assert_eq!(rt.len(), 1);
    assert!((rt[0].1 - 0.2).abs() < 1e-9, "{rt:?}");
    // Per target group: both dimensions, as CloudWatch publishes them.
    assert_eq!(
        find("RequestCount", &[("TargetGroup", tg1), ("LoadBalancer", lb)]),
        ("Sum".into(), "labm-cluster1".into(), vec![(0, 6.0)])
    );
    assert_eq!(
        find("RequestCount", &[("TargetGroup", tg2), ("LoadBalancer", lb)]).2,
        vec![(0, 7.0)]
    );
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(
        csv.starts_with("namespace,metric,stat,dimensions,label,timestamp,value\n"),
        "{csv}"
    );
    assert!(
        csv.contains(&format!(
            "AWS/ApplicationELB,RequestCount,Sum,LoadBalancer={lb},\"load balancer\",{},8\n",
            common::rfc3339(start)
        )),
        "{csv}"
    );
    for chart in ["cpu", "network-out", "requests", "response-time"] {
        common::assert_chart(&out, chart);
    }
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("## CloudWatch") && report.contains("![CPU utilisation per instance](cpu.png)"),
        "{report}"
    );

    // A window CloudWatch has not covered yet: bounded wait, what it had saved, one line.
    let mut c = aws_agent(state.path(), &moto, None);
    c.args(["metrics", "labm", "--since", &common::rfc3339(start)]);
    c.args(["--until", &common::rfc3339(start + 400), "--wait", "1s", "--out"]);
    c.arg(state.path().join("later"));
    let t = Instant::now();
    let r = run(c);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(
        r.stderr
            .contains("CloudWatch had not posted data up to the bench's end for 3 series after 1 s")
            && r.stderr.contains("load balancer")
            && r.stderr.contains("run `agent metrics labm --bench"),
        "{}",
        r.stderr
    );
    assert!(state.path().join("later/metrics.json").exists());

    // The bench on EC2: instances per role from AWS by tag, then the metrics of its window.
    // The balancer is a stand-in on loopback answering as the seeded instances would.
    let bench = state.path().join("bench");
    let (mut lb_child, lb_url) = web_stand_in(&[("/cluster1", i1), ("/cluster2", i2)]);
    let mut c = aws_agent(state.path(), &moto, None);
    c.args([
        "bench",
        "clusters",
        "--deployment",
        "labm",
        "--url",
        &lb_url,
        "--scale",
        "0.01",
    ]);
    c.args(["--metrics-wait", "1s", "--json", "--out"]).arg(&bench);
    let r = run(c);
    let _ = lb_child.kill();
    // Exit 2: CloudWatch (moto) has nothing for this minute; the bench itself answered all.
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("CloudWatch had not posted data"), "{}", r.stderr);
    let summary: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(summary["ok"], 50, "{summary:#}");
    for (g, id) in [(0, i1), (1, i2)] {
        assert_eq!(
            summary["groups"][g]["responders"],
            serde_json::json!({ id: 25 }),
            "{summary:#}"
        );
        assert_eq!(summary["groups"][g]["missing"], serde_json::json!([]), "{summary:#}");
    }
    let deployment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bench.join("deployment.json")).unwrap()).unwrap();
    assert_eq!(deployment["place"], "EC2 us-east-1");
    assert_eq!(deployment["instances"][0]["instance_type"], "t2.micro");
    let report = std::fs::read_to_string(bench.join("report.md")).unwrap();
    assert!(
        report.contains("## Bench") && report.contains("## CloudWatch"),
        "{report}"
    );

    // Bad input: one line, nothing fetched.
    for (args, line) in [
        (
            &["metrics", "labm"][..],
            "error: the following required arguments were not provided",
        ),
        (
            &["metrics", "labm", "--since", "yesterday", "--until", "today"],
            "agent: --since \"yesterday\" is not an RFC 3339 time (e.g. 2026-11-22T14:00:00Z)",
        ),
        (
            &[
                "metrics",
                "nothere",
                "--since",
                "2026-11-22T10:00:00Z",
                "--until",
                "2026-11-22T10:05:00Z",
            ],
            "agent: deployment nothere has no instances or load balancer in us-east-1: check the name (agent status nothere)",
        ),
    ] {
        let mut c = aws_agent(state.path(), &moto, None);
        c.args(args);
        let r = run(c);
        assert_ne!(r.code, 0);
        assert!(r.stderr.starts_with(line), "{args:?}: {}", r.stderr);
    }
}

/// A stand-in for a load balancer: answers each path as the web app of the given instance
/// (HTTP/1.1 keep-alive, as the ALB); its URL.
fn web_stand_in(routes: &[(&str, &str)]) -> (Child, String) {
    let table: Vec<String> = routes.iter().map(|(p, id)| format!("{p:?}: {id:?}")).collect();
    let script = format!(
        r#"
import http.server, sys
ROUTES = {{{}}}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = ("Instance %s is responding now!" % ROUTES[self.path]).encode() if self.path in ROUTES else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#,
        table.join(", ")
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start python3");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, format!("http://127.0.0.1:{}", line.trim()))
}

/// `deploy inference` on EC2, then the deployment by name and nothing else: `agent status`,
/// `agent exec` and `agent bench inference` (its orchestrator found from the record).
#[test]
fn inference_on_ec2_is_reached_by_its_name() {
    let moto = Moto::start(&[]);
    let fleet = Fleet::unbooted("awsi", 5, 44);
    let net = moto.network("10.210.44.0/24");
    let state = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("remote/worker/fixtures/tiny");
    let mut c = deploy_cmd(state.path(), &moto, "inference", &fleet.key(), &net.subnet_a, true);
    c.arg("--model").arg(&model);
    let mut booted = BTreeSet::new();
    let r = deploy_booting(c, &fleet, &moto, "inference", &mut booted);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(booted.len(), 5);

    let mut c = aws_agent(state.path(), &moto, None);
    c.args(["status", "inference"]);
    let s = run(c);
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert_eq!(s.stdout.matches("  instance i-").count(), 5, "{}", s.stdout);

    let mut c = agent(state.path());
    c.args([
        "exec",
        "inference",
        "--role",
        "worker",
        "--json",
        "--no-logs",
        "--",
        "true",
    ]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.matches(r#""event":"finished""#).count(), 4, "{}", r.stdout);

    let mut c = agent(state.path());
    c.args([
        "bench",
        "inference",
        "inference",
        "-c",
        "4",
        "-n",
        "12",
        "--json",
        "--out",
    ])
    .arg(state.path().join("bench"));
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.stdout);
    let summary: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(summary["ok"].as_u64(), Some(12), "{summary:#}");
    let orchestrator = &fleet.addresses[0];
    assert_eq!(summary["target"], format!("http://{orchestrator}:80"), "{summary:#}");

    let t = terminate(state.path(), &moto, "inference");
    assert_eq!(t.code, 0, "{}\n{}", t.stdout, t.stderr);
}

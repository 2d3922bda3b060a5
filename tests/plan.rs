//! `agent plan`: what a deployment would do, shown without touching any host.

mod common;

use common::{agent, run};

/// Lab 1's shape: 5 + 4 web hosts and a load-balancer host. Nothing listens at these
/// addresses: planning must not need the hosts.
fn clusters_inventory(dir: &std::path::Path, with_cluster2: bool) -> std::path::PathBuf {
    let mut text = String::from("[defaults]\nuser = \"ubuntu\"\n");
    for i in 0..5 {
        text += &format!(
            "[[hosts]]\nname = \"c1-{i}\"\naddress = \"10.210.250.{}\"\nrole = \"cluster1\"\n",
            4 + i
        );
    }
    if with_cluster2 {
        for i in 0..4 {
            text += &format!(
                "[[hosts]]\nname = \"c2-{i}\"\naddress = \"10.210.250.{}\"\nrole = \"cluster2\"\n",
                9 + i
            );
        }
    }
    text += "[[hosts]]\nname = \"lb\"\naddress = \"10.210.250.13\"\nrole = \"lb\"\n";
    let path = dir.join("inventory.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn plan_shows_every_host_without_contacting_any() {
    let dir = tempfile::tempdir().unwrap();
    let inv = clusters_inventory(dir.path(), true);
    let mut c = agent(dir.path());
    c.args(["plan", "clusters", "-i"]).arg(&inv);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("deployment clusters: 10 hosts\n"), "{}", r.stdout);
    assert_eq!(r.stdout.matches("  start    agent-web.service\n").count(), 9);
    assert!(
        r.stdout.contains("lb (10.210.250.13, role lb)\n  install  haproxy\n"),
        "{}",
        r.stdout
    );
    assert!(
        !dir.path().join("inventory.known_hosts").exists(),
        "plan must not connect"
    );

    let mut c = agent(dir.path());
    c.args(["plan", "clusters", "--json", "-i"]).arg(&inv);
    let r = run(c);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let lb = &plan["hosts"][9];
    assert!(
        lb["files"][0]["source"]["text"]
            .as_str()
            .unwrap()
            .contains("use_backend cluster2 if route1")
    );
}

#[test]
fn bad_specs_and_inventories_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let one_line = |args: &[&str], inv: &std::path::Path| {
        let mut c = agent(dir.path());
        c.arg("plan").args(args).arg("-i").arg(inv);
        let r = run(c);
        assert_eq!((r.code, r.stderr.lines().count()), (1, 1), "{}", r.stderr);
        assert!(r.stdout.is_empty());
        r.stderr
    };
    let full = clusters_inventory(dir.path(), true);
    assert!(one_line(&["cluster"], &full).contains("no spec named \"cluster\": use clusters, inference"));
    let spec = dir.path().join("bad.toml");
    std::fs::write(&spec, "name = \"x\"\n[roles.web]\nprogram = \"web\"\nports = [0]\n").unwrap();
    let err = one_line(&[spec.to_str().unwrap()], &full);
    assert!(err.contains("role web: port 0 is not a port (use 1-65535)"), "{err}");
    let partial = clusters_inventory(dir.path(), false);
    let err = one_line(&["clusters"], &partial);
    assert!(err.contains("needs hosts with role \"cluster2\""), "{err}");
}

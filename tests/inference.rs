//! The inference topology end to end on the local fleet: `agent deploy inference` uploads the
//! orchestrator and the DistilBERT worker (built by agent in release mode) with a model
//! folder, starts 1 orchestrator and 4 × 2 worker processes, and `agent bench inference`
//! loads it as the course's client did.

mod common;

use std::path::Path;

use common::{Fleet, agent, events, http_get, run};
use serde_json::Value;

/// The tiny random DistilBERT the worker's parity test uses (its head is in its weights).
fn tiny_model() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("remote/worker/fixtures/tiny")
}

fn deploy(fleet: &Fleet, state: &Path) -> Vec<Value> {
    let mut c = agent(state);
    c.args(["deploy", "inference", "-i"]).arg(fleet.inventory());
    c.arg("--model").arg(tiny_model());
    c.args(["--json", "--no-logs"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.stdout);
    events(&r.stdout)
}

fn steps<'a>(events: &'a [Value], stage: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["stage"] == stage)
        .collect()
}

#[test]
fn deploy_inference_and_bench_it_through_the_orchestrator() {
    let fleet = Fleet::with_roles("inf", 5, 50, "orchestrator:1,worker:4");
    let state = tempfile::tempdir().unwrap();

    let first = deploy(&fleet, state.path());
    for i in 0..5 {
        let f = common::finished(&first, &fleet.host_name(i));
        assert_eq!(f["outcome"]["result"], "deployed", "{f}");
    }
    // The model went to every worker host and was checked for its head there.
    let setup = steps(&first, "setup");
    let workers_setup: Vec<_> = setup.iter().filter(|e| e["status"] != "skipped").collect();
    assert_eq!(workers_setup.len(), 4, "{setup:#?}");
    for e in &workers_setup {
        assert_eq!(
            e["detail"], "the weights in /opt/agent/models/inference have a classification head",
            "{e}"
        );
    }

    // The orchestrator knows all 8 worker processes by their fleet addresses, all free.
    let (status, body) = http_get(&fleet.addresses[0], 80, "/status");
    assert_eq!(status, 200, "{body}");
    let s: Value = serde_json::from_str(&body).unwrap();
    let mut known: Vec<String> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert_eq!(w["state"], "free", "{w}");
            w["worker"].as_str().unwrap().to_owned()
        })
        .collect();
    known.sort();
    let mut expected: Vec<String> = fleet.addresses[1..]
        .iter()
        .flat_map(|a| [format!("{a}:5000"), format!("{a}:5001")])
        .collect();
    expected.sort();
    assert_eq!(known, expected);

    // The lab's client: 50 requests, 15 at a time.
    let mut c = agent(state.path());
    c.args(["bench", "inference", "-i"]).arg(fleet.inventory());
    c.args(["--concurrency", "15", "--requests", "50", "--json"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.stdout);
    let summary: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(summary["answered"], 50, "{summary:#}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary:#}");
    let per_worker = summary["workers"].as_object().unwrap();
    let mut served: Vec<&String> = per_worker.keys().collect();
    served.sort();
    assert_eq!(
        served,
        expected.iter().collect::<Vec<_>>(),
        "every worker process served some"
    );
    assert_eq!(per_worker.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 50);

    // The text summary, with a text of our own.
    let mut c = agent(state.path());
    c.args(["bench", "inference", "-i"]).arg(fleet.inventory());
    c.args(["-c", "8", "-n", "16", "--text", "hello world"]);
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("16 of 16 requests answered in "), "{}", r.stdout);
    assert!(r.stdout.contains("latency ms: p50 "), "{}", r.stdout);

    // A second deploy converges: nothing uploaded, nothing restarted, the model left alone.
    let second = deploy(&fleet, state.path());
    let changed: Vec<_> = second
        .iter()
        .filter(|e| e["event"] == "step" && e["status"] == "changed")
        .collect();
    assert!(changed.is_empty(), "{changed:#?}");
}

#[test]
fn bench_without_an_orchestrator_says_which_to_pass() {
    let state = tempfile::tempdir().unwrap();
    let mut c = agent(state.path());
    c.args(["bench", "inference"]);
    let r = run(c);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        "agent: which orchestrator? pass --url http://HOST or -i INVENTORY"
    );
    let mut c = agent(state.path());
    c.args(["deploy", "clusters", "-i", "/dev/null", "--model", "/tmp"]);
    let r = run(c);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        "agent: --model: spec clusters runs no worker; drop --model"
    );
}

//! The inference topology end to end on the local fleet: `agent deploy inference` uploads the
//! orchestrator and the DistilBERT worker (built by agent in release mode) with a model
//! folder, starts 1 orchestrator and 4 × 2 worker processes, and `agent bench inference`
//! loads it as the course's client did.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Fleet, agent, events, http_get, run};
use serde_json::Value;

/// The tiny random DistilBERT the worker's parity test uses (its head is in its weights).
fn tiny_model() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("remote/worker/fixtures/tiny")
}

fn deploy(fleet: &Fleet, state: &Path) -> Vec<Value> {
    deploy_model(fleet, state, tiny_model().to_str().unwrap())
}

fn deploy_model(fleet: &Fleet, state: &Path, model: &str) -> Vec<Value> {
    let mut c = agent(state);
    c.args(["deploy", "inference", "-i"]).arg(fleet.inventory());
    c.args(["--model", model]);
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
    let out = state.path().join("bench");
    c.args(["bench", "inference", "-i"]).arg(fleet.inventory());
    c.args(["--concurrency", "15", "--requests", "50", "--json", "--out"])
        .arg(&out);
    let r = run(c);
    assert_eq!(r.code, 0, "{}\n{}", r.stderr, r.stdout);
    let summary: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(
        (summary["ok"].as_u64(), summary["streams"].as_array().unwrap().len()),
        (Some(50), 15),
        "{summary:#}"
    );
    let group = &summary["groups"][0];
    assert_eq!(group["errors"], serde_json::json!({}), "{summary:#}");
    assert!(group["inference_ms_p50"].as_f64().unwrap() > 0.0, "{summary:#}");
    let per_worker = group["responders"].as_object().unwrap();
    let mut served: Vec<&String> = per_worker.keys().collect();
    served.sort();
    assert_eq!(
        served,
        expected.iter().collect::<Vec<_>>(),
        "every worker process served some"
    );
    assert_eq!(per_worker.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), 50);

    // The text summary, with a text of our own; the deployment by name this time (its
    // orchestrator from the record).
    let mut c = agent(state.path());
    c.args(["bench", "inference", "inference"]);
    c.args(["-c", "8", "-n", "16", "--text", "hello world", "--out"])
        .arg(state.path().join("text"));
    let r = run(c);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(": 16 of 16 requests answered in "), "{}", r.stdout);
    assert!(r.stdout.contains("inference: median "), "{}", r.stdout);
    // The same results as the clusters bench: per request, charts, report.
    assert_eq!(
        std::fs::read_to_string(out.join("requests.csv"))
            .unwrap()
            .lines()
            .count(),
        51
    );
    for chart in ["latency", "percentiles", "instances"] {
        common::assert_chart(&out, chart);
    }

    // A second deploy converges: nothing uploaded, nothing restarted, the model left alone.
    let second = deploy(&fleet, state.path());
    let changed: Vec<_> = second
        .iter()
        .filter(|e| e["event"] == "step" && e["status"] == "changed")
        .collect();
    assert!(changed.is_empty(), "{changed:#?}");
}

/// The tiny model without its head, as the hub's distilbert-base-uncased comes: the
/// safetensors file rewritten without the pre_classifier/classifier tensors.
fn headless_model(into: &Path) {
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(tiny_model().join(f), into.join(f)).unwrap();
    }
    let bytes = std::fs::read(tiny_model().join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let (mut kept, mut out) = (serde_json::Map::new(), Vec::new());
    for (name, mut info) in header {
        if name.starts_with("classifier.") || name.starts_with("pre_classifier.") {
            continue;
        }
        if name != "__metadata__" {
            let range = info["data_offsets"].as_array().unwrap().clone();
            let (a, b) = (range[0].as_u64().unwrap() as usize, range[1].as_u64().unwrap() as usize);
            info["data_offsets"] = serde_json::json!([out.len(), out.len() + b - a]);
            out.extend_from_slice(&data[a..b]);
        }
        kept.insert(name, info);
    }
    let head = serde_json::to_vec(&kept).unwrap();
    let mut file = (head.len() as u64).to_le_bytes().to_vec();
    file.extend(head);
    file.extend(out);
    std::fs::write(into.join("model.safetensors"), file).unwrap();
}

/// A plain HTTP file server on the fleet's bridge address (what the hub is to EC2).
struct FileServer(Child);

impl FileServer {
    fn start(dir: &Path, address: &str, port: u16) -> FileServer {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", address, &port.to_string()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((address, port)).is_err() {
            assert!(Instant::now() < deadline, "file server not up");
            std::thread::sleep(Duration::from_millis(50));
        }
        FileServer(child)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `POST /new_request` with `{"text": text}` to the orchestrator: the worker and its answer.
fn classify(address: &str, text: &str) -> (String, Vec<f64>) {
    let body = serde_json::json!({ "text": text }).to_string();
    let mut s = std::net::TcpStream::connect((address, 80)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /new_request HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (_, answer) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    let v: Value = serde_json::from_str(answer).unwrap();
    let p = v["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    (v["worker"].as_str().unwrap().to_owned(), p)
}

fn setup_details(events: &[Value]) -> Vec<(String, String)> {
    steps(events, "setup")
        .iter()
        .filter(|e| e["status"] != "skipped")
        .map(|e| {
            (
                e["status"].as_str().unwrap().to_owned(),
                e["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// As on EC2: each worker host downloads the model once from a URL and draws the head from
/// the deployment's seed, so every worker process gives the same answer; a head removed on
/// one host is drawn again and that host's workers restart to load it.
#[test]
fn workers_fetch_the_model_once_and_draw_the_same_head() {
    let fleet = Fleet::with_roles("inff", 3, 51, "orchestrator:1,worker:2");
    let state = tempfile::tempdir().unwrap();
    let hub = tempfile::tempdir().unwrap();
    headless_model(hub.path());
    let _server = FileServer::start(hub.path(), "10.210.51.1", 8931);
    let url = "http://10.210.51.1:8931";

    let first = deploy_model(&fleet, state.path(), url);
    let dir = "/opt/agent/models/inference";
    let fetched = (
        "changed".to_owned(),
        format!("model fetched into {dir}; wrote {dir}/head.safetensors from seed 0"),
    );
    assert_eq!(setup_details(&first), [fetched.clone(), fetched]);

    let answers: Vec<(String, Vec<f64>)> = (0..8).map(|_| classify(&fleet.addresses[0], "hello world")).collect();
    let workers: BTreeSet<&str> = answers.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(workers.len(), 4, "all 4 worker processes answered: {answers:?}");
    assert!(
        answers.iter().all(|(_, p)| *p == answers[0].1),
        "one head everywhere: {answers:?}"
    );
    assert!((answers[0].1.iter().sum::<f64>() - 1.0).abs() < 1e-9);

    // Nothing fetched or drawn again.
    let second = deploy_model(&fleet, state.path(), url);
    let kept = (
        "unchanged".to_owned(),
        format!("model already in {dir}; head already in {dir}/head.safetensors (seed 0)"),
    );
    assert_eq!(setup_details(&second), [kept.clone(), kept]);
    let changed: Vec<_> = second
        .iter()
        .filter(|e| e["event"] == "step" && e["status"] == "changed")
        .collect();
    assert!(changed.is_empty(), "{changed:#?}");

    // The head goes missing on one host: drawn again (same bytes), its workers restarted.
    let mut c = agent(state.path());
    c.arg("exec").arg("-i").arg(fleet.inventory());
    let host = fleet.host_name(1);
    c.args([
        "--host",
        &host,
        "--sudo",
        "--no-logs",
        "--",
        &format!("rm {dir}/head.safetensors"),
    ]);
    assert_eq!(run(c).code, 0);
    let third = deploy_model(&fleet, state.path(), url);
    let restarted: Vec<&str> = third
        .iter()
        .filter(|e| e["event"] == "step" && e["stage"] == "services" && e["status"] == "changed")
        .map(|e| e["host"].as_str().unwrap())
        .collect();
    assert_eq!(restarted, [host.as_str()]);
    let again: Vec<(String, Vec<f64>)> = (0..8).map(|_| classify(&fleet.addresses[0], "hello world")).collect();
    assert!(again.iter().all(|(_, p)| *p == answers[0].1), "{again:?}");
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
        "agent: which orchestrator? name the deployment, or pass --url http://HOST or -i INVENTORY"
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

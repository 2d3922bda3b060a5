//! The worker as the orchestrator sees it: the real server on port 0 over plain HTTP/1.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent_protocol::{Classification, Failure};
use agent_worker::{Limits, Model};

async fn worker() -> SocketAddr {
    let model = Model::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        concurrency: 1,
        queue: 4,
    };
    tokio::spawn(agent_worker::run(listener, model, limits, std::future::pending()));
    addr
}

/// One request on its own connection; the status and the body.
async fn call(addr: SocketAddr, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    let (method, path) = (method.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        // A server may answer (413) and close before reading a large body.
        let _ = s.write_all(&body);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let resp = String::from_utf8_lossy(&resp).into_owned();
        let status = resp[9..12].parse().unwrap();
        (status, resp.split_once("\r\n\r\n").unwrap().1.to_owned())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_body_classifies_a_random_lab_text() {
    let addr = worker().await;
    let (status, body) = call(addr, "POST", "/run_model", vec![]).await;
    assert_eq!(status, 200, "{body}");
    let c: Classification = serde_json::from_str(&body).unwrap();
    assert_eq!(c.input_text.chars().count(), 50);
    assert!(c.input_text.chars().all(|ch| ch == ' ' || ch.is_ascii_lowercase()));
    assert_eq!(c.probabilities.len(), 2);
    assert!((c.probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert_eq!(call(addr, "GET", "/health", vec![]).await, (200, "ok".into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_is_classified_as_pytorch_does() {
    let addr = worker().await;
    let (status, body) = call(addr, "POST", "/run_model", br#"{"text": "hello world"}"#.to_vec()).await;
    assert_eq!(status, 200, "{body}");
    let c: Classification = serde_json::from_str(&body).unwrap();
    assert_eq!(c.input_text, "hello world");
    // fixtures/tiny/reference.json, from transformers.
    let pytorch = [0.5773217678070068, 0.42267823219299316];
    for (got, want) in c.probabilities.iter().zip(pytorch) {
        assert!((got - want).abs() < 1e-5, "{:?}", c.probabilities);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_get_400_or_413_with_one_line_saying_what_to_send() {
    let addr = worker().await;
    for bad in [&b"{\"text\": "[..], b"text=hello", br#"{"prompt": "x"}"#] {
        let (status, body) = call(addr, "POST", "/run_model", bad.to_vec()).await;
        assert_eq!(status, 400, "{body}");
        let f: Failure = serde_json::from_str(&body).unwrap();
        assert!(f.error.starts_with("body is not {\"text\": \"...\"}"), "{}", f.error);
        assert!(!f.error.contains('\n'));
    }
    let huge = format!(r#"{{"text": "{}"}}"#, "a".repeat(agent_protocol::MAX_BODY_BYTES));
    let (status, body) = call(addr, "POST", "/run_model", huge.into_bytes()).await;
    assert_eq!(status, 413, "{body}");
    let f: Failure = serde_json::from_str(&body).unwrap();
    assert_eq!(f.error, "body larger than 65536 bytes: send a shorter text");
}

#[test]
fn the_binary_refuses_a_missing_model_with_one_line() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agent-worker"))
            .args(args)
            .env_remove("AGENT_WORKER_MODEL")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, err) = run(&["--port", "0"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        err,
        "agent-worker: no model: set AGENT_WORKER_MODEL or --model to a Hugging Face model folder\n"
    );
    let (code, err) = run(&["--port", "0", "--model", "/nonexistent/model"]);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/model/config.json"), "{err}");
    let (code, err) = run(&["--threads", "lots"]);
    assert_eq!(
        (code, err.trim()),
        (
            Some(2),
            "agent-worker: --threads \"lots\": expected a number of threads"
        )
    );
    let (code, err) = run(&["--kernel", "gpu"]);
    assert_eq!(
        (code, err.trim()),
        (Some(2), "agent-worker: --kernel \"gpu\": expected amx, f32 or auto")
    );
}

/// systemd stops a worker with SIGTERM while the orchestrator still holds a kept-alive
/// connection to it: the worker must still exit, and cleanly. Run on the f32 kernel, as on
/// the lab's t2/m4 hosts (the in-process tests use the detected one).
#[test]
fn the_binary_serves_and_stops_on_sigterm_though_a_connection_stays_open() {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-worker"))
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--threads",
            "1",
            "--kernel",
            "f32",
            "--model",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .rsplit_once("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .1
        .parse()
        .unwrap();
    assert!(line.contains("; f32 kernel, 1 threads,"), "{line}");

    // One request on a kept-alive connection, which then stays open and idle.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = br#"{"text": "hello"}"#;
    write!(
        kept,
        "POST /run_model HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    kept.write_all(body).unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let started = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("agent-worker did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    drop(kept);
}

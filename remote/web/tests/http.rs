//! The web app as a client sees it: the real binary, a fake IMDSv2 on port 0, plain HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};

/// IMDSv2 as EC2 serves it: the id only with a token obtained by PUT.
async fn fake_imds() -> String {
    let app = Router::new()
        .route(
            "/latest/api/token",
            put(|h: HeaderMap| async move {
                match h.get("X-aws-ec2-metadata-token-ttl-seconds") {
                    Some(_) => (StatusCode::OK, "tok-123".to_string()),
                    None => (StatusCode::BAD_REQUEST, String::new()),
                }
            }),
        )
        .route(
            "/latest/meta-data/instance-id",
            get(|h: HeaderMap| async move {
                match h
                    .get("X-aws-ec2-metadata-token")
                    .map(|v| v.to_str().unwrap().to_owned())
                {
                    Some(t) if t == "tok-123" => (StatusCode::OK, "i-0abc123def4567890".to_string()),
                    _ => (StatusCode::UNAUTHORIZED, String::new()),
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A running agent-web, killed and reaped on drop.
struct Web(Child);

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts agent-web on a free port; returns it and its port (read from its log line).
fn start(imds: &str, extra: &[&str]) -> (Web, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent-web"))
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .args(extra)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let child = Web(child);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "agent-web exited before listening"
        );
        if let Some(addr) = line.trim().rsplit_once("listening on ") {
            let port = addr.1.rsplit_once(':').unwrap().1.parse().unwrap();
            return (child, port);
        }
    }
}

fn get_path(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_with_the_instance_id_from_imdsv2() {
    let imds = fake_imds().await;
    let (_web, port) = start(&imds, &["--name", "ignored-on-ec2"]);
    for path in ["/", "/cluster1", "/cluster2"] {
        let (status, body) = tokio::task::spawn_blocking(move || get_path(port, path)).await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "Instance i-0abc123def4567890 is responding now!"),
            "{path}"
        );
    }
    let (status, body) = tokio::task::spawn_blocking(move || get_path(port, "/health"))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _) = tokio::task::spawn_blocking(move || get_path(port, "/cluster3"))
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[test]
fn off_ec2_it_answers_with_its_name_and_stops_on_sigterm() {
    // Nothing listens on port 9 of loopback: IMDS is absent, as on the local fleet.
    let (mut web, port) = start("http://127.0.0.1:9", &["--name", "web-3"]);
    let child = &mut web.0;
    assert_eq!(get_path(port, "/cluster1").1, "Instance web-3 is responding now!");
    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn without_imds_or_name_it_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_agent-web"))
        .args(["--port", "0"])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("AGENT_WEB_NAME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read the instance id") && err.contains("no --name"),
        "{err}"
    );
}

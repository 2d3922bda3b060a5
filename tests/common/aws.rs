//! The AWS emulator for the integration tests: a moto server on 127.0.0.1 seeded with Ubuntu
//! AMIs (tests/moto, tests/aws_fixture.py), and a proxy in front of it that fakes EC2's
//! DependencyViolation (tests/aws_fault_proxy.py).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The tag the agent puts on everything it creates.
pub const TAG: &str = "agent:deployment";
/// The newest Canonical Ubuntu 24.04 amd64 image of the fixture's AMI list (the one to pick).
pub const LATEST_NOBLE_AMD64: &str = "ami-0e2c8caa4b6378d8c";

/// A moto server; killed on drop (also when a test panics).
pub struct Moto {
    /// Where agent and the fixture talk to AWS: the strict proxy in front of moto, which
    /// refuses what AWS's service models refuse and moto accepts.
    pub endpoint: String,
    port: u16,
    strict: FaultProxy,
    /// Violations a test provoked on purpose and has read (see [`Moto::take_violations`]).
    seen: std::cell::Cell<usize>,
    child: Child,
    dir: tempfile::TempDir,
}

/// What `aws_fixture.py network` made: a VPC, subnet A (the given /24, us-east-1a) and B (us-east-1b).
#[derive(Debug, Clone)]
pub struct Network {
    pub vpc: String,
    pub subnet_a: String,
    pub subnet_b: String,
}

impl Moto {
    /// Starts moto_server with the fixture's AMIs and `extra_env`, e.g.
    /// `("MOTO_ENABLE_AMI_VALIDATION", "true")`, `("INITIAL_NO_AUTH_ACTION_COUNT", "0")`.
    pub fn start(extra_env: &[(&str, &str)]) -> Moto {
        Self::launch(extra_env, &[])
    }

    /// As [`Moto::start`], with AWS's eventual consistency as well: every instance, security
    /// group, target group and load balancer agent creates is not found once, by agent's first
    /// request that names it (see [`Moto::not_found_answers`]).
    pub fn start_eventual(extra_env: &[(&str, &str)]) -> Moto {
        Self::launch(extra_env, &["--eventual"])
    }

    fn launch(extra_env: &[(&str, &str)], proxy_args: &[&str]) -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("agent-moto-")
            .tempdir()
            .expect("temp dir");
        for f in ["aws-config", "aws-credentials"] {
            File::create(dir.path().join(f)).expect("create empty AWS config file");
        }
        let amis = dir.path().join("amis.json");
        let out = Command::new(python())
            .arg(script("aws_fixture.py"))
            .arg("amis")
            .arg(&amis)
            .output()
            .expect("run tests/aws_fixture.py");
        assert!(
            out.status.success(),
            "aws_fixture.py amis: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = dir.path().join("moto.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let log_file = File::create(&log).expect("create moto.log");
            let mut child = Command::new(venv_bin().join("moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_AMIS_PATH", &amis)
                .envs(extra_env.iter().copied())
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("dup moto.log"))
                .stderr(log_file)
                .spawn()
                .expect("spawn moto_server");
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    let mut args = vec!["--fail", "0", "--strict", "--actions"];
                    args.extend(proxy_args);
                    let strict = FaultProxy::launch(&format!("http://127.0.0.1:{port}"), &args);
                    return Moto {
                        endpoint: strict.endpoint.clone(),
                        port,
                        strict,
                        seen: Default::default(),
                        child,
                        dir,
                    };
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = fs::read_to_string(&log).unwrap_or_default();
                    // (another test may have taken the port between free_port() and moto's bind)
                    if attempt < 3 && text.contains("Address already in use") {
                        continue;
                    }
                    panic!("moto_server on port {port}: {why}; its log:\n{text}");
                }
            }
        }
    }

    /// The environment that makes the agent (any AWS SDK) talk to this server through the
    /// standard chain, with empty config files so that the operator's ~/.aws never leaks in.
    pub fn env(&self) -> Vec<(String, String)> {
        let path = |f: &str| self.dir.path().join(f).display().to_string();
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_SESSION_TOKEN", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_CONFIG_FILE", path("aws-config")),
            ("AWS_SHARED_CREDENTIALS_FILE", path("aws-credentials")),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Puts [`Moto::env`] on `c`, first removing AWS variables of the caller that would override it.
    pub fn configure<'a>(&self, c: &'a mut Command) -> &'a mut Command {
        for k in [
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_DEFAULT_REGION",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_MAX_ATTEMPTS",
            "AWS_RETRY_MODE",
        ] {
            c.env_remove(k);
        }
        c.envs(self.env())
    }

    /// Runs `tests/aws_fixture.py ARGS` against this server; its JSON output.
    pub fn fixture(&self, args: &[&str]) -> serde_json::Value {
        self.fixture_at(&self.endpoint, args)
    }

    /// As [`Moto::fixture`], through another endpoint (a [`FaultProxy`]).
    pub fn fixture_at(&self, endpoint: &str, args: &[&str]) -> serde_json::Value {
        let mut c = Command::new(python());
        c.arg(script("aws_fixture.py"))
            .args(["--endpoint", endpoint])
            .args(args)
            .stdin(Stdio::null());
        let out = self.configure(&mut c).output().expect("run tests/aws_fixture.py");
        let args = args.join(" ");
        assert!(
            out.status.success(),
            "aws_fixture.py {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "aws_fixture.py {args}: bad JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// A VPC (the /16 around `cidr`), subnet A = `cidr` (a /24) and subnet B = the next /24.
    pub fn network(&self, cidr: &str) -> Network {
        let v = self.fixture(&["network", "--cidr", cidr]);
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("network: no {k} in {v}"))
                .to_owned()
        };
        Network {
            vpc: s("vpc"),
            subnet_a: s("subnet_a"),
            subnet_b: s("subnet_b"),
        }
    }

    /// Everything tagged agent:deployment=`deployment` that still exists, with a total "count".
    pub fn resources(&self, deployment: &str) -> serde_json::Value {
        self.fixture(&["resources", "--deployment", deployment])
    }

    /// POSTs `body` to moto's own API, e.g. ("/moto-api/reset", "") or ("/moto-api/reset-auth", "0").
    pub fn moto_api(&self, path: &str, body: &str) -> String {
        match http(self.port, "POST", path, body) {
            Ok((200, text)) => text,
            Ok((code, text)) => panic!("moto {path}: HTTP {code}: {text}"),
            Err(e) => panic!("moto {path}: {e}"),
        }
    }

    /// What moto_server printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// The requests AWS would have refused (the strict proxy's log), one line each, that no
    /// [`Moto::take_violations`] has returned yet.
    pub fn violations(&self) -> Vec<String> {
        self.strict
            .log()
            .lines()
            .filter(|l| l.contains(": violation: "))
            .skip(self.seen.get())
            .map(String::from)
            .collect()
    }

    /// The NotFound answers the proxy gave for resources just created ([`Moto::start_eventual`]):
    /// one line each, "CODE for ACTION ID…".
    pub fn not_found_answers(&self) -> Vec<String> {
        self.strict
            .log()
            .lines()
            .filter_map(|l| l.split_once(": eventual: ").map(|(_, rest)| rest.to_owned()))
            .collect()
    }

    /// The actions of every request so far, in order (e.g. `DeregisterTargets`).
    pub fn actions(&self) -> Vec<String> {
        self.strict
            .log()
            .lines()
            .filter_map(|l| l.split_once(": action: ").map(|(_, a)| a.to_owned()))
            .collect()
    }

    /// As [`Moto::violations`], for a test that provoked them: they no longer fail it.
    pub fn take_violations(&self) -> Vec<String> {
        let v = self.violations();
        self.seen.set(self.seen.get() + v.len());
        v
    }

    /// Runs a Python snippet with boto3 against this endpoint (moto's venv, the same
    /// environment as agent's); returns its stdout.
    pub fn python(&self, code: &str) -> String {
        let out = Command::new(python())
            .args(["-c", code])
            .envs(self.env())
            .output()
            .expect("run python");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Every test that used AWS ends with this check: moto accepted these, AWS would not.
        let violations = self.violations();
        if !violations.is_empty() && !std::thread::panicking() {
            panic!("requests AWS would refuse:\n{}", violations.join("\n"));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy to `upstream` that answers the first `fail` DeleteSecurityGroup calls with
/// DependencyViolation; killed on drop.
pub struct FaultProxy {
    pub endpoint: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl FaultProxy {
    pub fn start(upstream: &str, fail: u32) -> FaultProxy {
        Self::launch(upstream, &["--fail", &fail.to_string()])
    }

    /// A proxy to `upstream` started with `args` of tests/aws_fault_proxy.py.
    pub fn launch(upstream: &str, args: &[&str]) -> FaultProxy {
        let log = tempfile::NamedTempFile::new().expect("temp file");
        let mut child = Command::new(python())
            .arg(script("aws_fault_proxy.py"))
            .args(["--upstream", upstream])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("reopen temp file"))
            .spawn()
            .expect("spawn tests/aws_fault_proxy.py");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("proxy stdout")).read_line(&mut line);
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "aws_fault_proxy.py printed {line:?}: {}",
                fs::read_to_string(log.path()).unwrap_or_default()
            );
        };
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            log,
        }
    }

    /// The proxy's stderr: one line per faked failure or violation.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

/// The bin dir of the venv with moto and boto3 (`tests/moto venv`, once per test binary).
fn venv_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(script("moto"))
            .arg("venv")
            .stdin(Stdio::null())
            .output()
            .expect("run tests/moto");
        assert!(
            out.status.success(),
            "tests/moto venv: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

fn python() -> PathBuf {
    venv_bin().join("python")
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Waits (at most 20 s) until moto answers HTTP, or fails at once if it exits.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited with {status}"));
        }
        if http(port, "GET", "/moto-api/", "").is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("not answering HTTP after 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A one-shot HTTP/1.0 request to 127.0.0.1:`port`: status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    let status = status.ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    Ok((
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    ))
}

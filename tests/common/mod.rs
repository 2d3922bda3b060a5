//! Test fixtures: a local fleet of real OpenSSH hosts (tests/fleet), the AWS emulator (aws) and the agent binary.
#![allow(dead_code)]

pub mod aws;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

/// N sshd hosts in network namespaces; brought down on drop (also when a test panics).
pub struct Fleet {
    pub name: String,
    pub dir: PathBuf,
    pub addresses: Vec<String>,
}

impl Fleet {
    /// `name` (≤ 6 chars) and `subnet` (10.210.<subnet>.0/24) must be unique per test.
    pub fn up(name: &str, n: usize, subnet: u8) -> Fleet {
        Self::with_roles(name, n, subnet, "")
    }

    /// As [`Fleet::up`], the first hosts with inventory roles (`cluster1:5,cluster2:4,lb:1`).
    pub fn with_roles(name: &str, n: usize, subnet: u8, roles: &str) -> Fleet {
        Self::make(name, n, subnet, roles, &[])
    }

    /// Hosts that boot like cloud instances (`tests/fleet up --boot`): systemd as PID 1,
    /// cloud-init from a NoCloud seed, an image with nothing of this machine's, apt through
    /// the fleet's proxy.
    pub fn booting(name: &str, n: usize, subnet: u8, roles: &str) -> Fleet {
        Self::make(name, n, subnet, roles, &["--boot"])
    }

    /// Booting hosts that are not booted yet: each waits for [`Fleet::launch`], as an EC2
    /// instance waits for RunInstances.
    pub fn unbooted(name: &str, n: usize, subnet: u8) -> Fleet {
        Self::make(name, n, subnet, "", &["--boot", "--no-start"])
    }

    fn make(name: &str, n: usize, subnet: u8, roles: &str, flags: &[&str]) -> Fleet {
        let dir = PathBuf::from(format!("/var/tmp/agent-fleet/test-{name}"));
        let prefix = format!("10.210.{subnet}");
        let count = n.to_string();
        let mut args = vec!["up", &count, "--name", name, "--subnet", &prefix];
        args.extend(flags);
        if !roles.is_empty() {
            args.extend(["--roles", roles]);
        }
        fleet(&args, &dir);
        Fleet {
            name: name.to_owned(),
            dir,
            addresses: (0..n).map(|i| format!("{prefix}.{}", 4 + i)).collect(),
        }
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.toml")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("labsuser.pem")
    }

    /// Host `i`'s folder: its sshd config and host keys.
    pub fn host_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("h{i}"))
    }

    pub fn host_name(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    /// Runs a fleet subcommand on host `i` (kill, start, rekey).
    pub fn host(&self, action: &str, i: usize) {
        fleet(&[action, &i.to_string(), "--name", &self.name], &self.dir);
    }

    /// Boots booting host `i` as the instance `id` from `user_data` (its NoCloud seed) and
    /// returns at once: cloud-init on the host does the rest, as on EC2.
    pub fn launch(&self, i: usize, user_data: &str, id: &str) {
        let file = self.dir.join(format!("user-data-{i}"));
        std::fs::write(&file, user_data).unwrap();
        let n = i.to_string();
        fleet(
            &["seed", &n, file.to_str().unwrap(), id, "--name", &self.name],
            &self.dir,
        );
        fleet(&["start", &n, "--no-wait", "--name", &self.name], &self.dir);
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = Command::new(fleet_script())
            .args(["down", "--name", &self.name, "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

/// Runs `tests/fleet ARGS --dir DIR`, which must succeed.
fn fleet(args: &[&str], dir: &Path) {
    let out = Command::new(fleet_script())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run tests/fleet");
    assert!(
        out.status.success(),
        "tests/fleet {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fleet_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fleet")
}

/// The agent binary with its state (logs, ad-hoc known hosts) in `state`.
pub fn agent(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agent"));
    c.env("XDG_STATE_HOME", state)
        .env_remove("AGENT_INVENTORY")
        .env_remove("AGENT_KEY")
        .env_remove("AGENT_KEY_PASSPHRASE")
        .stdin(Stdio::null());
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut c: Command) -> Run {
    let Output { status, stdout, stderr } = c.output().expect("run agent");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Parses `--json` output into events.
pub fn events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad json line {l:?}: {e}")))
        .collect()
}

/// The `finished` event of `host`.
pub fn finished<'a>(events: &'a [serde_json::Value], host: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "finished" && e["host"] == host)
        .unwrap_or_else(|| panic!("no finished event for {host} in {events:#?}"))
}

/// One command through `agent exec --json` on the hosts `select` picks (`--role`, `--host`,
/// `--sudo` …): each host's stdout lines, by host. It must succeed everywhere.
pub fn exec_stdout(
    fleet: &Fleet,
    state: &Path,
    select: &[&str],
    script: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut c = agent(state);
    c.arg("exec").arg("-i").arg(fleet.inventory()).args(select);
    c.args(["--json", "--no-logs", "--", script]);
    let r = run(c);
    assert_eq!(r.code, 0, "{script}: {}\n{}", r.stdout, r.stderr);
    let mut by_host = std::collections::BTreeMap::<String, String>::new();
    for e in events(&r.stdout)
        .iter()
        .filter(|e| e["event"] == "line" && e["stream"] == "stdout")
    {
        let text = by_host.entry(e["host"].as_str().unwrap().into()).or_default();
        text.push_str(e["line"].as_str().unwrap());
        text.push('\n');
    }
    by_host
}

/// Starts `agent exec --json` of `script` (which must first `echo started`) on every host of
/// the fleet, and returns once all of them are running it, with the output read so far.
pub fn exec_until_started(fleet: &Fleet, state: &Path, script: &str) -> (Child, BufReader<ChildStdout>, String) {
    let mut c = agent(state);
    c.arg("exec").arg("-i").arg(fleet.inventory());
    c.args(["--json", "--no-logs", "--", script]).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while text.matches(r#""line":"started""#).count() < fleet.addresses.len() {
        assert!(out.read_line(&mut text).unwrap() > 0, "agent ended early: {text}");
    }
    (child, out, text)
}

/// `GET path` from this machine (the root namespace reaches every fleet host): status and body.
pub fn http_get(address: &str, port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect((address, port)).unwrap_or_else(|e| panic!("connect {address}:{port}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Which instances answer `path` through the balancer, over `n` requests.
pub fn answering(lb: &str, path: &str, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|_| {
            let (status, body) = http_get(lb, 80, path);
            assert_eq!(status, 200, "{path}: {body}");
            body.strip_prefix("Instance ")
                .and_then(|b| b.strip_suffix(" is responding now!"))
                .unwrap_or_else(|| panic!("unexpected body {body:?}"))
                .to_owned()
        })
        .collect()
}

/// A chart a user would look at: a PNG that decodes, of a real size, with something drawn on
/// it (not one colour), and its SVG twin.
pub fn assert_chart(dir: &Path, name: &str) {
    let path = dir.join(format!("{name}.png"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert!(
        info.width >= 600 && info.height >= 300,
        "{}: {}x{}",
        path.display(),
        info.width,
        info.height
    );
    let step = info.color_type.samples();
    let colours: std::collections::BTreeSet<&[u8]> = pixels[..info.buffer_size()].chunks(step).collect();
    let white = pixels[..info.buffer_size()]
        .chunks(step)
        .filter(|p| p.iter().all(|c| *c == 255))
        .count();
    let total = (info.width * info.height) as usize;
    assert!(colours.len() >= 4, "{}: only {} colours", path.display(), colours.len());
    assert!(
        white < total * 98 / 100,
        "{}: {white} of {total} pixels white",
        path.display()
    );
    let svg = std::fs::read_to_string(dir.join(format!("{name}.svg"))).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<text"),
        "{name}.svg: {}",
        &svg[..svg.len().min(200)]
    );
}

/// RFC 3339 (UTC) of unix seconds, for the times agent takes.
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

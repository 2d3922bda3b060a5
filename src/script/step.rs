//! The remote side of a deployment's steps, as pure values: the scripts `deploy` runs on a
//! host and the parsing of what they print. Nothing here touches a host; every script is
//! unit-tested as text and run under `sh` in tests.
//!
//! Every script runs through `sudo -n` (see [`RemoteCommand::sudo`]): deployed files are
//! root's, and a password prompt would hang.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use crate::inventory::Init;
use crate::plan::haproxy::ADMIN_SOCKET;
use crate::plan::{HostPlan, ServicePlan, SetupPlan};
use crate::script::RemoteCommand;
use crate::shell::quote;

/// Where agent's supervisor keeps pid files and logs on hosts without systemd.
pub const SUPERVISOR_RUN_DIR: &str = "/var/lib/agent/run";
pub const SUPERVISOR_LOG_DIR: &str = "/var/log/agent";
/// The name the supervisor's loop shell runs under (`$0`), so its pid file is checked
/// against the right process even after a pid is reused.
const SUPERVISE: &str = "agent-supervise";

/// Limits of each step on the host (enforced there by `timeout`).
pub const INSPECT_LIMIT: Duration = Duration::from_secs(30);
pub const READY_LIMIT: Duration = Duration::from_secs(600);
pub const PACKAGES_LIMIT: Duration = Duration::from_secs(900);
pub const SERVICES_LIMIT: Duration = Duration::from_secs(120);
/// How long apt waits for another apt (unattended-upgrades at boot) to release the dpkg lock.
const DPKG_LOCK_WAIT: u32 = 300;

/// What the inspect script found on a host, in one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub init: Init,
    pub cloud_init: bool,
    pub apt: bool,
    pub missing_packages: Vec<String>,
    /// sha256 of each planned file that exists, by path.
    pub checksums: BTreeMap<String, String>,
    pub services: BTreeMap<String, ServiceState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceState {
    pub active: bool,
    /// Always true under the supervisor, which has no boot-time enabling.
    pub enabled: bool,
}

/// One script that reports everything a deploy decides on: init system, cloud-init, apt,
/// missing packages, checksums of the planned files, state of the planned services.
pub fn inspect(plan: &HostPlan) -> RemoteCommand {
    let mut s = String::from(
        "if [ -d /run/systemd/system ]; then init=systemd; else init=supervisor; fi\n\
         echo \"init $init\"\n\
         if command -v cloud-init >/dev/null 2>&1; then echo 'cloud-init yes'; else echo 'cloud-init no'; fi\n\
         if command -v apt-get >/dev/null 2>&1; then echo 'apt yes'; else echo 'apt no'; fi\n",
    );
    for p in &plan.packages {
        let q = quote(p);
        let _ = writeln!(
            s,
            "if dpkg-query -W -f='${{Status}}' {q} 2>/dev/null | grep -q ' installed$'; then :; else echo package-missing {q}; fi"
        );
    }
    for f in &plan.files {
        let q = quote(&f.path);
        let _ = writeln!(
            s,
            "if [ -f {q} ]; then echo \"file $(sha256sum < {q} | cut -c1-64) \"{q}; fi"
        );
    }
    for svc in &plan.services {
        let u = quote(&svc.unit);
        let _ = writeln!(
            s,
            "if [ $init = systemd ]; then a=$(systemctl is-active {u} 2>/dev/null); e=$(systemctl is-enabled {u} 2>/dev/null); \
             else a=inactive; e=enabled; p=$(cat {pid} 2>/dev/null) && {alive} && a=active; fi\n\
             echo \"service ${{a:-unknown}} ${{e:-disabled}} \"{u}",
            pid = quote(&pid_file(&svc.unit)),
            alive = supervised_alive("$p", &svc.unit),
        );
    }
    RemoteCommand::new(s, INSPECT_LIMIT).sudo(true)
}

/// Shell test (dash's `kill` takes no `--`): pid `$var` leads a live process group whose leader is the supervisor loop
/// of `unit` (not an unrelated process that reuses the pid).
fn supervised_alive(var: &str, unit: &str) -> String {
    let needle = if unit.starts_with('$') {
        format!("\"{SUPERVISE} {unit} \"")
    } else {
        quote(&format!("{SUPERVISE} {unit} "))
    };
    format!("kill -0 -{var} 2>/dev/null && tr '\\0' ' ' < /proc/{var}/cmdline 2>/dev/null | grep -qF {needle}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unexpected answer from the inspect script: {0:?}")]
pub struct FactsError(String);

/// Parses the inspect script's output.
pub fn parse_facts(lines: &[String]) -> Result<Facts, FactsError> {
    let mut facts = Facts {
        init: Init::Supervisor,
        cloud_init: false,
        apt: false,
        missing_packages: Vec::new(),
        checksums: BTreeMap::new(),
        services: BTreeMap::new(),
    };
    let mut saw_init = false;
    for line in lines {
        let bad = || FactsError(line.clone());
        let (key, rest) = line.split_once(' ').ok_or_else(bad)?;
        match key {
            "init" => {
                saw_init = true;
                facts.init = match rest {
                    "systemd" => Init::Systemd,
                    "supervisor" => Init::Supervisor,
                    _ => return Err(bad()),
                }
            }
            "cloud-init" => facts.cloud_init = rest == "yes",
            "apt" => facts.apt = rest == "yes",
            "package-missing" => facts.missing_packages.push(rest.to_owned()),
            "file" => {
                let (sum, path) = rest.split_once(' ').ok_or_else(bad)?;
                if sum.len() != 64 {
                    return Err(bad());
                }
                facts.checksums.insert(path.to_owned(), sum.to_owned());
            }
            "service" => {
                let mut parts = rest.splitn(3, ' ');
                let (active, enabled, unit) = (parts.next(), parts.next(), parts.next().ok_or_else(bad)?);
                facts.services.insert(
                    unit.to_owned(),
                    ServiceState {
                        active: active == Some("active"),
                        enabled: enabled == Some("enabled"),
                    },
                );
            }
            _ => return Err(bad()),
        }
    }
    if !saw_init {
        return Err(FactsError("no output".into()));
    }
    Ok(facts)
}

/// Waits for cloud-init to finish its first boot (only where cloud-init exists) and reports
/// how it ended, for [`parse_ready`]. Installed but never started (`not run`, `disabled`): it
/// never will, so nothing is waited for. Exit 1 (error) or 2 (degraded, 23.4+) still leaves a
/// host that answers SSH usable: a failed locale module must not stop a deploy.
pub fn ready() -> RemoteCommand {
    RemoteCommand::new(
        "st=$(cloud-init status 2>/dev/null | sed -n 's/^status: //p')\n\
         case $st in 'not run'|'not started'|disabled) echo \"status $st\"; exit 0;; esac\n\
         cloud-init status --wait >/dev/null 2>&1\n\
         cloud-init status --long 2>&1 | sed 's/^status: /status /; t; s/^/detail /'\n",
        READY_LIMIT,
    )
    .sudo(true)
}

pub const HOST_KEY_LIMIT: Duration = Duration::from_secs(30);
/// The host key sshd presents, and where a replacement is made before it takes its place.
const HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";
const HOST_KEY_NEW: &str = "/etc/ssh/ssh_host_ed25519_key.agent-new";
/// Where cloud-init keeps the instance's user data (root only).
const USER_DATA: &str = "/var/lib/cloud/instance/user-data.txt";

/// The first half of a host key rotation: if the host still presents the key its user data
/// carries (readable by anything on the instance that reaches the metadata service), makes
/// a new key beside it and prints its public half (`new …`); otherwise prints the key in
/// use (`kept …`). Nothing sshd reads changes yet.
pub fn host_key_renew() -> RemoteCommand {
    RemoteCommand::new(
        format!(
            "set -eu\n\
             cur=$(cut -d' ' -f2 {HOST_KEY}.pub 2>/dev/null || true)\n\
             if [ -n \"$cur\" ] && [ -f {USER_DATA} ] && grep -qF -- \"$cur\" {USER_DATA}; then\n\
             umask 077; rm -f {HOST_KEY_NEW} {HOST_KEY_NEW}.pub\n\
             ssh-keygen -q -t ed25519 -N '' -C '' -f {HOST_KEY_NEW} </dev/null >/dev/null\n\
             echo \"new $(cat {HOST_KEY_NEW}.pub)\"\n\
             else\n\
             echo \"kept $(cat {HOST_KEY}.pub)\"\n\
             fi\n"
        ),
        HOST_KEY_LIMIT,
    )
    .sudo(true)
}

/// The second half, once agent has pinned the new key beside the old: the new key takes
/// the old one's place (each file by rename, so sshd never reads half a key) and sshd
/// reloads. Sessions already open, this one too, keep running.
pub fn host_key_install() -> RemoteCommand {
    RemoteCommand::new(
        format!(
            "set -eu\n\
             test -s {HOST_KEY_NEW} && test -s {HOST_KEY_NEW}.pub\n\
             mv -f {HOST_KEY_NEW} {HOST_KEY}\n\
             mv -f {HOST_KEY_NEW}.pub {HOST_KEY}.pub\n\
             if [ -d /run/systemd/system ]; then\n\
             systemctl reload ssh.service 2>/dev/null || systemctl reload sshd.service 2>/dev/null || true\n\
             else\n\
             pkill -HUP -x sshd || true\n\
             fi\n"
        ),
        HOST_KEY_LIMIT,
    )
    .sudo(true)
}

/// What [`host_key_renew`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyAnswer {
    /// A new key waits beside the one in use: its public half (OpenSSH line).
    New(String),
    /// The key in use is not the user data's: its public half.
    Kept(String),
}

pub fn parse_host_key(lines: &[String]) -> Option<HostKeyAnswer> {
    lines.iter().find_map(|l| {
        if let Some(k) = l.strip_prefix("new ") {
            Some(HostKeyAnswer::New(k.trim().to_owned()))
        } else {
            l.strip_prefix("kept ")
                .map(|k| HostKeyAnswer::Kept(k.trim().to_owned()))
        }
    })
}

/// How cloud-init's first boot ended, from [`ready`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudInit {
    Done,
    /// Installed but never started on this host (nothing to wait for).
    NotRun(String),
    /// Finished with errors (`error`, `degraded done`, …): what `status --long` said of them.
    Errors {
        status: String,
        detail: String,
    },
}

pub fn parse_ready(lines: &[String]) -> CloudInit {
    let status = lines
        .iter()
        .find_map(|l| l.strip_prefix("status "))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    match status.as_str() {
        "done" => CloudInit::Done,
        "not run" | "not started" | "disabled" => CloudInit::NotRun(status),
        _ => {
            // The lines worth reading: errors and recoverable errors, not the timestamps.
            let detail = lines
                .iter()
                .filter_map(|l| l.strip_prefix("detail "))
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !["boot_status_code:", "last_update:", "detail:", "extended_status:"]
                            .iter()
                            .any(|k| l.starts_with(k))
                })
                .collect::<Vec<_>>()
                .join("; ");
            CloudInit::Errors { status, detail }
        }
    }
}

/// How long apt may wait on one archive connection (connect or read) before it gives up.
const ARCHIVE_TIMEOUT_SECS: u32 = 15;

/// Refreshes apt's package lists, failing (exit 100) when any archive cannot be reached: a
/// host with no route out would otherwise retry for minutes, then install nothing. apt's own
/// output goes to stderr; stdout has one line for [`parse_update_failure`].
pub fn apt_update() -> RemoteCommand {
    RemoteCommand::new(
        format!(
            "out=$(mktemp); trap 'rm -f \"$out\"' EXIT\n\
             if apt-get -q -o DPkg::Lock::Timeout={DPKG_LOCK_WAIT} -o Acquire::Retries=0 \
             -o Acquire::http::Timeout={ARCHIVE_TIMEOUT_SECS} -o Acquire::https::Timeout={ARCHIVE_TIMEOUT_SECS} \
             --error-on=any update >\"$out\" 2>&1; then cat \"$out\" >&2; exit 0; fi\n\
             cat \"$out\" >&2\n\
             sed -n 's/^[WE]: Failed to fetch \\([^ ]*\\)  *\\(.*\\)$/unreachable \\1 \\2/p' \"$out\" | head -n 1\n\
             sed -n 's/^E: /failed /p' \"$out\" | tail -n 1\n\
             exit 100\n"
        ),
        PACKAGES_LIMIT,
    )
    .sudo(true)
}

/// Why [`apt_update`] failed, in one line: the archive it could not reach, or apt's last error.
pub fn parse_update_failure(lines: &[String]) -> String {
    if let Some(rest) = lines.iter().find_map(|l| l.strip_prefix("unreachable ")) {
        let (url, why) = rest.split_once(' ').unwrap_or((rest, ""));
        // The archive, not the index file: http://deb.debian.org/debian/dists/… → …/debian.
        let archive = url.split("/dists/").next().unwrap_or(url);
        return format!(
            "cannot reach the package archive {archive} ({}): the host needs a route to it \
             (on EC2, a subnet with an internet or NAT gateway)",
            why.trim()
        );
    }
    match lines.iter().find_map(|l| l.strip_prefix("failed ")) {
        Some(e) => format!("apt-get update failed: {}", e.trim()),
        None => "apt-get update failed".to_owned(),
    }
}

/// Installs packages with apt (after [`apt_update`]), waiting for the dpkg lock instead of
/// failing on it, and never asking a question (keeping configuration files agent may already
/// have written).
pub fn install_packages(packages: &[String]) -> RemoteCommand {
    let opts = format!("-q -o DPkg::Lock::Timeout={DPKG_LOCK_WAIT}");
    let names: Vec<String> = packages.iter().map(|p| quote(p)).collect();
    RemoteCommand::new(
        format!(
            "export DEBIAN_FRONTEND=noninteractive; \
             apt-get {opts} -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
             install --no-install-recommends -- {}",
            names.join(" ")
        ),
        PACKAGES_LIMIT,
    )
    .sudo(true)
}

/// A plan's setup command, as root, within its limit.
pub fn setup(plan: &SetupPlan) -> RemoteCommand {
    RemoteCommand::new(plan.script.clone(), Duration::from_secs(plan.limit_secs)).sudo(true)
}

/// One file to write: its bytes follow on the script's stdin, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub path: String,
    pub mode: u32,
    pub size: u64,
    /// Must accept the temporary file (`{}` in its words) before anything is renamed.
    pub validate: Option<Vec<String>>,
}

/// Writes every file atomically and all-or-nothing: each goes to a temporary file beside its
/// target, is checked for its full size (a cut stream is refused; SSH's MAC already vouches
/// for the bytes, so no second hashing pass), given its mode (and, as root, root's
/// ownership), run past its validator, and fsynced; only when all are in place are they
/// renamed over their targets. Whatever goes wrong before that, the temporary files are
/// removed and no target has changed. `as_root` runs it through `sudo -n`.
///
/// Folders it makes are 0755 whatever the login's umask: services run as unprivileged users
/// (systemd's `DynamicUser=`) and must reach their binaries, scripts and models. Each file's
/// temporary copy is mktemp's 0600 until it has its own mode.
pub fn upload(files: &[Upload], limit: Duration, as_root: bool) -> RemoteCommand {
    let n = files.len();
    let vars: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let mut s = String::from("set -eu\numask 022\n");
    let _ = writeln!(
        s,
        "{}\ntrap 'rm -f -- {}' EXIT\ntrap 'exit 143' TERM HUP INT",
        vars.iter().map(|v| format!("{v}=")).collect::<Vec<_>>().join(" "),
        vars.iter()
            .map(|v| format!("${{{v}:+\"${v}\"}}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut dirs = BTreeSet::new();
    for (f, v) in files.iter().zip(&vars) {
        let (dir, name) = f.path.rsplit_once('/').expect("plan paths are absolute");
        let dir = if dir.is_empty() { "/" } else { dir };
        dirs.insert(dir);
        let _ = writeln!(
            s,
            "mkdir -p -- {qd}\n{v}=$(mktemp -- {tmp})\n\
             head -c {size} > \"${v}\"\n\
             if [ \"$(wc -c < \"${v}\")\" -ne {size} ]; then \
             echo \"agent: {shown}: received $(wc -c < \"${v}\") of {size} bytes\" >&2; exit 1; fi\n\
             chmod {mode:o} \"${v}\"{chown}{validate}",
            chown = if as_root {
                format!("\nchown 0:0 \"${v}\"")
            } else {
                String::new()
            },
            validate = match &f.validate {
                None => String::new(),
                Some(words) => format!(
                    "\nif ! {}; then echo \"agent: {shown}: the new file was refused by {}; nothing was changed\" >&2; exit 1; fi",
                    words
                        .iter()
                        .map(|w| if w == "{}" { format!("\"${v}\"") } else { quote(w) })
                        .collect::<Vec<_>>()
                        .join(" "),
                    words[0].replace(['"', '\\', '$', '`'], "?"),
                    shown = f.path.replace(['"', '\\', '$', '`'], "?"),
                ),
            },
            qd = quote(dir),
            tmp = quote(&format!("{dir}/.{name}.agent-XXXXXX")),
            size = f.size,
            shown = f.path.replace(['"', '\\', '$', '`'], "?"),
            mode = f.mode,
        );
    }
    if n > 0 {
        let _ = writeln!(
            s,
            "sync -- {}",
            vars.iter().map(|v| format!("\"${v}\"")).collect::<Vec<_>>().join(" ")
        );
    }
    for (f, v) in files.iter().zip(&vars) {
        let _ = writeln!(s, "mv -f -- \"${v}\" {}; {v}=", quote(&f.path));
    }
    // The renames themselves become durable with their directories.
    if !dirs.is_empty() {
        let _ = writeln!(
            s,
            "sync -- {}",
            dirs.iter().map(|d| quote(d)).collect::<Vec<_>>().join(" ")
        );
    }
    RemoteCommand::new(s, limit).sudo(as_root)
}

/// What the services step does on one host; decided from the plan, the facts and the
/// changed files, so it can be reported before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceActions {
    pub daemon_reload: bool,
    pub enable: Vec<String>,
    pub restart: Vec<String>,
    pub start: Vec<String>,
    /// Every planned service, checked to be running at the end.
    pub check: Vec<String>,
}

impl ServiceActions {
    /// `changed_units`: unit files that were uploaded; `restart`: services whose files
    /// changed (now or in an earlier run that did not get to restart them).
    pub fn decide(
        services: &[ServicePlan],
        facts: &Facts,
        unit_files_changed: bool,
        restart: &BTreeSet<String>,
    ) -> Self {
        let mut a = ServiceActions {
            daemon_reload: facts.init == Init::Systemd && unit_files_changed,
            ..Default::default()
        };
        for svc in services {
            let state = facts.services.get(&svc.unit).copied().unwrap_or_default();
            if facts.init == Init::Systemd && !state.enabled {
                a.enable.push(svc.unit.clone());
            }
            if restart.contains(&svc.unit) && state.active {
                a.restart.push(svc.unit.clone());
            } else if !state.active {
                a.start.push(svc.unit.clone());
            }
            a.check.push(svc.unit.clone());
        }
        a
    }

    pub fn is_noop(&self) -> bool {
        !self.daemon_reload && self.enable.is_empty() && self.restart.is_empty() && self.start.is_empty()
    }

    /// "restarted a, b; started c", or "all running, nothing changed".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.restart.is_empty() {
            parts.push(format!("restarted {}", self.restart.join(", ")));
        }
        if !self.start.is_empty() {
            parts.push(format!("started {}", self.start.join(", ")));
        }
        if parts.is_empty() {
            parts.push(format!("{} running, nothing to restart", self.check.len()));
        }
        parts.join("; ")
    }
}

/// Applies [`ServiceActions`] and checks every service runs.
pub fn services(init: Init, actions: &ServiceActions, plans: &[ServicePlan]) -> RemoteCommand {
    let mut s = String::from("set -e\n");
    let words = |units: &[String]| units.iter().map(|u| quote(u)).collect::<Vec<_>>().join(" ");
    match init {
        Init::Systemd => {
            if actions.daemon_reload {
                s.push_str("systemctl daemon-reload\n");
            }
            if !actions.enable.is_empty() {
                let _ = writeln!(s, "systemctl enable --quiet -- {}", words(&actions.enable));
            }
            if !actions.restart.is_empty() {
                let _ = writeln!(s, "systemctl restart -- {}", words(&actions.restart));
            }
            if !actions.start.is_empty() {
                let _ = writeln!(s, "systemctl start -- {}", words(&actions.start));
            }
            for u in &actions.check {
                let _ = writeln!(
                    s,
                    "if ! st=$(systemctl is-active -- {q}); then echo \"agent: {u} is $st\" >&2; {log}; exit 1; fi",
                    q = quote(u),
                    log = log_tail(Init::Systemd, u, 20),
                );
            }
        }
        Init::Supervisor => {
            let _ = writeln!(
                s,
                "mkdir -p {SUPERVISOR_RUN_DIR} {SUPERVISOR_LOG_DIR}\n\
                 # stop PIDFILE UNIT: TERM to the loop's whole group (the program too), KILL after 15 s.\n\
                 stop() {{ p=$(cat \"$1\" 2>/dev/null) || return 0\n\
                 case $p in ''|*[!0-9]*|0|1) rm -f -- \"$1\"; return 0;; esac\n\
                 {alive} || {{ rm -f -- \"$1\"; return 0; }}\n\
                 kill -TERM -$p 2>/dev/null || true\n\
                 i=0; while kill -0 -$p 2>/dev/null && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done\n\
                 kill -KILL -$p 2>/dev/null || true; rm -f -- \"$1\"; }}\n\
                 # Restart=always: the loop restarts the program a second after it exits.\n\
                 start() {{ pf=$1; log=$2; shift 2\n\
                 setsid sh -c 'u=$1; shift; while :; do \"$@\"; echo \"{SUPERVISE}: $u exited ($?); restarting in 1s\" >&2; sleep 1; done' \
                 {SUPERVISE} \"$@\" </dev/null >>\"$log\" 2>&1 &\n\
                 echo $! > \"$pf\"; }}",
                alive = supervised_alive("$p", "$2"),
            );
            let by_unit = |u: &str| {
                plans
                    .iter()
                    .find(|p| p.unit == u)
                    .expect("actions come from these plans")
            };
            for u in actions.restart.iter().chain(&actions.start) {
                let p = by_unit(u);
                let argv: Vec<String> = p.command.iter().map(|w| quote(w)).collect();
                let _ = writeln!(
                    s,
                    "stop {pf} {q}; start {pf} {log} {q} {argv}",
                    pf = quote(&pid_file(u)),
                    log = quote(&log_file(u)),
                    q = quote(u),
                    argv = argv.join(" "),
                );
            }
            for u in &actions.check {
                let _ = writeln!(
                    s,
                    // The loop gets its own session a moment after `start` returns.
                    "p=$(cat {pf} 2>/dev/null) || p=none; i=0\n\
                     until {alive}; do if [ $i -ge 30 ]; then echo \"agent: {u} is not running\" >&2; {log}; exit 1; fi; \
                     sleep 0.1; i=$((i+1)); done",
                    pf = quote(&pid_file(u)),
                    alive = supervised_alive("$p", u),
                    log = log_tail(Init::Supervisor, u, 20),
                );
            }
        }
    }
    RemoteCommand::new(s, SERVICES_LIMIT).sudo(true)
}

fn pid_file(unit: &str) -> String {
    format!("{SUPERVISOR_RUN_DIR}/{unit}.pid")
}

fn log_file(unit: &str) -> String {
    format!("{SUPERVISOR_LOG_DIR}/{unit}.log")
}

/// Shell that prints the last `n` lines of a service's log on stderr.
fn log_tail(init: Init, unit: &str, n: u32) -> String {
    match init {
        Init::Systemd => format!("journalctl -u {} -n {n} --no-pager -o cat >&2 || true", quote(unit)),
        Init::Supervisor => format!("tail -n {n} -- {} >&2 || true", quote(&log_file(unit))),
    }
}

/// The last lines of a service's log, on stderr, to explain a failed health check.
pub fn logs(init: Init, unit: &str) -> RemoteCommand {
    RemoteCommand::new(
        format!(
            "echo \"agent: last lines of {unit}'s log:\" >&2; {}",
            log_tail(init, unit, 20)
        ),
        INSPECT_LIMIT,
    )
    .sudo(true)
}

/// How systemd sees a service, asked while its health check does not pass yet (see
/// [`unit_failure`]).
pub fn unit_state(unit: &str) -> RemoteCommand {
    RemoteCommand::new(
        format!(
            "systemctl show -p ActiveState -p SubState -p ExecMainCode -p ExecMainStatus -p NRestarts -- {}",
            quote(unit)
        ),
        INSPECT_LIMIT,
    )
}

/// Why a service is failing, from [`unit_state`]'s answer; `None` while it may still come up.
/// A unit that systemd gave up on, or is waiting to restart after its program ended
/// (`Restart=always` keeps such a unit `activating (auto-restart)` for good), will not pass
/// its health check by waiting.
pub fn unit_failure(unit: &str, lines: &[String]) -> Option<String> {
    let get = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_default()
    };
    if get("ActiveState") != "failed" && get("SubState") != "auto-restart" {
        return None;
    }
    let status = get("ExecMainStatus");
    // ExecMainCode is the CLD_* code of the program's end: 1 exited, 2 killed, 3 dumped core.
    let how = match (get("ExecMainCode"), status.parse::<u32>()) {
        ("1", Ok(code)) => match systemd_exit(code) {
            Some(name) => format!("status={code}/{name}"),
            None => format!("exit status {code}"),
        },
        ("2" | "3", Ok(signal)) => format!("killed by signal {signal}"),
        _ => "its program ended".to_owned(),
    };
    let restarts = match get("NRestarts") {
        "" | "0" => String::new(),
        n => format!(", restarted {n} times"),
    };
    Some(format!("{unit} keeps failing ({how}{restarts})"))
}

/// systemd's own exit statuses (systemd.exec(5)): it could not even start the program.
fn systemd_exit(code: u32) -> Option<&'static str> {
    Some(match code {
        200 => "CHDIR",
        203 => "EXEC: the program could not be executed",
        209 => "STDOUT",
        210 => "CHROOT",
        216 => "GROUP",
        217 => "USER",
        218 => "CAPABILITIES",
        226 => "NAMESPACE",
        _ => return None,
    })
}

/// An HTTP/1.0 request for a health check (the connection closes after the answer).
pub fn health_request(path: &str, port: u16) -> String {
    format!("GET {path} HTTP/1.0\r\nHost: localhost:{port}\r\nUser-Agent: agent\r\nConnection: close\r\n\r\n")
}

/// The status code of an HTTP response's first line.
pub fn http_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// The deployed programs' logs: the last `lines` of each (only those newer than `since`
/// on systemd hosts), then, with `follow`, new lines as they come until cancelled. systemd
/// hosts read the journal of agent's units; under agent's supervisor, its log files.
pub fn program_logs(lines: u32, since: Option<Duration>, follow: bool) -> RemoteCommand {
    let since = since.map_or(String::new(), |d| format!(" --since=-{}s", d.as_secs().max(1)));
    let (jf, tf) = if follow { (" -f", " -F") } else { ("", "") };
    RemoteCommand::new(
        format!(
            "if [ -d /run/systemd/system ]; then\n\
             exec journalctl --no-pager --quiet -o short-iso -u 'agent-*' -n {lines}{since}{jf}\n\
             fi\n\
             set -- {SUPERVISOR_LOG_DIR}/*.log\n\
             [ -e \"$1\" ] || {{ echo 'no logs in {SUPERVISOR_LOG_DIR} yet' >&2; exit 0; }}\n\
             exec tail -n {lines}{tf} \"$@\"\n"
        ),
        // Following is open-ended by request: it ends with Ctrl-C (or a lost host).
        if follow { LOGS_FOLLOW_LIMIT } else { LOGS_LIMIT },
    )
    .sudo(true)
}

pub const LOGS_LIMIT: Duration = Duration::from_secs(60);
pub const LOGS_FOLLOW_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Commands to HAProxy's runtime API on the balancer host (one connection each), their
/// answers printed in order.
pub fn haproxy_admin(commands: &[String]) -> RemoteCommand {
    let client = "import socket, sys\n\
                  for c in sys.argv[2:]:\n\
                  \x20   s = socket.socket(socket.AF_UNIX)\n\
                  \x20   s.connect(sys.argv[1])\n\
                  \x20   s.sendall(c.encode() + b'\\n')\n\
                  \x20   while True:\n\
                  \x20       d = s.recv(65536)\n\
                  \x20       if not d:\n\
                  \x20           break\n\
                  \x20       sys.stdout.write(d.decode())\n";
    let args: Vec<String> = commands.iter().map(|c| quote(c)).collect();
    RemoteCommand::new(
        format!(
            "exec python3 -c {} {} {}\n",
            quote(client),
            ADMIN_SOCKET,
            args.join(" ")
        ),
        HAPROXY_ADMIN_LIMIT,
    )
    .sudo(true)
}

pub const HAPROXY_ADMIN_LIMIT: Duration = Duration::from_secs(15);

/// A server as `show stat` lists it: (backend, server) → (status, current sessions).
pub fn parse_show_stat(lines: &[String]) -> BTreeMap<(String, String), (String, u64)> {
    let mut out = BTreeMap::new();
    let Some(header) = lines.iter().find_map(|l| l.strip_prefix("# ")) else {
        return out;
    };
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(scur), Some(status)) = (at("pxname"), at("svname"), at("scur"), at("status")) else {
        return out;
    };
    for l in lines.iter().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let f: Vec<&str> = l.split(',').collect();
        if let (Some(p), Some(s), Some(c), Some(st)) = (f.get(px), f.get(sv), f.get(scur), f.get(status)) {
            out.insert(
                ((*p).to_owned(), (*s).to_owned()),
                ((*st).to_owned(), c.parse().unwrap_or(0)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FilePlan, HealthCheck, Source};

    fn plan() -> HostPlan {
        HostPlan {
            host: "h1".into(),
            address: "10.0.0.4".into(),
            role: "web".into(),
            packages: vec!["haproxy".into()],
            files: vec![FilePlan {
                path: "/etc/agent/a b.env".into(),
                mode: 0o644,
                source: Source::Text("X=1\n".into()),
                restarts: vec!["agent-web.service".into()],
                validate: None,
            }],
            setup: Vec::new(),
            services: vec![ServicePlan {
                unit: "agent-web.service".into(),
                command: vec!["/opt/agent/run/agent-web".into()],
            }],
            health: vec![HealthCheck {
                port: 80,
                path: "/health".into(),
                status: 200,
                service: "agent-web.service".into(),
            }],
            balancer: false,
            host_key: None,
        }
    }

    fn sh(script: &str, stdin: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn lines(out: &std::process::Output) -> Vec<String> {
        text_lines(&String::from_utf8_lossy(&out.stdout))
    }

    fn text_lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    /// An executable `name` in `dir` running `script` under sh, to put first on a script's PATH.
    fn fake_command(dir: &std::path::Path, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The host key scripts with their paths moved under `dir`, and `pkill`/`systemctl`
    /// faked (they log what they were asked) so that no real sshd is signalled.
    fn host_key_script(command: &RemoteCommand, dir: &std::path::Path) -> String {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for name in ["pkill", "systemctl"] {
            fake_command(
                &bin,
                name,
                &format!("echo {name} \"$@\" >> {}/reloads\n", dir.display()),
            );
        }
        let script = command
            .script
            .replace("/etc/ssh/", &format!("{}/", dir.display()))
            .replace(USER_DATA, &dir.join("user-data.txt").display().to_string());
        format!("PATH={}:$PATH\n{script}", bin.display())
    }

    #[test]
    fn logs_read_the_supervisor_files_off_systemd() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("log");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("agent-web.service.log"), "one\ntwo\nthree\n").unwrap();
        let script = logs_script(&logs, 2, false);
        let out = sh(&script, b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(lines(&out), ["two", "three"]);
        let c = program_logs(100, Some(Duration::from_secs(600)), true);
        assert!(
            c.script
                .contains("journalctl --no-pager --quiet -o short-iso -u 'agent-*' -n 100 --since=-600s -f")
        );
        assert!(c.script.contains("tail -n 100 -F"));
        assert_eq!(c.timeout, LOGS_FOLLOW_LIMIT);
        assert_eq!(program_logs(5, None, false).timeout, LOGS_LIMIT);
        let empty = tempfile::tempdir().unwrap();
        let out = sh(&logs_script(empty.path(), 2, false), b"");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no logs in"));
    }

    /// The logs script as a host without systemd runs it, its folder moved to `dir`.
    fn logs_script(dir: &std::path::Path, n: u32, follow: bool) -> String {
        program_logs(n, None, follow)
            .script
            .replace("/run/systemd/system", "/nonexistent/agent-test")
            .replace(SUPERVISOR_LOG_DIR, &dir.display().to_string())
    }

    #[test]
    fn the_user_data_host_key_is_replaced_in_two_halves() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = d.join("ssh_host_ed25519_key");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        std::fs::write(
            d.join("user-data.txt"),
            format!("#cloud-config\nssh_keys:\n  ed25519_public: {public}"),
        )
        .unwrap();
        let renew = host_key_script(&host_key_renew(), d);
        let install = host_key_script(&host_key_install(), d);

        // Still the user data's key: a new one is made beside it, nothing sshd reads changes.
        let out = sh(&renew, b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let Some(HostKeyAnswer::New(new)) = parse_host_key(&lines(&out)) else {
            panic!("{:?}", lines(&out))
        };
        assert!(new.starts_with("ssh-ed25519 "), "{new}");
        assert_ne!(new.split(' ').nth(1), public.split(' ').nth(1));
        assert_eq!(std::fs::read_to_string(key.with_extension("pub")).unwrap(), public);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ssh_host_ed25519_key.agent-new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the new private key is root's alone");

        // The swap: the new key in place, sshd asked to reload.
        let out = sh(&install, b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read_to_string(key.with_extension("pub")).unwrap().trim(), new);
        assert!(!d.join("ssh_host_ed25519_key.agent-new").exists());
        let reloads = std::fs::read_to_string(d.join("reloads")).unwrap();
        assert!(reloads.contains("sshd"), "{reloads}");

        // Again: the key in use is not the user data's any more, so it is kept; a second
        // install has nothing to put in place and fails rather than half-swap.
        let out = sh(&renew, b"");
        assert_eq!(parse_host_key(&lines(&out)), Some(HostKeyAnswer::Kept(new)));
        assert!(!sh(&install, b"").status.success());
        assert_eq!(parse_host_key(&text_lines("junk")), None);
    }

    #[test]
    fn inspect_reports_files_packages_and_services_in_one_script() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan();
        p.files[0].path = dir.path().join("a b.env").to_str().unwrap().into();
        p.files.push(FilePlan {
            path: dir.path().join("absent").to_str().unwrap().into(),
            ..p.files[0].clone()
        });
        std::fs::write(&p.files[0].path, "hello\n").unwrap();
        p.packages = vec!["coreutils".into(), "no-such-package-agent".into()];
        let cmd = inspect(&p);
        assert!(cmd.sudo);
        let out = sh(&cmd.script, b"");
        let facts = parse_facts(&lines(&out)).unwrap();
        assert_eq!(facts.init, Init::Supervisor, "this machine has no systemd as PID 1");
        assert_eq!(facts.missing_packages, ["no-such-package-agent"]);
        assert_eq!(
            facts.checksums,
            BTreeMap::from([(
                p.files[0].path.clone(),
                "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03".to_owned()
            )])
        );
        assert_eq!(
            facts.services["agent-web.service"],
            ServiceState {
                active: false,
                enabled: true
            }
        );
    }

    #[test]
    fn facts_parse_systemd_hosts_and_refuse_junk() {
        let out: Vec<String> = [
            "init systemd",
            "cloud-init yes",
            "apt yes",
            "service active enabled agent-web.service",
            "service inactive disabled haproxy.service",
        ]
        .map(String::from)
        .into();
        let f = parse_facts(&out).unwrap();
        assert!(f.cloud_init && f.apt && f.init == Init::Systemd);
        assert!(f.services["agent-web.service"].active && !f.services["haproxy.service"].enabled);
        assert!(parse_facts(&["sudo: a password is required".to_string()]).is_err());
        assert!(parse_facts(&[]).is_err());
    }

    fn upload_of(path: &std::path::Path, body: &[u8], mode: u32) -> Upload {
        Upload {
            path: path.to_str().unwrap().into(),
            mode,
            size: body.len() as u64,
            validate: None,
        }
    }

    #[test]
    fn upload_writes_every_file_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("sub dir/a");
        let b = dir.path().join("b");
        std::fs::write(&b, "old b, longer than the new one\n").unwrap();
        let files = [upload_of(&a, b"A\n", 0o755), upload_of(&b, b"new b\n", 0o640)];
        // chown 0:0 needs root, which the tests have (and the host has through sudo).
        let script = upload(&files, Duration::from_secs(10), true).script;
        let out = sh(&script, b"A\nnew b\n");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(std::fs::read(&a).unwrap(), b"A\n");
        assert_eq!(std::fs::read(&b).unwrap(), b"new b\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&a).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::metadata(&b).unwrap().permissions().mode() & 0o777, 0o640);
        // A folder it makes is open to the services' unprivileged users, even when the login
        // (or sudo) has a strict umask.
        let deep = dir.path().join("new/deeper/c");
        let script = upload(&[upload_of(&deep, b"C\n", 0o644)], Duration::from_secs(10), true).script;
        let out = sh(&format!("umask 077\n{script}"), b"C\n");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for d in ["new", "new/deeper"] {
            let mode = std::fs::metadata(dir.path().join(d)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755, "{d}");
        }
        std::fs::remove_dir_all(dir.path().join("new")).unwrap();

        // A stream cut short: nothing changes, no temporary file is left.
        let files = [upload_of(&a, b"A2\n", 0o755), upload_of(&b, b"newer b\n", 0o640)];
        let out = sh(&upload(&files, Duration::from_secs(10), true).script, b"A2\nnewer");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("received 5 of 8 bytes"), "{err}");
        assert_eq!(std::fs::read(&a).unwrap(), b"A\n");
        assert_eq!(std::fs::read(&b).unwrap(), b"new b\n");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .chain(std::fs::read_dir(dir.path().join("sub dir")).unwrap())
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a", "b", "sub dir"]);

        // A file its validator refuses: nothing changes either.
        let mut bad = upload_of(&b, b"broken\n", 0o640);
        bad.validate = Some(["grep", "-q", "^ok", "{}"].map(String::from).into());
        let files = [upload_of(&a, b"A3\n", 0o755), bad];
        let out = sh(&upload(&files, Duration::from_secs(10), true).script, b"A3\nbroken\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the new file was refused by grep; nothing was changed"),
            "{err}"
        );
        assert_eq!(std::fs::read(&a).unwrap(), b"A\n");
        assert_eq!(std::fs::read(&b).unwrap(), b"new b\n");
        let mut ok = upload_of(&b, b"ok\n", 0o640);
        ok.validate = Some(["grep", "-q", "^ok", "{}"].map(String::from).into());
        assert!(
            sh(&upload(&[ok], Duration::from_secs(10), true).script, b"ok\n")
                .status
                .success()
        );
        assert_eq!(std::fs::read(&b).unwrap(), b"ok\n");
    }

    #[test]
    fn services_restart_only_what_changed() {
        let p = plan();
        let mut facts = parse_facts(&["init systemd".to_string()]).unwrap();
        facts.services.insert(
            "agent-web.service".into(),
            ServiceState {
                active: true,
                enabled: true,
            },
        );
        let none = ServiceActions::decide(&p.services, &facts, false, &BTreeSet::new());
        assert!(none.is_noop());
        assert_eq!(none.summary(), "1 running, nothing to restart");
        let changed = BTreeSet::from(["agent-web.service".to_string()]);
        let a = ServiceActions::decide(&p.services, &facts, true, &changed);
        assert_eq!(
            (a.daemon_reload, a.restart.as_slice()),
            (true, ["agent-web.service".to_string()].as_slice())
        );
        let script = services(Init::Systemd, &a, &p.services).script;
        assert!(script.starts_with("set -e\nsystemctl daemon-reload\nsystemctl restart -- agent-web.service\n"));
        // A stopped service is started, never "restarted".
        facts.services.clear();
        let a = ServiceActions::decide(&p.services, &facts, true, &changed);
        assert_eq!((a.enable.len(), a.start.len(), a.restart.len()), (1, 1, 0));
    }

    /// The supervisor under a real sh: start, detect as running, restart, stop.
    #[test]
    fn supervisor_starts_restarts_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let unit = format!("agent-test-{}.service", std::process::id());
        let plans = [ServicePlan {
            unit: unit.clone(),
            command: vec!["sleep".into(), "1000".into()],
        }];
        let facts = parse_facts(&["init supervisor".to_string()]).unwrap();
        let fix = |s: String| {
            s.replace(SUPERVISOR_RUN_DIR, dir.path().to_str().unwrap())
                .replace(SUPERVISOR_LOG_DIR, dir.path().to_str().unwrap())
        };
        let start = ServiceActions::decide(&plans, &facts, false, &BTreeSet::new());
        assert_eq!(start.start, std::slice::from_ref(&unit));
        let out = sh(&fix(services(Init::Supervisor, &start, &plans).script), b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pid = std::fs::read_to_string(dir.path().join(format!("{unit}.pid"))).unwrap();
        let mut probe = plan();
        probe.packages.clear();
        probe.files.clear();
        probe.services = plans.to_vec();
        let facts = parse_facts(&lines(&sh(&fix(inspect(&probe).script), b""))).unwrap();
        assert!(facts.services[&unit].active);
        let again = ServiceActions::decide(&plans, &facts, false, &BTreeSet::from([unit.clone()]));
        assert_eq!(again.restart, std::slice::from_ref(&unit));
        let out = sh(&fix(services(Init::Supervisor, &again, &plans).script), b"");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pid2 = std::fs::read_to_string(dir.path().join(format!("{unit}.pid"))).unwrap();
        assert_ne!(pid, pid2);
        assert!(!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists());
        sh(&format!("kill -TERM -{}", pid2.trim()), b"");
    }

    #[test]
    fn a_unit_in_its_restart_loop_is_failing_a_running_one_is_not() {
        let exec = text_lines(
            "ActiveState=activating\nSubState=auto-restart\nExecMainCode=1\nExecMainStatus=203\nNRestarts=7",
        );
        assert_eq!(
            unit_failure("agent-web.service", &exec).as_deref(),
            Some(
                "agent-web.service keeps failing (status=203/EXEC: the program could not be executed, restarted 7 times)"
            )
        );
        let killed = text_lines("ActiveState=failed\nSubState=failed\nExecMainCode=2\nExecMainStatus=9\nNRestarts=0");
        assert_eq!(
            unit_failure("w.service", &killed).as_deref(),
            Some("w.service keeps failing (killed by signal 9)")
        );
        let exited = text_lines("ActiveState=activating\nSubState=auto-restart\nExecMainCode=1\nExecMainStatus=2");
        assert_eq!(
            unit_failure("w.service", &exited).as_deref(),
            Some("w.service keeps failing (exit status 2)")
        );
        for ok in [
            "ActiveState=active\nSubState=running\nExecMainCode=0\nExecMainStatus=0\nNRestarts=0",
            "ActiveState=activating\nSubState=start\nExecMainCode=0\nExecMainStatus=0",
            "",
        ] {
            assert_eq!(unit_failure("w.service", &text_lines(ok)), None, "{ok}");
        }
        assert_eq!(
            unit_state("agent-worker@5000.service").script,
            "systemctl show -p ActiveState -p SubState -p ExecMainCode -p ExecMainStatus -p NRestarts -- agent-worker@5000.service"
        );
    }

    #[test]
    fn cloud_init_ends_are_read_from_status() {
        assert_eq!(
            parse_ready(&text_lines(
                "status done\ndetail boot_status_code: enabled-by-generator"
            )),
            CloudInit::Done
        );
        assert_eq!(
            parse_ready(&text_lines("status not run")),
            CloudInit::NotRun("not run".into())
        );
        assert_eq!(
            parse_ready(&text_lines(
                "status error\ndetail boot_status_code: enabled-by-generator\ndetail last_update: Thu, 01 Jan 1970\n\
                 detail detail:\ndetail ('locale', ProcessExecutionError(\"Unexpected error while running command.\"))"
            )),
            CloudInit::Errors {
                status: "error".into(),
                detail: "('locale', ProcessExecutionError(\"Unexpected error while running command.\"))".into()
            }
        );
        // The script under sh, with a cloud-init that was installed but never ran: no wait.
        let dir = tempfile::tempdir().unwrap();
        fake_command(
            dir.path(),
            "cloud-init",
            "[ \"$2\" = --wait ] && sleep 100\necho 'status: not run'\n",
        );
        let script = format!("PATH={}:$PATH\n{}", dir.path().display(), ready().script);
        let started = std::time::Instant::now();
        let out = sh(&script, b"");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "waited {:?}",
            started.elapsed()
        );
        assert_eq!(parse_ready(&lines(&out)), CloudInit::NotRun("not run".into()));
        // One that ended in error: its detail comes back.
        fake_command(
            dir.path(),
            "cloud-init",
            "case \"$2\" in --wait) exit 1;; --long) printf 'status: error\\ndetail:\\nmodule locale failed\\n';; *) echo 'status: running';; esac\n",
        );
        let out = sh(&script, b"");
        assert_eq!(
            parse_ready(&lines(&out)),
            CloudInit::Errors {
                status: "error".into(),
                detail: "module locale failed".into()
            }
        );
    }

    #[test]
    fn an_unreachable_archive_is_named() {
        assert_eq!(
            parse_update_failure(&text_lines(
                "unreachable http://deb.debian.org/debian/dists/bookworm/InRelease Could not connect to deb.debian.org:80 (151.101.2.132), connection timed out"
            )),
            "cannot reach the package archive http://deb.debian.org/debian (Could not connect to deb.debian.org:80 \
             (151.101.2.132), connection timed out): the host needs a route to it (on EC2, a subnet with an internet \
             or NAT gateway)"
        );
        assert_eq!(
            parse_update_failure(&text_lines("failed The repository 'x' does not have a Release file.")),
            "apt-get update failed: The repository 'x' does not have a Release file."
        );
        // The script's own reading of apt's output, under sh with an apt-get that cannot connect.
        let dir = tempfile::tempdir().unwrap();
        fake_command(
            dir.path(),
            "apt-get",
            "echo 'Err:1 http://deb.debian.org/debian bookworm InRelease'\n\
             echo 'W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Could not connect to 10.0.0.1:3142 (10.0.0.1). - connect (111: Connection refused)' >&2\n\
             echo 'E: Some index files failed to download. They have been ignored, or old ones used instead.' >&2\nexit 100\n",
        );
        let out = sh(
            &format!("PATH={}:$PATH\n{}", dir.path().display(), apt_update().script),
            b"",
        );
        assert_eq!(out.status.code(), Some(100));
        assert_eq!(
            parse_update_failure(&lines(&out)),
            "cannot reach the package archive http://deb.debian.org/debian (Could not connect to 10.0.0.1:3142 \
             (10.0.0.1). - connect (111: Connection refused)): the host needs a route to it (on EC2, a subnet with an \
             internet or NAT gateway)"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("Err:1 http://deb.debian.org"));
    }

    #[test]
    fn http_status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"), Some(200));
        assert_eq!(http_status(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(http_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(
            health_request("/health", 80),
            "GET /health HTTP/1.0\r\nHost: localhost:80\r\nUser-Agent: agent\r\nConnection: close\r\n\r\n"
        );
    }
}

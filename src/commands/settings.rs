//! Plain, resolved settings: what a command will do, decided before any work starts.
//! The CLI module builds these; nothing downstream sees clap types.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use crate::fleet::artifact::ProgramSource;
use crate::fleet::exec::{ExecJob, Target};
use crate::plan::Plan;
use crate::printer::Mode;
use crate::transport::ssh::SshSettings;
use crate::transport::ssh::known_hosts::KnownHosts;

pub enum Settings {
    Exec(ExecSettings),
    /// Deploy onto an inventory: what to deploy, the record's file, where programs come from
    /// (on EC2 these are resolved inside `CloudDeploySettings`).
    Deploy {
        deploy: Box<DeploySettings>,
        record: PathBuf,
        programs: ProgramSource,
    },
    /// Launch the spec's hosts on EC2, then deploy onto them.
    CloudDeploy(Box<CloudDeploySettings>),
    Terminate {
        deployment: String,
        region: Option<String>,
        timeout: Duration,
        mode: Mode,
        record: PathBuf,
        known_hosts: PathBuf,
    },
    /// Load the inference deployment's orchestrator and summarise.
    BenchInference(crate::bench::inference::InferenceBench),
    /// The course's Lab 1 benchmark against the load balancer.
    BenchClusters(Box<crate::bench::clusters::ClustersBench>),
    /// CloudWatch metrics over a window, saved into `out`.
    Metrics {
        metrics: crate::commands::metrics::MetricsSettings,
        window: crate::commands::metrics::Window,
        out: PathBuf,
        json: bool,
    },
    Status {
        deployment: String,
        region: Option<String>,
        json: bool,
        /// Where deploy pinned the instances' host keys.
        known_hosts: std::path::PathBuf,
    },
    /// Print what a deployment would do; touches nothing.
    Plan {
        plan: Plan,
        json: bool,
    },
}

pub struct ExecSettings {
    pub job: ExecJob,
    pub output: OutputSettings,
}

pub struct DeploySettings {
    /// The hosts to act on (the plan may have been narrowed by --host/--role).
    pub plan: Plan,
    /// One per plan host, same order.
    pub targets: Vec<Target>,
    pub parallel: usize,
    pub ssh: SshSettings,
    pub known_hosts: Arc<KnownHosts>,
    pub health_timeout: Duration,
    pub output: OutputSettings,
    /// Printed after the summary (the load balancer's address).
    pub footer: Vec<String>,
}

pub struct CloudDeploySettings {
    pub launch: crate::aws::launch::LaunchSettings,
    pub region: Option<String>,
    /// Opens the instances (`--key`); its public half is the imported key pair.
    pub key: crate::transport::ssh::key::ClientKey,
    pub user: String,
    pub trust_first_use: bool,
    pub record: PathBuf,
    pub known_hosts: PathBuf,
    pub parallel: usize,
    pub ssh: SshSettings,
    pub programs: ProgramSource,
    /// Where the workers get their model.
    pub model: crate::plan::ModelSource,
    pub health_timeout: Duration,
    pub output: OutputSettings,
}

pub struct OutputSettings {
    pub mode: Mode,
    /// Per-host logs go here; `None` disables them.
    pub log_dir: Option<PathBuf>,
    /// What the run is, for log headers and the JSON summary.
    pub title: String,
}

/// `$XDG_STATE_HOME/agent` (default `~/.local/state/agent`): logs and ad-hoc known hosts.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("agent");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/agent")
}

/// A folder name for one run's logs, sortable by time: `20261122-130501-exec`.
pub fn run_name(kind: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{kind}-{}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        std::process::id()
    )
}

/// Days since 1970-01-01 to a UTC calendar date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One line for a TOML error in a file the operator wrote: toml's own message spans several
/// lines with a source excerpt; keep its first line and say where.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let first = e.message().lines().next().unwrap_or_default();
    match e.span() {
        Some(span) => format!(
            "{first} (at line {})",
            text[..span.start.min(text.len())].matches('\n').count() + 1
        ),
        None => first.to_owned(),
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 5m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=7.0 * 86_400.0).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}

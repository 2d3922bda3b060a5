//! agent-orchestrator [--bind ADDR] [--port PORT] [--workers A:P,A:P,...] [--slots N] [--queue N]
//!                    [--worker-timeout SECS] [--queue-timeout SECS]
//! Environment (flags win): AGENT_ORCHESTRATOR_PORT, AGENT_WORKERS, AGENT_WORKER_SLOTS,
//! AGENT_QUEUE_LIMIT, AGENT_WORKER_TIMEOUT_SECS, AGENT_QUEUE_TIMEOUT_SECS.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use agent_orchestrator::Config;
use agent_orchestrator::config::parse_workers;

const USAGE: &str = "usage: agent-orchestrator [--bind ADDR] [--port PORT] [--workers A:P,A:P,...] [--slots N] \
                     [--queue N] [--worker-timeout SECS] [--queue-timeout SECS]";

#[derive(Debug)]
struct Args {
    bind: String,
    port: u16,
    config: Config,
}

/// Environment first, then flags over it; `env` is a lookup so tests need not touch the
/// process environment.
fn parse(mut args: impl Iterator<Item = String>, env: impl Fn(&str) -> Option<String>) -> Result<Args, String> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut a = Args {
        bind: "0.0.0.0".into(),
        port: 80,
        config: Config::new(vec![]),
    };
    let c = &mut a.config;
    if let Some(v) = env("AGENT_ORCHESTRATOR_PORT") {
        a.port = number("AGENT_ORCHESTRATOR_PORT", &v, "a port from 0 to 65535")?;
    }
    if let Some(v) = env(agent_protocol::env::WORKERS) {
        c.workers = parse_workers(&v).map_err(|e| format!("AGENT_WORKERS: {e}"))?;
    }
    if let Some(v) = env("AGENT_WORKER_SLOTS") {
        c.slots_per_worker = slots("AGENT_WORKER_SLOTS", &v)?;
    }
    if let Some(v) = env("AGENT_QUEUE_LIMIT") {
        c.queue_limit = number("AGENT_QUEUE_LIMIT", &v, "a number of requests")?;
    }
    if let Some(v) = env("AGENT_WORKER_TIMEOUT_SECS") {
        c.worker_timeout = seconds("AGENT_WORKER_TIMEOUT_SECS", &v)?;
    }
    if let Some(v) = env("AGENT_QUEUE_TIMEOUT_SECS") {
        c.queue_timeout = seconds("AGENT_QUEUE_TIMEOUT_SECS", &v)?;
    }
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => a.bind = value()?,
            "--port" => a.port = number("--port", &value()?, "a port from 0 to 65535")?,
            "--workers" => c.workers = parse_workers(&value()?).map_err(|e| format!("--workers: {e}"))?,
            "--slots" => c.slots_per_worker = slots("--slots", &value()?)?,
            "--queue" => c.queue_limit = number("--queue", &value()?, "a number of requests")?,
            "--worker-timeout" => c.worker_timeout = seconds("--worker-timeout", &value()?)?,
            "--queue-timeout" => c.queue_timeout = seconds("--queue-timeout", &value()?)?,
            _ => return Err(format!("unknown argument {flag:?}; {USAGE}")),
        }
    }
    c.check()?;
    Ok(a)
}

fn number<T: FromStr>(name: &str, value: &str, what: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{name} takes {what}, not {value:?}"))
}

fn slots(name: &str, value: &str) -> Result<usize, String> {
    match number(name, value, "a number of requests per worker, 1 or more")? {
        0 => Err(format!(
            "{name} takes a number of requests per worker, 1 or more, not 0"
        )),
        n => Ok(n),
    }
}

fn seconds(name: &str, value: &str) -> Result<Duration, String> {
    match number::<u64>(name, value, "a whole number of seconds, 1 or more")? {
        0 => Err(format!("{name} takes a whole number of seconds, 1 or more, not 0")),
        s => Ok(Duration::from_secs(s)),
    }
}

// One thread, as HAProxy's nbthread 1: the orchestrator only moves bytes and queue slots, and on
// a multi-thread runtime the cross-thread wake-ups cost more than the work (benches/orchestrator:
// +0.3-0.5 ms per request with 2 threads, +0.1 ms with 1, and a worse p99 under load).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Args { bind, port, config } = match parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agent-orchestrator: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind((bind.as_str(), port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("agent-orchestrator: cannot listen on {bind}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "agent-orchestrator: listening on {}, {}, {} each, queue {}",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        count(config.workers.len(), "worker"),
        count(config.slots_per_worker, "slot"),
        config.queue_limit,
    );
    match agent_orchestrator::run(listener, config, agent_protocol::stop_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent-orchestrator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Args, String> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(args.iter().map(|a| a.to_string()), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn environment_gives_defaults_and_flags_win() {
        let a = parse_with(
            &["--port", "8080", "--slots", "2"],
            &[
                ("AGENT_ORCHESTRATOR_PORT", "81"),
                ("AGENT_WORKERS", "10.0.1.5:5000,10.0.1.5:5001"),
                ("AGENT_WORKER_SLOTS", "3"),
                ("AGENT_QUEUE_LIMIT", "10"),
                ("AGENT_WORKER_TIMEOUT_SECS", "5"),
            ],
        )
        .unwrap();
        assert_eq!((a.bind.as_str(), a.port), ("0.0.0.0", 8080));
        assert_eq!(a.config.workers, ["10.0.1.5:5000", "10.0.1.5:5001"]);
        assert_eq!(a.config.slots_per_worker, 2);
        assert_eq!(a.config.queue_limit, 10);
        assert_eq!(a.config.worker_timeout, Duration::from_secs(5));
        assert_eq!(a.config.queue_timeout, Duration::from_secs(60));

        let a = parse_with(&["--workers", "h:1"], &[("AGENT_WORKER_SLOTS", " ")]).unwrap();
        assert_eq!((a.port, a.config.slots_per_worker, a.config.queue_limit), (80, 1, 64));
    }

    #[test]
    fn bad_values_are_one_line_naming_the_input() {
        let no_workers = parse_with(&[], &[]).unwrap_err();
        assert_eq!(no_workers, "no workers: set AGENT_WORKERS or --workers");
        for (args, env, expected) in [
            (&["--port", "x"][..], &[][..], "--port takes a port"),
            (
                &["--slots", "0"],
                &[],
                "--slots takes a number of requests per worker, 1 or more, not 0",
            ),
            (
                &["--worker-timeout", "-1"],
                &[],
                "--worker-timeout takes a whole number of seconds",
            ),
            (&["--frobnicate"], &[], "unknown argument \"--frobnicate\"; usage:"),
            (&["--queue"], &[], "--queue needs a value"),
            (
                &[],
                &[("AGENT_WORKERS", "10.0.1.5")],
                "AGENT_WORKERS: worker \"10.0.1.5\" has no port",
            ),
            (
                &[],
                &[("AGENT_QUEUE_LIMIT", "lots")],
                "AGENT_QUEUE_LIMIT takes a number of requests",
            ),
        ] {
            let err = parse_with(args, env).unwrap_err();
            assert!(err.starts_with(expected), "{args:?} {env:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}

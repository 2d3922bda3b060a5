//! agent-worker [--bind ADDR] [--port PORT] [--model DIR] [--threads N] [--concurrency N] [--queue N] [--kernel amx|f32|auto]
//! agent-worker head DIR [--seed N]
//!
//! Environment: AGENT_WORKER_PORT, AGENT_WORKER_MODEL, AGENT_WORKER_THREADS, AGENT_WORKER_KERNEL,
//! AGENT_WORKER_PROCESSES (worker processes on this host, to size the default threads),
//! AGENT_WORKER_CONCURRENCY, AGENT_WORKER_QUEUE, AGENT_WORKER_HEAD_SEED.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use agent_protocol::{CHANGED, env as vars};
use agent_worker::head::{self, Head};
use agent_worker::{Kernel, Limits, Model};

const USAGE: &str = "usage: agent-worker [--bind ADDR] [--port PORT] [--model DIR] [--threads N] [--concurrency N] [--queue N] [--kernel amx|f32|auto] | agent-worker head DIR [--seed N]";

struct Serve {
    bind: String,
    port: u16,
    model: Option<PathBuf>,
    threads: usize,
    kernel: Kernel,
    limits: Limits,
}

enum Command {
    Serve(Serve),
    Head { dir: PathBuf, seed: u64 },
}

fn env<T: std::str::FromStr>(name: &str, what: &str) -> Result<Option<T>, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map(Some).map_err(|_| format!("{name}={v:?} is not {what}")),
        _ => Ok(None),
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: String, what: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{flag} {value:?}: expected {what}"))
}

fn parse(args: Vec<String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let seed = env(vars::WORKER_HEAD_SEED, "a number")?.unwrap_or(0);
    let mut first = args.next();
    if first.as_deref() == Some("head") {
        let mut dir = None;
        let mut seed = seed;
        while let Some(a) = args.next() {
            match a.as_str() {
                "--seed" => seed = number("--seed", args.next().ok_or("--seed needs a value")?, "a number")?,
                _ if dir.is_none() && !a.starts_with('-') => dir = Some(PathBuf::from(a)),
                _ => return Err(format!("unknown argument {a:?}; {USAGE}")),
            }
        }
        let dir = dir.ok_or(format!("head needs the model folder; {USAGE}"))?;
        return Ok(Command::Head { dir, seed });
    }
    // Threads sized to the host, shared by its worker processes: rayon's own default counts
    // cores, which on EC2 are hyperthreads, and ignores the sibling processes.
    let processes: usize = env(vars::WORKER_PROCESSES, "a number")?.unwrap_or(1);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut s = Serve {
        bind: "0.0.0.0".into(),
        port: env("AGENT_WORKER_PORT", "a port")?.unwrap_or(5000),
        model: env::<PathBuf>(vars::WORKER_MODEL, "a path")?,
        threads: env("AGENT_WORKER_THREADS", "a number")?.unwrap_or((cpus / processes.max(1)).max(1)),
        kernel: env("AGENT_WORKER_KERNEL", "amx, f32 or auto")?.unwrap_or_else(Kernel::detect),
        limits: Limits {
            concurrency: env("AGENT_WORKER_CONCURRENCY", "a number")?.unwrap_or(1),
            queue: env("AGENT_WORKER_QUEUE", "a number")?.unwrap_or(16),
        },
    };
    while let Some(flag) = first.take().or_else(|| args.next()) {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => s.bind = value()?,
            "--port" => s.port = number(&flag, value()?, "a port from 0 to 65535")?,
            "--model" => s.model = Some(value()?.into()),
            "--threads" => s.threads = number(&flag, value()?, "a number of threads")?,
            "--concurrency" => s.limits.concurrency = number(&flag, value()?, "a number")?,
            "--queue" => s.limits.queue = number(&flag, value()?, "a number")?,
            "--kernel" => s.kernel = number(&flag, value()?, "amx, f32 or auto")?,
            _ => return Err(format!("unknown argument {flag:?}; {USAGE}")),
        }
    }
    if s.threads == 0 || s.limits.concurrency == 0 {
        return Err("--threads and --concurrency must be at least 1".into());
    }
    Ok(Command::Serve(s))
}

fn main() -> ExitCode {
    let command = match parse(std::env::args().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-worker: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Head { dir, seed } => match head::ensure(&dir, seed) {
            // On stdout, one line; CHANGED marks a change for agent's deploy step.
            Ok(Head::InWeights) => {
                println!("the weights in {} have a classification head", dir.display());
                ExitCode::SUCCESS
            }
            Ok(Head::Present(p)) => {
                println!("head already in {} (seed {seed})", p.display());
                ExitCode::SUCCESS
            }
            Ok(Head::Written(p)) => {
                println!("{CHANGED}wrote {} from seed {seed}", p.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("agent-worker: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(s) => serve(s),
    }
}

fn serve(s: Serve) -> ExitCode {
    let Some(dir) = s.model else {
        eprintln!("agent-worker: no model: set AGENT_WORKER_MODEL or --model to a Hugging Face model folder");
        return ExitCode::from(2);
    };
    // rayon (the model's thread pool) reads the count from here; set before any thread exists.
    // SAFETY: still single-threaded: the runtime below is not built yet.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", s.threads.to_string()) };
    let started = Instant::now();
    let model = match Model::load_with(&dir, s.kernel) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("agent-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let loaded = started.elapsed();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind((s.bind.as_str(), s.port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("agent-worker: cannot listen on {}:{}: {e}", s.bind, s.port);
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "agent-worker: model {} loaded in {:.2} s; {} kernel, {} threads, {} at a time; listening on {}",
            dir.display(),
            loaded.as_secs_f64(),
            s.kernel.name(),
            s.threads,
            s.limits.concurrency,
            listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        match agent_worker::run(listener, model, s.limits, agent_protocol::stop_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agent-worker: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

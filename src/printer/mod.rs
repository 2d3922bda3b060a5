//! The one printer: the only code that writes to stdout and stderr or draws a bar (clippy
//! denies prints elsewhere). Work sends it events over a channel ([`Running`]); the output
//! mode ([`Mode`]) was resolved once, by the CLI.
//!
//! - [`hosts`]: a run over hosts (exec, copy, deploy), with [`logs`] for the per-host files.
//! - [`cloud`]: cloud steps as they go, `agent status`, the end of `agent terminate`.
//! - [`bench`]: a bench's bars and summary.
//! - [`terminal`]: the local terminal of `agent ssh` (raw mode, size, the host prompt).
//! - here: the mode, `agent plan`, one-line notices, a wait's spinner.

pub mod bench;
pub mod cloud;
pub mod hosts;
mod logs;
pub mod terminal;

use crate::plan;
use std::io::{self, Write};
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::mpsc;

use crate::record::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live output above a progress bar, colours unless NO_COLOR.
    Tty { color: bool },
    /// Prefixed lines, for pipes and CI logs.
    Plain,
    /// One JSON object per line on stdout.
    Json,
}

/// A printer task beside the work: events go in through [`Running::tx`];
/// [`Running::finish`] closes the channel and waits for the last line to be written.
pub struct Running<E, R> {
    pub tx: mpsc::Sender<E>,
    task: tokio::task::JoinHandle<io::Result<R>>,
}

impl<E, R> Running<E, R> {
    pub async fn finish(self) -> anyhow::Result<R> {
        drop(self.tx);
        Ok(self.task.await??)
    }
}

/// Prints a plan: readable text, or JSON with the rendered files.
pub fn plan(plan: &plan::Plan, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, plan)?;
        writeln!(out)
    } else {
        write!(out, "{plan}")
    }
}

/// One line on stderr for the operator, outside any run's events (Ctrl-C, what was left).
pub fn notice(text: &str) {
    eprintln!("agent: {text}");
}

/// Where `agent metrics` saved its files (nothing with JSON: stdout stays data).
pub fn metrics_saved(out: &std::path::Path, mode: Mode) -> io::Result<()> {
    if mode != Mode::Json {
        writeln!(
            io::stdout().lock(),
            "metrics: {} (metrics.csv, metrics.json, charts, report.md)",
            out.display()
        )?;
    }
    Ok(())
}

/// A wait shown as it goes: a spinner on a terminal, a line per update otherwise (none once
/// `done`), nothing with JSON.
pub struct Waiting {
    bar: Option<ProgressBar>,
    lines: bool,
}

impl Waiting {
    pub fn new(mode: Mode) -> Waiting {
        let bar = matches!(mode, Mode::Tty { .. }).then(|| {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Waiting {
            bar,
            lines: mode == Mode::Plain,
        }
    }

    pub fn update(&self, text: &str, done: bool) {
        match &self.bar {
            Some(bar) => bar.set_message(text.to_owned()),
            None if self.lines && !done => notice(text),
            None => {}
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `agent status` of a deployment made on an inventory: its hosts from the record.
pub fn record_status(record: &Record, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, record)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "deployment {} (on an inventory; last deploy's record)",
        record.deployment
    )?;
    let hosts = record.access.as_ref().map(|a| a.hosts.as_slice()).unwrap_or_default();
    for h in hosts {
        let key = format!("{}@{}:{}", h.user, h.address, h.port);
        let last = record.hosts.get(&key);
        writeln!(
            out,
            "  host {:<14} {:<12} {:<15} {}",
            h.name,
            h.role.as_deref().unwrap_or("-"),
            h.address,
            last.and_then(|r| r.result.as_deref()).unwrap_or("not deployed yet")
        )?;
        if let Some(fp) = last.and_then(|r| r.host_key.as_deref()) {
            writeln!(out, "    host key {fp}")?;
        }
    }
    Ok(())
}

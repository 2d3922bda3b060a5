//! A run over hosts (exec, copy, deploy): live prefixed lines, a progress bar on a
//! terminal, per-host step lines for deploy, NDJSON with `--json`, and the summary or the
//! hosts × steps table at the end.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use console::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use super::logs::HostLogs;
use super::{Mode, Running};
use crate::event::{Event, HostId, Outcome, Stage, StepStatus, Stream, describe};
use crate::exit::Tally;
use crate::inventory::Host;

/// How each host ended, in host order; `None` for a host that never finished (interrupted
/// before it was reached).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<Option<(Outcome, Duration)>>,
    /// Deploy steps per host, in the order they ended.
    pub steps: Vec<Vec<StepRecord>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub stage: Stage,
    pub status: StepStatus,
    pub detail: String,
    pub elapsed: Duration,
}

impl Report {
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for r in &self.results {
            match r.as_ref().map(|(o, _)| o) {
                Some(Outcome::Exited { code: 0 } | Outcome::Deployed) => t.ok += 1,
                Some(
                    Outcome::Exited { .. } | Outcome::Signaled { .. } | Outcome::TimedOut | Outcome::Failed { .. },
                ) => t.failed += 1,
                Some(Outcome::Unreachable { .. }) => t.unreachable += 1,
                Some(Outcome::Interrupted) | None => t.interrupted += 1,
            }
        }
        t
    }

    /// How many hosts had a step that changed something.
    pub fn changed_hosts(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.iter().any(|r| r.status == StepStatus::Changed))
            .count()
    }
}

pub struct Renderer {
    mode: Mode,
    hosts: Vec<Host>,
    width: usize,
    out: BufWriter<io::Stdout>,
    bar: Option<ProgressBar>,
    /// Deploy on a TTY: one line per host with its current step, above the total bar.
    multi: Option<(MultiProgress, Vec<ProgressBar>)>,
    /// Printed after the summary (e.g. the load balancer's address).
    footer: Vec<String>,
    logs: Option<HostLogs>,
    report: Report,
    /// Printed in the log headers and the JSON summary.
    title: String,
}

const PALETTE: [u8; 6] = [6, 2, 3, 4, 5, 14];

impl Renderer {
    pub fn new(mode: Mode, hosts: Vec<Host>, title: String, log_dir: Option<PathBuf>) -> Self {
        let width = hosts.iter().map(|h| h.name.len()).max().unwrap_or(0);
        let bar = match mode {
            Mode::Tty { .. } => {
                let bar =
                    ProgressBar::with_draw_target(Some(hosts.len() as u64), ProgressDrawTarget::stderr_with_hz(10));
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} hosts {msg} {elapsed}")
                        .expect("static template")
                        .progress_chars("=> "),
                );
                bar.set_message("· 0 failed · 0 unreachable");
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(bar)
            }
            _ => None,
        };
        Renderer {
            mode,
            report: Report {
                results: vec![None; hosts.len()],
                steps: vec![Vec::new(); hosts.len()],
            },
            multi: None,
            footer: Vec::new(),
            logs: log_dir.map(|dir| HostLogs::new(dir, hosts.len())),
            hosts,
            width,
            out: BufWriter::new(io::stdout()),
            bar,
            title,
        }
    }

    /// On a TTY, a line per host showing its current step (for deploys).
    pub fn per_host_lines(mut self) -> Self {
        if let Some(total) = self.bar.take() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let style = ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}").expect("static template");
            let bars = self
                .hosts
                .iter()
                .map(|h| {
                    let b = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                    b.set_prefix(format!("{:<w$}", h.name, w = self.width));
                    b.set_message("queued");
                    b.enable_steady_tick(Duration::from_millis(100));
                    b
                })
                .collect();
            self.bar = Some(multi.add(total));
            self.multi = Some((multi, bars));
        }
        self
    }

    /// Lines printed after the summary.
    pub fn footer(mut self, lines: Vec<String>) -> Self {
        self.footer = lines;
        self
    }

    /// Renders events until every sender is dropped, then prints the summary.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Event>) -> io::Result<Report> {
        while let Some(event) = rx.recv().await {
            self.handle(event)?;
            // Drain what is already queued before flushing: one write per burst, not per line.
            while let Ok(event) = rx.try_recv() {
                self.handle(event)?;
            }
            self.out.flush()?;
        }
        self.finish()
    }

    fn handle(&mut self, event: Event) -> io::Result<()> {
        if let Some(logs) = &mut self.logs {
            logs.record(&self.hosts, &self.title, &event);
        }
        // Recorded for the final table whatever the mode.
        if let Event::Step {
            host,
            stage,
            status,
            detail,
            elapsed,
        } = &event
        {
            self.report.steps[*host].push(StepRecord {
                stage: *stage,
                status: *status,
                detail: detail.clone(),
                elapsed: *elapsed,
            });
        }
        if self.mode == Mode::Json {
            let host = &self.hosts[event.host()].name;
            serde_json::to_writer(&mut self.out, &JsonEvent { host, event: &event })?;
            self.out.write_all(b"\n")?;
            if let Event::Finished { host, outcome, elapsed } = event {
                self.report.results[host] = Some((outcome, elapsed));
            }
            return Ok(());
        }
        match event {
            Event::Line { host, stream, line } => self.line(host, stream, &line)?,
            Event::Notice { host, message } => self.line(host, Stream::Stderr, &format!("agent: {message}"))?,
            Event::Stage { host, stage } => {
                if let Some((_, bars)) = &self.multi {
                    bars[host].set_message(stage.name());
                }
            }
            Event::Step {
                host,
                stage,
                status,
                detail,
                elapsed,
            } => {
                // On a TTY the final table shows steps; plain logs get a line each.
                if self.multi.is_none() && status != StepStatus::Skipped {
                    let text = format!(
                        "agent: {}: {} ({:.2}s)",
                        stage.name(),
                        if detail.is_empty() { status.name() } else { &detail },
                        elapsed.as_secs_f64()
                    );
                    self.line(host, Stream::Stdout, &text)?;
                }
            }
            Event::Finished { host, outcome, elapsed } => {
                if !outcome.is_success() {
                    let text = describe(&outcome);
                    self.line(host, Stream::Stderr, &format!("agent: {text}"))?;
                }
                if let Some((_, bars)) = &self.multi {
                    let word = if outcome.is_success() { "done" } else { "FAILED" };
                    bars[host].finish_with_message(word);
                }
                self.report.results[host] = Some((outcome, elapsed));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                    bar.set_message(self.tally());
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, host: HostId, stream: Stream, line: &str) -> io::Result<()> {
        let name = &self.hosts[host].name;
        let mark = if stream == Stream::Stdout { '|' } else { '!' };
        let text = match self.mode {
            Mode::Tty { color: true } => {
                let style = Style::new().color256(PALETTE[host % PALETTE.len()]);
                let body = if stream == Stream::Stderr {
                    Style::new().red().apply_to(line).to_string()
                } else {
                    line.to_owned()
                };
                format!(
                    "{} {mark} {body}",
                    style.apply_to(format!("{name:<w$}", w = self.width))
                )
            }
            _ => format!("{name:<w$} {mark} {line}", w = self.width),
        };
        match (&self.multi, &self.bar) {
            // Printing through the bars keeps them at the bottom instead of tearing them.
            (Some((multi, _)), _) => {
                self.out.flush()?;
                multi.suspend(|| println!("{text}"));
            }
            (None, Some(bar)) => {
                self.out.flush()?;
                bar.suspend(|| println!("{text}"));
            }
            (None, None) => writeln!(self.out, "{text}")?,
        }
        Ok(())
    }

    fn tally(&self) -> String {
        let t = self.report.tally();
        format!("· {} failed · {} unreachable", t.failed, t.unreachable)
    }

    fn finish(mut self) -> io::Result<Report> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some((multi, bars)) = self.multi.take() {
            for b in bars {
                b.finish_and_clear();
            }
            let _ = multi.clear();
        }
        let log_dir = self.logs.take().map(HostLogs::close);
        let r = &self.report;
        let Tally {
            ok,
            failed,
            unreachable,
            interrupted,
        } = r.tally();
        if self.mode == Mode::Json {
            let summary = serde_json::json!({
                "event": "summary",
                "title": self.title,
                "hosts": r.results.len(),
                "ok": ok, "failed": failed, "unreachable": unreachable, "interrupted": interrupted,
                "changed": r.changed_hosts(),
                "logs": log_dir,
            });
            writeln!(self.out, "{summary}")?;
        } else {
            let color = matches!(self.mode, Mode::Tty { color: true });
            writeln!(self.out)?;
            let deploy = r.steps.iter().any(|s| !s.is_empty());
            if deploy {
                step_table(&mut self.out, &self.hosts, self.width, r, color)?;
            }
            for (i, host) in self.hosts.iter().enumerate().filter(|_| !deploy) {
                let (text, time, good) = match &r.results[i] {
                    Some((o, t)) => (describe(o), format!("{:.2}s", t.as_secs_f64()), o.is_success()),
                    None => ("interrupted before start".to_owned(), "-".to_owned(), false),
                };
                let text = if color && !good {
                    Style::new().red().apply_to(text).to_string()
                } else {
                    text
                };
                writeln!(self.out, "{:<w$}  {:>7}  {text}", host.name, time, w = self.width)?;
            }
            let mut line = format!(
                "{} hosts: {ok} ok, {failed} failed, {unreachable} unreachable",
                r.results.len()
            );
            if interrupted > 0 {
                line += &format!(", {interrupted} interrupted");
            }
            if deploy && ok == r.results.len() {
                line += &match r.changed_hosts() {
                    0 => " · nothing changed: no upload, no install, no restart".to_owned(),
                    n => format!(" · {n} changed"),
                };
            }
            if let Some(dir) = log_dir {
                line += &format!(" · logs in {}", dir.display());
            }
            writeln!(self.out, "{line}")?;
            for f in &self.footer {
                writeln!(self.out, "{f}")?;
            }
        }
        self.out.flush()?;
        Ok(self.report)
    }
}

/// Hosts × deploy steps: each cell the step's time, `*` if it changed the host, `-` if it
/// did not apply, `FAIL`; then the host's result.
fn step_table(out: &mut impl Write, hosts: &[Host], width: usize, report: &Report, color: bool) -> io::Result<()> {
    const CELL: usize = 9;
    // Steps no host took (the host key step outside EC2) get no column.
    let stages: Vec<Stage> = Stage::DEPLOY
        .into_iter()
        .filter(|st| *st != Stage::HostKey || report.steps.iter().flatten().any(|r| r.stage == *st))
        .collect();
    let mut head = format!("{:<w$}", "host", w = width);
    for &st in &stages {
        head += &format!("  {:>CELL$}", st.name());
    }
    writeln!(out, "{head}  result")?;
    for (i, host) in hosts.iter().enumerate() {
        let mut row = format!("{:<w$}", host.name, w = width);
        for &st in &stages {
            let cell = match report.steps[i].iter().find(|r| r.stage == st) {
                None => "".to_owned(),
                Some(r) => match r.status {
                    StepStatus::Skipped => "-".to_owned(),
                    StepStatus::Failed => "FAIL".to_owned(),
                    StepStatus::Changed => format!("{:.2}s*", r.elapsed.as_secs_f64()),
                    StepStatus::Unchanged => format!("{:.2}s ", r.elapsed.as_secs_f64()),
                },
            };
            row += &format!("  {cell:>CELL$}");
        }
        let (text, good) = match &report.results[i] {
            Some((o, t)) => (format!("{} in {:.2}s", describe(o), t.as_secs_f64()), o.is_success()),
            None => ("interrupted before start".to_owned(), false),
        };
        let text = if color && !good {
            Style::new().red().apply_to(text).to_string()
        } else {
            text
        };
        writeln!(out, "{row}  {text}")?;
    }
    writeln!(out, "(* changed the host, - not needed here)")
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    host: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

impl Renderer {
    /// Starts printing a run over hosts; its [`Report`] comes back from `finish`.
    pub fn start(self) -> Running<Event, Report> {
        let (tx, rx) = mpsc::channel(4096);
        Running {
            tx,
            task: tokio::spawn(self.run(rx)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Stream;

    #[test]
    fn json_lines_name_the_host() {
        let e = Event::Line {
            host: 0,
            stream: Stream::Stderr,
            line: "x".into(),
        };
        let s = serde_json::to_string(&JsonEvent {
            host: "web-0",
            event: &e,
        })
        .unwrap();
        assert_eq!(s, r#"{"host":"web-0","event":"line","stream":"stderr","line":"x"}"#);
    }
}

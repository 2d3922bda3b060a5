//! The one printer. It consumes [`Event`]s and owns stdout/stderr: live prefixed lines, a
//! progress bar on a TTY, NDJSON with `--json`, per-host log files, and the final summary.

pub mod bench;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use console::Style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::event::{Event, HostId, Outcome, Stage, StepStatus, Stream, describe};
use crate::exit::Tally;
use crate::inventory::Host;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live output above a progress bar, colours unless NO_COLOR.
    Tty { color: bool },
    /// Prefixed lines, for pipes and CI logs.
    Plain,
    /// One JSON object per line on stdout.
    Json,
}

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
            let host = &self.hosts[host_of(&event)].name;
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

/// Prints a plan: readable text, or JSON with the rendered files.
pub fn plan(plan: &crate::plan::Plan, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, plan)?;
        writeln!(out)
    } else {
        write!(out, "{plan}")
    }
}

/// Prints what `agent status` found: readable text, or JSON.
pub fn status(status: &crate::aws::teardown::Status, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, status)?;
        return writeln!(out);
    }
    writeln!(out, "deployment {} in {}", status.deployment, status.region)?;
    if status.instances.is_empty() && status.security_groups.is_empty() && status.load_balancers.is_empty() {
        return writeln!(out, "  no resources");
    }
    for i in &status.instances {
        writeln!(
            out,
            "  instance {} {:<12} {:<10} {:<9} {:<15} {}",
            i.id,
            i.name,
            i.instance_type,
            i.state,
            i.private_ip.as_deref().unwrap_or("-"),
            i.public_dns.as_deref().unwrap_or("-")
        )?;
        let key = match (&i.host_key, &i.console) {
            (Some(fp), Some(console)) => format!("{fp} (console: {console})"),
            _ => "none generated by agent (pinned at first contact with --trust-first-use)".into(),
        };
        writeln!(out, "    host key {key}")?;
    }
    for lb in &status.load_balancers {
        writeln!(out, "  load balancer {} ({}) http://{}/", lb.name, lb.state, lb.dns)?;
        for (name, healthy, total) in &lb.target_groups {
            writeln!(out, "    target group {name}: {healthy}/{total} healthy")?;
        }
    }
    for g in &status.security_groups {
        writeln!(out, "  security group {g}")?;
    }
    for k in &status.key_pairs {
        writeln!(out, "  key pair {k}")?;
    }
    Ok(())
}

/// The last line of `agent terminate` (with `--json` the deletions were its events).
pub fn terminated(mode: Mode, deployment: &str, region: &str, deleted: usize) -> io::Result<()> {
    if mode == Mode::Json {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    if deleted == 0 {
        writeln!(
            out,
            "nothing to remove: deployment {deployment} has no resources in {region}"
        )
    } else {
        writeln!(
            out,
            "removed {deleted} resources of deployment {deployment} in {region}"
        )
    }
}

fn host_of(e: &Event) -> HostId {
    match e {
        Event::Stage { host, .. }
        | Event::Step { host, .. }
        | Event::Notice { host, .. }
        | Event::Line { host, .. }
        | Event::Finished { host, .. } => *host,
    }
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    host: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

/// Full per-host output in `<dir>/<host>.log`, written as it arrives.
struct HostLogs {
    dir: PathBuf,
    files: Vec<Option<BufWriter<File>>>,
    failed: bool,
}

impl HostLogs {
    fn new(dir: PathBuf, n: usize) -> Self {
        HostLogs {
            dir,
            files: (0..n).map(|_| None).collect(),
            failed: false,
        }
    }

    fn record(&mut self, hosts: &[Host], title: &str, event: &Event) {
        if self.failed {
            return;
        }
        let host = host_of(event);
        if self.files[host].is_none() {
            let opened = std::fs::create_dir_all(&self.dir)
                .and_then(|_| File::create(self.dir.join(format!("{}.log", file_name(&hosts[host].name)))));
            match opened {
                Ok(f) => {
                    let mut w = BufWriter::new(f);
                    let _ = writeln!(
                        w,
                        "# {title} on {} ({}@{}:{})",
                        hosts[host].name, hosts[host].user, hosts[host].address, hosts[host].port
                    );
                    self.files[host] = Some(w);
                }
                Err(e) => {
                    // Logs are a convenience: say so once and keep the run going.
                    eprintln!("agent: cannot write logs to {}: {e}", self.dir.display());
                    self.failed = true;
                    return;
                }
            }
        }
        let w = self.files[host].as_mut().expect("opened above");
        let _ = match event {
            Event::Line {
                stream: Stream::Stdout,
                line,
                ..
            } => writeln!(w, "{line}"),
            Event::Line {
                stream: Stream::Stderr,
                line,
                ..
            } => writeln!(w, "[stderr] {line}"),
            Event::Notice { message, .. } => writeln!(w, "# {message}"),
            Event::Stage { stage, .. } => writeln!(w, "# stage: {}", stage.name()),
            Event::Step {
                stage,
                status,
                detail,
                elapsed,
                ..
            } => writeln!(
                w,
                "# {}: {} {detail} ({:.2}s)",
                stage.name(),
                status.name(),
                elapsed.as_secs_f64()
            ),
            Event::Finished { outcome, elapsed, .. } => {
                writeln!(w, "# {} after {:.2}s", describe(outcome), elapsed.as_secs_f64())
            }
        };
    }

    fn close(self) -> PathBuf {
        for mut w in self.files.into_iter().flatten() {
            let _ = w.flush();
        }
        self.dir
    }
}

/// Host names come from inventories; keep them from escaping the log folder.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Prints what the AWS provider does (resources created, found, deleted; bounded waits) until
/// the channel closes: lines on stdout, a spinner for waits on a TTY, NDJSON with `--json`.
/// Returns how many resources were deleted (`terminate` reports it).
pub async fn cloud(mode: Mode, mut rx: mpsc::Receiver<crate::event::CloudEvent>) -> io::Result<usize> {
    use crate::event::{CloudEvent, ResourceAction};
    let spinner = match mode {
        Mode::Tty { .. } => {
            let bar = ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        }
        _ => None,
    };
    let mut deleted = 0;
    let mut last_wait = LastWait::default();
    while let Some(e) = rx.recv().await {
        if !last_wait.is_news(&e) {
            continue;
        }
        if let CloudEvent::Resource {
            action: ResourceAction::Deleted,
            ..
        } = e
        {
            deleted += 1;
        }
        let line = match (&e, mode) {
            (_, Mode::Json) => serde_json::to_string(&e).map_err(io::Error::other)?,
            (CloudEvent::Resource { action, kind, id, name }, _) => {
                format!("{} {} {name} ({id})", action.name(), kind.name())
            }
            (CloudEvent::Waiting { what, done, total }, _) => {
                if let Some(bar) = &spinner {
                    bar.set_message(format!("waiting for {what}: {done}/{total}"));
                    continue;
                }
                format!("waiting for {what}: {done}/{total}")
            }
            (CloudEvent::Notice { message }, _) => message.clone(),
        };
        match &spinner {
            Some(bar) => bar.println(line),
            None => {
                let mut out = io::stdout().lock();
                writeln!(out, "{line}")?;
                out.flush()?;
            }
        }
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    Ok(deleted)
}

/// The providers report a wait at every poll; only a count that moved is worth a line.
#[derive(Default)]
struct LastWait(Option<(String, usize, usize)>);

impl LastWait {
    fn is_news(&mut self, e: &crate::event::CloudEvent) -> bool {
        let crate::event::CloudEvent::Waiting { what, done, total } = e else {
            return true;
        };
        if self
            .0
            .as_ref()
            .is_some_and(|(w, d, t)| (w, d, t) == (what, done, total))
        {
            return false;
        }
        self.0 = Some((what.clone(), *done, *total));
        true
    }
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

/// Starts printing a cloud step's progress; `finish` returns how many resources it removed.
pub fn start_cloud(mode: Mode) -> Running<crate::event::CloudEvent, usize> {
    let (tx, rx) = mpsc::channel(256);
    Running {
        tx,
        task: tokio::spawn(cloud(mode, rx)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_shown_again_only_when_its_count_moves() {
        use crate::event::CloudEvent;
        let wait = |what: &str, done| CloudEvent::Waiting {
            what: what.into(),
            done,
            total: 3,
        };
        let notice = CloudEvent::Notice { message: "x".into() };
        let mut last = LastWait::default();
        let shown: Vec<bool> = [
            wait("instances running", 0),
            wait("instances running", 0),
            notice.clone(),
            wait("instances running", 0),
            wait("instances running", 2),
            wait("targets healthy", 2),
            notice,
        ]
        .iter()
        .map(|e| last.is_news(e))
        .collect();
        assert_eq!(shown, [true, false, true, false, true, true, true]);
    }

    #[test]
    fn log_file_names_stay_in_folder() {
        assert_eq!(file_name("../etc/passwd"), ".._etc_passwd");
        assert_eq!(file_name("[::1]:22"), "___1__22");
    }

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

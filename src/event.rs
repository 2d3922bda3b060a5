//! What happens on hosts, as data. Workers send [`Event`]s over a channel; one renderer
//! (see [`crate::printer`]) owns the terminal and turns them into output.

use crate::resource;
use std::time::Duration;

use serde::Serialize;

/// Index of a host in the run's host list (the renderer holds the list).
pub type HostId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Where a host's pipeline is; shown on its progress line. The deploy steps double as the
/// columns of deploy's final table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Connecting,
    Running,
    /// Deploy: one round trip for init system, packages, checksums, service states.
    Inspect,
    /// Deploy: `cloud-init status --wait` where cloud-init exists.
    Ready,
    /// Deploy on EC2: the host key from the user data replaced by one made on the host.
    HostKey,
    Packages,
    Files,
    /// Deploy: the plan's setup commands (fetch a model, ...), once the files are in place.
    Setup,
    Services,
    Health,
}

impl Stage {
    /// A deploy's steps, in order (connecting is the first).
    pub const DEPLOY: [Stage; 9] = [
        Stage::Connecting,
        Stage::Inspect,
        Stage::Ready,
        Stage::HostKey,
        Stage::Packages,
        Stage::Files,
        Stage::Setup,
        Stage::Services,
        Stage::Health,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Connecting => "connect",
            Stage::Running => "running",
            Stage::Inspect => "inspect",
            Stage::Ready => "ready",
            Stage::HostKey => "hostkey",
            Stage::Packages => "packages",
            Stage::Files => "files",
            Stage::Setup => "setup",
            Stage::Services => "services",
            Stage::Health => "health",
        }
    }
}

/// How one deploy step ended on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// It changed the host (uploaded, installed, restarted).
    Changed,
    /// It had nothing to do: the host already matched the plan.
    Unchanged,
    /// Not applicable on this host (no cloud-init, no packages).
    Skipped,
    Failed,
}

impl StepStatus {
    /// As in JSON events and the deployment record.
    pub fn name(self) -> &'static str {
        match self {
            StepStatus::Changed => "changed",
            StepStatus::Unchanged => "unchanged",
            StepStatus::Skipped => "skipped",
            StepStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Stage {
        #[serde(skip)]
        host: HostId,
        stage: Stage,
    },
    /// Something the operator must see that is not command output (a newly pinned host key, a retry).
    Notice {
        #[serde(skip)]
        host: HostId,
        message: String,
    },
    Line {
        #[serde(skip)]
        host: HostId,
        stream: Stream,
        line: String,
    },
    /// A deploy step ended.
    Step {
        #[serde(skip)]
        host: HostId,
        stage: Stage,
        status: StepStatus,
        /// What it did, e.g. "2 files, 5.1 MB" or "restarted agent-web.service".
        detail: String,
        #[serde(serialize_with = "as_secs")]
        elapsed: Duration,
    },
    Finished {
        #[serde(skip)]
        host: HostId,
        outcome: Outcome,
        #[serde(serialize_with = "as_secs")]
        elapsed: Duration,
    },
}

impl Event {
    /// The host it is about.
    pub fn host(&self) -> HostId {
        match self {
            Event::Stage { host, .. }
            | Event::Step { host, .. }
            | Event::Notice { host, .. }
            | Event::Line { host, .. }
            | Event::Finished { host, .. } => *host,
        }
    }
}

/// What the AWS provider did or waits for, for the printer (before hosts exist, and in
/// `terminate`, there are no per-host events).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CloudEvent {
    Resource {
        action: ResourceAction,
        kind: resource::Kind,
        id: String,
        name: String,
    },
    /// A bounded wait: `done` of `total` ready so far.
    Waiting {
        what: String,
        done: usize,
        total: usize,
    },
    Notice {
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceAction {
    /// Created by this run (and recorded before the next one was created).
    Created,
    /// Already there from an earlier run of this deployment (resume).
    Found,
    /// Removed.
    Deleted,
}

impl ResourceAction {
    pub fn name(self) -> &'static str {
        match self {
            ResourceAction::Created => "created",
            ResourceAction::Found => "found",
            ResourceAction::Deleted => "deleted",
        }
    }
}

/// How one host's work ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// The command ran and exited with this code (0 is success).
    Exited { code: u32 },
    /// The command was killed by a signal (`TERM`, `KILL`, ...).
    Signaled { signal: String },
    /// The time limit was reached (exit 124 from `timeout`, or KILL after the limit).
    TimedOut,
    /// No command ran, or the connection was lost before it finished.
    Unreachable { reason: String },
    /// Stopped by the operator (Ctrl-C).
    Interrupted,
    /// Deploy: every step passed.
    Deployed,
    /// Deploy: a step failed (its output went out as lines before).
    Failed { stage: Stage, reason: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Exited { code: 0 } | Outcome::Deployed)
    }

    /// Why a command failed (`exit 2`, `timed out`, ...); None if it did not fail that way.
    pub fn command_failure(&self) -> Option<String> {
        match self {
            Outcome::Exited { code } if *code != 0 => Some(format!("exit {code}")),
            Outcome::Signaled { signal } => Some(format!("killed by signal {signal}")),
            Outcome::TimedOut => Some("timed out".into()),
            _ => None,
        }
    }
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Splits a byte stream into lines as chunks arrive, keeping the incomplete tail.
/// A `\r` before the newline (pty output) is dropped; invalid UTF-8 is replaced.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

/// The longest line kept whole: a host that prints more without a newline (a binary, a
/// runaway log line) gets it cut into lines of this size, so memory stays bounded.
pub const MAX_LINE: usize = 16 * 1024;

impl LineSplitter {
    pub fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(String)) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            if self.partial.last() == Some(&b'\r') {
                self.partial.pop();
            }
            self.cut_long(&mut emit);
            emit(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial.clear();
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        self.cut_long(&mut emit);
    }

    /// Emits whole `MAX_LINE` pieces of an overlong partial line.
    fn cut_long(&mut self, emit: &mut impl FnMut(String)) {
        while self.partial.len() > MAX_LINE {
            let piece: Vec<u8> = self.partial.drain(..MAX_LINE).collect();
            emit(String::from_utf8_lossy(&piece).into_owned());
        }
    }

    /// The last line when the stream ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            return None;
        }
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        Some(line)
    }
}

/// One line of the summary or of an error note.
pub fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Exited { .. } | Outcome::Signaled { .. } | Outcome::TimedOut => match o.command_failure() {
            Some(why) => format!("failed: {why}"),
            None => "ok".into(),
        },
        Outcome::Unreachable { reason } => format!("unreachable: {reason}"),
        Outcome::Interrupted => "interrupted".into(),
        Outcome::Deployed => "ok".into(),
        Outcome::Failed { stage, reason } => format!("failed at {}: {reason}", stage.name()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlong_lines_are_cut_not_kept() {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        splitter.push(&long, |l| lines.push(l.len()));
        assert_eq!(lines, [MAX_LINE, MAX_LINE], "cut while it streams");
        splitter.push(b"yz\nok\n", |l| lines.push(l.len()));
        assert_eq!(lines, [MAX_LINE, MAX_LINE, 7, 2]);
    }

    use super::*;

    #[test]
    fn splits_across_chunks() {
        let mut s = LineSplitter::default();
        let mut lines = Vec::new();
        s.push(b"one\ntw", |l| lines.push(l));
        s.push(b"o\r\nthree", |l| lines.push(l));
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(s.finish().as_deref(), Some("three"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    // The renderer adds the host's name; the index is internal.
    fn events_serialize_as_flat_json() {
        let e = Event::Finished {
            host: 3,
            outcome: Outcome::Exited { code: 2 },
            elapsed: Duration::from_millis(1234),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"finished","outcome":{"result":"exited","code":2},"elapsed":1.234}"#
        );
    }
}

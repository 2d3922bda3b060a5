//! Benchmarks of a deployment, as the course labs ran them, with the numbers kept.
//!
//! - [`load`]: the load generator (streams of requests on keep-alive connections; each
//!   answer is a [`load::Sample`] sent over a channel).
//! - [`clusters`]: Lab 1's procedure against the load balancer.
//! - [`inference`]: Lab 2's client against the orchestrator.
//!
//! Both collect a [`Run`] (one aggregator owns the terminal: progress bars per stream), then
//! write the same results folder: `requests.csv` (one row per request), `summary.json`
//! (HDR-histogram percentiles per group, requests per instance), charts and `report.md`.

pub mod clusters;
pub mod inference;
pub mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use agent_protocol::Percentiles;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::format;
use load::{Progress, Reply, Sample, Stream};

/// What the report says of the deployment measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Deployment {
    pub name: String,
    pub description: String,
    /// Where it runs: `local fleet (inventory FILE)` or `EC2 us-east-1`.
    pub place: String,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Instance {
    /// What the instance answers as (EC2: its id; the local fleet: its host name).
    pub id: String,
    pub name: String,
    pub role: String,
    pub instance_type: String,
    pub address: String,
}

/// One bench run: what was sent, and every answer.
#[derive(Debug)]
pub struct Run {
    pub kind: &'static str,
    pub target: String,
    pub started: SystemTime,
    pub streams: Vec<Stream>,
    pub samples: Vec<Sample>,
    pub elapsed: Duration,
    pub interrupted: bool,
    /// Per group, the instances that should answer it (empty: not known).
    pub expected: BTreeMap<String, BTreeSet<String>>,
}

/// Where a run's progress goes as it happens (the printer draws it).
pub trait Watch: Sync {
    /// Stream `stream` got an answer (`ok`: a good one).
    fn sent(&self, stream: usize, ok: bool);
    fn pausing(&self, stream: usize, pause: Duration);
    fn done(&self, stream: usize);
}

/// Sends the streams, telling `watch` of the progress, and collects every sample.
pub async fn drive(
    kind: &'static str,
    target: String,
    streams: Vec<Stream>,
    reading: load::Reading,
    timeout: Duration,
    watch: &dyn Watch,
    cancel: CancellationToken,
) -> Run {
    let (tx, mut rx) = mpsc::channel(4096);
    let started = SystemTime::now();
    let clock = Instant::now();
    let load = tokio::spawn(load::run(streams.clone(), reading, timeout, clock, tx, cancel.clone()));
    let mut samples = Vec::with_capacity(streams.iter().map(Stream::requests).sum());
    while let Some(e) = rx.recv().await {
        match e {
            Progress::Samples(batch) => {
                for s in &batch {
                    watch.sent(s.stream, s.ok());
                }
                samples.extend(batch);
            }
            Progress::Pausing(i, d) => watch.pausing(i, d),
            Progress::Done(i) => watch.done(i),
        }
    }
    let _ = load.await;
    Run {
        kind,
        target,
        started,
        streams,
        samples,
        elapsed: clock.elapsed(),
        interrupted: cancel.is_cancelled(),
        expected: BTreeMap::new(),
    }
}

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub kind: String,
    pub target: String,
    /// RFC 3339, UTC.
    pub started: String,
    pub ended: String,
    pub seconds: f64,
    pub interrupted: bool,
    pub planned: usize,
    pub sent: usize,
    pub ok: usize,
    pub groups: Vec<Group>,
    pub streams: Vec<StreamSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// The path (clusters) or `inference`.
    pub group: String,
    pub sent: usize,
    pub ok: usize,
    /// By kind: `HTTP 503`, or what went wrong.
    pub errors: BTreeMap<String, usize>,
    /// Answered requests per second over the run.
    pub throughput: f64,
    /// Of answered requests, from an HDR histogram (3 significant digits).
    pub latency_ms: Percentiles,
    pub mean_ms: Option<f64>,
    /// Answered requests per instance (or worker process).
    pub responders: BTreeMap<String, usize>,
    /// Expected instances that never answered, and instances that answered but belong elsewhere.
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// Inference: medians of the orchestrator's queueing and the worker's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms_p50: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_ms_p50: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSummary {
    pub name: String,
    pub group: String,
    pub planned: usize,
    pub sent: usize,
    pub ok: usize,
    /// Seconds since the start: first request sent, last answer.
    pub first_s: Option<f64>,
    pub last_s: Option<f64>,
}

impl Run {
    pub fn summary(&self) -> Summary {
        let mut groups: Vec<String> = Vec::new();
        for s in &self.streams {
            if !groups.contains(&s.group) {
                groups.push(s.group.clone());
            }
        }
        let seconds = self.elapsed.as_secs_f64();
        let groups = groups
            .into_iter()
            .map(|g| {
                let samples: Vec<&Sample> = self
                    .samples
                    .iter()
                    .filter(|s| self.streams[s.stream].group == g)
                    .collect();
                group(&g, &samples, seconds, self.expected.get(&g))
            })
            .collect();
        let streams = self
            .streams
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let mine = self.samples.iter().filter(|s| s.stream == i);
                let (mut sent, mut ok, mut first, mut last) = (0, 0, None::<f64>, None::<f64>);
                for s in mine {
                    sent += 1;
                    ok += usize::from(s.ok());
                    let (a, b) = (s.start.as_secs_f64(), (s.start + s.latency).as_secs_f64());
                    first = Some(first.map_or(a, |f| f.min(a)));
                    last = Some(last.map_or(b, |l| l.max(b)));
                }
                StreamSummary {
                    name: st.name.clone(),
                    group: st.group.clone(),
                    planned: st.requests(),
                    sent,
                    ok,
                    first_s: first,
                    last_s: last,
                }
            })
            .collect();
        Summary {
            kind: self.kind.to_owned(),
            target: self.target.clone(),
            started: format::rfc3339(self.started),
            ended: format::rfc3339(self.started + self.elapsed),
            seconds,
            interrupted: self.interrupted,
            planned: self.streams.iter().map(Stream::requests).sum(),
            sent: self.samples.len(),
            ok: self.samples.iter().filter(|s| s.ok()).count(),
            groups,
            streams,
        }
    }

    /// One row per request, in the order answered.
    pub fn write_csv(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "stream,group,start_ms,latency_ms,status,responder,error")?;
        for s in &self.samples {
            let st = &self.streams[s.stream];
            let (status, responder, error) = match &s.outcome {
                Reply::Status { code, answer } => (
                    code.to_string(),
                    answer.responder.as_deref().unwrap_or_default().to_owned(),
                    "",
                ),
                Reply::Failed(e) => (String::new(), String::new(), e.as_str()),
            };
            writeln!(
                out,
                "{},{},{:.3},{:.3},{},{},{}",
                csv(&st.name),
                csv(&st.group),
                s.start.as_secs_f64() * 1e3,
                s.latency.as_secs_f64() * 1e3,
                status,
                csv(&responder),
                csv(error)
            )?;
        }
        Ok(())
    }
}

fn group(name: &str, samples: &[&Sample], seconds: f64, expected: Option<&BTreeSet<String>>) -> Group {
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let mut errors = BTreeMap::new();
    let mut responders = BTreeMap::new();
    let (mut queued, mut inference) = (Vec::new(), Vec::new());
    let mut sum_ms = 0.0;
    for s in samples {
        match &s.outcome {
            Reply::Status { code, answer } if (200..300).contains(code) => {
                // Microseconds; at least 1 so a histogram of a fast loopback run is not empty.
                let _ = hist.record((s.latency.as_micros() as u64).max(1));
                sum_ms += s.latency.as_secs_f64() * 1e3;
                if let Some(r) = &answer.responder {
                    *responders.entry(r.as_ref()).or_insert(0) += 1;
                }
                queued.extend(answer.queued_ms);
                inference.extend(answer.inference_ms);
            }
            Reply::Status { code, .. } => *errors.entry(format!("HTTP {code}")).or_insert(0) += 1,
            Reply::Failed(e) => *errors.entry(e.clone()).or_insert(0) += 1,
        }
    }
    let ok = hist.len() as usize;
    let ms = |q: f64| (ok > 0).then(|| hist.value_at_quantile(q) as f64 / 1e3);
    let responders: BTreeMap<String, usize> = responders.into_iter().map(|(r, n)| (r.to_owned(), n)).collect();
    let (missing, unexpected) = match expected {
        Some(e) if !e.is_empty() => (
            e.iter().filter(|i| !responders.contains_key(*i)).cloned().collect(),
            responders.keys().filter(|r| !e.contains(*r)).cloned().collect(),
        ),
        _ => (vec![], vec![]),
    };
    Group {
        group: name.to_owned(),
        sent: samples.len(),
        ok,
        errors,
        throughput: if seconds > 0.0 { ok as f64 / seconds } else { 0.0 },
        latency_ms: Percentiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: (ok > 0).then(|| hist.max() as f64 / 1e3),
        },
        mean_ms: (ok > 0).then(|| sum_ms / ok as f64),
        responders,
        missing,
        unexpected,
        queued_ms_p50: Percentiles::nearest_rank(queued).p50,
        inference_ms_p50: Percentiles::nearest_rank(inference).p50,
    }
}

/// Quotes a CSV field when it needs it.
fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

impl Group {
    pub const HEADER: [&'static str; 9] = [
        "group",
        "answered",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "instances",
    ];

    /// The summary table's row (text and report).
    pub fn cells(&self) -> [String; 9] {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let l = &self.latency_ms;
        [
            self.group.clone(),
            self.ok.to_string(),
            (self.sent - self.ok).to_string(),
            format!("{:.1}", self.throughput),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max),
            self.responders.len().to_string(),
        ]
    }
}

impl Summary {
    /// Every request sent was answered, each by an instance of its own group.
    pub fn as_expected(&self) -> bool {
        self.sent == self.ok && self.groups.iter().all(|g| g.unexpected.is_empty())
    }

    /// The table printed at the end.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} bench against {}: {} of {} requests answered in {:.1} s{}",
            self.kind,
            self.target,
            self.ok,
            self.planned,
            self.seconds,
            if self.interrupted { " (interrupted)" } else { "" }
        );
        let width = self.groups.iter().map(|g| g.group.len()).max().unwrap_or(5).max(5);
        for row in std::iter::once(Group::HEADER.map(str::to_owned)).chain(self.groups.iter().map(Group::cells)) {
            let _ = write!(s, "{:<width$}", row[0]);
            for (i, cell) in row[1..].iter().enumerate() {
                let w = Group::HEADER[i + 1].len().max(7);
                let _ = write!(s, "  {cell:>w$}");
            }
            let _ = writeln!(s);
        }
        for g in &self.groups {
            let _ = write!(s, "{} per instance:", g.group);
            for (r, n) in &g.responders {
                let _ = write!(s, "  {r} {n} ({:.0} %)", 100.0 * *n as f64 / g.ok.max(1) as f64);
            }
            let _ = writeln!(s);
            if let (Some(q), Some(i)) = (g.queued_ms_p50, g.inference_ms_p50) {
                let _ = writeln!(s, "{}: median {q:.1} ms queued, {i:.1} ms in inference", g.group);
            }
            if !g.missing.is_empty() {
                let _ = writeln!(s, "{}: never answered: {}", g.group, g.missing.join(", "));
            }
            if !g.unexpected.is_empty() {
                let _ = writeln!(
                    s,
                    "{}: answered by instances of another role: {}",
                    g.group,
                    g.unexpected.join(", ")
                );
            }
            for (e, n) in &g.errors {
                let _ = writeln!(s, "{}: error ×{n}: {e}", g.group);
            }
        }
        s
    }
}

/// Where results go by default: `PARENT/KIND-YYYYMMDD-HHMMSS` under the current directory.
pub fn default_out(parent: &str, kind: &str, started: SystemTime) -> PathBuf {
    PathBuf::from(parent).join(format!("{kind}-{}", format::stamp(started)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;
    use hyper::body::Bytes;
    use load::{Answer, Phase};

    fn stream(name: &str, group: &str, n: usize) -> Stream {
        Stream {
            name: name.into(),
            group: group.into(),
            method: Method::GET,
            url: format!("http://127.0.0.1{group}").parse().unwrap(),
            body: Bytes::new(),
            phases: vec![Phase::Requests(n)],
        }
    }

    fn sample(stream: usize, ms: u64, outcome: Reply) -> Sample {
        Sample {
            stream,
            start: Duration::from_millis(ms),
            latency: Duration::from_millis(ms),
            outcome,
        }
    }

    fn answered(by: &str) -> Reply {
        Reply::Status {
            code: 200,
            answer: Answer {
                responder: Some(by.into()),
                ..Answer::default()
            },
        }
    }

    #[test]
    fn groups_count_answers_errors_and_misroutes() {
        let run = Run {
            kind: "clusters",
            target: "http://lb".into(),
            started: SystemTime::UNIX_EPOCH,
            streams: vec![
                stream("cluster1 A", "/cluster1", 3),
                stream("cluster2 A", "/cluster2", 2),
            ],
            samples: vec![
                sample(0, 10, answered("a")),
                sample(0, 20, answered("a")),
                sample(1, 30, answered("x")),
                sample(
                    0,
                    40,
                    Reply::Status {
                        code: 503,
                        answer: Answer::default(),
                    },
                ),
                sample(1, 50, Reply::Failed("no answer within 10s".into())),
            ],
            elapsed: Duration::from_secs(2),
            interrupted: false,
            expected: BTreeMap::from([
                ("/cluster1".into(), BTreeSet::from(["a".into(), "b".into()])),
                ("/cluster2".into(), BTreeSet::from(["y".into()])),
            ]),
        };
        let s = run.summary();
        assert_eq!((s.planned, s.sent, s.ok), (5, 5, 3));
        assert_eq!(s.started, "1970-01-01T00:00:00Z");
        let c1 = &s.groups[0];
        assert_eq!((c1.group.as_str(), c1.sent, c1.ok), ("/cluster1", 3, 2));
        assert_eq!(c1.errors, BTreeMap::from([("HTTP 503".into(), 1)]));
        assert_eq!(c1.responders, BTreeMap::from([("a".into(), 2)]));
        assert_eq!(
            (c1.missing.clone(), c1.unexpected.clone()),
            (vec!["b".to_owned()], vec![])
        );
        // HDR values are within 0.1 % of the real ones.
        assert!((c1.latency_ms.p50.unwrap() - 10.0).abs() < 0.02, "{:?}", c1.latency_ms);
        assert!((c1.latency_ms.max.unwrap() - 20.0).abs() < 0.02);
        assert_eq!(c1.throughput, 1.0);
        let c2 = &s.groups[1];
        assert_eq!(c2.unexpected, ["x"]);
        assert_eq!(c2.missing, ["y"]);
        assert_eq!(s.streams[1].last_s, Some(0.1));
        assert!(!s.as_expected());

        let mut csv = Vec::new();
        run.write_csv(&mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), 6);
        assert_eq!(csv.lines().nth(1), Some("cluster1 A,/cluster1,10.000,10.000,200,a,"));
        assert_eq!(
            csv.lines().nth(5),
            Some("cluster2 A,/cluster2,50.000,50.000,,,no answer within 10s")
        );
    }

    #[test]
    fn default_folder_is_stamped() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            default_out("bench", "clusters", t),
            std::path::Path::new("bench/clusters-20261118-110640")
        );
    }
}

//! `agent metrics` (and the end of `agent bench` on EC2): the deployment's CloudWatch
//! series over a bench window with margins, each at its own period (EC2's basic monitoring:
//! 5 minutes; detailed monitoring and the load balancer: 1 minute), polled until the data points cover
//! the window (CloudWatch posts them minutes late) instead of a fixed sleep, bounded by
//! `wait`. Saved as `metrics.csv` and `metrics.json` beside the bench results, charted, and
//! added to the report.

use crate::exit;
use crate::format;
use crate::results::chart;
use crate::results::report;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::aws::cloudwatch::{self, Query, Series, Targets};
use crate::aws::{Aws, lookup};
use crate::printer::{self, Mode};

#[derive(Debug, Clone)]
pub struct MetricsSettings {
    pub deployment: String,
    pub region: Option<String>,
    /// Give up waiting for CloudWatch after this long (and save what it had).
    pub wait: Duration,
}

/// The bench's time span, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// Before and after the bench, so the charts show the idle level around it.
const MARGIN: i64 = 120;

impl Window {
    pub fn around(started: SystemTime, elapsed: Duration) -> Window {
        let start = started.duration_since(UNIX_EPOCH).unwrap_or_default();
        let end = start + elapsed;
        Window {
            start: start.as_secs() as i64,
            end: end.as_secs_f64().ceil() as i64,
        }
    }

    /// What is asked of CloudWatch: whole periods, with margins.
    pub fn query_span(&self) -> (i64, i64) {
        let p = cloudwatch::BASIC;
        (
            (self.start - MARGIN).div_euclid(p) * p,
            (self.end + MARGIN).div_euclid(p) * p + p,
        )
    }

    /// A series covers the bench once it has a data point for the period (at its own
    /// resolution) in which the bench ended. Series that only exist under load (request
    /// counts per target group, response times) are not waited for: a target group the
    /// bench never reached has no data at all.
    pub fn covered(&self, s: &Series) -> bool {
        let last = self.end.div_euclid(s.query.resolution) * s.query.resolution;
        s.points.iter().any(|(t, _)| *t >= last)
    }
}

/// The series that must be covered: every instance's CPU and the load balancer's count.
fn awaited(q: &Query) -> bool {
    q.metric == "CPUUtilization" || (q.metric == "RequestCount" && q.dimensions.len() == 1)
}

/// `agent metrics`: fetch, save, and say where.
pub async fn run(
    m: &MetricsSettings,
    window: Window,
    out: &Path,
    mode: Mode,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let status = fetch(m, window, out, mode, cancel).await?;
    printer::metrics_saved(out, mode)?;
    Ok(status)
}

/// Finds the deployment's instances, load balancer and target groups, then
/// [`collect`]s.
pub async fn fetch(
    m: &MetricsSettings,
    window: Window,
    out: &Path,
    mode: Mode,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let aws = Aws::connect(m.region.as_deref()).await?;
    let targets = lookup::deployment(&aws, &m.deployment).await?.targets();
    if targets.instances.is_empty() && targets.load_balancer.is_none() {
        anyhow::bail!(
            "deployment {} has no instances or load balancer in {}: check the name (agent status {0})",
            m.deployment,
            aws.region
        );
    }
    collect(&aws, &targets, m, window, out, mode, cancel).await
}

/// Fetches the targets' series, waits for coverage, saves into `out`; exit status 0, or 2 when
/// CloudWatch had not covered the window by the deadline (what it had is saved).
pub async fn collect(
    aws: &Aws,
    targets: &Targets,
    m: &MetricsSettings,
    window: Window,
    out: &Path,
    mode: Mode,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let queries = cloudwatch::queries(targets);
    let (start, end) = window.query_span();
    let deadline = tokio::time::Instant::now() + m.wait;
    let waiting = printer::Waiting::new(mode);
    let waited = tokio::time::Instant::now();
    let mut series;
    loop {
        series = cloudwatch::get(aws, &queries, start, end).await?;
        let due: Vec<&Series> = series.iter().filter(|s| awaited(&s.query)).collect();
        let done = due.iter().filter(|s| window.covered(s)).count();
        let line = format!(
            "waiting for CloudWatch to cover the bench: {done}/{} series ({:.0} s of at most {:.0} s)",
            due.len(),
            waited.elapsed().as_secs_f64(),
            m.wait.as_secs_f64()
        );
        // Off a terminal, a line per poll (every 20 s), none once covered.
        waiting.update(&line, done == due.len());
        if done == due.len() || cancel.is_cancelled() {
            break;
        }
        let every = Duration::from_secs(20);
        if tokio::time::Instant::now() + every > deadline {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => break,
        }
    }
    waiting.finish();
    save(&series, out)?;
    chart::metrics(&series, window.start, out)?;
    report::write(out)?;
    let missing: Vec<&str> = series
        .iter()
        .filter(|s| awaited(&s.query) && !window.covered(s))
        .map(|s| s.query.label.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    if !cancel.is_cancelled() {
        printer::notice(&format!(
            "CloudWatch had not posted data up to the bench's end for {} series after {:.0} s ({}); saved what it had: run `agent metrics {} --bench {}` again later",
            missing.len(),
            m.wait.as_secs_f64(),
            missing.join(", "),
            m.deployment,
            out.display()
        ));
    }
    Ok(if cancel.is_cancelled() {
        exit::INTERRUPTED
    } else {
        exit::FAILED
    })
}

/// `metrics.csv` (one row per data point) and `metrics.json` (the series).
fn save(series: &[Series], out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join("metrics.json");
    std::fs::write(&path, serde_json::to_vec_pretty(series)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let path = out.join("metrics.csv");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?,
    );
    (|| -> std::io::Result<()> {
        writeln!(f, "namespace,metric,stat,dimensions,label,timestamp,value")?;
        for s in series {
            let q = &s.query;
            let dims: Vec<String> = q.dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for (t, v) in &s.points {
                writeln!(
                    f,
                    "{},{},{},{},\"{}\",{},{}",
                    q.namespace,
                    q.metric,
                    q.stat,
                    dims.join(" "),
                    q.label,
                    format::rfc3339(UNIX_EPOCH + Duration::from_secs(*t as u64)),
                    v
                )?;
            }
        }
        f.flush()
    })()
    .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(metric: &str, resolution: i64, points: &[i64]) -> Series {
        Series {
            query: Query {
                id: "m0".into(),
                namespace: "AWS/EC2".into(),
                metric: metric.into(),
                stat: "Average".into(),
                dimensions: vec![("InstanceId".into(), "i-1".into())],
                label: "x".into(),
                resolution,
            },
            points: points.iter().map(|t| (*t, 1.0)).collect(),
        }
    }

    #[test]
    fn the_window_is_whole_periods_with_margins_and_covered_at_its_end() {
        let w = Window::around(
            UNIX_EPOCH + Duration::from_millis(1_000_030_500),
            Duration::from_millis(100_200),
        );
        assert_eq!(
            w,
            Window {
                start: 1_000_030,
                end: 1_000_131
            }
        );
        // Whole 5-minute periods (basic monitoring's; minutes fit in them):
        // 1_000_030 - 120 = 999_910 → 999_900; 1_000_131 + 120 = 1_000_251 → 1_000_200 + 300.
        assert_eq!(w.query_span(), (999_900, 1_000_500));
        // Per minute: the minute holding the end (1_000_080) must be there.
        assert!(!w.covered(&series("RequestCount", 60, &[1_000_020])));
        assert!(w.covered(&series("RequestCount", 60, &[1_000_020, 1_000_080])));
        // Basic EC2 monitoring: the 5-minute period holding the end (999_900).
        assert!(w.covered(&series("CPUUtilization", 300, &[999_900])));
        assert!(!w.covered(&series("CPUUtilization", 300, &[999_600])));
    }
}

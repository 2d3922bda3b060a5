//! `report.md`: one Markdown page per results folder, built from what the folder holds
//! (deployment.json, summary.json, metrics.json, the charts), so `agent metrics` can add to a
//! bench's report later by writing it again.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::aws::cloudwatch::Series;
use crate::bench::{Deployment, Group, Summary};

pub fn write(dir: &Path) -> anyhow::Result<PathBuf> {
    let read = |name: &str| std::fs::read(dir.join(name)).ok();
    let deployment: Option<Deployment> = read("deployment.json").and_then(|b| serde_json::from_slice(&b).ok());
    let summary: Option<Summary> = read("summary.json").and_then(|b| serde_json::from_slice(&b).ok());
    let series: Option<Vec<Series>> = read("metrics.json").and_then(|b| serde_json::from_slice(&b).ok());
    let text = render(deployment.as_ref(), summary.as_ref(), series.as_deref(), |chart| {
        dir.join(format!("{chart}.png")).exists()
    });
    let path = dir.join("report.md");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The page, from the folder's data; `has` says whether a chart was drawn.
pub fn render(
    deployment: Option<&Deployment>,
    summary: Option<&Summary>,
    series: Option<&[Series]>,
    has: impl Fn(&str) -> bool,
) -> String {
    let mut s = String::new();
    let title = match (summary, deployment) {
        (Some(b), Some(d)) => format!("{} bench of {}", b.kind, d.name),
        (Some(b), None) => format!("{} bench", b.kind),
        (None, Some(d)) => format!("metrics of {}", d.name),
        (None, None) => "metrics".into(),
    };
    let _ = writeln!(s, "# {title}\n");
    let chart = |s: &mut String, name: &str, alt: &str| {
        if has(name) {
            let _ = writeln!(s, "![{alt}]({name}.png)\n([SVG]({name}.svg))\n");
        }
    };
    if let Some(d) = deployment {
        deployment_section(&mut s, d);
    }
    if let Some(b) = summary {
        bench_section(&mut s, b, &chart);
    }
    if let Some(series) = series {
        cloudwatch_section(&mut s, series, &chart);
    }
    s
}

/// A chart's image and SVG link, when the folder holds it.
type Chart<'a> = dyn Fn(&mut String, &str, &str) + 'a;

fn deployment_section(s: &mut String, d: &Deployment) {
    let _ = writeln!(s, "## Deployment\n");
    let place = if d.place.is_empty() {
        String::new()
    } else {
        format!(" ({})", d.place)
    };
    let _ = writeln!(s, "{} — {}{place}.\n", d.name, d.description);
    if !d.instances.is_empty() {
        let _ = writeln!(s, "| instance | name | role | type | address |\n|---|---|---|---|---|");
        for i in &d.instances {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                i.id, i.name, i.role, i.instance_type, i.address
            );
        }
        let _ = writeln!(s);
    }
}

fn bench_section(s: &mut String, b: &Summary, chart: &Chart<'_>) {
    let _ = writeln!(s, "## Bench\n");
    let _ = writeln!(
        s,
        "Against {} from {} to {} ({:.1} s): {} of {} requests answered{}.\n",
        b.target,
        b.started,
        b.ended,
        b.seconds,
        b.ok,
        b.planned,
        if b.interrupted { ", interrupted" } else { "" }
    );
    let _ = writeln!(s, "| {} |", Group::HEADER.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(Group::HEADER.len() - 1));
    for g in &b.groups {
        let _ = writeln!(s, "| {} |", g.cells().join(" | "));
    }
    let _ = writeln!(
        s,
        "\n| thread | group | sent | answered | first (s) | last (s) |\n|---|---|---:|---:|---:|---:|"
    );
    for t in &b.streams {
        let _ = writeln!(
            s,
            "| {} | {} | {} of {} | {} | {} | {} |",
            t.name,
            t.group,
            t.sent,
            t.planned,
            t.ok,
            t.first_s.map_or("–".into(), |v| format!("{v:.2}")),
            t.last_s.map_or("–".into(), |v| format!("{v:.2}"))
        );
    }
    let _ = writeln!(s);
    chart(s, "latency", "latency of each request over time");
    chart(s, "percentiles", "latency percentiles per group");
    let _ = writeln!(s, "### Spread over instances\n");
    for g in &b.groups {
        let counts: Vec<usize> = g.responders.values().copied().collect();
        let (lo, hi) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        let _ = write!(
            s,
            "- {}: {} instances answered, {lo} to {hi} requests each",
            g.group,
            g.responders.len()
        );
        if !g.missing.is_empty() {
            let _ = write!(s, "; never answered: {}", g.missing.join(", "));
        }
        if !g.unexpected.is_empty() {
            let _ = write!(
                s,
                "; answered by instances of another role: {}",
                g.unexpected.join(", ")
            );
        }
        let _ = writeln!(s);
        for (e, n) in &g.errors {
            let _ = writeln!(s, "  - error ×{n}: {e}");
        }
    }
    let _ = writeln!(s);
    chart(s, "instances", "requests answered per instance");
    let _ = writeln!(
        s,
        "Per-request data: [requests.csv](requests.csv); summary: [summary.json](summary.json).\n"
    );
}

fn cloudwatch_section(s: &mut String, series: &[Series], chart: &Chart<'_>) {
    let _ = writeln!(s, "## CloudWatch\n");
    let _ = writeln!(
        s,
        "Periods: 5 minutes for instances on basic monitoring, 1 minute for instances with detailed monitoring and for the load balancer; RequestCount and NetworkOut as Sum per period, CPUUtilization and TargetResponseTime as Average. Data: [metrics.csv](metrics.csv), [metrics.json](metrics.json).\n"
    );
    let _ = writeln!(
        s,
        "| metric | stat | series | data points | total or mean |\n|---|---|---|---:|---:|"
    );
    for x in series {
        let q = &x.query;
        let n = x.points.len();
        let sum: f64 = x.points.iter().map(|p| p.1).sum();
        let value = match (n, q.stat.as_str()) {
            (0, _) => "no data".to_owned(),
            (_, "Sum") => format!("{sum:.0}"),
            _ => format!("{:.3}", sum / n as f64),
        };
        let _ = writeln!(s, "| {} | {} | {} | {n} | {value} |", q.metric, q.stat, q.label);
    }
    let _ = writeln!(s);
    chart(s, "requests", "requests per target group and for the load balancer");
    chart(s, "response-time", "target response time");
    chart(s, "cpu", "CPU utilisation per instance");
    chart(s, "network-out", "network out per instance");
}

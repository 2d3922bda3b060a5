//! Charts for the report, drawn here as PNG and SVG (plotters, with an embedded DejaVu Sans so
//! no system font or fontconfig is needed): latency over time and percentiles per group,
//! requests per instance, and the CloudWatch series.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::aws::cloudwatch::Series;
use crate::bench::load::Reply;
use crate::bench::{Run, Summary};

static FONT: &[u8] = include_bytes!("DejaVuSans.ttf");
const SIZE: (u32, u32) = (1100, 600);
const FAMILY: &str = "sans-serif";

/// Series of (x, y) points, joined by lines or as dots.
pub struct Lines {
    pub title: String,
    pub x: String,
    pub y: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    pub dots: bool,
}

/// Horizontal bars, coloured by group.
pub struct Bars {
    pub title: String,
    pub x: String,
    /// (label, value, group index).
    pub bars: Vec<(String, f64, usize)>,
    pub groups: Vec<String>,
}

enum Chart {
    Lines(Lines),
    Bars(Bars),
}

/// The bench's charts: `latency`, `percentiles`, `instances` (.png and .svg).
pub fn bench(run: &Run, summary: &Summary, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let groups: Vec<String> = summary.groups.iter().map(|g| g.group.clone()).collect();
    let mut over_time = Vec::new();
    let mut thinned = false;
    let mut percentiles = Vec::new();
    for g in &groups {
        let ok = run
            .samples
            .iter()
            .filter(|s| s.ok() && run.streams[s.stream].group == *g);
        let points: Vec<(f64, f64)> = ok
            .map(|s| (s.start.as_secs_f64(), s.latency.as_secs_f64() * 1e3))
            .collect();
        let mut sorted: Vec<f64> = points.iter().map(|p| p.1).collect();
        sorted.sort_by(f64::total_cmp);
        // At most ~1000 points per curve; the last (the maximum) always drawn.
        let step = (sorted.len() / 1000).max(1);
        let n = sorted.len() as f64;
        let mut curve: Vec<(f64, f64)> = sorted
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i + 1 == sorted.len())
            .map(|(i, v)| (100.0 * (i + 1) as f64 / n, *v))
            .collect();
        curve.dedup_by(|a, b| a.0 == b.0);
        // A dot per request up to DOTS per group (the lab's 2500 all show); beyond, every
        // k-th request and every one slower than p99, so spikes stay visible.
        const DOTS: usize = 20_000;
        let points = if points.len() > DOTS {
            thinned = true;
            let p99 = sorted[sorted.len() * 99 / 100];
            let k = points.len().div_ceil(DOTS);
            points
                .into_iter()
                .enumerate()
                .filter(|(i, p)| i % k == 0 || p.1 >= p99)
                .map(|(_, p)| p)
                .collect()
        } else {
            points
        };
        over_time.push((g.clone(), points));
        percentiles.push((g.clone(), curve));
    }
    let mut bars = Vec::new();
    for (i, g) in summary.groups.iter().enumerate() {
        for (who, n) in &g.responders {
            bars.push((who.clone(), *n as f64, i));
        }
    }
    let failed = run
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Reply::Failed(_)))
        .count();
    let mut files = draw(
        dir,
        "latency",
        Chart::Lines(Lines {
            title: format!(
                "{}{}",
                if thinned {
                    "Latency of answered requests (a sample, and every one above p99)"
                } else {
                    "Latency of every answered request"
                },
                if failed > 0 {
                    format!(" ({failed} failed, not shown)")
                } else {
                    String::new()
                }
            ),
            x: "seconds since the bench started".into(),
            y: "latency (ms)".into(),
            series: over_time,
            dots: true,
        }),
    )?;
    files.extend(draw(
        dir,
        "percentiles",
        Chart::Lines(Lines {
            title: "Latency percentiles".into(),
            x: "percentile".into(),
            y: "latency (ms)".into(),
            series: percentiles,
            dots: false,
        }),
    )?);
    files.extend(draw(
        dir,
        "instances",
        Chart::Bars(Bars {
            title: "Requests answered per instance".into(),
            x: "requests".into(),
            bars,
            groups,
        }),
    )?);
    Ok(files)
}

/// What one point of `metric`'s series covers: "per 5 minutes" (EC2's basic monitoring),
/// "per minute", or both when instances differ.
fn per(series: &[Series], metric: &str) -> &'static str {
    let mut periods = series
        .iter()
        .filter(|s| s.query.metric == metric)
        .map(|s| s.query.resolution);
    let first = periods.next();
    match (first, periods.all(|p| Some(p) == first)) {
        (Some(300), true) => "per 5 minutes",
        (_, true) => "per minute",
        (_, false) => "per 5 minutes, per minute with detailed monitoring",
    }
}

/// The CloudWatch charts, x in minutes since `origin` (unix seconds, the bench's start). A
/// metric with no data point at all gets no chart (the report says so).
pub fn metrics(series: &[Series], origin: i64, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let charts = [
        (
            "cpu",
            "CPUUtilization",
            "CPU utilisation per instance (Average",
            "%",
            1.0,
        ),
        ("network-out", "NetworkOut", "Network out per instance (Sum", "MB", 1e-6),
        ("requests", "RequestCount", "Requests (Sum", "requests", 1.0),
        (
            "response-time",
            "TargetResponseTime",
            "Target response time (Average",
            "ms",
            1e3,
        ),
    ];
    let mut files = Vec::new();
    for (name, metric, title, unit, scale) in charts {
        let title = format!("{title} {})", per(series, metric));
        let lines: Vec<(String, Vec<(f64, f64)>)> = series
            .iter()
            .filter(|s| s.query.metric == metric && !s.points.is_empty())
            .map(|s| {
                let pts = s
                    .points
                    .iter()
                    .map(|(t, v)| ((t - origin) as f64 / 60.0, v * scale))
                    .collect();
                (s.query.label.clone(), pts)
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        files.extend(draw(
            dir,
            name,
            Chart::Lines(Lines {
                title,
                x: "minutes from the start of the bench window".into(),
                y: unit.into(),
                series: lines,
                dots: false,
            }),
        )?);
    }
    Ok(files)
}

fn draw(dir: &Path, name: &str, chart: Chart) -> anyhow::Result<Vec<PathBuf>> {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // The font is compiled in and parsed by a unit test, so this cannot fail at run time.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            unreachable!("the embedded font is a valid TTF");
        }
    });
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        paint(&root, &chart).map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        paint(&root, &chart).map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", svg.display()))?;
    }
    Ok(vec![png, svg])
}

type Drawn<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn paint<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> Drawn<DB> {
    root.fill(&WHITE)?;
    match chart {
        Chart::Lines(c) => lines(root, c)?,
        Chart::Bars(c) => bars(root, c)?,
    }
    root.present()
}

fn color(i: usize) -> RGBAColor {
    Palette99::pick(i).mix(1.0)
}

fn lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Lines) -> Drawn<DB> {
    let all = || c.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    // Positive data close to zero (seconds since the start, percentiles) starts at zero.
    if x0 > 0.0 && x0 < 0.1 * x1 {
        x0 = 0.0;
    }
    if x1 - x0 < 1e-9 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let y1 = all().map(|p| p.1).fold(0.0, f64::max);
    let y1 = if y1 > 0.0 { y1 * 1.08 } else { 1.0 };
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FAMILY, 24))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, 0f64..y1)?;
    chart
        .configure_mesh()
        .x_desc(&c.x)
        .y_desc(&c.y)
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, (name, points)) in c.series.iter().enumerate() {
        let col = color(i);
        if c.dots {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 2, col.mix(0.6).filled())))?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, col.filled()));
        } else {
            chart
                // Dots mark the data points where they are few enough to tell apart.
                .draw_series(
                    LineSeries::new(points.iter().copied(), col.stroke_width(2)).point_size(if points.len() <= 60 {
                        3
                    } else {
                        0
                    }),
                )?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(3)));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 16))
        .draw()
}

fn bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Bars) -> Drawn<DB> {
    let n = c.bars.len().max(1);
    let max = c.bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1.0);
    let label_width = c.bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(4) as u32 * 8 + 24;
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FAMILY, 24))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(label_width.min(420))
        .build_cartesian_2d(0f64..max * 1.15, (0..n - 1).into_segmented())?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => c.bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(&c.x)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(n)
        .y_label_formatter(&label)
        .label_style((FAMILY, 16))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (g, name) in c.groups.iter().enumerate() {
        let col = color(g);
        chart
            .draw_series(c.bars.iter().enumerate().filter(|(_, b)| b.2 == g).map(|(i, b)| {
                let mut r = Rectangle::new(
                    [(0.0, SegmentValue::Exact(i)), (b.1, SegmentValue::Exact(i + 1))],
                    col.filled(),
                );
                r.set_margin(3, 3, 0, 0);
                r
            }))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
        chart.draw_series(
            c.bars
                .iter()
                .enumerate()
                .filter(|(_, b)| b.2 == g)
                .map(|(i, b)| Text::new(format!(" {}", b.1), (b.1, SegmentValue::CenterOf(i)), (FAMILY, 15))),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 16))
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::cloudwatch::Query;

    #[test]
    fn a_point_is_labelled_with_the_period_it_covers() {
        let of = |metric: &str, resolution: i64| Series {
            query: Query {
                id: "m0".into(),
                namespace: "AWS/EC2".into(),
                metric: metric.into(),
                stat: "Average".into(),
                dimensions: vec![],
                label: "x".into(),
                resolution,
            },
            points: vec![(0, 1.0)],
        };
        let basic = [of("CPUUtilization", 300), of("RequestCount", 60)];
        assert_eq!(per(&basic, "CPUUtilization"), "per 5 minutes");
        assert_eq!(per(&basic, "RequestCount"), "per minute");
        let mixed = [of("CPUUtilization", 300), of("CPUUtilization", 60)];
        assert_eq!(
            per(&mixed, "CPUUtilization"),
            "per 5 minutes, per minute with detailed monitoring"
        );
    }

    #[test]
    fn both_kinds_draw_into_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let files = draw(
            dir.path(),
            "l",
            Chart::Lines(Lines {
                title: "t".into(),
                x: "x".into(),
                y: "y".into(),
                series: vec![("a".into(), vec![(0.0, 1.0), (1.0, 3.0)]), ("b".into(), vec![])],
                dots: false,
            }),
        )
        .unwrap();
        assert_eq!(files, [dir.path().join("l.png"), dir.path().join("l.svg")]);
        let png = std::fs::read(&files[0]).unwrap();
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5000,
            "{} bytes",
            png.len()
        );
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.contains(">\nt\n</text>"), "{svg}");
        draw(
            dir.path(),
            "b",
            Chart::Bars(Bars {
                title: "bars".into(),
                x: "n".into(),
                bars: vec![("one".into(), 3.0, 0)],
                groups: vec!["g".into()],
            }),
        )
        .unwrap();
        assert!(dir.path().join("b.png").exists());
    }
}

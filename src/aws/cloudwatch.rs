//! CloudWatch: the course's graphs as data. Which series a deployment has (per instance,
//! per target group, for the load balancer) is pure data ([`queries`]); [`get`] fetches them
//! with GetMetricData, one call per 500 queries.

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_smithy_types::DateTime;
use serde::{Deserialize, Serialize};

use super::{Aws, AwsError, Call};

/// EC2's basic monitoring posts a point every 5 minutes; detailed monitoring and the load
/// balancer's metrics, every minute. Each series is asked for at its own resolution, so a
/// 5-minute sum is never shown as a minute's.
pub const BASIC: i64 = 300;
pub const DETAILED: i64 = 60;

/// What a deployment has to measure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// (instance id, name).
    pub instances: Vec<(String, String)>,
    /// The instances launched with detailed monitoring (1-minute EC2 metrics).
    pub detailed: std::collections::BTreeSet<String>,
    /// The load balancer's ARN.
    pub load_balancer: Option<String>,
    /// (target group ARN, name).
    pub target_groups: Vec<(String, String)>,
}

/// One series to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// GetMetricData's id for it (`m0`, `m1`, ...).
    pub id: String,
    pub namespace: String,
    pub metric: String,
    /// `Sum` for counts and bytes (an average of RequestCount is not a count), `Average` for
    /// utilisation and response time.
    pub stat: String,
    pub dimensions: Vec<(String, String)>,
    /// What charts and tables call it.
    pub label: String,
    /// The series' resolution, seconds: its period in GetMetricData (EC2 without detailed
    /// monitoring: 300).
    pub resolution: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    #[serde(flatten)]
    pub query: Query,
    /// (unix seconds, value), oldest first.
    pub points: Vec<(i64, f64)>,
}

/// `app/NAME/ID` from `arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID`,
/// the form CloudWatch's `LoadBalancer` dimension takes.
pub fn load_balancer_dimension(arn: &str) -> Option<&str> {
    arn.split_once(":loadbalancer/").map(|(_, d)| d)
}

/// `targetgroup/NAME/ID` from the target group's ARN (its `TargetGroup` dimension).
pub fn target_group_dimension(arn: &str) -> Option<&str> {
    arn.rsplit(':').next().filter(|d| d.starts_with("targetgroup/"))
}

pub fn queries(t: &Targets) -> Vec<Query> {
    let mut out = Vec::new();
    let mut push = |namespace: &str, metric: &str, stat: &str, dims: Vec<(&str, &str)>, label: &str, resolution| {
        out.push(Query {
            id: format!("m{}", out.len()),
            namespace: namespace.into(),
            metric: metric.into(),
            stat: stat.into(),
            dimensions: dims.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            label: label.into(),
            resolution,
        });
    };
    for (id, name) in &t.instances {
        let label = format!("{name} ({id})");
        let every = if t.detailed.contains(id) { DETAILED } else { BASIC };
        push(
            "AWS/EC2",
            "CPUUtilization",
            "Average",
            vec![("InstanceId", id)],
            &label,
            every,
        );
        push("AWS/EC2", "NetworkOut", "Sum", vec![("InstanceId", id)], &label, every);
    }
    if let Some(lb) = t.load_balancer.as_deref().and_then(load_balancer_dimension) {
        push(
            "AWS/ApplicationELB",
            "RequestCount",
            "Sum",
            vec![("LoadBalancer", lb)],
            "load balancer",
            DETAILED,
        );
        push(
            "AWS/ApplicationELB",
            "TargetResponseTime",
            "Average",
            vec![("LoadBalancer", lb)],
            "load balancer",
            DETAILED,
        );
        for (arn, name) in &t.target_groups {
            let Some(tg) = target_group_dimension(arn) else {
                continue;
            };
            let dims = vec![("TargetGroup", tg), ("LoadBalancer", lb)];
            push(
                "AWS/ApplicationELB",
                "RequestCount",
                "Sum",
                dims.clone(),
                name,
                DETAILED,
            );
            push(
                "AWS/ApplicationELB",
                "TargetResponseTime",
                "Average",
                dims,
                name,
                DETAILED,
            );
        }
    }
    out
}

/// Whether EC2 posts 1-minute metrics for the instance (detailed monitoring on, or turning on).
pub fn detailed(i: &aws_sdk_ec2::types::Instance) -> bool {
    use aws_sdk_ec2::types::MonitoringState;
    matches!(
        i.monitoring().and_then(|m| m.state()),
        Some(MonitoringState::Enabled | MonitoringState::Pending)
    )
}

/// Fetches every query over [start, end) (unix seconds), following NextToken.
pub async fn get(aws: &Aws, queries: &[Query], start: i64, end: i64) -> Result<Vec<Series>, AwsError> {
    let mut series: Vec<Series> = queries
        .iter()
        .map(|q| Series {
            query: q.clone(),
            points: vec![],
        })
        .collect();
    for chunk in queries.chunks(500) {
        let mut next: Option<String> = None;
        loop {
            let mut call = aws
                .cw
                .get_metric_data()
                .start_time(DateTime::from_secs(start))
                .end_time(DateTime::from_secs(end))
                .scan_by(ScanBy::TimestampAscending)
                .set_next_token(next.take());
            for q in chunk {
                call = call.metric_data_queries(data_query(q));
            }
            let out = call.send().await.during(|| "read CloudWatch metrics".into())?;
            for r in out.metric_data_results() {
                let Some(s) = series.iter_mut().find(|s| Some(s.query.id.as_str()) == r.id()) else {
                    continue;
                };
                for (t, v) in r.timestamps().iter().zip(r.values()) {
                    s.points.push((t.secs(), *v));
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_owned()),
                _ => break,
            }
        }
    }
    for s in &mut series {
        s.points.sort_by_key(|p| p.0);
        s.points.dedup_by_key(|p| p.0);
    }
    Ok(series)
}

fn data_query(q: &Query) -> MetricDataQuery {
    let mut metric = Metric::builder().namespace(&q.namespace).metric_name(&q.metric);
    for (k, v) in &q.dimensions {
        metric = metric.dimensions(Dimension::builder().name(k).value(v).build());
    }
    MetricDataQuery::builder()
        .id(&q.id)
        .label(&q.label)
        .return_data(true)
        .metric_stat(
            MetricStat::builder()
                .metric(metric.build())
                .period(i32::try_from(q.resolution).unwrap_or(BASIC as i32))
                .stat(&q.stat)
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_are_the_arn_suffixes_cloudwatch_uses() {
        let lb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/clusters/50dc6c495c0c9188";
        let tg = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/clusters-cluster1/73e2d6bc24d8a067";
        assert_eq!(load_balancer_dimension(lb), Some("app/clusters/50dc6c495c0c9188"));
        assert_eq!(
            target_group_dimension(tg),
            Some("targetgroup/clusters-cluster1/73e2d6bc24d8a067")
        );
        assert_eq!(target_group_dimension(lb), None);
    }

    #[test]
    fn counts_are_sums_and_rates_are_averages() {
        let t = Targets {
            instances: vec![("i-1".into(), "cluster1-0".into()), ("i-2".into(), "cluster1-1".into())],
            detailed: ["i-2".to_owned()].into(),
            load_balancer: Some("arn:aws:elasticloadbalancing:r:1:loadbalancer/app/c/9".into()),
            target_groups: vec![(
                "arn:aws:elasticloadbalancing:r:1:targetgroup/c-cluster1/7".into(),
                "c-cluster1".into(),
            )],
        };
        let q = queries(&t);
        let row = |q: &Query| {
            format!(
                "{} {} {} {} {:?} {} {}s",
                q.id, q.namespace, q.metric, q.stat, q.dimensions, q.label, q.resolution
            )
        };
        let rows: Vec<String> = q.iter().map(row).collect();
        assert_eq!(
            rows,
            [
                r#"m0 AWS/EC2 CPUUtilization Average [("InstanceId", "i-1")] cluster1-0 (i-1) 300s"#,
                r#"m1 AWS/EC2 NetworkOut Sum [("InstanceId", "i-1")] cluster1-0 (i-1) 300s"#,
                r#"m2 AWS/EC2 CPUUtilization Average [("InstanceId", "i-2")] cluster1-1 (i-2) 60s"#,
                r#"m3 AWS/EC2 NetworkOut Sum [("InstanceId", "i-2")] cluster1-1 (i-2) 60s"#,
                r#"m4 AWS/ApplicationELB RequestCount Sum [("LoadBalancer", "app/c/9")] load balancer 60s"#,
                r#"m5 AWS/ApplicationELB TargetResponseTime Average [("LoadBalancer", "app/c/9")] load balancer 60s"#,
                r#"m6 AWS/ApplicationELB RequestCount Sum [("TargetGroup", "targetgroup/c-cluster1/7"), ("LoadBalancer", "app/c/9")] c-cluster1 60s"#,
                r#"m7 AWS/ApplicationELB TargetResponseTime Average [("TargetGroup", "targetgroup/c-cluster1/7"), ("LoadBalancer", "app/c/9")] c-cluster1 60s"#,
            ]
        );
    }
}

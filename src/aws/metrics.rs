//! CloudWatch: the course's graphs as data. Which series a deployment has (per instance,
//! per target group, for the load balancer) is pure data ([`queries`]); [`get`] fetches them
//! with GetMetricData, one call per 500 queries.

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use aws_smithy_types::DateTime;
use serde::{Deserialize, Serialize};

use super::{Aws, AwsError, Call};

/// Every series is asked for at this period (seconds).
pub const PERIOD: i32 = 60;

/// What a deployment has to measure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// (instance id, name).
    pub instances: Vec<(String, String)>,
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
    /// The finest resolution the series has (EC2 without detailed monitoring: 300 s).
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
        push(
            "AWS/EC2",
            "CPUUtilization",
            "Average",
            vec![("InstanceId", id)],
            &label,
            300,
        );
        push("AWS/EC2", "NetworkOut", "Sum", vec![("InstanceId", id)], &label, 300);
    }
    if let Some(lb) = t.load_balancer.as_deref().and_then(load_balancer_dimension) {
        push(
            "AWS/ApplicationELB",
            "RequestCount",
            "Sum",
            vec![("LoadBalancer", lb)],
            "load balancer",
            60,
        );
        push(
            "AWS/ApplicationELB",
            "TargetResponseTime",
            "Average",
            vec![("LoadBalancer", lb)],
            "load balancer",
            60,
        );
        for (arn, name) in &t.target_groups {
            let Some(tg) = target_group_dimension(arn) else {
                continue;
            };
            let dims = vec![("TargetGroup", tg), ("LoadBalancer", lb)];
            push("AWS/ApplicationELB", "RequestCount", "Sum", dims.clone(), name, 60);
            push("AWS/ApplicationELB", "TargetResponseTime", "Average", dims, name, 60);
        }
    }
    out
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
                .period(PERIOD)
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
            instances: vec![("i-1".into(), "cluster1-0".into())],
            load_balancer: Some("arn:aws:elasticloadbalancing:r:1:loadbalancer/app/c/9".into()),
            target_groups: vec![(
                "arn:aws:elasticloadbalancing:r:1:targetgroup/c-cluster1/7".into(),
                "c-cluster1".into(),
            )],
        };
        let q = queries(&t);
        let row = |q: &Query| {
            format!(
                "{} {} {} {} {:?} {}",
                q.id, q.namespace, q.metric, q.stat, q.dimensions, q.label
            )
        };
        let rows: Vec<String> = q.iter().map(row).collect();
        assert_eq!(
            rows,
            [
                r#"m0 AWS/EC2 CPUUtilization Average [("InstanceId", "i-1")] cluster1-0 (i-1)"#,
                r#"m1 AWS/EC2 NetworkOut Sum [("InstanceId", "i-1")] cluster1-0 (i-1)"#,
                r#"m2 AWS/ApplicationELB RequestCount Sum [("LoadBalancer", "app/c/9")] load balancer"#,
                r#"m3 AWS/ApplicationELB TargetResponseTime Average [("LoadBalancer", "app/c/9")] load balancer"#,
                r#"m4 AWS/ApplicationELB RequestCount Sum [("TargetGroup", "targetgroup/c-cluster1/7"), ("LoadBalancer", "app/c/9")] c-cluster1"#,
                r#"m5 AWS/ApplicationELB TargetResponseTime Average [("TargetGroup", "targetgroup/c-cluster1/7"), ("LoadBalancer", "app/c/9")] c-cluster1"#,
            ]
        );
    }
}

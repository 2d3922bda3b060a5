//! `agent bench clusters`: the Lab 1 threads against the load balancer; on EC2 the target
//! comes from the deployment's tags and the CloudWatch metrics of the window follow.

use crate::aws::cloudwatch;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::metrics;
use crate::aws::{Aws, launch, lookup};
use crate::bench::{self, Deployment, Run, clusters};
use crate::printer::{self, Mode};

#[derive(Debug, Clone)]
pub struct ClustersBench {
    /// The load balancer, `http://host:port` (on EC2 found from the deployment when absent).
    pub base: Option<String>,
    /// The spec's routes: (path, role).
    pub routes: Vec<(String, String)>,
    /// Each cluster's path and the instances that should answer it (empty: unknown).
    pub clusters: Vec<(String, BTreeSet<String>)>,
    pub scale: f64,
    /// Thread B's pause [default: 60 s × scale].
    pub pause: Option<Duration>,
    pub timeout: Duration,
    pub out: Option<PathBuf>,
    pub mode: Mode,
    pub deployment: Deployment,
    /// The EC2 deployment: load balancer, instances, and CloudWatch afterwards.
    pub ec2: Option<super::metrics::MetricsSettings>,
    /// On EC2: fetch the metrics over the bench's window afterwards.
    pub metrics: bool,
}

pub async fn run(mut b: ClustersBench, cancel: CancellationToken) -> anyhow::Result<u8> {
    // On EC2: one connection and one lookup for the bench and the metrics after it.
    let mut ec2 = None;
    if let Some(m) = &b.ec2 {
        let aws = Aws::connect(m.region.as_deref()).await?;
        let found = bench_target(&aws, &m.deployment, &b.routes).await?;
        b.base = b.base.or(found.url);
        b.clusters = found.clusters;
        b.deployment = Deployment {
            description: b.deployment.description,
            ..found.deployment
        };
        ec2 = Some((m, aws, found.targets));
    }
    let Some(base) = b.base.clone() else {
        anyhow::bail!("no load balancer to bench: pass --url http://HOST or -i INVENTORY");
    };
    let paths: Vec<String> = b.clusters.iter().map(|(p, _)| p.clone()).collect();
    let streams = clusters::streams(&base, &paths, b.scale, b.pause)?;
    let bars = printer::bench::Bars::new(&streams, b.mode);
    let mut run: Run = bench::drive(
        "clusters",
        base,
        streams,
        clusters::reading,
        b.timeout,
        &bars,
        cancel.clone(),
    )
    .await;
    bars.clear();
    run.expected = b.clusters.iter().cloned().collect::<BTreeMap<_, _>>();
    let (summary, out) = super::conclude(&run, &b.deployment, b.out.clone())?;
    let mut status = super::bench_exit(&summary);
    if let Some((m, aws, targets)) = &ec2
        && b.metrics
        && !run.interrupted
    {
        let window = metrics::Window::around(run.started, run.elapsed);
        let fetched = metrics::collect(aws, targets, m, window, &out, b.mode, cancel).await?;
        if fetched != 0 && status == 0 {
            status = fetched;
        }
    }
    printer::bench::summary(&summary, &out, b.mode)?;
    Ok(status)
}

/// What `agent bench clusters` needs of an EC2 deployment.
struct BenchTarget {
    /// `http://DNS` of its load balancer.
    pub url: Option<String>,
    /// Per route path, the ids of the instances of the route's role.
    pub clusters: Vec<(String, std::collections::BTreeSet<String>)>,
    pub deployment: Deployment,
    /// Its CloudWatch series' owners, for the metrics after the bench.
    pub targets: cloudwatch::Targets,
}

/// One lookup by tag (instances, load balancer, target groups) serves the bench and its metrics.
async fn bench_target(aws: &Aws, deployment: &str, routes: &[(String, String)]) -> anyhow::Result<BenchTarget> {
    let found = lookup::deployment(aws, deployment).await?;
    if found.instances.is_empty() {
        anyhow::bail!(
            "deployment {deployment} has no instances in {}: deploy it first, or pass -i INVENTORY for the local fleet",
            aws.region
        );
    }
    let instances: Vec<bench::Instance> = found
        .instances
        .iter()
        .map(|i| {
            let d = launch::describe(i);
            bench::Instance {
                instance_type: i.instance_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
                address: d.public_dns.or(d.private_ip).unwrap_or_default(),
                id: d.id,
                name: d.name,
                role: d.role,
            }
        })
        .collect();
    let clusters = routes
        .iter()
        .map(|(path, role)| {
            let ids = instances
                .iter()
                .filter(|i| i.role == *role)
                .map(|i| i.id.clone())
                .collect();
            (path.clone(), ids)
        })
        .collect();
    Ok(BenchTarget {
        url: found
            .load_balancer
            .as_ref()
            .and_then(|l| l.dns_name())
            .map(|dns| format!("http://{dns}")),
        clusters,
        targets: found.targets(),
        deployment: Deployment {
            name: deployment.to_owned(),
            description: String::new(),
            place: format!("EC2 {}", aws.region),
            instances,
        },
    })
}

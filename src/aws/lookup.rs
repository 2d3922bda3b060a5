//! A deployment as AWS holds it, found by tag in one pass: its instances, load balancer and
//! target groups. `agent metrics` and `agent bench clusters` both start from it.

use aws_sdk_ec2::types::Instance;
use aws_sdk_elasticloadbalancingv2::types::LoadBalancer;

use super::cloudwatch::{self, Targets};
use super::{Aws, launch, teardown};

pub struct Found {
    /// Not terminated.
    pub instances: Vec<Instance>,
    pub load_balancer: Option<LoadBalancer>,
    /// (ARN, name).
    pub target_groups: Vec<(String, String)>,
}

pub async fn deployment(aws: &Aws, name: &str) -> anyhow::Result<Found> {
    Ok(Found {
        instances: launch::existing(aws, name).await?,
        load_balancer: teardown::load_balancers(aws, name).await?.into_iter().next(),
        target_groups: teardown::target_groups(aws, name).await?,
    })
}

impl Found {
    /// The owners of its CloudWatch series.
    pub fn targets(&self) -> Targets {
        let mut t = Targets::default();
        for i in &self.instances {
            let d = launch::describe(i);
            if cloudwatch::detailed(i) {
                t.detailed.insert(d.id.clone());
            }
            t.instances.push((d.id, d.name));
        }
        t.load_balancer = self
            .load_balancer
            .as_ref()
            .and_then(|l| l.load_balancer_arn())
            .map(str::to_owned);
        t.target_groups = self.target_groups.clone();
        t
    }
}

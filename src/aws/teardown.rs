//! `agent terminate` and `agent status`: a deployment's resources, found by their
//! `agent:deployment` tag (the record is not needed), removed in dependency order: rules,
//! listeners, load balancers, target groups, instances, security groups, the imported key pair.

use crate::aws::cloud_init::{ConsoleCheck, check_console};
use crate::transport::ssh::known_hosts;
use std::time::Duration;

use anyhow::bail;
use aws_sdk_ec2::types::InstanceStateName;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::resource::{Kind, deployment_filter, tag};
use super::{Aws, AwsError, Call, alb};
use super::{Interrupted, Progress, interrupted, launch};
use crate::event::{CloudEvent, ResourceAction};
use crate::transport::ssh::known_hosts::KnownHosts;

pub async fn load_balancers(
    aws: &Aws,
    deployment: &str,
) -> Result<Vec<aws_sdk_elasticloadbalancingv2::types::LoadBalancer>, AwsError> {
    let mut all = Vec::new();
    let mut pages = aws.elb.describe_load_balancers().into_paginator().send();
    while let Some(page) = pages.next().await {
        all.extend(
            page.during(|| "list load balancers".into())?
                .load_balancers()
                .iter()
                .cloned(),
        );
    }
    let arns = all
        .iter()
        .map(|l| {
            (
                l.load_balancer_arn().unwrap_or_default().to_owned(),
                l.load_balancer_name().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let mine = alb::owned(aws, deployment, arns).await?;
    Ok(all
        .into_iter()
        .filter(|l| mine.iter().any(|(a, _)| Some(a.as_str()) == l.load_balancer_arn()))
        .collect())
}

pub async fn target_groups(aws: &Aws, deployment: &str) -> Result<Vec<(String, String)>, AwsError> {
    let mut arns = Vec::new();
    let mut pages = aws.elb.describe_target_groups().into_paginator().send();
    while let Some(page) = pages.next().await {
        for t in page.during(|| "list target groups".into())?.target_groups() {
            arns.push((
                t.target_group_arn().unwrap_or_default().to_owned(),
                t.target_group_name().unwrap_or_default().to_owned(),
            ));
        }
    }
    alb::owned(aws, deployment, arns).await
}

pub async fn security_groups(aws: &Aws, deployment: &str) -> Result<Vec<aws_sdk_ec2::types::SecurityGroup>, AwsError> {
    let out = aws
        .ec2
        .describe_security_groups()
        .filters(deployment_filter(deployment))
        .send()
        .await
        .during(|| format!("list the security groups of {deployment}"))?;
    Ok(out.security_groups().to_vec())
}

pub async fn key_pairs(aws: &Aws, deployment: &str) -> Result<Vec<(String, String)>, AwsError> {
    let out = aws
        .ec2
        .describe_key_pairs()
        .filters(deployment_filter(deployment))
        .send()
        .await
        .during(|| format!("list the key pairs of {deployment}"))?;
    Ok(out
        .key_pairs()
        .iter()
        .map(|k| {
            (
                k.key_pair_id().unwrap_or_default().to_owned(),
                k.key_name().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// Removes everything of `deployment`, in dependency order; returns the ids of the
/// terminated instances (whose host keys the caller forgets). Idempotent: a second run
/// finds and removes nothing.
pub async fn terminate(
    aws: &Aws,
    deployment: &str,
    timeout: Duration,
    progress: &Progress<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let t = Teardown {
        aws,
        deployment,
        timeout,
        deadline: tokio::time::Instant::now() + timeout,
        progress,
        cancel,
    };
    t.load_balancers().await?;
    t.target_groups().await?;
    let ids = t.instances().await?;
    t.security_groups().await?;
    t.key_pairs().await?;
    Ok(ids)
}

/// One `terminate`'s shared ends: where, how long, where progress goes.
#[derive(Clone, Copy)]
struct Teardown<'a> {
    aws: &'a Aws,
    deployment: &'a str,
    timeout: Duration,
    deadline: tokio::time::Instant,
    progress: &'a Progress<'a>,
    cancel: &'a CancellationToken,
}

fn deleted(kind: Kind, id: &str, name: &str) -> CloudEvent {
    CloudEvent::Resource {
        action: ResourceAction::Deleted,
        kind,
        id: id.to_owned(),
        name: name.to_owned(),
    }
}

impl Teardown<'_> {
    /// Load balancers with their rules and listeners, then the wait until they are gone
    /// (target groups and security groups stay in use until then).
    async fn load_balancers(&self) -> anyhow::Result<()> {
        let Teardown {
            aws,
            deployment,
            timeout,
            deadline,
            progress,
            cancel,
        } = *self;
        let lbs = load_balancers(aws, deployment).await?;
        for lb in &lbs {
            interrupted(cancel)?;
            let arn = lb.load_balancer_arn().unwrap_or_default();
            let name = lb.load_balancer_name().unwrap_or_default();
            let listeners = aws
                .elb
                .describe_listeners()
                .load_balancer_arn(arn)
                .send()
                .await
                .during(|| format!("list the listeners of {name}"))?;
            for l in listeners.listeners() {
                let l_arn = l.listener_arn().unwrap_or_default();
                let rules = aws
                    .elb
                    .describe_rules()
                    .listener_arn(l_arn)
                    .send()
                    .await
                    .during(|| format!("list the rules of {name}"))?;
                for r in rules.rules().iter().filter(|r| r.is_default() != Some(true)) {
                    let r_arn = r.rule_arn().unwrap_or_default();
                    aws.elb
                        .delete_rule()
                        .rule_arn(r_arn)
                        .send()
                        .await
                        .during(|| format!("delete rule {r_arn}"))?;
                    progress
                        .event(deleted(
                            Kind::Rule,
                            r_arn,
                            &format!("priority {}", r.priority().unwrap_or("?")),
                        ))
                        .await;
                }
                aws.elb
                    .delete_listener()
                    .listener_arn(l_arn)
                    .send()
                    .await
                    .during(|| format!("delete listener {l_arn}"))?;
                progress
                    .event(deleted(
                        Kind::Listener,
                        l_arn,
                        &format!("{name}:{}", l.port().unwrap_or(0)),
                    ))
                    .await;
            }
            aws.elb
                .delete_load_balancer()
                .load_balancer_arn(arn)
                .send()
                .await
                .during(|| format!("delete load balancer {name}"))?;
            progress.event(deleted(Kind::LoadBalancer, arn, name)).await;
        }
        if !lbs.is_empty() {
            // Target groups and security groups stay in use until the load balancer is gone.
            let arns: Vec<String> = lbs
                .iter()
                .filter_map(|l| l.load_balancer_arn())
                .map(str::to_owned)
                .collect();
            let gone = super::poll(Duration::from_secs(3), deadline, cancel, || async {
                let r = aws
                    .elb
                    .describe_load_balancers()
                    .set_load_balancer_arns(Some(arns.clone()))
                    .send()
                    .await;
                match r.during(|| "check the load balancers are gone".into()) {
                    Ok(out) => Ok(out.load_balancers().is_empty().then_some(())),
                    Err(e) if e.code() == Some("LoadBalancerNotFound") => Ok(Some(())),
                    Err(e) => Err(e),
                }
            })
            .await?;
            interrupted(cancel)?;
            if gone.is_none() {
                bail!(
                    "load balancers still exist after {}s: run agent terminate again",
                    timeout.as_secs()
                );
            }
        }

        Ok(())
    }

    async fn target_groups(&self) -> anyhow::Result<()> {
        let Teardown {
            aws,
            deployment,
            deadline,
            progress,
            cancel,
            ..
        } = *self;
        for (arn, name) in target_groups(aws, deployment).await? {
            interrupted(cancel)?;
            retry(
                deadline,
                cancel,
                &["ResourceInUse"],
                &format!("delete target group {name}"),
                progress,
                || async {
                    aws.elb
                        .delete_target_group()
                        .target_group_arn(&arn)
                        .send()
                        .await
                        .during(|| format!("delete target group {name}"))
                },
            )
            .await?;
            progress.event(deleted(Kind::TargetGroup, &arn, &name)).await;
        }

        Ok(())
    }

    /// Instances: terminated all at once, then waited for; their ids.
    async fn instances(&self) -> anyhow::Result<Vec<String>> {
        let Teardown {
            aws,
            deployment,
            timeout,
            deadline,
            progress,
            cancel,
        } = *self;
        let instances = launch::existing(aws, deployment).await?;
        let ids: Vec<String> = instances
            .iter()
            .filter_map(|i| i.instance_id())
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            interrupted(cancel)?;
            aws.ec2
                .terminate_instances()
                .set_instance_ids(Some(ids.clone()))
                .send()
                .await
                .during(|| format!("terminate {}", ids.join(", ")))?;
            for i in &instances {
                let id = i.instance_id().unwrap_or_default();
                progress
                    .event(deleted(Kind::Instance, id, tag(i.tags(), "Name").unwrap_or(id)))
                    .await;
            }
            let done = super::poll(Duration::from_secs(3), deadline, cancel, || async {
                let out = aws
                    .ec2
                    .describe_instances()
                    .set_instance_ids(Some(ids.clone()))
                    .send()
                    .await
                    .during(|| "check the instances are terminated".into())?;
                let ended = out
                    .reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .filter(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Terminated))
                    .count();
                progress
                    .event(CloudEvent::Waiting {
                        what: "instances terminated".into(),
                        done: ended,
                        total: ids.len(),
                    })
                    .await;
                Ok((ended == ids.len()).then_some(()))
            })
            .await?;
            interrupted(cancel)?;
            if done.is_none() {
                bail!(
                    "instances not terminated after {}s: run agent terminate again",
                    timeout.as_secs()
                );
            }
        }

        Ok(ids)
    }

    /// Security groups: rules naming another group go first (a group referenced by another
    /// cannot be deleted), then each group, retried while AWS still sees a dependency.
    async fn security_groups(&self) -> anyhow::Result<()> {
        let Teardown {
            aws,
            deployment,
            deadline,
            progress,
            cancel,
            ..
        } = *self;
        let groups = security_groups(aws, deployment).await?;
        for g in &groups {
            let referencing: Vec<_> = g
                .ip_permissions()
                .iter()
                .filter(|p| !p.user_id_group_pairs().is_empty())
                .cloned()
                .collect();
            if !referencing.is_empty() {
                let id = g.group_id().unwrap_or_default();
                aws.ec2
                    .revoke_security_group_ingress()
                    .group_id(id)
                    .set_ip_permissions(Some(referencing))
                    .send()
                    .await
                    .during(|| format!("remove the group rules of {id}"))?;
            }
        }
        for g in &groups {
            interrupted(cancel)?;
            let id = g.group_id().unwrap_or_default();
            let name = g.group_name().unwrap_or_default();
            retry(
                deadline,
                cancel,
                &["DependencyViolation"],
                &format!("delete security group {name}"),
                progress,
                || async {
                    aws.ec2
                        .delete_security_group()
                        .group_id(id)
                        .send()
                        .await
                        .during(|| format!("delete security group {name} ({id})"))
                },
            )
            .await?;
            progress.event(deleted(Kind::SecurityGroup, id, name)).await;
        }

        Ok(())
    }

    /// Only a key pair agent imported carries the tag; the lab's vockey is never touched.
    async fn key_pairs(&self) -> anyhow::Result<()> {
        let Teardown {
            aws,
            deployment,
            progress,
            ..
        } = *self;
        for (id, name) in key_pairs(aws, deployment).await? {
            // By name: moto ignores DeleteKeyPair by id.
            aws.ec2
                .delete_key_pair()
                .key_name(&name)
                .send()
                .await
                .during(|| format!("delete key pair {name}"))?;
            progress.event(deleted(Kind::KeyPair, &id, &name)).await;
        }
        Ok(())
    }
}

/// Retries `call` while it fails with one of `codes` (AWS still sees a dependency that is on
/// its way out), backing off from 1 s to 15 s, until `deadline`.
async fn retry<T, F, Fut>(
    deadline: tokio::time::Instant,
    cancel: &CancellationToken,
    codes: &[&str],
    what: &str,
    progress: &Progress<'_>,
    mut call: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsError>>,
{
    let mut pause = Duration::from_secs(1);
    loop {
        match call().await {
            Ok(t) => return Ok(t),
            Err(e) if e.code().is_some_and(|c| codes.contains(&c)) => {
                if tokio::time::Instant::now() + pause > deadline {
                    bail!("{e} (still after retrying until the deadline): run agent terminate again later");
                }
                progress
                    .notice(format!(
                        "{what}: {} (retrying in {}s)",
                        e.code().unwrap_or_default(),
                        pause.as_secs()
                    ))
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = cancel.cancelled() => bail!(Interrupted),
                }
                pause = (pause * 2).min(Duration::from_secs(15));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the instance's console (cloud-init's host key block, printed at boot) says of the
/// key pinned for it: `matches`, `not posted` (yet), `shows other keys`, or why it could
/// not be read. The latest output is asked for; Xen types (t2, m4) only have the posted one.
async fn console_check(aws: &Aws, id: &str, key: &russh::keys::PublicKey) -> String {
    let ask = |latest: bool| {
        aws.ec2
            .get_console_output()
            .instance_id(id)
            .set_latest(latest.then_some(true))
            .send()
    };
    let out = match ask(true).await.during(|| format!("read the console of {id}")) {
        Err(e)
            if matches!(
                e.code(),
                Some("UnsupportedOperation" | "InvalidParameterValue" | "InvalidParameter")
            ) =>
        {
            ask(false).await.during(|| format!("read the console of {id}"))
        }
        r => r,
    };
    let out = match out {
        Ok(out) => out,
        Err(e) => return format!("cannot read it: {}", e.code().unwrap_or("no answer")),
    };
    // The API returns the console base64-encoded.
    let text = out
        .output()
        .and_then(|b| aws_smithy_types::base64::decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    match check_console(&text, key) {
        ConsoleCheck::Matches => "matches".into(),
        ConsoleCheck::NotPosted => "not posted".into(),
        // The boot key was replaced at first contact: the console still shows the old one.
        ConsoleCheck::Differs => "shows the boot key, replaced since".into(),
    }
}

/// What `agent status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub deployment: String,
    pub region: String,
    pub instances: Vec<InstanceStatus>,
    pub security_groups: Vec<String>,
    pub key_pairs: Vec<String>,
    pub load_balancers: Vec<LbStatus>,
}

#[derive(Debug, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub name: String,
    pub role: String,
    pub state: String,
    pub instance_type: String,
    pub private_ip: Option<String>,
    pub public_dns: Option<String>,
    /// SHA256 fingerprint of the host key pinned for it (agent's known_hosts, else the
    /// instance's tag).
    pub host_key: Option<String>,
    /// What the console output says of that key (see `console_check`).
    pub console: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LbStatus {
    pub name: String,
    pub dns: String,
    pub state: String,
    /// Per target group: (name, healthy, total).
    pub target_groups: Vec<(String, usize, usize)>,
}

pub async fn status(aws: &Aws, deployment: &str, known_hosts: &KnownHosts) -> anyhow::Result<Status> {
    let mut instances = Vec::new();
    for i in launch::existing(aws, deployment).await? {
        let mut d = launch::describe(&i);
        if let Some(k) = known_hosts.labelled(&d.id)?.pop() {
            d.host_key = Some(k);
        }
        let console = match &d.host_key {
            Some(key) => Some(console_check(aws, &d.id, key).await),
            None => None,
        };
        instances.push(InstanceStatus {
            state: i
                .state()
                .and_then(|s| s.name())
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            instance_type: i.instance_type().map(|t| t.as_str().to_owned()).unwrap_or_default(),
            host_key: d.host_key.as_ref().map(known_hosts::fingerprint),
            id: d.id,
            name: d.name,
            role: d.role,
            private_ip: d.private_ip,
            public_dns: d.public_dns,
            console,
        });
    }
    let mut groups = Vec::new();
    for (arn, name) in target_groups(aws, deployment).await? {
        let h = alb::target_health(aws, &arn, &name).await?;
        groups.push((name, h.healthy, h.total));
    }
    let mut lbs = Vec::new();
    for lb in load_balancers(aws, deployment).await? {
        lbs.push(LbStatus {
            name: lb.load_balancer_name().unwrap_or_default().to_owned(),
            dns: lb.dns_name().unwrap_or_default().to_owned(),
            state: lb
                .state()
                .and_then(|s| s.code())
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
            target_groups: groups.clone(),
        });
    }
    Ok(Status {
        deployment: deployment.to_owned(),
        region: aws.region.clone(),
        instances,
        security_groups: security_groups(aws, deployment)
            .await?
            .iter()
            .map(|g| {
                format!(
                    "{} {}",
                    g.group_id().unwrap_or_default(),
                    g.group_name().unwrap_or_default()
                )
            })
            .collect(),
        key_pairs: key_pairs(aws, deployment)
            .await?
            .into_iter()
            .map(|(id, name)| format!("{id} {name}"))
            .collect(),
        load_balancers: lbs,
    })
}

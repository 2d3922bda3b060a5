//! The Application Load Balancer of a spec with routes: internet-facing over two zones, one
//! target group per routed role (health-checked on the role's health path), a listener whose
//! default answers a fixed 404, and one path rule per route (the path and everything below).

use crate::spec;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, FixedResponseActionConfig, LoadBalancer, LoadBalancerSchemeEnum, LoadBalancerStateEnum,
    LoadBalancerTypeEnum, Matcher, PathPatternConditionConfig, ProtocolEnum, RuleCondition, TargetDescription,
    TargetHealthStateEnum, TargetTypeEnum,
};
use tokio_util::sync::CancellationToken;

use super::launch::Launched;
use super::resource::{self, Kind, TAG_DEPLOYMENT};
use super::{Aws, AwsError, Call, find_or_create, settled};
use super::{Progress, interrupted};
use crate::event::CloudEvent;
use crate::spec::Spec;

#[derive(Debug, Clone)]
pub struct Alb {
    pub arn: String,
    pub dns: String,
    pub port: u16,
    /// Target group ARN by role.
    pub target_groups: BTreeMap<String, String>,
}

/// How long a target leaving a target group gets to finish its requests.
pub const DEREGISTRATION_DELAY: Duration = Duration::from_secs(10);

/// Takes instances out of a target group for a rolling deploy: deregistered, then waited
/// for until the group no longer lists them (their deregistration delay spent).
pub async fn take_out(aws: &Aws, target_group: &str, port: u16, ids: &[String]) -> Result<(), String> {
    aws.elb
        .deregister_targets()
        .target_group_arn(target_group)
        .set_targets(Some(targets_of(ids, port)))
        .send()
        .await
        .during(|| "deregister targets".into())
        .map_err(|e| e.to_string())?;
    wait_targets(aws, target_group, ids, DEREGISTRATION_DELAY * 3, |state| {
        state.is_none()
    })
    .await
}

/// Puts instances back, then waits until the load balancer sees them healthy.
pub async fn put_back(aws: &Aws, target_group: &str, port: u16, ids: &[String]) -> Result<(), String> {
    aws.elb
        .register_targets()
        .target_group_arn(target_group)
        .set_targets(Some(targets_of(ids, port)))
        .send()
        .await
        .during(|| "register targets".into())
        .map_err(|e| e.to_string())?;
    wait_targets(aws, target_group, ids, Duration::from_secs(120), |state| {
        state == Some(&TargetHealthStateEnum::Healthy)
    })
    .await
}

fn targets_of(ids: &[String], port: u16) -> Vec<TargetDescription> {
    ids.iter()
        .map(|id| TargetDescription::builder().id(id).port(i32::from(port)).build())
        .collect()
}

/// Polls the group's target health until every one of `ids` is `done` (None: not listed).
async fn wait_targets(
    aws: &Aws,
    target_group: &str,
    ids: &[String],
    limit: Duration,
    done: impl Fn(Option<&TargetHealthStateEnum>) -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let out = aws
            .elb
            .describe_target_health()
            .target_group_arn(target_group)
            .send()
            .await
            .during(|| "check target health".into())
            .map_err(|e| e.to_string())?;
        let state = |id: &str| {
            out.target_health_descriptions()
                .iter()
                .find(|t| t.target().and_then(|t| t.id()) == Some(id))
                .and_then(|t| t.target_health().and_then(|h| h.state()))
        };
        let pending: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !done(state(id))).collect();
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("after {}s: {}", limit.as_secs(), pending.join(", ")));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// ELB names: at most 32 letters, digits and hyphens, no hyphen at the ends.
pub fn elb_name(deployment: &str, suffix: &str) -> String {
    let mut n: String = format!("{deployment}-{suffix}").chars().take(32).collect();
    while n.ends_with('-') {
        n.pop();
    }
    n
}

/// `/cluster1` matches itself and everything below it.
pub fn path_patterns(path: &str) -> Vec<String> {
    let base = path.trim_end_matches('/');
    if base.is_empty() {
        return vec!["/*".into()];
    }
    vec![base.to_owned(), format!("{base}/*")]
}

pub async fn ensure(
    aws: &Aws,
    deployment: &str,
    spec: &Spec,
    launched: &Launched,
    progress: &Progress<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Alb>> {
    let Some(b) = &spec.balancer else { return Ok(None) };
    if launched.subnets.len() < 2 {
        bail!(
            "an Application Load Balancer needs subnets in two zones, and {} has subnets in {} only: add a subnet in another zone",
            launched.vpc,
            launched.subnets[0].zone
        );
    }
    let names = Names { deployment };
    let lb = load_balancer(aws, &names, &launched.subnets[..2], &launched.groups[&b.role], progress).await?;
    let lb_arn = lb.load_balancer_arn().unwrap_or_default().to_owned();
    // One target group per routed role, with that role's instances registered.
    let mut target_groups = BTreeMap::new();
    for route in &b.routes {
        interrupted(cancel)?;
        if !target_groups.contains_key(&route.role) {
            let arn = target_group(aws, &names, spec, &route.role, launched, progress).await?;
            target_groups.insert(route.role.clone(), arn);
        }
    }
    interrupted(cancel)?;
    let listener = listener(aws, &names, &lb_arn, b.port, progress).await?;
    rules(aws, &names, &listener, b, &target_groups, progress, cancel).await?;
    Ok(Some(Alb {
        arn: lb_arn,
        dns: lb.dns_name().unwrap_or_default().to_owned(),
        port: b.port,
        target_groups,
    }))
}

/// The names and tags of a deployment's ELB resources.
struct Names<'a> {
    deployment: &'a str,
}

impl Names<'_> {
    fn tags(&self, role: Option<&str>, name: &str) -> Vec<aws_sdk_elasticloadbalancingv2::types::Tag> {
        resource::elb_tags(&resource::tags(self.deployment, role, name))
    }

    fn load_balancer(&self) -> String {
        elb_name(self.deployment, "alb")
    }
}

/// The internet-facing load balancer over two zones.
async fn load_balancer(
    aws: &Aws,
    names: &Names<'_>,
    zones: &[super::launch::Subnet],
    group: &str,
    progress: &Progress<'_>,
) -> anyhow::Result<LoadBalancer> {
    let name = names.load_balancer();
    let found = match aws
        .elb
        .describe_load_balancers()
        .names(&name)
        .send()
        .await
        .during(|| format!("find load balancer {name}"))
    {
        Ok(out) => out.load_balancers().first().cloned(),
        Err(e) if e.code() == Some("LoadBalancerNotFound") => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(lb) = &found {
        check_ours(aws, names.deployment, lb.load_balancer_arn().unwrap_or_default(), &name).await?;
    }
    let arn = |lb: &LoadBalancer| lb.load_balancer_arn().unwrap_or_default().to_owned();
    find_or_create(progress, Kind::LoadBalancer, &name, found, arn, || async {
        let out = aws
            .elb
            .create_load_balancer()
            .name(&name)
            .r#type(LoadBalancerTypeEnum::Application)
            .scheme(LoadBalancerSchemeEnum::InternetFacing)
            .set_subnets(Some(zones.iter().map(|s| s.id.clone()).collect()))
            .security_groups(group)
            .set_tags(Some(names.tags(None, &name)))
            .send()
            .await
            .during(|| format!("create load balancer {name}"))?;
        out.load_balancers()
            .first()
            .cloned()
            .context("CreateLoadBalancer returned nothing")
    })
    .await
}

/// The target group of a routed role (health-checked on its health path), with the role's
/// instances registered; its ARN.
async fn target_group(
    aws: &Aws,
    names: &Names<'_>,
    spec: &Spec,
    role_name: &str,
    launched: &Launched,
    progress: &Progress<'_>,
) -> anyhow::Result<String> {
    let role = &spec.roles[role_name];
    let tg_name = elb_name(names.deployment, role_name);
    let found = match aws
        .elb
        .describe_target_groups()
        .names(&tg_name)
        .send()
        .await
        .during(|| format!("find target group {tg_name}"))
    {
        Ok(out) => out
            .target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .map(str::to_owned),
        Err(e) if e.code() == Some("TargetGroupNotFound") => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(arn) = &found {
        check_ours(aws, names.deployment, arn, &tg_name).await?;
    }
    let arn = find_or_create(progress, Kind::TargetGroup, &tg_name, found, String::clone, || async {
        let out = aws
            .elb
            .create_target_group()
            .name(&tg_name)
            .protocol(ProtocolEnum::Http)
            .port(i32::from(role.ports[0]))
            .vpc_id(&launched.vpc)
            .target_type(TargetTypeEnum::Instance)
            .health_check_path(&role.health)
            .health_check_interval_seconds(10)
            .healthy_threshold_count(2)
            .matcher(Matcher::builder().http_code("200").build())
            .set_tags(Some(names.tags(Some(role_name), &tg_name)))
            .send()
            .await
            .during(|| format!("create target group {tg_name}"))?;
        out.target_groups()
            .first()
            .and_then(|t| t.target_group_arn())
            .map(str::to_owned)
            .context("CreateTargetGroup returned nothing")
    })
    .await?;
    // A target taken out for a rolling deploy waits this long for its requests in flight
    // (AWS's default is 300 s).
    settled(|| {
        aws.elb
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .attributes(
                aws_sdk_elasticloadbalancingv2::types::TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(DEREGISTRATION_DELAY.as_secs().to_string())
                    .build(),
            )
            .send()
    })
    .await
    .during(|| format!("set the deregistration delay of {tg_name}"))?;
    let targets: Vec<TargetDescription> = launched
        .instances
        .iter()
        .filter(|i| i.role == role_name)
        .map(|i| {
            TargetDescription::builder()
                .id(&i.id)
                .port(i32::from(role.ports[0]))
                .build()
        })
        .collect();
    settled(|| {
        aws.elb
            .register_targets()
            .target_group_arn(&arn)
            .set_targets(Some(targets.clone()))
            .send()
    })
    .await
    .during(|| format!("register the {role_name} instances in {tg_name}"))?;
    Ok(arn)
}

/// The listener on the balancer's port: anything no rule matches gets a fixed 404.
async fn listener(
    aws: &Aws,
    names: &Names<'_>,
    lb_arn: &str,
    port: u16,
    progress: &Progress<'_>,
) -> anyhow::Result<String> {
    let listeners = settled(|| aws.elb.describe_listeners().load_balancer_arn(lb_arn).send())
        .await
        .during(|| format!("list the listeners of {}", names.load_balancer()))?;
    let wanted = i32::from(port);
    let listener_name = format!("{}:{port}", names.load_balancer());
    let found = listeners
        .listeners()
        .iter()
        .find(|l| l.port() == Some(wanted))
        .map(|l| l.listener_arn().unwrap_or_default().to_owned());
    find_or_create(
        progress,
        Kind::Listener,
        &listener_name,
        found,
        String::clone,
        || async {
            let not_found = Action::builder()
                .r#type(ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    FixedResponseActionConfig::builder()
                        .status_code("404")
                        .content_type("text/plain")
                        .message_body("not found\n")
                        .build(),
                )
                .build();
            let request = aws
                .elb
                .create_listener()
                .load_balancer_arn(lb_arn)
                .protocol(ProtocolEnum::Http)
                .port(wanted)
                .default_actions(not_found)
                .set_tags(Some(names.tags(None, &listener_name)));
            let out = settled(|| request.clone().send())
                .await
                .during(|| format!("create the listener on port {port}"))?;
            out.listeners()
                .first()
                .and_then(|l| l.listener_arn())
                .map(str::to_owned)
                .context("CreateListener returned nothing")
        },
    )
    .await
}

/// Path rules, in the spec's order (first match wins): an existing rule at a priority is
/// brought up to date, a missing one created.
async fn rules(
    aws: &Aws,
    names: &Names<'_>,
    listener: &str,
    b: &spec::Balancer,
    target_groups: &BTreeMap<String, String>,
    progress: &Progress<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let rules = aws
        .elb
        .describe_rules()
        .listener_arn(listener)
        .send()
        .await
        .during(|| format!("list the rules of {}:{}", names.load_balancer(), b.port))?;
    for (i, route) in b.routes.iter().enumerate() {
        interrupted(cancel)?;
        let priority = (i + 1).to_string();
        let condition = RuleCondition::builder()
            .field("path-pattern")
            .path_pattern_config(
                PathPatternConditionConfig::builder()
                    .set_values(Some(path_patterns(&route.path)))
                    .build(),
            )
            .build();
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(&target_groups[&route.role])
            .build();
        // Also its Name tag: ELB tag values allow letters, numbers, spaces and `_.:/=+-@` only.
        let rule_name = format!("{} to {}", route.path, route.role);
        let found = rules
            .rules()
            .iter()
            .find(|r| r.priority() == Some(priority.as_str()))
            .map(|r| r.rule_arn().unwrap_or_default().to_owned());
        if let Some(arn) = &found {
            let request = aws
                .elb
                .modify_rule()
                .rule_arn(arn)
                .conditions(condition.clone())
                .actions(forward.clone());
            settled(|| request.clone().send())
                .await
                .during(|| format!("update rule {rule_name}"))?;
        }
        find_or_create(progress, Kind::Rule, &rule_name, found, String::clone, || async {
            let request = aws
                .elb
                .create_rule()
                .listener_arn(listener)
                .priority(i as i32 + 1)
                .conditions(condition)
                .actions(forward)
                .set_tags(Some(names.tags(None, &rule_name)));
            let out = settled(|| request.clone().send())
                .await
                .during(|| format!("create rule {rule_name}"))?;
            Ok(out
                .rules()
                .first()
                .and_then(|r| r.rule_arn())
                .unwrap_or_default()
                .to_owned())
        })
        .await?;
    }
    Ok(())
}

/// Refuses to adopt an ELB resource that carries another deployment's tag (or none).
async fn check_ours(aws: &Aws, deployment: &str, arn: &str, name: &str) -> anyhow::Result<()> {
    if owned(aws, deployment, vec![(arn.to_owned(), name.to_owned())])
        .await?
        .is_empty()
    {
        bail!("{name} exists but is not agent's deployment {deployment}: remove it or deploy under another --name");
    }
    Ok(())
}

/// Of the ELB resources (load balancers, target groups) given as (arn, name), those carrying
/// the deployment's tag.
pub async fn owned(
    aws: &Aws,
    deployment: &str,
    arns: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, AwsError> {
    let mut mine = Vec::new();
    for chunk in arns.chunks(20) {
        let out = aws
            .elb
            .describe_tags()
            .set_resource_arns(Some(chunk.iter().map(|(a, _)| a.clone()).collect()))
            .send()
            .await
            .during(|| "read load balancer tags".into())?;
        for d in out.tag_descriptions() {
            let ours = d
                .tags()
                .iter()
                .any(|t| t.key() == Some(TAG_DEPLOYMENT) && t.value() == Some(deployment));
            if ours && let Some(found) = chunk.iter().find(|(a, _)| Some(a.as_str()) == d.resource_arn()) {
                mine.push(found.clone());
            }
        }
    }
    Ok(mine)
}

/// A target group's health: healthy and total targets, and a line for each unhealthy one.
pub struct TargetHealth {
    pub healthy: usize,
    pub total: usize,
    pub unhealthy: Vec<String>,
}

pub async fn target_health(aws: &Aws, arn: &str, label: &str) -> Result<TargetHealth, AwsError> {
    let out = settled(|| aws.elb.describe_target_health().target_group_arn(arn).send())
        .await
        .during(|| format!("check the health of the {label} targets"))?;
    let all = out.target_health_descriptions();
    let mut unhealthy = Vec::new();
    for t in all {
        let state = t.target_health().and_then(|h| h.state());
        if state != Some(&TargetHealthStateEnum::Healthy) {
            let id = t.target().and_then(|t| t.id()).unwrap_or("?");
            let why = t.target_health().and_then(|h| h.description()).unwrap_or("");
            unhealthy.push(format!(
                "{label} {id} {} {why}",
                state.map(|s| s.as_str()).unwrap_or("?")
            ));
        }
    }
    Ok(TargetHealth {
        healthy: all.len() - unhealthy.len(),
        total: all.len(),
        unhealthy,
    })
}

/// Waits until the load balancer is active and every target healthy; bounded by `timeout`.
pub async fn wait_healthy(
    aws: &Aws,
    alb: &Alb,
    timeout: Duration,
    progress: &Progress<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let unhealthy = std::cell::RefCell::new(Vec::<String>::new());
    let done = super::poll(Duration::from_secs(5), deadline, cancel, || async {
        let lbs = settled(|| aws.elb.describe_load_balancers().load_balancer_arns(&alb.arn).send())
            .await
            .during(|| "check the load balancer's state".into())?;
        let active = lbs
            .load_balancers()
            .first()
            .and_then(|l| l.state())
            .and_then(|s| s.code())
            == Some(&LoadBalancerStateEnum::Active);
        let (mut healthy, mut total) = (0, 0);
        unhealthy.borrow_mut().clear();
        for (role, arn) in &alb.target_groups {
            let h = target_health(aws, arn, role).await?;
            healthy += h.healthy;
            total += h.total;
            unhealthy.borrow_mut().extend(h.unhealthy);
        }
        progress
            .event(CloudEvent::Waiting {
                what: "load balancer targets healthy".into(),
                done: healthy,
                total,
            })
            .await;
        Ok((active && total > 0 && healthy == total).then_some(()))
    })
    .await?;
    interrupted(cancel)?;
    done.with_context(|| {
        format!(
            "load balancer targets not healthy after {}s: {}",
            timeout.as_secs(),
            unhealthy.borrow().join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(elb_name("clusters", "alb"), "clusters-alb");
        assert_eq!(elb_name("clusters", "cluster1"), "clusters-cluster1");
        let long = elb_name("a-very-long-deployment", "orchestrator");
        assert!(long.len() <= 32 && !long.ends_with('-'), "{long}");
        assert_eq!(path_patterns("/cluster1"), ["/cluster1", "/cluster1/*"]);
        assert_eq!(path_patterns("/cluster1/"), ["/cluster1", "/cluster1/*"]);
        assert_eq!(path_patterns("/"), ["/*"]);
    }
}

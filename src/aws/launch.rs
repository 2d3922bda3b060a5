//! Launches a deployment's instances: everything is checked first (AMI, instance types,
//! network), then the key pair, security groups and instances are found by tag or created,
//! each tagged at creation and recorded before the next is made, so an interrupted launch
//! leaves nothing `terminate` cannot find and the next `deploy` resumes it.

use crate::transport::ssh::known_hosts;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_ec2::types::{
    HttpTokensState, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    IpPermission, IpRange, ResourceType, RunInstancesMonitoringEnabled, UserIdGroupPair,
};
use russh::keys::PublicKey;
use tokio_util::sync::CancellationToken;

use super::network::{self, GroupPlan, Peer};
use super::resource::{self, Kind, TAG_DEPLOYMENT, TAG_HOST_KEY, TAG_ROLE, filter, tag};
use super::{Aws, AwsError, Call, Progress, find_or_create, interrupted, settled};
use crate::aws::cloud_init::HostKey;
use crate::event::CloudEvent;
use crate::spec::Spec;

/// Canonical's account, owner of the official Ubuntu AMIs.
pub const CANONICAL: &str = "099720109477";
/// The public SSM parameter naming the current Ubuntu 24.04 amd64 AMI of the region.
pub const UBUNTU_PARAMETER: &str = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id";
const UBUNTU_NAMES: &str = "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-amd64-server-*";

pub struct LaunchSettings {
    pub deployment: String,
    pub spec: Spec,
    pub key_name: String,
    /// The operator key's public half (OpenSSH line), imported when `key_name` is absent.
    pub public_key: String,
    pub ami: Option<String>,
    /// Where SSH may come from; `None`: the operator's public address, or the VPC itself
    /// when agent connects over private addresses.
    pub ssh_cidr: Option<String>,
    pub private_ssh: bool,
    /// Instances go here (its VPC is the deployment's); default: the default VPC.
    pub subnet: Option<String>,
    pub timeout: Duration,
    pub limits: Limits,
    /// 1-minute CloudWatch metrics (`Monitoring.Enabled`) instead of 5-minute ones.
    pub detailed_monitoring: bool,
}

/// The most instances, and vCPUs, the region may run at once (pending and running, every
/// deployment's). AWS Academy's Learner Lab terminates instances past 9, or past 32 vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub instances: u32,
    pub vcpus: u32,
}

impl Limits {
    pub const LEARNER_LAB: Limits = Limits {
        instances: 9,
        vcpus: 32,
    };
}

/// What a launch produced, for the SSH deploy and the load balancer.
#[derive(Debug, Clone)]
pub struct Launched {
    pub vpc: String,
    pub subnets: Vec<Subnet>,
    /// Security group id by role (and the balancer's role).
    pub groups: BTreeMap<String, String>,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub zone: String,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    /// `cluster1-1`: role and slot, unique within the deployment.
    pub name: String,
    pub role: String,
    pub private_ip: Option<String>,
    pub public_dns: Option<String>,
    /// From the instance's `agent:host-key` tag; `None` for an instance agent did not launch.
    pub host_key: Option<PublicKey>,
}

pub async fn launch(
    aws: &Aws,
    s: &LaunchSettings,
    progress: &Progress<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<Launched> {
    // Checks first: nothing is created until every input is known to be good.
    let image = image(aws, s.ami.as_deref()).await?;
    let mut vcpus = instance_types(aws, &s.spec).await?;
    check_limits(aws, s, &mut vcpus).await?;
    let (vpc, vpc_cidr, instance_subnet, subnets) = network(aws, s.subnet.as_deref()).await?;
    let mut role_subnets = BTreeMap::new();
    for (name, role) in &s.spec.roles {
        let subnet = match &role.zone {
            None => instance_subnet.clone(),
            Some(zone) if s.subnet.is_some() && *zone != instance_subnet.zone => bail!(
                "role {name} asks for zone {zone}, but --subnet {} is in {}: drop one of them",
                instance_subnet.id,
                instance_subnet.zone
            ),
            Some(zone) => subnets.iter().find(|sn| sn.zone == *zone).cloned().with_context(|| {
                let zones: Vec<&str> = subnets.iter().map(|sn| sn.zone.as_str()).collect();
                format!(
                    "role {name}: {vpc} has no subnet in zone {zone} (zones: {})",
                    zones.join(", ")
                )
            })?,
        };
        role_subnets.insert(name.clone(), subnet);
    }
    let ssh_cidr = match (&s.ssh_cidr, s.private_ssh) {
        (Some(c), _) => c.clone(),
        (None, true) => vpc_cidr,
        (None, false) => operator_cidr().await?,
    };
    progress
        .notice(format!(
            "region {}, {vpc}, instances in {} ({}), {image}, SSH from {ssh_cidr}",
            aws.region, instance_subnet.id, instance_subnet.zone
        ))
        .await;
    interrupted(cancel)?;

    key_pair(aws, s, progress).await?;
    interrupted(cancel)?;
    let plans = network::groups(&s.spec, &s.deployment, &ssh_cidr);
    let groups = security_groups(aws, &s.deployment, &vpc, &plans, progress, cancel).await?;
    interrupted(cancel)?;
    let ids = instances(aws, s, &image, &role_subnets, &groups, progress, cancel).await?;
    let instances = wait_running(aws, &ids, s.timeout, progress, cancel).await?;
    Ok(Launched {
        vpc,
        subnets,
        groups,
        instances,
    })
}

/// The AMI to launch: `--ami` if given (checked to exist here), else the current Ubuntu
/// 24.04 amd64 image from Canonical's SSM parameter, else the newest matching image owned by
/// Canonical.
pub async fn image(aws: &Aws, ami: Option<&str>) -> anyhow::Result<String> {
    if let Some(ami) = ami {
        let found = aws
            .ec2
            .describe_images()
            .image_ids(ami)
            .send()
            .await
            .during(|| format!("find AMI {ami}"));
        return match found {
            Ok(out) if !out.images().is_empty() => Ok(ami.to_owned()),
            Ok(_) => bail!(
                "AMI {ami} does not exist in {} (AMI ids differ per region): check --ami",
                aws.region
            ),
            Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => {
                bail!(
                    "AMI {ami} does not exist in {} (AMI ids differ per region): check --ami",
                    aws.region
                )
            }
            Err(e) => Err(e.into()),
        };
    }
    if let Ok(out) = aws.ssm.get_parameter().name(UBUNTU_PARAMETER).send().await
        && let Some(id) = out.parameter().and_then(|p| p.value())
    {
        return Ok(id.to_owned());
    }
    // No SSM access (or an emulator without Canonical's parameters): ask EC2 directly.
    let out = aws
        .ec2
        .describe_images()
        .owners(CANONICAL)
        .filters(filter("name", &[UBUNTU_NAMES]))
        .filters(filter("architecture", &["x86_64"]))
        .filters(filter("state", &["available"]))
        .send()
        .await
        .during(|| "find the Ubuntu 24.04 AMI".into())?;
    newest(out.images()).with_context(|| {
        format!(
            "no Ubuntu 24.04 amd64 AMI from Canonical in {}: pass --ami ami-…",
            aws.region
        )
    })
}

fn newest(images: &[aws_sdk_ec2::types::Image]) -> Option<String> {
    images
        .iter()
        .filter(|i| i.owner_id() == Some(CANONICAL))
        .max_by_key(|i| i.creation_date().unwrap_or_default().to_owned())
        .and_then(|i| i.image_id())
        .map(str::to_owned)
}

/// Checks that the region offers the spec's instance types; their vCPUs by type.
async fn instance_types(aws: &Aws, spec: &Spec) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut vcpus = BTreeMap::new();
    let mut types: Vec<&str> = spec.roles.values().map(|r| r.instance_type.as_str()).collect();
    types.sort();
    types.dedup();
    for t in types {
        let found = aws
            .ec2
            .describe_instance_types()
            .instance_types(InstanceType::from(t))
            .send()
            .await
            .during(|| format!("check instance type {t}"));
        let role = spec
            .roles
            .iter()
            .find(|(_, r)| r.instance_type == t)
            .map(|(n, _)| n.as_str());
        let bad = || {
            anyhow::anyhow!(
                "instance type {t:?} (role {}) is not offered in {}: fix instance_type in the spec (e.g. t2.micro, t3.large)",
                role.unwrap_or("?"),
                aws.region
            )
        };
        match found {
            Ok(out) => {
                let info = out.instance_types().first().ok_or_else(bad)?;
                vcpus.insert(t.to_owned(), default_vcpus(info));
            }
            Err(e)
                if e.code()
                    .is_some_and(|c| c.starts_with("InvalidInstanceType") || c == "InvalidParameterValue") =>
            {
                return Err(bad());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(vcpus)
}

fn default_vcpus(info: &aws_sdk_ec2::types::InstanceTypeInfo) -> u32 {
    let n = info.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or(1);
    u32::try_from(n).unwrap_or(1)
}

/// What the region would run once this deployment runs: every other pending or running
/// instance (any deployment's, or none's) plus the spec's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub others: u32,
    pub other_vcpus: u32,
    pub spec: u32,
    pub spec_vcpus: u32,
}

impl Usage {
    /// One line naming the limit passed, or `None` within both.
    pub fn refusal(&self, limits: Limits, deployment: &str, region: &str) -> Option<String> {
        let (n, v) = (self.others + self.spec, self.other_vcpus + self.spec_vcpus);
        let what = if n > limits.instances {
            format!("{n} instances, over the limit of {}", limits.instances)
        } else if v > limits.vcpus {
            format!("{v} vCPUs, over the limit of {}", limits.vcpus)
        } else {
            return None;
        };
        let lab = if limits == Limits::LEARNER_LAB {
            " (the Learner Lab's: past it, the lab terminates instances)"
        } else {
            ""
        };
        Some(format!(
            "{region} would run {what}{lab}: {} other instances ({} vCPUs) are pending or running, and {deployment} needs {} ({} vCPUs); agent terminate a deployment you no longer need, or on an account with higher limits pass --max-instances/--max-vcpus",
            self.others, self.other_vcpus, self.spec, self.spec_vcpus
        ))
    }
}

/// Refuses, before anything is created, a launch that would take the region past `limits`.
async fn check_limits(aws: &Aws, s: &LaunchSettings, vcpus: &mut BTreeMap<String, u32>) -> anyhow::Result<()> {
    let mut others: Vec<String> = Vec::new();
    let mut pages = aws
        .ec2
        .describe_instances()
        .filters(filter("instance-state-name", &["pending", "running"]))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.during(|| format!("count the instances running in {}", aws.region))?;
        for i in page.reservations().iter().flat_map(|r| r.instances()) {
            // This deployment's own instances are counted as the spec's.
            if tag(i.tags(), TAG_DEPLOYMENT) != Some(s.deployment.as_str()) {
                others.push(i.instance_type().map(|t| t.as_str().to_owned()).unwrap_or_default());
            }
        }
    }
    let unknown: Vec<String> = others
        .iter()
        .filter(|t| !t.is_empty() && !vcpus.contains_key(*t))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !unknown.is_empty() {
        let out = aws
            .ec2
            .describe_instance_types()
            .set_instance_types(Some(unknown.iter().map(|t| InstanceType::from(t.as_str())).collect()))
            .send()
            .await
            .during(|| format!("look up the vCPUs of {}", unknown.join(", ")))?;
        for info in out.instance_types() {
            if let Some(t) = info.instance_type() {
                vcpus.insert(t.as_str().to_owned(), default_vcpus(info));
            }
        }
    }
    let of = |t: &str| vcpus.get(t).copied().unwrap_or(1);
    let usage = Usage {
        others: others.len() as u32,
        other_vcpus: others.iter().map(|t| of(t)).sum(),
        spec: s.spec.roles.values().map(|r| r.count).sum(),
        spec_vcpus: s.spec.roles.values().map(|r| r.count * of(&r.instance_type)).sum(),
    };
    match usage.refusal(s.limits, &s.deployment, &aws.region) {
        Some(line) => bail!(line),
        None => Ok(()),
    }
}

/// (vpc, its CIDR, the instances' subnet, one subnet per zone of the VPC).
async fn network(aws: &Aws, subnet: Option<&str>) -> anyhow::Result<(String, String, Subnet, Vec<Subnet>)> {
    let vpc = match subnet {
        Some(id) => {
            let out = aws
                .ec2
                .describe_subnets()
                .subnet_ids(id)
                .send()
                .await
                .during(|| format!("find subnet {id}"))
                .map_err(|e| match e.code() {
                    Some(c) if c.starts_with("InvalidSubnet") => {
                        anyhow::anyhow!("subnet {id} does not exist in {}: check --subnet", aws.region)
                    }
                    _ => e.into(),
                })?;
            out.subnets()
                .first()
                .and_then(|s| s.vpc_id())
                .with_context(|| format!("subnet {id} does not exist in {}: check --subnet", aws.region))?
                .to_owned()
        }
        None => {
            let out = aws
                .ec2
                .describe_vpcs()
                .filters(filter("is-default", &["true"]))
                .send()
                .await
                .during(|| "find the default VPC".into())?;
            out.vpcs()
                .first()
                .and_then(|v| v.vpc_id())
                .with_context(|| {
                    format!(
                        "no default VPC in {}: pass --subnet subnet-… of the VPC to use",
                        aws.region
                    )
                })?
                .to_owned()
        }
    };
    let vpcs = aws
        .ec2
        .describe_vpcs()
        .vpc_ids(&vpc)
        .send()
        .await
        .during(|| format!("describe {vpc}"))?;
    let cidr = vpcs
        .vpcs()
        .first()
        .and_then(|v| v.cidr_block())
        .with_context(|| format!("{vpc} has no IPv4 CIDR"))?
        .to_owned();
    let out = aws
        .ec2
        .describe_subnets()
        .filters(filter("vpc-id", &[&vpc]))
        .send()
        .await
        .during(|| format!("list the subnets of {vpc}"))?;
    let mut all: Vec<(bool, Subnet)> = out
        .subnets()
        .iter()
        .filter_map(|s| {
            Some((
                s.default_for_az().unwrap_or(false),
                Subnet {
                    id: s.subnet_id()?.to_owned(),
                    zone: s.availability_zone()?.to_owned(),
                },
            ))
        })
        .collect();
    // Per zone, the default subnet first, then by id: the same choice every run.
    all.sort_by(|(da, a), (db, b)| a.zone.cmp(&b.zone).then(db.cmp(da)).then(a.id.cmp(&b.id)));
    let chosen = match subnet {
        Some(id) => all.iter().map(|(_, s)| s).find(|s| s.id == id).cloned(),
        None => all.iter().find(|(d, _)| *d).map(|(_, s)| s.clone()),
    }
    .with_context(|| format!("no usable subnet in {vpc}: pass --subnet subnet-…"))?;
    let mut per_zone: Vec<Subnet> = vec![chosen.clone()];
    for (_, s) in &all {
        if !per_zone.iter().any(|p| p.zone == s.zone) {
            per_zone.push(s.clone());
        }
    }
    Ok((vpc, cidr, chosen, per_zone))
}

/// The operator's public address as a /32, asked of checkip.amazonaws.com (bounded).
async fn operator_cidr() -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect("checkip.amazonaws.com:80").await?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: checkip.amazonaws.com\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        let ip = body.rsplit("\r\n\r\n").next().unwrap_or_default().trim().to_owned();
        ip.parse::<std::net::Ipv4Addr>()
            .map_err(|_| std::io::Error::other(format!("unexpected answer {ip:?}")))
    };
    match tokio::time::timeout(Duration::from_secs(10), ask).await {
        Ok(Ok(ip)) => Ok(format!("{ip}/32")),
        Ok(Err(e)) => bail!(
            "cannot learn your public address from checkip.amazonaws.com ({e}): pass --ssh-cidr A.B.C.D/32 (SSH is only opened to it)"
        ),
        Err(_) => {
            bail!("checkip.amazonaws.com did not answer in 10 s: pass --ssh-cidr A.B.C.D/32 (SSH is only opened to it)")
        }
    }
}

async fn key_pair(aws: &Aws, s: &LaunchSettings, progress: &Progress<'_>) -> anyhow::Result<()> {
    let name = &s.key_name;
    let found = match aws
        .ec2
        .describe_key_pairs()
        .key_names(name)
        .send()
        .await
        .during(|| format!("find key pair {name}"))
    {
        Ok(out) => out
            .key_pairs()
            .first()
            .map(|k| k.key_pair_id().unwrap_or(name).to_owned()),
        Err(e) if e.code() == Some("InvalidKeyPair.NotFound") => None,
        Err(e) => return Err(e.into()),
    };
    find_or_create(progress, Kind::KeyPair, name, found, String::clone, || async {
        let tags = resource::tags(&s.deployment, None, name);
        let out = aws
            .ec2
            .import_key_pair()
            .key_name(name)
            .public_key_material(aws_sdk_ec2::primitives::Blob::new(s.public_key.as_bytes()))
            .tag_specifications(resource::ec2_tags(ResourceType::KeyPair, &tags))
            .send()
            .await
            .during(|| format!("import key pair {name}"))?;
        Ok(out.key_pair_id().unwrap_or(name).to_owned())
    })
    .await?;
    Ok(())
}

async fn security_groups(
    aws: &Aws,
    deployment: &str,
    vpc: &str,
    plans: &[GroupPlan],
    progress: &Progress<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut ids = BTreeMap::new();
    for g in plans {
        interrupted(cancel)?;
        let out = aws
            .ec2
            .describe_security_groups()
            .filters(filter("vpc-id", &[vpc]))
            .filters(filter("group-name", &[&g.name]))
            .send()
            .await
            .during(|| format!("find security group {}", g.name))?;
        let found = out.security_groups().first().and_then(|sg| {
            let mine = tag(sg.tags(), TAG_DEPLOYMENT) == Some(deployment);
            Some((sg.group_id()?.to_owned(), mine))
        });
        let found = match found {
            Some((id, false)) => bail!(
                "security group {} ({id}) exists in {vpc} but is not agent's deployment {deployment}: remove it or deploy under another --name",
                g.name
            ),
            other => other.map(|(id, _)| id),
        };
        let id = find_or_create(progress, Kind::SecurityGroup, &g.name, found, String::clone, || async {
            let tags = resource::tags(deployment, Some(&g.role), &g.name);
            let out = aws
                .ec2
                .create_security_group()
                .group_name(&g.name)
                .description(&g.description)
                .vpc_id(vpc)
                .tag_specifications(resource::ec2_tags(ResourceType::SecurityGroup, &tags))
                .send()
                .await
                .during(|| format!("create security group {}", g.name))?;
            Ok(out.group_id().context("CreateSecurityGroup returned no id")?.to_owned())
        })
        .await?;
        ids.insert(g.role.clone(), id);
    }
    for g in plans {
        for rule in &g.ingress {
            let mut p = IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(i32::from(rule.port))
                .to_port(i32::from(rule.port));
            p = match &rule.from {
                Peer::Cidr(c) => p.ip_ranges(IpRange::builder().cidr_ip(c).build()),
                Peer::Group(role) => p.user_id_group_pairs(UserIdGroupPair::builder().group_id(&ids[role]).build()),
            };
            let permission = p.build();
            let r = settled(|| {
                aws.ec2
                    .authorize_security_group_ingress()
                    .group_id(&ids[&g.role])
                    .ip_permissions(permission.clone())
                    .send()
            })
            .await
            .during(|| format!("open port {} of {}", rule.port, g.name));
            match r {
                Err(e) if e.code() != Some("InvalidPermission.Duplicate") => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(ids)
}

/// Instances of the deployment that are not terminated.
pub async fn existing(aws: &Aws, deployment: &str) -> Result<Vec<aws_sdk_ec2::types::Instance>, AwsError> {
    let mut found = Vec::new();
    let mut pages = aws
        .ec2
        .describe_instances()
        .filters(resource::deployment_filter(deployment))
        .filters(filter(
            "instance-state-name",
            &["pending", "running", "stopping", "stopped", "shutting-down"],
        ))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.during(|| format!("list the instances of {deployment}"))?;
        for r in page.reservations() {
            found.extend(r.instances().iter().cloned());
        }
    }
    Ok(found)
}

async fn instances(
    aws: &Aws,
    s: &LaunchSettings,
    image: &str,
    subnets: &BTreeMap<String, Subnet>,
    groups: &BTreeMap<String, String>,
    progress: &Progress<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<String>> {
    let existing = existing(aws, &s.deployment).await?;
    let mut ids = Vec::new();
    let mut stopped = Vec::new();
    for (role_name, role) in &s.spec.roles {
        for slot in 1..=role.count {
            interrupted(cancel)?;
            let name = format!("{role_name}-{slot}");
            let tag_name = format!("{}-{name}", s.deployment);
            let found = existing.iter().find(|i| tag(i.tags(), "Name") == Some(&tag_name));
            if let Some(i) = found {
                let id = i.instance_id().unwrap_or_default();
                match i.state().and_then(|st| st.name()) {
                    Some(InstanceStateName::Stopped | InstanceStateName::Stopping) => stopped.push(id.to_owned()),
                    Some(InstanceStateName::ShuttingDown) => {
                        bail!("instance {id} ({tag_name}) is shutting down: wait for it to end, then deploy again")
                    }
                    _ => {}
                }
            }
            let found = found.map(|i| i.instance_id().unwrap_or_default().to_owned());
            let id = find_or_create(progress, Kind::Instance, &tag_name, found, String::clone, || async {
                let key = HostKey::generate(&format!("agent:{}/{name}", s.deployment))
                    .context("cannot generate a host key (/dev/urandom)")?;
                let mut tags = resource::tags(&s.deployment, Some(role_name), &tag_name);
                tags.push((TAG_HOST_KEY, key.public_line()));
                let request = aws
                    .ec2
                    .run_instances()
                    .image_id(image)
                    .instance_type(InstanceType::from(role.instance_type.as_str()))
                    .key_name(&s.key_name)
                    .min_count(1)
                    .max_count(1)
                    .subnet_id(&subnets[role_name].id)
                    .security_group_ids(&groups[role_name])
                    .user_data(aws_smithy_types::base64::encode(
                        key.user_data(&format!("{} {name}", s.deployment)),
                    ))
                    .tag_specifications(resource::ec2_tags(ResourceType::Instance, &tags))
                    .tag_specifications(resource::ec2_tags(ResourceType::Volume, &tags[..3]))
                    .metadata_options(metadata_options())
                    .monitoring(
                        RunInstancesMonitoringEnabled::builder()
                            .enabled(s.detailed_monitoring)
                            .build(),
                    );
                // (the security group may be this run's, not yet visible to EC2's launch path)
                let out = settled(|| request.clone().send())
                    .await
                    .during(|| format!("launch {tag_name} ({}, {image})", role.instance_type))?;
                let id = out
                    .instances()
                    .first()
                    .and_then(|i| i.instance_id())
                    .context("RunInstances returned no instance")?
                    .to_owned();
                // Pinned the moment it exists, under its id (its address comes later).
                progress.host_key(&id, &key.public())?;
                Ok(id)
            })
            .await?;
            ids.push(id);
        }
    }
    if !stopped.is_empty() {
        aws.ec2
            .start_instances()
            .set_instance_ids(Some(stopped.clone()))
            .send()
            .await
            .during(|| format!("start stopped instances {}", stopped.join(", ")))?;
        progress
            .notice(format!("started stopped instances {}", stopped.join(", ")))
            .await;
    }
    Ok(ids)
}

/// Brings each instance's `agent:host-key` tag up to the key pinned for it after a
/// rotation, so that a machine without this one's known_hosts seeds the right key. The tag
/// is a convenience, never trusted over the local record: a failure here is only reported.
pub async fn retag_host_keys(
    aws: &Aws,
    launched: &Launched,
    known_hosts: &known_hosts::KnownHosts,
    progress: &Progress<'_>,
) {
    for i in &launched.instances {
        let on_file = known_hosts.labelled(&i.id).unwrap_or_default();
        let [pinned] = on_file.as_slice() else {
            continue;
        };
        if i.host_key.as_ref().is_some_and(|k| k.key_data() == pinned.key_data()) {
            continue;
        }
        let Ok(line) = pinned.to_openssh() else { continue };
        let tagged = aws
            .ec2
            .create_tags()
            .resources(&i.id)
            .tags(aws_sdk_ec2::types::Tag::builder().key(TAG_HOST_KEY).value(line).build())
            .send()
            .await
            .during(|| format!("tag {} with its new host key", i.id));
        if let Err(e) = tagged {
            progress.notice(format!("warning: {e}")).await;
        }
    }
}

/// The metadata service answers only IMDSv2 (a session token fetched with PUT), and only
/// one network hop away: a container or proxy on the instance cannot reach it for another
/// caller, and a request forged through the app (SSRF) cannot fetch the token.
fn metadata_options() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_tokens(HttpTokensState::Required)
        .http_put_response_hop_limit(1)
        .build()
}

/// Waits until every instance runs, reporting progress; bounded by `timeout`.
async fn wait_running(
    aws: &Aws,
    ids: &[String],
    timeout: Duration,
    progress: &Progress<'_>,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<Instance>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let not_running = std::cell::RefCell::new(Vec::new());
    let done = super::poll(Duration::from_secs(2), deadline, cancel, || async {
        let out = settled(|| aws.ec2.describe_instances().set_instance_ids(Some(ids.to_vec())).send())
            .await
            .during(|| "check the instances' state".into())?;
        let all: Vec<aws_sdk_ec2::types::Instance> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances().iter().cloned())
            .collect();
        let mut running = Vec::new();
        not_running.borrow_mut().clear();
        for i in &all {
            let id = i.instance_id().unwrap_or_default();
            match i.state().and_then(|s| s.name()) {
                Some(InstanceStateName::Running) => running.push(describe(i)),
                Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated) => {
                    let why = i.state_reason().and_then(|r| r.message()).unwrap_or("no reason given");
                    return Err(AwsError::Service {
                        action: format!("launch {id}"),
                        code: "InstanceTerminated".into(),
                        message: format!("it was terminated while starting ({why})"),
                    });
                }
                _ => not_running.borrow_mut().push(id.to_owned()),
            }
        }
        progress
            .event(CloudEvent::Waiting {
                what: "instances running".into(),
                done: running.len(),
                total: ids.len(),
            })
            .await;
        Ok((running.len() == ids.len()).then_some(running))
    })
    .await?;
    interrupted(cancel)?;
    done.with_context(|| {
        format!(
            "instances not running after {}s: {}; deploy again to resume, or agent terminate to remove them",
            timeout.as_secs(),
            not_running.borrow().join(", ")
        )
    })
}

/// An EC2 instance as the deploy sees it.
pub fn describe(i: &aws_sdk_ec2::types::Instance) -> Instance {
    let full = tag(i.tags(), "Name").unwrap_or_default();
    let deployment = tag(i.tags(), TAG_DEPLOYMENT).unwrap_or_default();
    Instance {
        id: i.instance_id().unwrap_or_default().to_owned(),
        name: full.strip_prefix(&format!("{deployment}-")).unwrap_or(full).to_owned(),
        role: tag(i.tags(), TAG_ROLE).unwrap_or_default().to_owned(),
        private_ip: i.private_ip_address().filter(|a| !a.is_empty()).map(str::to_owned),
        public_dns: i.public_dns_name().filter(|a| !a.is_empty()).map(str::to_owned),
        host_key: tag(i.tags(), TAG_HOST_KEY).and_then(|k| PublicKey::from_openssh(k).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_what_passes_them() {
        let usage = Usage {
            others: 9,
            other_vcpus: 9,
            spec: 5,
            spec_vcpus: 10,
        };
        let line = usage.refusal(Limits::LEARNER_LAB, "inference", "us-east-1").unwrap();
        assert!(
            line.starts_with("us-east-1 would run 14 instances, over the limit of 9 (the Learner Lab's: past it, the lab terminates instances): 9 other instances (9 vCPUs)"),
            "{line}"
        );
        let raised = Limits {
            instances: 20,
            vcpus: 18,
        };
        let line = usage.refusal(raised, "inference", "us-east-1").unwrap();
        assert!(
            line.starts_with("us-east-1 would run 19 vCPUs, over the limit of 18: "),
            "{line}"
        );
        assert_eq!(
            usage.refusal(
                Limits {
                    instances: 14,
                    vcpus: 19
                },
                "inference",
                "r"
            ),
            None
        );
    }
}

//! A deployment's security groups as pure data: one per role, one for the load balancer.
//! SSH only from the operator; a role's ports from the roles named in `reachable_from`,
//! else from the load balancer when a route leads to the role, else from anywhere (the
//! deployment's public entry point, such as the orchestrator).

use crate::spec::Spec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    /// The spec role, or the balancer's role (`lb`).
    pub role: String,
    pub name: String,
    pub description: String,
    pub ingress: Vec<Ingress>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    pub port: u16,
    pub from: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Cidr(String),
    /// The security group of this role.
    Group(String),
}

pub const ANYWHERE: &str = "0.0.0.0/0";

pub fn group_name(deployment: &str, role: &str) -> String {
    format!("{deployment}-{role}")
}

pub fn groups(spec: &Spec, deployment: &str, ssh_cidr: &str) -> Vec<GroupPlan> {
    let balanced = |role: &str| {
        spec.balancer
            .as_ref()
            .filter(|b| b.routes.iter().any(|r| r.role == role))
            .map(|b| b.role.clone())
    };
    let mut out: Vec<GroupPlan> = spec
        .roles
        .iter()
        .map(|(name, role)| {
            let mut ingress = vec![Ingress {
                port: 22,
                from: Peer::Cidr(ssh_cidr.to_owned()),
            }];
            let mut sources: Vec<Peer> = role.reachable_from.iter().cloned().map(Peer::Group).collect();
            if let Some(lb) = balanced(name) {
                sources.push(Peer::Group(lb));
            }
            if sources.is_empty() {
                sources.push(Peer::Cidr(ANYWHERE.into()));
            }
            for &port in &role.ports {
                ingress.extend(sources.iter().map(|from| Ingress {
                    port,
                    from: from.clone(),
                }));
            }
            GroupPlan {
                role: name.clone(),
                name: group_name(deployment, name),
                description: format!("agent {deployment}: {name} (SSH from {ssh_cidr})"),
                ingress,
            }
        })
        .collect();
    if let Some(b) = &spec.balancer {
        out.push(GroupPlan {
            role: b.role.clone(),
            name: group_name(deployment, &b.role),
            description: format!("agent {deployment}: load balancer, HTTP from anywhere"),
            ingress: vec![Ingress {
                port: b.port,
                from: Peer::Cidr(ANYWHERE.into()),
            }],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(g: &GroupPlan) -> Vec<String> {
        g.ingress
            .iter()
            .map(|i| match &i.from {
                Peer::Cidr(c) => format!("{} from {c}", i.port),
                Peer::Group(r) => format!("{} from group {r}", i.port),
            })
            .collect()
    }

    #[test]
    fn clusters_are_reachable_only_through_the_load_balancer() {
        let spec = Spec::load("clusters").unwrap();
        let groups = groups(&spec, "clusters", "203.0.113.7/32");
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["clusters-cluster1", "clusters-cluster2", "clusters-lb"]);
        assert_eq!(rules(&groups[0]), ["22 from 203.0.113.7/32", "80 from group lb"]);
        assert_eq!(rules(&groups[1]), ["22 from 203.0.113.7/32", "80 from group lb"]);
        assert_eq!(rules(&groups[2]), ["80 from 0.0.0.0/0"]);
    }

    #[test]
    fn workers_are_reachable_only_from_the_orchestrator() {
        let spec = Spec::load("inference").unwrap();
        let groups = groups(&spec, "inf", "10.0.0.0/16");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].role, "orchestrator");
        assert_eq!(rules(&groups[0]), ["22 from 10.0.0.0/16", "80 from 0.0.0.0/0"]);
        assert_eq!(
            rules(&groups[1]),
            [
                "22 from 10.0.0.0/16",
                "5000 from group orchestrator",
                "5001 from group orchestrator"
            ]
        );
    }
}

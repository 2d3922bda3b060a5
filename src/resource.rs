//! What agent creates in a cloud, as recorded data: the kind, the id the provider gave it
//! and its name. The deployment record keeps these; `terminate` and the printer read them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    KeyPair,
    SecurityGroup,
    Instance,
    LoadBalancer,
    TargetGroup,
    Listener,
    Rule,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::KeyPair => "key pair",
            Kind::SecurityGroup => "security group",
            Kind::Instance => "instance",
            Kind::LoadBalancer => "load balancer",
            Kind::TargetGroup => "target group",
            Kind::Listener => "listener",
            Kind::Rule => "rule",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: Kind,
    /// The id or ARN AWS gave it.
    pub id: String,
    /// Its Name tag or AWS name.
    pub name: String,
}

//! Deployment specs: which roles a deployment has, and per role which remote program runs,
//! on how many instances of which type, on which ports, reachable from whom.
//!
//! Two specs ship inside the binary (`clusters`, `inference`: the course labs); any other is
//! a TOML file of the same shape (see `remote/specs/`). Parsing checks everything a later
//! step would trip on, so a bad spec fails with one line before anything is touched.

use crate::format;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The programs in `remote/` that a role can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Program {
    /// The Flask-equivalent web app (`agent-web`).
    Web,
    /// Queues requests and dispatches them to free workers.
    Orchestrator,
    /// Runs DistilBERT sequence classification.
    Worker,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub program: Program,
    /// Instances to launch on EC2 (static hosts: the inventory's hosts with this role).
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// EC2 availability zone for this role's instances (e.g. us-east-1b) [default: the
    /// zone of the deployment's subnet].
    #[serde(default)]
    pub zone: Option<String>,
    /// One process of the program per port.
    pub ports: Vec<u16>,
    /// Roles whose hosts may reach these ports; empty means the load balancer / anyone.
    #[serde(default)]
    pub reachable_from: Vec<String>,
    /// Extra apt packages.
    #[serde(default)]
    pub packages: Vec<String>,
    /// HTTP path answered with 200 once the program serves.
    #[serde(default = "default_health")]
    pub health: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balancer {
    pub port: u16,
    /// On static hosts, the inventory role of the host that runs HAProxy.
    pub role: String,
    /// First match wins; a route matches its path and everything below it. No match: 404.
    pub routes: Vec<Route>,
}

impl Balancer {
    /// The line telling the operator where the balancer answers, at `authority` (host or
    /// host:port): `load balancer: http://A/ (/cluster1 → cluster1, …; anything else 404)`.
    pub fn footer(&self, authority: &str) -> String {
        let routes: Vec<String> = self.routes.iter().map(|r| format!("{} → {}", r.path, r.role)).collect();
        format!(
            "load balancer: http://{authority}/ ({}; anything else 404)",
            routes.join(", ")
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub path: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub roles: BTreeMap<String, Role>,
    pub balancer: Option<Balancer>,
}

fn one() -> u32 {
    1
}
fn default_instance_type() -> String {
    "t2.micro".into()
}
fn default_health() -> String {
    "/health".into()
}

const BUILTIN: [(&str, &str); 2] = [
    ("clusters", include_str!("../remote/specs/clusters.toml")),
    ("inference", include_str!("../remote/specs/inference.toml")),
];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no spec named {0:?}: use clusters, inference, or the path of a .toml file")]
    Unknown(String),
    // Not `source`: the message already carries it, and `{:#}` would print it twice.
    #[error("cannot read spec {path}: {error} (built-in specs: clusters, inference)")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("spec {origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Spec {
    /// A built-in spec by name, or a spec file by path (anything with a `/` or `.toml`).
    pub fn load(name_or_path: &str) -> Result<Spec, SpecError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Spec::parse(text, name_or_path);
        }
        if !name_or_path.contains('/') && !name_or_path.ends_with(".toml") {
            return Err(SpecError::Unknown(name_or_path.to_owned()));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|error| SpecError::Read {
            path: path.to_owned(),
            error,
        })?;
        Spec::parse(&text, name_or_path)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Spec, SpecError> {
        let invalid = |message: String| SpecError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let spec: Spec = toml::from_str(text).map_err(|e| invalid(format::toml_error(text, &e)))?;
        spec.check().map_err(invalid)?;
        Ok(spec)
    }

    fn check(&self) -> Result<(), String> {
        if self.roles.is_empty() {
            return Err("no roles: add a [roles.NAME] table".into());
        }
        let known = |r: &str| self.roles.contains_key(r);
        let names = || self.roles.keys().cloned().collect::<Vec<_>>().join(", ");
        for (name, role) in &self.roles {
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || name.len() > 32 {
                return Err(format!("role name {name:?}: use up to 32 letters, digits and '-'"));
            }
            if role.ports.is_empty() {
                return Err(format!(
                    "role {name}: ports is empty; give the program at least one port"
                ));
            }
            let mut seen = BTreeSet::new();
            for &port in &role.ports {
                if port == 0 {
                    return Err(format!("role {name}: port 0 is not a port (use 1-65535)"));
                }
                if !seen.insert(port) {
                    return Err(format!("role {name}: port {port} is listed twice"));
                }
            }
            if role.count == 0 {
                return Err(format!("role {name}: count must be at least 1"));
            }
            if !role.health.starts_with('/') {
                return Err(format!(
                    "role {name}: health {:?} must be a path starting with /",
                    role.health
                ));
            }
            for from in &role.reachable_from {
                if !known(from) {
                    return Err(format!(
                        "role {name}: reachable_from names unknown role {from:?} (roles: {})",
                        names()
                    ));
                }
            }
        }
        if let Some(b) = &self.balancer {
            if b.port == 0 {
                return Err("balancer: port 0 is not a port (use 1-65535)".into());
            }
            if known(&b.role) {
                return Err(format!(
                    "balancer: role {:?} is an app role; name the load-balancer host's own role",
                    b.role
                ));
            }
            for r in &b.routes {
                if !r.path.starts_with('/') || r.path.contains(char::is_whitespace) {
                    return Err(format!(
                        "balancer: route path {:?} must start with / and have no spaces",
                        r.path
                    ));
                }
                if !known(&r.role) {
                    return Err(format!(
                        "balancer: route {} goes to unknown role {:?} (roles: {})",
                        r.path,
                        r.role,
                        names()
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_match_the_course_labs() {
        let c = Spec::load("clusters").unwrap();
        assert_eq!(
            (c.roles["cluster1"].count, c.roles["cluster1"].instance_type.as_str()),
            (5, "m4.large")
        );
        assert_eq!(
            (c.roles["cluster2"].count, c.roles["cluster2"].instance_type.as_str()),
            (4, "t2.large")
        );
        let b = c.balancer.unwrap();
        assert_eq!(
            b.routes.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["/cluster1", "/cluster2"]
        );
        let i = Spec::load("inference").unwrap();
        assert_eq!(i.roles["worker"].ports, [5000, 5001]);
        assert_eq!(i.roles["worker"].count, 4);
        assert_eq!(i.roles["worker"].reachable_from, ["orchestrator"]);
        assert_eq!(i.roles["orchestrator"].program, Program::Orchestrator);
    }

    fn err(text: &str) -> String {
        let e = Spec::parse(text, "t.toml").unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    }

    #[test]
    fn bad_specs_fail_with_one_line_each() {
        let base = "name = \"x\"\n[roles.web]\nprogram = \"web\"\n";
        assert!(err(&format!("{base}ports = [0]\n")).contains("role web: port 0 is not a port"));
        assert!(err(&format!("{base}ports = [80, 80]\n")).contains("port 80 is listed twice"));
        assert!(err(&format!("{base}ports = [70000]\n")).contains("line 4"));
        assert!(err(&format!("{base}ports = [80]\nprot = 1\n")).contains("unknown field `prot`"));
        assert!(
            err("name = \"x\"\n[roles.web]\nprogram = \"flask\"\nports = [80]\n").contains("unknown variant `flask`")
        );
        let e = err(&format!(
            "{base}ports = [80]\n[balancer]\nport = 80\nrole = \"lb\"\nroutes = [{{ path = \"/a\", role = \"db\" }}]\n"
        ));
        assert_eq!(
            e,
            "spec t.toml: balancer: route /a goes to unknown role \"db\" (roles: web)"
        );
        let e = err(&format!("{base}ports = [80]\nreachable_from = [\"orch\"]\n"));
        assert!(e.contains("reachable_from names unknown role \"orch\""), "{e}");
        assert!(err("name = \"x\"\nroles = {}\n").contains("no roles"));
    }

    #[test]
    fn names_and_paths() {
        assert!(matches!(Spec::load("cluster"), Err(SpecError::Unknown(_))));
        assert!(matches!(Spec::load("/nonexistent/x.toml"), Err(SpecError::Read { .. })));
    }
}

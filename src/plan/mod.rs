//! What a deployment will do on each host, as pure data: files to upload (with their rendered
//! text or the program to build), packages to install, services to start, health checks.
//! Built from a spec and hosts with no I/O, so `agent plan` can show it before anything is
//! touched and tests can compare it as values.

pub mod haproxy;
pub mod unit;

use crate::shell;
use crate::shell::quote;
use crate::spec;
use std::fmt;

use serde::Serialize;

use agent_protocol::env as vars;

use crate::inventory::Host;
use crate::spec::{Program, Spec};
use haproxy::{BalancedRoute, HaproxyConfig, Server};
use unit::{ServiceUnit, Word};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub deployment: String,
    pub hosts: Vec<HostPlan>,
    /// The roles a balancer host routes to (its backends are named after them, its servers
    /// after the hosts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub balanced: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPlan {
    pub host: String,
    pub address: String,
    pub role: String,
    pub packages: Vec<String>,
    pub files: Vec<FilePlan>,
    /// Commands run once the files are in place, before the services (re)start: each is
    /// idempotent, so a re-run is cheap and a half-done one completes.
    pub setup: Vec<SetupPlan>,
    /// Services to enable and start, in order.
    pub services: Vec<ServicePlan>,
    /// HTTP checks that must pass once the services run.
    pub health: Vec<HealthCheck>,
    /// The load balancer: deployed once every other host is done, so it starts with its
    /// backends already serving.
    pub balancer: bool,
    /// EC2: replace the host key the instance's user data carries (see
    /// [`crate::script::step::host_key_renew`]), pinning the new one under this record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_key: Option<HostKeyPin>,
}

/// Where a host's key is pinned in agent's known_hosts: the host's pattern (address, or
/// `[address]:port`) and the line's label (the EC2 instance id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostKeyPin {
    pub pattern: String,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePlan {
    /// The systemd unit (`agent-web.service`); also the service's name under agent's supervisor.
    pub unit: String,
    /// What agent's supervisor runs on hosts without systemd as PID 1.
    pub command: Vec<String>,
}

/// `GET path` on the host's `port` must answer `status`. Asked from the host itself (through
/// the SSH connection), so firewalls between agent and the port do not matter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub port: u16,
    pub path: String,
    pub status: u16,
    /// The service whose log explains a failure.
    pub service: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupPlan {
    /// What it does, for the operator (`fetch the model`).
    pub description: String,
    /// Run as root by `/bin/sh -c`. Its stdout lines become the step's detail; a line
    /// starting `changed: ` marks the step changed.
    pub script: String,
    /// Services to restart when it changed something (a new model must be loaded).
    pub restarts: Vec<String>,
    pub limit_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilePlan {
    pub path: String,
    pub mode: u32,
    pub source: Source,
    /// Services to restart when this file's content changes.
    pub restarts: Vec<String>,
    /// A command that must accept the new file (`{}` is its temporary path) before it
    /// replaces the old one, as Ansible's `validate`: a broken config never goes live.
    pub validate: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Rendered text, uploaded as is.
    Text(String),
    /// A program of `remote/`, built for x86_64 Linux in release mode at deploy time.
    Program(&'static str),
    /// A file of the operator's machine (absolute path), uploaded as is.
    Local(String),
}

/// Where the worker hosts get their DistilBERT model (a Hugging Face folder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// Each worker host downloads the files once from this base URL (`URL/config.json`, ...).
    Fetch(String),
    /// Upload the operator's copy: these files (absolute paths) of one folder.
    Upload(Vec<String>),
}

impl Default for ModelSource {
    fn default() -> Self {
        ModelSource::Fetch(MODEL_URL.to_owned())
    }
}

/// The course lab's model, from the Hugging Face hub.
pub const MODEL_URL: &str = "https://huggingface.co/distilbert-base-uncased/resolve/main";
/// Where worker hosts keep models, one folder per deployment.
pub const MODELS_DIR: &str = "/opt/agent/models";
/// The seed of the classification head every worker of a deployment draws (see agent-worker).
pub const HEAD_SEED: u64 = 0;
/// Downloading 268 MB on a slow instance, with retries.
const FETCH_LIMIT_SECS: u64 = 900;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("spec {spec} needs hosts with role {role:?}, and the inventory has none (its roles: {known})")]
    MissingRole { spec: String, role: String, known: String },
    #[error(
        "spec {spec} puts its load balancer on the host with role {role:?}: give exactly one host that role (found {found})"
    )]
    Balancer { spec: String, role: String, found: usize },
}

/// Where agent's supervisor runs HAProxy in the foreground (master-worker, like its unit).
const HAPROXY_CONFIG: &str = "/etc/haproxy/haproxy.cfg";

/// The binary a program is installed as.
pub fn binary(program: Program) -> &'static str {
    match program {
        Program::Web => "agent-web",
        Program::Orchestrator => "agent-orchestrator",
        Program::Worker => "agent-worker",
    }
}

fn by_role<'a>(hosts: &'a [Host], role: &'a str) -> impl Iterator<Item = &'a Host> + 'a {
    hosts.iter().filter(move |h| h.role.as_deref() == Some(role))
}

/// Plans `spec` onto `hosts`, matching hosts to spec roles by their inventory role. Hosts
/// whose role the spec does not name are not part of the deployment. Workers fetch the
/// course's model from the hub.
pub fn build(spec: &Spec, hosts: &[Host]) -> Result<Plan, PlanError> {
    build_with(spec, hosts, &ModelSource::default())
}

/// As [`build`], with the workers' model from `model`.
pub fn build_with(spec: &Spec, hosts: &[Host], model: &ModelSource) -> Result<Plan, PlanError> {
    let known = || {
        let mut roles: Vec<_> = hosts.iter().filter_map(|h| h.role.clone()).collect();
        roles.sort();
        roles.dedup();
        if roles.is_empty() {
            "none".into()
        } else {
            roles.join(", ")
        }
    };
    let mut plans = Vec::new();
    for (role_name, role) in &spec.roles {
        if by_role(hosts, role_name).next().is_none() {
            return Err(PlanError::MissingRole {
                spec: spec.name.clone(),
                role: role_name.to_owned(),
                known: known(),
            });
        }
        for host in by_role(hosts, role_name) {
            plans.push(program_host(spec, hosts, model, role_name, role, host));
        }
    }
    if let Some(b) = &spec.balancer {
        plans.push(balancer_host(spec, hosts, b)?);
    }
    let mut balanced: Vec<String> = spec
        .balancer
        .iter()
        .flat_map(|b| b.routes.iter().map(|r| r.role.clone()))
        .collect();
    balanced.sort();
    balanced.dedup();
    Ok(Plan {
        deployment: spec.name.clone(),
        hosts: plans,
        balanced,
    })
}

/// A host of a role running one of the remote programs: the binary, its unit, environment
/// and run script, the model where it needs one, its services and health checks.
fn program_host(
    spec: &Spec,
    hosts: &[Host],
    model: &ModelSource,
    role_name: &str,
    role: &spec::Role,
    host: &Host,
) -> HostPlan {
    let bin = binary(role.program);
    let per_port = role.ports.len() > 1;
    let args = vec![
        Word::Literal("--port".into()),
        if per_port {
            Word::Specifier("%i")
        } else {
            Word::Literal(role.ports[0].to_string())
        },
    ];
    // Per-host values live in the environment file, so every host of a role shares
    // one unit and one run script.
    let mut env = vec![("AGENT_DEPLOYMENT".to_owned(), spec.name.clone())];
    let model_dir = format!("{MODELS_DIR}/{}", spec.name);
    match role.program {
        Program::Web => env.push((vars::WEB_NAME.into(), host.name.clone())),
        Program::Orchestrator => env.push((vars::WORKERS.into(), workers(spec, hosts).join(","))),
        Program::Worker => {
            env.push((vars::WORKER_MODEL.into(), model_dir.clone()));
            // Threads are split between the host's worker processes.
            env.push((vars::WORKER_PROCESSES.into(), role.ports.len().to_string()));
            env.push((vars::WORKER_HEAD_SEED.into(), HEAD_SEED.to_string()));
        }
    }
    let unit = ServiceUnit {
        deployment: spec.name.clone(),
        binary: bin.into(),
        args,
        per_port,
    };
    let units = unit.instances(&role.ports);
    let services: Vec<ServicePlan> = units
        .iter()
        .zip(&role.ports)
        .map(|(u, &port)| ServicePlan {
            unit: u.clone(),
            command: unit.supervised_command(port),
        })
        .collect();
    HostPlan {
        host: host.name.clone(),
        address: host.address.clone(),
        role: role_name.to_owned(),
        packages: role.packages.clone(),
        files: [
            FilePlan {
                path: format!("{}/{bin}", unit::BIN_DIR),
                mode: 0o755,
                source: Source::Program(bin),
                restarts: units.clone(),
                validate: None,
            },
            FilePlan {
                path: format!("/etc/systemd/system/{}", unit.file_name()),
                mode: 0o644,
                source: Source::Text(unit.render()),
                restarts: units.clone(),
                validate: None,
            },
            FilePlan {
                path: unit.env_file(),
                mode: 0o644,
                source: Source::Text(unit.render_env(&env)),
                restarts: units.clone(),
                validate: None,
            },
            FilePlan {
                path: unit.run_script(),
                mode: 0o755,
                source: Source::Text(unit.render_run_script()),
                restarts: units.clone(),
                validate: None,
            },
        ]
        .into_iter()
        .chain(model_files(role.program, model, &model_dir, &units))
        .collect(),
        setup: model_setup(role.program, model, &model_dir, bin, &units),
        health: role
            .ports
            .iter()
            .zip(&units)
            .map(|(&port, u)| HealthCheck {
                port,
                path: role.health.clone(),
                status: 200,
                service: u.clone(),
            })
            .collect(),
        services,
        balancer: false,
        host_key: None,
    }
}

/// The load balancer's host: HAProxy with the spec's routes.
fn balancer_host(spec: &Spec, hosts: &[Host], b: &spec::Balancer) -> Result<HostPlan, PlanError> {
    let lbs: Vec<&Host> = by_role(hosts, &b.role).collect();
    if lbs.len() != 1 {
        return Err(PlanError::Balancer {
            spec: spec.name.clone(),
            role: b.role.clone(),
            found: lbs.len(),
        });
    }
    let routes = b
        .routes
        .iter()
        .map(|r| BalancedRoute {
            path: r.path.clone(),
            backend: r.role.clone(),
            health: spec.roles[&r.role].health.clone(),
            servers: by_role(hosts, &r.role)
                .map(|h| Server {
                    name: h.name.clone(),
                    address: h.private_address().to_owned(),
                    port: spec.roles[&r.role].ports[0],
                })
                .collect(),
        })
        .collect();
    let config = HaproxyConfig {
        deployment: spec.name.clone(),
        port: b.port,
        routes,
    };
    Ok(HostPlan {
        host: lbs[0].name.clone(),
        address: lbs[0].address.clone(),
        role: b.role.clone(),
        packages: vec!["haproxy".into()],
        files: vec![FilePlan {
            path: HAPROXY_CONFIG.into(),
            mode: 0o644,
            source: Source::Text(config.text()),
            restarts: vec!["haproxy.service".into()],
            validate: Some(["/usr/sbin/haproxy", "-c", "-q", "-f", "{}"].map(String::from).into()),
        }],
        setup: Vec::new(),
        services: vec![ServicePlan {
            unit: "haproxy.service".into(),
            command: ["/usr/sbin/haproxy", "-W", "-db", "-f", HAPROXY_CONFIG]
                .map(String::from)
                .into(),
        }],
        // The fixed 404 of an unrouted path shows HAProxy runs this config, whether or
        // not the backends are up yet.
        health: vec![HealthCheck {
            port: b.port,
            path: "/".into(),
            status: 404,
            service: "haproxy.service".into(),
        }],
        balancer: true,
        host_key: None,
    })
}

impl Plan {
    /// The remote programs it uploads, each once.
    pub fn programs(&self) -> Vec<&'static str> {
        self.sources(|s| match s {
            Source::Program(p) => Some(*p),
            _ => None,
        })
    }

    /// The operator's files it uploads (a model folder's), each once.
    pub fn local_files(&self) -> Vec<&str> {
        self.sources(|s| match s {
            Source::Local(p) => Some(p.as_str()),
            _ => None,
        })
    }

    fn sources<'a, T: Ord>(&'a self, pick: impl Fn(&'a Source) -> Option<T>) -> Vec<T> {
        let mut found: Vec<T> = self
            .hosts
            .iter()
            .flat_map(|h| &h.files)
            .filter_map(|f| pick(&f.source))
            .collect();
        found.sort();
        found.dedup();
        found
    }
}

/// Every worker process of the deployment, as `private address:port`: the orchestrator's list.
fn workers(spec: &Spec, hosts: &[Host]) -> Vec<String> {
    spec.roles
        .iter()
        .filter(|(_, r)| r.program == Program::Worker)
        .flat_map(|(name, r)| {
            by_role(hosts, name).flat_map(|h| r.ports.iter().map(move |p| format!("{}:{p}", h.private_address())))
        })
        .collect()
}

/// The operator's model files, for worker hosts when the model is uploaded.
fn model_files(program: Program, model: &ModelSource, dir: &str, units: &[String]) -> Vec<FilePlan> {
    match (program, model) {
        (Program::Worker, ModelSource::Upload(paths)) => paths
            .iter()
            .map(|local| FilePlan {
                path: format!("{dir}/{}", local.rsplit('/').next().unwrap_or(local)),
                mode: 0o644,
                source: Source::Local(local.clone()),
                restarts: units.to_vec(),
                validate: None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// On worker hosts: fetch the model if it comes from a URL, then make sure it has a
/// classification head (drawn from the deployment's seed when the weights have none).
fn model_setup(program: Program, model: &ModelSource, dir: &str, bin: &str, units: &[String]) -> Vec<SetupPlan> {
    if program != Program::Worker {
        return Vec::new();
    }
    let mut setup = Vec::new();
    if let ModelSource::Fetch(url) = model {
        setup.push(SetupPlan {
            description: format!("fetch the model from {url}"),
            script: fetch_script(url, dir),
            restarts: units.to_vec(),
            limit_secs: FETCH_LIMIT_SECS,
        });
    }
    setup.push(SetupPlan {
        description: "give the model its classification head".into(),
        script: format!("{}/{bin} head {} --seed {HEAD_SEED}", unit::BIN_DIR, shell::quote(dir)),
        restarts: units.to_vec(),
        limit_secs: 120,
    });
    setup
}

/// Downloads the model files once: into a fresh folder beside the target, renamed into
/// place only when every file arrived whole, so a cut download is never mistaken for a model.
fn fetch_script(url: &str, dir: &str) -> String {
    let files: Vec<String> = agent_protocol::model::FILES.iter().map(|f| quote(f)).collect();
    format!(
        "set -e\n\
         dir={dir}\n\
         if [ -f \"$dir/{weights}\" ]; then echo \"model already in $dir\"; exit 0; fi\n\
         mkdir -p \"$(dirname \"$dir\")\"\n\
         tmp=$(mktemp -d \"$dir.fetch.XXXXXX\")\n\
         trap 'rm -rf \"$tmp\"' EXIT\n\
         for f in {files}; do\n\
         \x20 curl -fsSL --retry 3 --connect-timeout 10 --max-time 600 -o \"$tmp/$f\" {url}/\"$f\"\n\
         done\n\
         chmod 755 \"$tmp\"\n\
         rm -rf \"$dir\"\n\
         mv \"$tmp\" \"$dir\"\n\
         trap - EXIT\n\
         echo \"{changed}model fetched into $dir\"\n",
        dir = quote(dir),
        weights = agent_protocol::model::WEIGHTS,
        changed = agent_protocol::CHANGED,
        files = files.join(" "),
        url = quote(url.trim_end_matches('/')),
    )
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "deployment {}: {} hosts", self.deployment, self.hosts.len())?;
        for h in &self.hosts {
            writeln!(f, "\n{} ({}, role {})", h.host, h.address, h.role)?;
            if !h.packages.is_empty() {
                writeln!(f, "  install  {}", h.packages.join(" "))?;
            }
            for file in &h.files {
                let what = match &file.source {
                    Source::Text(t) => format!("{} bytes rendered", t.len()),
                    Source::Program(p) => format!("{p}, built in release mode"),
                    Source::Local(p) => format!("from {p}"),
                };
                let check = match &file.validate {
                    Some(words) => format!("; checked by {} first", words.join(" ").replace("{}", "<new file>")),
                    None => String::new(),
                };
                writeln!(f, "  upload   {} (mode {:o}; {what}{check})", file.path, file.mode)?;
            }
            for s in &h.setup {
                writeln!(f, "  run      {}", s.description)?;
            }
            for s in &h.services {
                writeln!(f, "  start    {}", s.unit)?;
            }
            for c in &h.health {
                writeln!(
                    f,
                    "  check    GET http://{}:{}{} answers {}",
                    h.address, c.port, c.path, c.status
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Transport;

    fn host(name: &str, n: u8, role: &str) -> Host {
        Host {
            name: name.into(),
            address: format!("10.200.0.{n}"),
            private_address: None,
            port: 22,
            user: "ubuntu".into(),
            role: Some(role.into()),
            key: None,
            transport: Transport::Ssh,
        }
    }

    fn clusters_fleet() -> Vec<Host> {
        let mut hosts: Vec<Host> = (0..5).map(|i| host(&format!("c1-{i}"), 4 + i, "cluster1")).collect();
        hosts.extend((0..4).map(|i| host(&format!("c2-{i}"), 9 + i, "cluster2")));
        hosts.push(host("lb", 13, "lb"));
        hosts
    }

    #[test]
    fn clusters_on_nine_hosts_and_a_balancer() {
        let plan = build(&Spec::load("clusters").unwrap(), &clusters_fleet()).unwrap();
        assert_eq!(plan.hosts.len(), 10);
        let c1 = &plan.hosts[0];
        assert_eq!((c1.host.as_str(), c1.role.as_str()), ("c1-0", "cluster1"));
        assert_eq!(
            c1.services,
            [ServicePlan {
                unit: "agent-web.service".into(),
                command: vec!["/opt/agent/run/agent-web".into()]
            }]
        );
        assert_eq!((c1.health[0].port, c1.health[0].path.as_str()), (80, "/health"));
        assert_eq!(c1.files[0].source, Source::Program("agent-web"));
        assert_eq!(c1.files[0].path, "/opt/agent/bin/agent-web");
        let Source::Text(unit) = &c1.files[1].source else {
            panic!()
        };
        assert!(
            unit.contains("ExecStart=/opt/agent/bin/agent-web --port 80\n"),
            "{unit}"
        );
        assert_eq!(c1.files[2].path, "/etc/agent/agent-web.env");
        let Source::Text(env) = &c1.files[2].source else {
            panic!()
        };
        assert!(
            env.ends_with("\nAGENT_DEPLOYMENT=\"clusters\"\nAGENT_WEB_NAME=\"c1-0\"\n"),
            "{env}"
        );
        assert_eq!(
            (c1.files[3].path.as_str(), c1.files[3].mode),
            ("/opt/agent/run/agent-web", 0o755)
        );
        let lb = plan.hosts.last().unwrap();
        assert_eq!(
            (lb.host.as_str(), lb.packages.as_slice()),
            ("lb", ["haproxy".to_string()].as_slice())
        );
        let Source::Text(cfg) = &lb.files[0].source else {
            panic!()
        };
        assert_eq!(cfg.matches("server c1-").count(), 5);
        assert_eq!(cfg.matches("server c2-").count(), 4);
        let text = plan.to_string();
        assert!(text.starts_with("deployment clusters: 10 hosts\n"), "{text}");
        assert!(
            text.contains("  check    GET http://10.200.0.12:80/health answers 200\n"),
            "{text}"
        );
        assert!(
            text.contains("  check    GET http://10.200.0.13:80/ answers 404\n"),
            "{text}"
        );
    }

    #[test]
    fn workers_get_a_template_unit_per_port() {
        let mut hosts = vec![host("orch", 4, "orchestrator")];
        hosts.extend((0..4).map(|i| host(&format!("w{i}"), 5 + i, "worker")));
        let plan = build(&Spec::load("inference").unwrap(), &hosts).unwrap();
        let w = plan.hosts.iter().find(|h| h.host == "w0").unwrap();
        let units: Vec<_> = w.services.iter().map(|s| s.unit.as_str()).collect();
        assert_eq!(units, ["agent-worker@5000.service", "agent-worker@5001.service"]);
        assert_eq!(w.services[1].command, ["/opt/agent/run/agent-worker", "5001"]);
        assert_eq!(w.files[1].path, "/etc/systemd/system/agent-worker@.service");
        let checks: Vec<_> = w.health.iter().map(|c| (c.port, c.service.as_str())).collect();
        assert_eq!(
            checks,
            [(5000, "agent-worker@5000.service"), (5001, "agent-worker@5001.service")]
        );
    }

    fn inference_fleet() -> Vec<Host> {
        let mut hosts = vec![host("orch", 4, "orchestrator")];
        hosts.extend((0..4).map(|i| Host {
            // Agent connects over public addresses; the orchestrator must use private ones.
            private_address: Some(format!("172.31.0.{}", 10 + i)),
            ..host(&format!("w{i}"), 5 + i, "worker")
        }));
        hosts
    }

    fn env_of(h: &HostPlan) -> &str {
        let env = h.files.iter().find(|f| f.path.ends_with(".env")).unwrap();
        match &env.source {
            Source::Text(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_orchestrator_lists_every_worker_process_by_private_address() {
        let plan = build(&Spec::load("inference").unwrap(), &inference_fleet()).unwrap();
        let orch = plan.hosts.iter().find(|h| h.role == "orchestrator").unwrap();
        let workers: Vec<String> = (0..4)
            .flat_map(|i| [5000, 5001].map(|p| format!("172.31.0.{}:{p}", 10 + i)))
            .collect();
        assert!(
            env_of(orch).contains(&format!("AGENT_WORKERS=\"{}\"\n", workers.join(","))),
            "{}",
            env_of(orch)
        );
        assert!(orch.setup.is_empty());
        let w = plan.hosts.iter().find(|h| h.host == "w2").unwrap();
        for line in [
            "AGENT_WORKER_MODEL=\"/opt/agent/models/inference\"\n",
            "AGENT_WORKER_PROCESSES=\"2\"\n",
            "AGENT_WORKER_HEAD_SEED=\"0\"\n",
        ] {
            assert!(env_of(w).contains(line), "{line}: {}", env_of(w));
        }
    }

    #[test]
    fn workers_fetch_the_model_once_or_get_the_operators_copy() {
        let spec = Spec::load("inference").unwrap();
        let fetched = build(&spec, &inference_fleet()).unwrap();
        let w = fetched.hosts.iter().find(|h| h.role == "worker").unwrap();
        let steps: Vec<&str> = w.setup.iter().map(|s| s.description.as_str()).collect();
        assert_eq!(
            steps,
            [
                "fetch the model from https://huggingface.co/distilbert-base-uncased/resolve/main",
                "give the model its classification head"
            ]
        );
        assert_eq!(
            w.setup[1].script,
            "/opt/agent/bin/agent-worker head /opt/agent/models/inference --seed 0"
        );
        assert!(w.files.iter().all(|f| !f.path.starts_with(MODELS_DIR)));

        let local = ModelSource::Upload(vec!["/m/config.json".into(), "/m/model.safetensors".into()]);
        let uploaded = build_with(&spec, &inference_fleet(), &local).unwrap();
        let w = uploaded.hosts.iter().find(|h| h.role == "worker").unwrap();
        let model: Vec<_> = w
            .files
            .iter()
            .filter(|f| f.path.starts_with(MODELS_DIR))
            .map(|f| (f.path.as_str(), &f.source, f.restarts.len()))
            .collect();
        assert_eq!(
            model,
            [
                (
                    "/opt/agent/models/inference/config.json",
                    &Source::Local("/m/config.json".into()),
                    2
                ),
                (
                    "/opt/agent/models/inference/model.safetensors",
                    &Source::Local("/m/model.safetensors".into()),
                    2
                ),
            ]
        );
        assert_eq!(w.setup.len(), 1, "no fetch when the model is uploaded");
    }

    /// The fetch script against a folder served by a file:// URL: curl fetches every file
    /// into a fresh folder renamed into place; a second run does nothing; a failed download
    /// leaves no folder behind.
    #[test]
    fn the_fetch_script_installs_whole_models_only() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("hub");
        std::fs::create_dir(&src).unwrap();
        for f in agent_protocol::model::FILES {
            std::fs::write(src.join(f), format!("{f} bytes")).unwrap();
        }
        let dir = tmp.path().join("models/inference");
        let run = |url: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(fetch_script(url, dir.to_str().unwrap()))
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            )
        };
        let url = format!("file://{}", src.display());
        let (ok, said) = run(&url);
        assert!(ok, "{said}");
        assert_eq!(said, format!("changed: model fetched into {}", dir.display()));
        assert_eq!(
            std::fs::read_to_string(dir.join("tokenizer.json")).unwrap(),
            "tokenizer.json bytes"
        );
        assert_eq!(run(&url), (true, format!("model already in {}", dir.display())));

        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(src.join("model.safetensors")).unwrap();
        let (ok, _) = run(&url);
        assert!(!ok, "a missing file fails the fetch");
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("models")).unwrap().collect();
        assert!(left.is_empty(), "nothing half-fetched stays: {left:?}");
    }

    #[test]
    fn missing_roles_and_balancers_are_named() {
        let spec = Spec::load("clusters").unwrap();
        let hosts: Vec<Host> = clusters_fleet()
            .into_iter()
            .filter(|h| h.role.as_deref() != Some("cluster2"))
            .collect();
        assert_eq!(
            build(&spec, &hosts).unwrap_err().to_string(),
            "spec clusters needs hosts with role \"cluster2\", and the inventory has none (its roles: cluster1, lb)"
        );
        let hosts: Vec<Host> = clusters_fleet()
            .into_iter()
            .filter(|h| h.role.as_deref() != Some("lb"))
            .collect();
        assert!(matches!(
            build(&spec, &hosts),
            Err(PlanError::Balancer { found: 0, .. })
        ));
    }
}

//! Hosts to act on: a TOML inventory file and `--host` arguments, resolved into [`Host`]s.
//!
//! ```toml
//! [defaults]
//! user = "ubuntu"
//! key = "labsuser.pem"      # relative to the inventory file
//! port = 22
//!
//! [[hosts]]
//! name = "web-0"            # optional; defaults to the address
//! address = "10.200.0.4"
//! role = "web"              # optional
//! ```

use crate::format;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One machine `agent` talks to. Plain data: how to reach it and what it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Unique within a run; used in output prefixes and log file names.
    pub name: String,
    pub address: String,
    /// Where the deployment's other hosts reach this one (EC2: the private IP, while agent
    /// may connect over the public one) [default: `address`].
    pub private_address: Option<String>,
    pub port: u16,
    pub user: String,
    pub role: Option<String>,
    /// Private key for this host, if the inventory names one (`--key` overrides).
    pub key: Option<PathBuf>,
    pub transport: Transport,
}

/// How commands reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Ssh,
    /// This machine, without SSH (`transport = "local"`).
    Local,
}

impl Host {
    /// The address the deployment's other hosts use for this one.
    pub fn private_address(&self) -> &str {
        self.private_address.as_deref().unwrap_or(&self.address)
    }

    /// `host` or `[host]:port` as OpenSSH writes it in known_hosts.
    pub fn known_hosts_pattern(&self) -> String {
        if self.port == 22 {
            self.address.clone()
        } else {
            format!("[{}]:{}", self.address, self.port)
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("inventory {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("inventory {path}: host #{index} has no address")]
    NoAddress { path: PathBuf, index: usize },
    #[error("host name {0:?} appears twice; give each host a unique name")]
    DuplicateName(String),
    #[error("bad --host {0:?}: expected [user@]address[:port]")]
    BadHostArg(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    hosts: Vec<Entry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    user: Option<String>,
    key: Option<PathBuf>,
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    address: Option<String>,
    private_address: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    role: Option<String>,
    key: Option<PathBuf>,
    #[serde(default)]
    transport: Transport,
}

pub const DEFAULT_USER: &str = "ubuntu";

/// Reads an inventory file. Relative key paths are resolved against the file's folder.
pub fn load(path: &Path) -> Result<Vec<Host>, InventoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<Vec<Host>, InventoryError> {
    let file: File = toml::from_str(text).map_err(|e| InventoryError::Parse {
        path: path.to_owned(),
        message: format::toml_error(text, &e),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |k: PathBuf| if k.is_absolute() { k } else { base.join(k) };
    let default_key = file.defaults.key.map(resolve);
    let mut hosts = Vec::with_capacity(file.hosts.len());
    for (index, entry) in file.hosts.into_iter().enumerate() {
        let address = entry
            .address
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| InventoryError::NoAddress {
                path: path.to_owned(),
                index: index + 1,
            })?;
        hosts.push(Host {
            name: entry.name.unwrap_or_else(|| address.clone()),
            port: entry.port.or(file.defaults.port).unwrap_or(22),
            user: entry
                .user
                .or_else(|| file.defaults.user.clone())
                .unwrap_or_else(|| DEFAULT_USER.to_owned()),
            role: entry.role,
            key: entry.key.map(resolve).or_else(|| default_key.clone()),
            transport: entry.transport,
            private_address: entry.private_address.filter(|a| !a.trim().is_empty()),
            address,
        });
    }
    check_unique(&hosts)?;
    Ok(hosts)
}

pub fn check_unique(hosts: &[Host]) -> Result<(), InventoryError> {
    let mut seen = HashSet::new();
    for h in hosts {
        if !seen.insert(h.name.as_str()) {
            return Err(InventoryError::DuplicateName(h.name.clone()));
        }
    }
    Ok(())
}

/// Parses `--host [user@]address[:port]` (IPv6 as `[addr]:port`).
pub fn parse_host_arg(arg: &str, default_user: &str) -> Result<Host, InventoryError> {
    let bad = || InventoryError::BadHostArg(arg.to_owned());
    let (user, rest) = match arg.split_once('@') {
        Some((u, r)) if !u.is_empty() => (u.to_owned(), r),
        Some(_) => return Err(bad()),
        None => (default_user.to_owned(), arg),
    };
    let (address, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => 22,
            None => return Err(bad()),
        };
        (addr.to_owned(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((a, p)) if !a.contains(':') => (a.to_owned(), p.parse().map_err(|_| bad())?),
            _ => (rest.to_owned(), 22),
        }
    };
    if address.is_empty() {
        return Err(bad());
    }
    Ok(Host {
        name: if port == 22 {
            address.clone()
        } else {
            format!("{address}:{port}")
        },
        address,
        private_address: None,
        port,
        user,
        role: None,
        key: None,
        transport: Transport::Ssh,
    })
}

/// Keeps the hosts that match any of `roles` and any of `names` (an empty filter matches all).
/// A filter value that matches nothing is an error: a typo must not silently shrink the fleet.
pub fn select(hosts: Vec<Host>, roles: &[String], names: &[String]) -> anyhow::Result<Vec<Host>> {
    for r in roles {
        if !hosts.iter().any(|h| h.role.as_deref() == Some(r)) {
            let known: HashSet<_> = hosts.iter().filter_map(|h| h.role.as_deref()).collect();
            let mut known: Vec<_> = known.into_iter().collect();
            known.sort();
            anyhow::bail!("no host has role {r:?} (roles in the inventory: {})", known.join(", "));
        }
    }
    for n in names {
        if !hosts.iter().any(|h| &h.name == n || &h.address == n) {
            anyhow::bail!("no host named {n:?} in the inventory");
        }
    }
    Ok(hosts
        .into_iter()
        .filter(|h| roles.is_empty() || h.role.as_ref().is_some_and(|r| roles.contains(r)))
        .filter(|h| names.is_empty() || names.iter().any(|n| n == &h.name || n == &h.address))
        .collect())
}

/// How services are run on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// systemd is PID 1: units, `systemctl`, the journal.
    Systemd,
    /// No systemd (containers, the local fleet): agent starts each program under a restart
    /// loop in its own session, with a pid file and a log file.
    Supervisor,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_resolves_keys() {
        let text = r#"
            [defaults]
            user = "admin"
            key = "labsuser.pem"
            [[hosts]]
            address = "10.0.0.4"
            role = "web"
            [[hosts]]
            name = "db"
            address = "10.0.0.5"
            port = 2222
            user = "root"
            key = "/abs/other.pem"
        "#;
        let hosts = parse(text, Path::new("/srv/fleet/inventory.toml")).unwrap();
        assert_eq!(hosts[0].name, "10.0.0.4");
        assert_eq!(hosts[0].user, "admin");
        assert_eq!(hosts[0].port, 22);
        assert_eq!(hosts[0].key.as_deref(), Some(Path::new("/srv/fleet/labsuser.pem")));
        assert_eq!(hosts[1].name, "db");
        assert_eq!(hosts[1].user, "root");
        assert_eq!(hosts[1].known_hosts_pattern(), "[10.0.0.5]:2222");
        assert_eq!(hosts[1].key.as_deref(), Some(Path::new("/abs/other.pem")));
    }

    #[test]
    fn rejects_unknown_fields_with_line() {
        let err = parse("[[hosts]]\naddress = \"a\"\nadress = \"b\"\n", Path::new("i.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("adress") && msg.contains("line 3"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn rejects_duplicate_names_and_missing_address() {
        let dup = "[[hosts]]\naddress = \"a\"\n[[hosts]]\naddress = \"a\"\n";
        assert!(matches!(
            parse(dup, Path::new("i")),
            Err(InventoryError::DuplicateName(_))
        ));
        let none = "[[hosts]]\nname = \"x\"\n";
        assert!(matches!(
            parse(none, Path::new("i")),
            Err(InventoryError::NoAddress { index: 1, .. })
        ));
    }

    #[test]
    fn host_args() {
        let h = parse_host_arg("ec2-user@1.2.3.4:2200", "ubuntu").unwrap();
        assert_eq!(
            (h.user.as_str(), h.address.as_str(), h.port),
            ("ec2-user", "1.2.3.4", 2200)
        );
        let h = parse_host_arg("example.com", "ubuntu").unwrap();
        assert_eq!(
            (h.user.as_str(), h.port, h.name.as_str()),
            ("ubuntu", 22, "example.com")
        );
        let h = parse_host_arg("[::1]:2222", "ubuntu").unwrap();
        assert_eq!((h.address.as_str(), h.port), ("::1", 2222));
        let h = parse_host_arg("fe80::1", "ubuntu").unwrap();
        assert_eq!((h.address.as_str(), h.port), ("fe80::1", 22));
        assert!(parse_host_arg("@x", "u").is_err());
        assert!(parse_host_arg("x:notaport", "u").is_err());
    }

    #[test]
    fn selection_by_role_and_name() {
        let mk = |n: &str, r: &str| Host {
            name: n.into(),
            address: n.into(),
            private_address: None,
            port: 22,
            user: "u".into(),
            role: Some(r.into()),
            key: None,
            transport: Transport::Ssh,
        };
        let hosts = vec![mk("a", "web"), mk("b", "web"), mk("c", "db")];
        let sel = select(hosts.clone(), &["web".into()], &[]).unwrap();
        assert_eq!(sel.len(), 2);
        let sel = select(hosts.clone(), &["web".into()], &["b".into()]).unwrap();
        assert_eq!(sel, vec![mk("b", "web")]);
        let err = select(hosts, &["wbe".into()], &[]).unwrap_err().to_string();
        assert!(err.contains("db, web"), "{err}");
    }
}

//! The load balancer of a deployment off AWS: an HAProxy config with the same path rules as
//! the ALB (a route matches its path and everything below it; anything else gets 404).
//! Pure: rendered from `remote/templates/haproxy.cfg`.

use askama::Template;

/// One backend server (a host of the route's role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancedRoute {
    /// Starts with `/`, no spaces (checked by the spec).
    pub path: String,
    /// The role behind it; also the backend's name.
    pub backend: String,
    /// Path HAProxy's health check asks each server for.
    pub health: String,
    pub servers: Vec<Server>,
}

#[derive(Template, Debug, Clone, PartialEq, Eq)]
#[template(path = "haproxy.cfg", escape = "none")]
pub struct HaproxyConfig {
    pub deployment: String,
    pub port: u16,
    pub routes: Vec<BalancedRoute>,
}

/// HAProxy's runtime API, root's only: where rolling deploys drain and restore servers.
pub const ADMIN_SOCKET: &str = "/run/haproxy-agent.sock";

impl HaproxyConfig {
    fn admin_socket(&self) -> &'static str {
        ADMIN_SOCKET
    }

    /// One backend per role, however many routes lead to it.
    fn backends(&self) -> Vec<&BalancedRoute> {
        let mut seen = std::collections::HashSet::new();
        self.routes.iter().filter(|r| seen.insert(&r.backend)).collect()
    }

    pub fn text(&self) -> String {
        self.render().expect("the haproxy template has no fallible parts") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HaproxyConfig {
        let servers = |role: &str, first: u8, n: u8| {
            (0..n)
                .map(|i| Server {
                    name: format!("{role}-{i}"),
                    address: format!("10.200.0.{}", first + i),
                    port: 80,
                })
                .collect()
        };
        HaproxyConfig {
            deployment: "clusters".into(),
            port: 80,
            routes: vec![
                BalancedRoute {
                    path: "/cluster1".into(),
                    backend: "cluster1".into(),
                    health: "/health".into(),
                    servers: servers("cluster1", 4, 5),
                },
                BalancedRoute {
                    path: "/cluster2".into(),
                    backend: "cluster2".into(),
                    health: "/health".into(),
                    servers: servers("cluster2", 9, 4),
                },
            ],
        }
    }

    #[test]
    fn snapshot_of_the_rules() {
        let text = config().text();
        assert!(text.contains("\n    bind :80\n"), "{text}");
        assert!(text.contains("\n    acl route0 path /cluster1\n    acl route0 path_beg /cluster1/\n    use_backend cluster1 if route0\n"), "{text}");
        assert!(
            text.contains("\n    use_backend cluster2 if route1\n    default_backend not_found\n"),
            "{text}"
        );
        assert!(
            text.contains("\n    server cluster1-4 10.200.0.8:80 check inter 2s\n"),
            "{text}"
        );
        assert!(
            text.contains("\n    server cluster2-0 10.200.0.9:80 check inter 2s\n"),
            "{text}"
        );
        assert_eq!(text.matches("\n    server ").count(), 9);
        assert!(text.ends_with('\n') && !text.ends_with("\n\n\n"));
    }

    /// HAProxy itself checks the file, as it will on the load-balancer host.
    #[test]
    fn haproxy_accepts_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        // Two routes to one role share its backend.
        let mut config = config();
        config.routes.push(BalancedRoute {
            path: "/second".into(),
            ..config.routes[1].clone()
        });
        let text = config.text();
        assert_eq!(text.matches("\nbackend cluster2\n").count(), 1, "{text}");
        assert!(text.contains("\n    use_backend cluster2 if route2\n"), "{text}");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("haproxy is needed for this test (apt-get install haproxy)");
        let all = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{all}");
        assert!(!all.contains("WARNING"), "{all}");
    }
}

//! How a remote program runs as a service: its systemd unit, its environment file and the
//! run script agent's own supervisor uses on hosts without systemd. Rendered from
//! `remote/templates/` (askama, compiled in). Pure: nothing here touches a host.

use crate::shell;
use askama::Template;

/// Where agent installs the programs it uploads.
pub const BIN_DIR: &str = "/opt/agent/bin";
/// Where each program's environment file goes.
pub const ENV_DIR: &str = "/etc/agent";
/// Where the run scripts for agent's supervisor go.
pub const RUN_DIR: &str = "/opt/agent/run";

/// One word of an `ExecStart=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// Taken literally: quoted and escaped for systemd as needed.
    Literal(String),
    /// A systemd specifier such as `%i`, passed through unquoted.
    Specifier(&'static str),
}

/// A service running one remote program. With `per_port`, it is a template unit
/// (`agent-worker@.service`) instantiated once per port (`agent-worker@5000.service`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    pub deployment: String,
    /// The program's file name in [`BIN_DIR`], e.g. `agent-web`.
    pub binary: String,
    /// Arguments after the binary.
    pub args: Vec<Word>,
    pub per_port: bool,
}

#[derive(Template)]
#[template(path = "program.service", escape = "none")]
struct UnitFile<'a> {
    deployment: &'a str,
    binary: &'a str,
    per_port: bool,
    exec_start: String,
    env_file: String,
}

#[derive(Template)]
#[template(path = "program.run", escape = "none")]
struct RunScript<'a> {
    deployment: &'a str,
    binary: &'a str,
    per_port: bool,
    env_file: String,
    command: String,
}

#[derive(Template)]
#[template(path = "program.env", escape = "none")]
struct EnvFile<'a> {
    deployment: &'a str,
    lines: Vec<String>,
}

impl ServiceUnit {
    /// The unit file's name under /etc/systemd/system.
    pub fn file_name(&self) -> String {
        if self.per_port {
            format!("{}@.service", self.binary)
        } else {
            format!("{}.service", self.binary)
        }
    }

    /// The units to enable and start: one per port for a template unit.
    pub fn instances(&self, ports: &[u16]) -> Vec<String> {
        if self.per_port {
            ports.iter().map(|p| format!("{}@{p}.service", self.binary)).collect()
        } else {
            vec![self.file_name()]
        }
    }

    pub fn env_file(&self) -> String {
        format!("{ENV_DIR}/{}.env", self.binary)
    }

    pub fn run_script(&self) -> String {
        format!("{RUN_DIR}/{}", self.binary)
    }

    /// The command agent's supervisor runs for one instance (`port` for a template unit).
    pub fn supervised_command(&self, port: u16) -> Vec<String> {
        let mut argv = vec![self.run_script()];
        if self.per_port {
            argv.push(port.to_string());
        }
        argv
    }

    /// The run script: the unit's `ExecStart=` as a POSIX shell script, the environment file
    /// read the same way, and the instance's port as `$1`.
    pub fn render_run_script(&self) -> String {
        let command = std::iter::once(Word::Literal(format!("{BIN_DIR}/{}", self.binary)))
            .chain(self.args.iter().cloned())
            .map(|w| match w {
                Word::Literal(s) => shell::quote(&s),
                Word::Specifier("%i") => "\"$1\"".to_owned(),
                Word::Specifier(other) => panic!("no shell equivalent for the specifier {other}"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        RunScript {
            deployment: &self.deployment,
            binary: &self.binary,
            per_port: self.per_port,
            env_file: shell::quote(&self.env_file()),
            command,
        }
        .render()
        .expect("the run script template has no fallible parts")
            + "\n"
    }

    /// The environment file: one `KEY="value"` line per variable, read alike by systemd's
    /// `EnvironmentFile=` and by `sh` in the run script.
    pub fn render_env(&self, vars: &[(String, String)]) -> String {
        EnvFile {
            deployment: &self.deployment,
            lines: vars.iter().map(|(k, v)| env_line(k, v).trim_end().to_owned()).collect(),
        }
        .render()
        .expect("the env template has no fallible parts")
    }

    pub fn render(&self) -> String {
        let exec = std::iter::once(Word::Literal(format!("{BIN_DIR}/{}", self.binary)))
            .chain(self.args.iter().cloned())
            .map(|w| match w {
                Word::Literal(s) => quote(&s),
                Word::Specifier(s) => s.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        UnitFile {
            deployment: &self.deployment,
            binary: &self.binary,
            per_port: self.per_port,
            exec_start: exec,
            env_file: self.env_file(),
        }
        .render()
        .expect("the unit template has no fallible parts")
            // askama drops the template file's final newline; a text file ends with one.
            + "\n"
    }
}

/// Quotes one `ExecStart=` word: systemd reads C-style escapes inside double quotes and
/// expands `%` specifiers and `$` variables everywhere, so both are doubled.
pub fn quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if !escaped.is_empty()
        && escaped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%$".contains(&b))
    {
        return escaped;
    }
    let mut out = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An environment file line (`KEY="value"`), quoted as systemd's EnvironmentFile reads it.
pub fn env_line(key: &str, value: &str) -> String {
    let mut v = String::new();
    for c in value.chars() {
        match c {
            '"' | '\\' | '$' | '`' => {
                v.push('\\');
                v.push(c)
            }
            '\n' => v.push_str("\\n"),
            c => v.push(c),
        }
    }
    format!("{key}=\"{v}\"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn web() -> ServiceUnit {
        ServiceUnit {
            deployment: "clusters".into(),
            binary: "agent-web".into(),
            args: ["--port", "80", "--name", "web 1"]
                .map(|s| Word::Literal(s.into()))
                .into(),
            per_port: false,
        }
    }

    fn worker() -> ServiceUnit {
        ServiceUnit {
            deployment: "inference".into(),
            binary: "agent-worker".into(),
            args: vec![Word::Literal("--port".into()), Word::Specifier("%i")],
            per_port: true,
        }
    }

    #[test]
    fn snapshot_of_the_web_unit() {
        let text = web().render();
        assert_eq!(web().file_name(), "agent-web.service");
        assert_eq!(web().instances(&[80]), ["agent-web.service"]);
        assert!(
            text.contains("\nExecStart=/opt/agent/bin/agent-web --port 80 --name \"web 1\"\n"),
            "{text}"
        );
        assert!(text.contains("\nEnvironmentFile=-/etc/agent/agent-web.env\n"));
        assert!(text.contains("\nDescription=agent agent-web (clusters)\n"));
        assert!(text.contains("\nRestart=always\n") && text.contains("\nWantedBy=multi-user.target\n"));
    }

    #[test]
    fn template_unit_per_port() {
        let u = worker();
        assert_eq!(u.file_name(), "agent-worker@.service");
        assert_eq!(
            u.instances(&[5000, 5001]),
            ["agent-worker@5000.service", "agent-worker@5001.service"]
        );
        let text = u.render();
        assert!(
            text.contains("\nExecStart=/opt/agent/bin/agent-worker --port %i\n"),
            "{text}"
        );
        assert!(text.contains("(inference, port %i)"));
    }

    #[test]
    fn quoting_for_systemd() {
        assert_eq!(quote("plain-1.2"), "plain-1.2");
        assert_eq!(quote("50%"), "50%%");
        assert_eq!(quote("$HOME"), "$$HOME");
        assert_eq!(quote("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(env_line("NAME", "a \"b\" $x"), "NAME=\"a \\\"b\\\" \\$x\"\n");
    }

    #[test]
    fn snapshot_of_the_run_scripts_and_env_file() {
        assert_eq!(
            web().render_run_script(),
            "#!/bin/sh\n\
             # Written by agent for deployment clusters; the next deploy overwrites local changes.\n\
             # Runs agent-web the way its systemd unit does, for hosts where agent supervises\n\
             # programs itself (no systemd as PID 1).\n\
             set -a\n\
             [ ! -r /etc/agent/agent-web.env ] || . /etc/agent/agent-web.env\n\
             set +a\n\
             exec /opt/agent/bin/agent-web --port 80 --name 'web 1'\n"
        );
        let w = worker().render_run_script();
        assert!(
            w.contains("programs itself (no systemd as PID 1). Argument: the port.\n"),
            "{w}"
        );
        assert!(w.ends_with("\nexec /opt/agent/bin/agent-worker --port \"$1\"\n"), "{w}");
        assert_eq!(
            worker().supervised_command(5001),
            ["/opt/agent/run/agent-worker", "5001"]
        );
        assert_eq!(web().supervised_command(80), ["/opt/agent/run/agent-web"]);
        assert_eq!(
            web().render_env(&[("AGENT_WEB_NAME".into(), "it's \"1\"".into())]),
            "# Written by agent for deployment clusters; read by the systemd unit and the run script.\n\
             AGENT_WEB_NAME=\"it's \\\"1\\\"\"\n"
        );
    }

    /// The run script runs under sh as written: `sh -n` parses it, and it execs with the
    /// environment file's values.
    #[test]
    fn run_script_reads_its_env_file_in_sh() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("x.env");
        let unit = web();
        std::fs::write(&env, unit.render_env(&[("V".into(), "a \"b\" $c `d`".into())])).unwrap();
        // The real script with its paths swapped for the temporary ones.
        let script = unit
            .render_run_script()
            .replace("/etc/agent/agent-web.env", env.to_str().unwrap())
            .replace("exec /opt/agent/bin/agent-web", "exec printf '%s|' \"$V\"");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a \"b\" $c `d`|--port|80|--name|web 1|"
        );
    }

    /// systemd itself checks every unit agent writes (as it will on the host).
    #[test]
    fn systemd_analyze_accepts_the_units() {
        if std::process::Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!("systemd-analyze is needed for this test (apt-get install systemd)");
        }
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // A root with systemd's own units and executables at the paths the units name.
        std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        std::os::unix::fs::symlink("/lib/systemd/system", r.join("usr/lib/systemd/system")).unwrap();
        std::fs::create_dir_all(r.join(&BIN_DIR[1..])).unwrap();
        std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
        for unit in [web(), worker()] {
            std::fs::copy("/bin/true", r.join(&BIN_DIR[1..]).join(&unit.binary)).unwrap();
            std::fs::write(r.join("etc/systemd/system").join(unit.file_name()), unit.render()).unwrap();
            for name in unit.instances(&[5000]) {
                let out = std::process::Command::new("systemd-analyze")
                    .arg("verify")
                    .arg(format!("--root={}", r.display()))
                    .arg(Path::new("/etc/systemd/system").join(&name))
                    .output()
                    .unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success() && err.trim().is_empty(), "{name}: {err}");
            }
        }
    }
}

//! Remote commands as pure values. The SSH layer only runs the string [`RemoteCommand::render`]
//! produces, so everything that decides *what* runs remotely is unit-tested here as text.

pub mod step;

use std::time::Duration;

use crate::shell::quote;

/// A shell script to run on a host, with how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCommand {
    /// Interpreted by `/bin/sh -c` on the host.
    pub script: String,
    /// Run as root through `sudo -n` (never prompts: a password prompt would hang).
    pub sudo: bool,
    /// Enforced on the host by coreutils `timeout`, so the command ends even if the
    /// connection is lost; the client waits a little longer than this.
    pub timeout: Duration,
}

/// Grace between the remote TERM and KILL when the time limit is reached.
pub const KILL_AFTER: Duration = Duration::from_secs(5);

impl RemoteCommand {
    pub fn new(script: impl Into<String>, timeout: Duration) -> Self {
        RemoteCommand {
            script: script.into(),
            sudo: false,
            timeout,
        }
    }

    pub fn sudo(mut self, sudo: bool) -> Self {
        self.sudo = sudo;
        self
    }

    /// The exact string sent in the SSH `exec` request (read by the login shell).
    ///
    /// `timeout` runs the script in its own process group and forwards TERM/INT/HUP to the
    /// whole group, so a signal sent on the SSH channel (Ctrl-C) or the time limit stops
    /// every process the script started, not just the shell. `exec` makes `timeout` (or
    /// `sudo`) the session's process, the one sshd signals.
    pub fn render(&self) -> String {
        let timeout = format!(
            "timeout -k {} {} sh -c {}",
            KILL_AFTER.as_secs(),
            secs(self.timeout),
            quote(&self.script)
        );
        if self.sudo {
            format!("exec sudo -n -- {timeout}")
        } else {
            format!("exec {timeout}")
        }
    }

    /// How long the client waits for the exit status before giving up on the host.
    pub fn client_deadline(&self) -> Duration {
        self.timeout + KILL_AFTER + Duration::from_secs(5)
    }
}

/// Whole seconds, rounded up: `timeout 0` would mean "no limit".
fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_remote_timeout() {
        let c = RemoteCommand::new("uname -a", Duration::from_secs(30));
        assert_eq!(c.render(), "exec timeout -k 5 30 sh -c 'uname -a'");
        let c = c.sudo(true);
        assert_eq!(c.render(), "exec sudo -n -- timeout -k 5 30 sh -c 'uname -a'");
    }

    #[test]
    fn sub_second_timeouts_round_up() {
        let c = RemoteCommand::new("true", Duration::from_millis(1500));
        assert_eq!(c.render(), "exec timeout -k 5 2 sh -c true");
        let c = RemoteCommand::new("true", Duration::from_millis(1));
        assert!(c.render().contains(" 1 sh"));
    }
}

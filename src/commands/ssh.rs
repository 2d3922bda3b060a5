//! `agent ssh`: an interactive session on one host, through its pinned key: a pty in raw
//! mode, window size changes passed on, the remote exit status as agent's.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, describe};
use crate::printer::{self, terminal::Terminal};
use crate::transport::connect::{self, Connection, Target};
use crate::transport::ssh::SshSettings;
use crate::transport::ssh::known_hosts::KnownHosts;

pub struct SshSettingsOne {
    pub target: Target,
    /// Run this with a pty instead of a login shell.
    pub command: Option<String>,
    pub ssh: SshSettings,
    pub known_hosts: Arc<KnownHosts>,
}

pub async fn run(s: SshSettingsOne, cancel: CancellationToken) -> anyhow::Result<u8> {
    // The connection's notices (a pinned key, a retry) as one-line notices.
    let (tx, mut rx) = mpsc::channel(16);
    let notices = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let Event::Notice { message, .. } = e {
                printer::notice(&message);
            }
        }
    });
    let connected = connect::connect(0, &s.target, s.known_hosts, &s.ssh, &tx, &cancel).await;
    drop(tx);
    let _ = notices.await;
    let mut session = match connected {
        Ok(Connection::Ssh(session)) => session,
        Ok(Connection::Local(_)) => anyhow::bail!(
            "{} is this machine (transport = \"local\"): run the command here",
            s.target.host.name
        ),
        Err(outcome) => anyhow::bail!("{}: {}", s.target.host.name, describe(&outcome)),
    };
    let terminal = Terminal::open()?;
    let (input, output) = (terminal.input(), terminal.output());
    let (name, size) = (terminal.name.clone(), terminal.size);
    let mut terminal = terminal;
    let resize = std::mem::replace(&mut terminal.resize, mpsc::channel(1).1);
    let ended = session
        .interactive(s.command.as_deref(), &name, size, input, output, resize)
        .await;
    terminal.close();
    let code = ended.map_err(|e| anyhow::anyhow!("{}: {e}", s.target.host.name))?;
    Ok(u8::try_from(code).unwrap_or(u8::MAX))
}

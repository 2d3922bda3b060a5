//! The line to one host, whichever its transport: a local session, or SSH with its key
//! checked, opened with the host's retries and reported as events.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ssh::key::ClientKey;
use super::ssh::known_hosts::KnownHosts;
use super::ssh::{SshSession, SshSettings};
use super::{Duplex, LocalSession, Output, Payload, Session};
use crate::event::{Event, HostId, Outcome, Stage};
use crate::inventory::{Host, Transport};
use crate::script::RemoteCommand;

/// A host and the key that opens it (none for local hosts).
#[derive(Debug, Clone)]
pub struct Target {
    pub host: Host,
    pub key: Option<ClientKey>,
}

/// A line to one host, whichever its transport.
pub enum Connection {
    Local(LocalSession),
    Ssh(SshSession),
}

impl Connection {
    /// SHA256 fingerprint of the host key this connection verified (none for local hosts).
    pub fn host_key_fingerprint(&self) -> Option<String> {
        match self {
            Connection::Local(_) => None,
            Connection::Ssh(s) => s.host_key_fingerprint(),
        }
    }
}

impl Session for Connection {
    async fn exec(
        &mut self,
        command: &RemoteCommand,
        input: &[Payload],
        output: &mut Output,
        cancel: &CancellationToken,
    ) -> Outcome {
        match self {
            Connection::Local(s) => s.exec(command, input, output, cancel).await,
            Connection::Ssh(s) => s.exec(command, input, output, cancel).await,
        }
    }

    async fn connect_port(&mut self, port: u16) -> std::io::Result<Box<dyn Duplex>> {
        match self {
            Connection::Local(s) => s.connect_port(port).await,
            Connection::Ssh(s) => s.connect_port(port).await,
        }
    }

    fn is_alive(&self) -> bool {
        match self {
            Connection::Local(s) => s.is_alive(),
            Connection::Ssh(s) => s.is_alive(),
        }
    }

    async fn close(self) {
        match self {
            Connection::Local(s) => s.close().await,
            Connection::Ssh(s) => s.close().await,
        }
    }
}

/// Opens the line to `target` (retrying a host that is still booting, checking its key),
/// reporting [`Stage::Connecting`] and notices (a pinned key, a retry) as events. Fails with
/// the host's outcome: unreachable, or interrupted by `cancel`.
pub async fn connect(
    id: HostId,
    target: &Target,
    known_hosts: Arc<KnownHosts>,
    ssh: &SshSettings,
    tx: &mpsc::Sender<Event>,
    cancel: &CancellationToken,
) -> Result<Connection, Outcome> {
    let key = match (&target.host.transport, &target.key) {
        (Transport::Local, _) => return Ok(Connection::Local(LocalSession)),
        (Transport::Ssh, Some(key)) => key,
        (Transport::Ssh, None) => {
            return Err(Outcome::Unreachable {
                reason: "no key for this host: pass --key".into(),
            });
        }
    };
    let _ = tx
        .send(Event::Stage {
            host: id,
            stage: Stage::Connecting,
        })
        .await;
    // Notices are rare (a pinned key, a retry); never block the connect on them.
    let notify = |message: String| {
        let _ = tx.try_send(Event::Notice { host: id, message });
    };
    match SshSession::connect(&target.host, key, known_hosts, ssh, &notify, cancel).await {
        Ok(session) => Ok(Connection::Ssh(session)),
        Err(_) if cancel.is_cancelled() => Err(Outcome::Interrupted),
        Err(e) => Err(Outcome::Unreachable { reason: e.to_string() }),
    }
}

//! SSH transport on russh: bounded, retried connects; pinned host keys; streamed exec.
//!
//! One connection per host carries all of that host's work (channels are multiplexed).
//! Every stage has its own time limit, because russh bounds none of them: TCP connect,
//! banner and key exchange, authentication, and each command.

pub mod key;
pub mod known_hosts;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, AuthResult, DisconnectReason, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::event::{Outcome, Stream};
use crate::inventory::Host;
use crate::script::RemoteCommand;
use crate::transport::{Duplex, Output, Payload, Session, outcome_of_exit};
use key::ClientKey;
use known_hosts::{KnownHosts, Verdict};

/// Time limits for reaching a host. Plain data, resolved from the command line.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Each stage of one connection attempt: TCP connect, banner and key exchange, and
    /// authentication.
    pub connect_timeout: Duration,
    /// How long to keep retrying a host that is plausibly still booting (refused, reset,
    /// timed out, silent). Zero: one attempt.
    pub wait: Duration,
    /// A silent peer is declared dead after `keepalive_interval × keepalive_max`.
    pub keepalive_interval: Duration,
    pub keepalive_max: usize,
    /// Request a pseudo-terminal for commands (merges stderr into stdout).
    pub pty: bool,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            connect_timeout: Duration::from_secs(10),
            wait: Duration::from_secs(20),
            keepalive_interval: Duration::from_secs(5),
            keepalive_max: 3,
            pty: false,
        }
    }
}

/// Why a host could not be reached. Callers branch on [`ConnectError::is_retryable`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused ({0})")]
    Refused(String),
    #[error("no TCP connection within {0:?} ({1})")]
    ConnectTimeout(Duration, String),
    #[error("no SSH handshake within {0:?}: the port accepts TCP but does not speak SSH ({1})")]
    HandshakeTimeout(Duration, String),
    #[error("{0}")]
    Network(String),
    #[error(
        "host key of {pattern} changed: pinned {pinned}, presented {presented}; if the host was \
         rebuilt, run again with --repin-host-key {host}"
    )]
    HostKeyChanged {
        host: String,
        pattern: String,
        pinned: String,
        presented: String,
    },
    #[error("authentication failed for user {user} with key {key} ({fingerprint})")]
    Auth {
        user: String,
        key: String,
        fingerprint: String,
    },
    #[error("no authentication answer within {0:?}")]
    AuthTimeout(Duration),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    KnownHosts(String),
}

impl ConnectError {
    /// True for the failures a booting machine produces; everything else is final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectError::Refused(_)
                | ConnectError::ConnectTimeout(..)
                | ConnectError::HandshakeTimeout(..)
                | ConnectError::Network(_)
        )
    }
}

/// What the handler learned during the handshake, read back after `connect` returns.
#[derive(Default)]
struct Shared {
    verdict: Option<Verdict>,
    /// SHA256 fingerprint of the key the host presented.
    fingerprint: Option<String>,
    store_error: Option<String>,
    disconnect: Option<String>,
}

struct Handler {
    pattern: String,
    known_hosts: Arc<KnownHosts>,
    shared: Arc<Mutex<Shared>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.fingerprint = Some(known_hosts::fingerprint(&key.public_key()));
        match self.known_hosts.check(&self.pattern, &key.public_key()) {
            Ok(v) => {
                let ok = !matches!(v, Verdict::Changed { .. });
                shared.verdict = Some(v);
                Ok(ok)
            }
            Err(e) => {
                shared.store_error = Some(e.to_string());
                Ok(false)
            }
        }
    }

    async fn disconnected(&mut self, reason: DisconnectReason<Self::Error>) -> Result<(), Self::Error> {
        let text = match &reason {
            DisconnectReason::ReceivedDisconnect(info) => format!("host disconnected: {}", info.message),
            DisconnectReason::Error(e) => e.to_string().to_lowercase(),
        };
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).disconnect = Some(text);
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// russh's defaults, with AES-GCM before ChaCha20-Poly1305: both are AEADs OpenSSH offers,
/// and AES-GCM runs several times faster on CPUs with AES instructions (every EC2 type),
/// which is what bounds large uploads.
static PREFERRED: std::sync::LazyLock<russh::Preferred> = std::sync::LazyLock::new(|| russh::Preferred {
    cipher: std::borrow::Cow::Borrowed(&[
        russh::cipher::AES_256_GCM,
        russh::cipher::CHACHA20_POLY1305,
        russh::cipher::AES_256_CTR,
        russh::cipher::AES_192_CTR,
        russh::cipher::AES_128_CTR,
    ]),
    ..russh::Preferred::default()
});

pub struct SshSession {
    handle: Handle<Handler>,
    shared: Arc<Mutex<Shared>>,
    pty: bool,
}

/// Called with a short message for the operator (a pinned key, a retry).
pub type Notify<'a> = &'a (dyn Fn(String) + Sync);

impl SshSession {
    /// Connects and authenticates, retrying only "still booting" failures until
    /// `settings.wait` has passed. Reports a newly pinned host key through `notify`.
    pub async fn connect(
        host: &Host,
        key: &ClientKey,
        known_hosts: Arc<KnownHosts>,
        settings: &SshSettings,
        notify: Notify<'_>,
        cancel: &CancellationToken,
    ) -> Result<SshSession, ConnectError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let result = tokio::select! {
                r = Self::connect_once(host, key, known_hosts.clone(), settings, notify) => r,
                _ = cancel.cancelled() => return Err(ConnectError::Network("interrupted".into())),
            };
            match result {
                Err(e) if e.is_retryable() && started.elapsed() + backoff < settings.wait => {
                    if attempt == 1 {
                        notify(format!("{e}; retrying for up to {:?}", settings.wait));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => return Err(ConnectError::Network("interrupted".into())),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn connect_once(
        host: &Host,
        key: &ClientKey,
        known_hosts: Arc<KnownHosts>,
        settings: &SshSettings,
        notify: Notify<'_>,
    ) -> Result<SshSession, ConnectError> {
        let target = format!("{}:{}", host.address, host.port);
        let tcp = match tokio::time::timeout(
            settings.connect_timeout,
            TcpStream::connect((host.address.as_str(), host.port)),
        )
        .await
        {
            Err(_) => return Err(ConnectError::ConnectTimeout(settings.connect_timeout, target)),
            Ok(Err(e)) => return Err(classify_io(&e, &target)),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let config = Arc::new(client::Config {
            keepalive_interval: Some(settings.keepalive_interval),
            keepalive_max: settings.keepalive_max,
            nodelay: true,
            preferred: PREFERRED.clone(),
            ..Default::default()
        });
        let shared = Arc::new(Mutex::new(Shared::default()));
        let pattern = host.known_hosts_pattern();
        let handler = Handler {
            pattern: pattern.clone(),
            known_hosts: known_hosts.clone(),
            shared: shared.clone(),
        };
        let handshake =
            tokio::time::timeout(settings.connect_timeout, client::connect_stream(config, tcp, handler)).await;
        let mut handle = match handshake {
            Err(_) => return Err(ConnectError::HandshakeTimeout(settings.connect_timeout, target)),
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                let s = shared.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(Verdict::Changed { pinned, presented }) = &s.verdict {
                    return Err(ConnectError::HostKeyChanged {
                        host: host.name.clone(),
                        pattern,
                        pinned: pinned.join(", "),
                        presented: presented.clone(),
                    });
                }
                if let Some(msg) = &s.store_error {
                    return Err(ConnectError::KnownHosts(msg.clone()));
                }
                return Err(classify_russh(e, &target));
            }
        };
        if let Some(Verdict::Pinned { fingerprint, replaced }) =
            &shared.lock().unwrap_or_else(|e| e.into_inner()).verdict
        {
            let why = if *replaced {
                "re-pinned on request"
            } else {
                "first contact: pinned"
            };
            notify(format!(
                "{why} host key {fingerprint} in {}",
                known_hosts.path().display()
            ));
        }

        let auth = async {
            // OpenSSH >= 8.8 refuses SHA-1 RSA signatures; when the server does not say
            // what it supports, rsa-sha2-256 is the safe guess.
            let hash = if key.key.algorithm().is_rsa() {
                match handle.best_supported_rsa_hash().await {
                    Ok(Some(h)) => h,
                    _ => Some(HashAlg::Sha256),
                }
            } else {
                None
            };
            handle
                .authenticate_publickey(&host.user, PrivateKeyWithHashAlg::new(key.key.clone(), hash))
                .await
        };
        let result = tokio::time::timeout(settings.connect_timeout, auth).await;
        match result {
            Err(_) => Err(ConnectError::AuthTimeout(settings.connect_timeout)),
            Ok(Ok(AuthResult::Success)) => Ok(SshSession {
                handle,
                shared,
                pty: settings.pty,
            }),
            // A session that died during auth also reports Failure: tell the two apart.
            Ok(Ok(AuthResult::Failure { .. })) if !handle.is_closed() => Err(ConnectError::Auth {
                user: host.user.clone(),
                key: key.path.display().to_string(),
                fingerprint: key.fingerprint(),
            }),
            Ok(Ok(AuthResult::Failure { .. })) => Err(ConnectError::Network(lost(&shared))),
            Ok(Err(e)) => Err(classify_russh(e, &target)),
        }
    }

    /// An interactive session (`agent ssh`): a pty on the host sized as `size` (columns,
    /// rows) with `term`, a login shell or `command`; `input` is sent as it is typed,
    /// the host's output written to `output` as it comes, each size from `resize` passed on.
    /// The remote exit status (a signal counts as 128 + its number, as shells do).
    pub async fn interactive(
        &mut self,
        command: Option<&str>,
        term: &str,
        size: (u32, u32),
        mut input: impl tokio::io::AsyncRead + Unpin,
        mut output: impl tokio::io::AsyncWrite + Unpin,
        mut resize: tokio::sync::mpsc::Receiver<(u32, u32)>,
    ) -> Result<u32, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| format!("cannot open a session channel: {}", lower(&e)))?;
        channel
            .request_pty(false, term, size.0, size.1, 0, 0, &[])
            .await
            .map_err(|e| format!("pty request failed: {}", lower(&e)))?;
        match command {
            Some(c) => channel.exec(true, c).await,
            None => channel.request_shell(true).await,
        }
        .map_err(|e| format!("the host refused the session: {}", lower(&e)))?;
        let (mut reader, channel) = channel.split();
        let mut buf = vec![0u8; 8192];
        let (mut typing, mut exit) = (true, None);
        loop {
            tokio::select! {
                n = input.read(&mut buf), if typing => match n {
                    Ok(0) | Err(_) => {
                        typing = false;
                        let _ = channel.eof().await;
                    }
                    Ok(n) => {
                        if channel.data(&buf[..n]).await.is_err() {
                            typing = false;
                        }
                    }
                },
                Some(size) = resize.recv() => {
                    let _ = channel.window_change(size.0, size.1, 0, 0).await;
                }
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                        if output.write_all(&data).await.is_err() || output.flush().await.is_err() {
                            break;
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(exit_status),
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => exit = Some(128 + signal_number(&signal_name)),
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
            }
        }
        exit.ok_or_else(|| format!("connection lost ({})", lost(&self.shared)))
    }

    /// SHA256 fingerprint of the host key this session verified.
    pub fn host_key_fingerprint(&self) -> Option<String> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fingerprint
            .clone()
    }
}

impl Session for SshSession {
    async fn exec(
        &mut self,
        command: &RemoteCommand,
        input: &[Payload],
        output: &mut Output,
        cancel: &CancellationToken,
    ) -> Outcome {
        let channel = match self.handle.channel_open_session().await {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Unreachable {
                    reason: format!("cannot open a session channel: {}", lower(&e)),
                };
            }
        };
        if self.pty
            && let Err(e) = channel.request_pty(false, "xterm", 200, 50, 0, 0, &[]).await
        {
            return Outcome::Unreachable {
                reason: format!("pty request failed: {}", lower(&e)),
            };
        }
        if let Err(e) = channel.exec(true, command.render()).await {
            return Outcome::Unreachable {
                reason: format!("exec request failed: {}", lower(&e)),
            };
        }
        // Reading and writing go on side by side: a command that fails early while we still
        // send would otherwise leave both ends waiting (and an undrained channel stalls the
        // whole connection).
        let (mut reader, channel) = channel.split();
        let channel = Arc::new(channel);
        let feed = {
            let (channel, input) = (channel.clone(), input.to_vec());
            async move {
                if input.is_empty() {
                    return;
                }
                for payload in input {
                    // A file that cannot be read leaves the upload short: the remote script
                    // refuses it by size.
                    let Ok(mut reader) = payload.reader().await else { return };
                    // 1 MiB at a time: russh's own reader loop goes a packet at a time and is
                    // markedly slower.
                    loop {
                        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
                        while buf.len() < buf.capacity() {
                            match tokio::io::AsyncReadExt::read_buf(&mut reader, &mut buf).await {
                                Ok(0) => break,
                                Ok(_) => {}
                                Err(_) => return,
                            }
                        }
                        if buf.is_empty() {
                            break;
                        }
                        if channel.data_bytes(buf.freeze()).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = channel.eof().await;
            }
        };
        tokio::pin!(feed);
        let mut fed = false;
        let started = tokio::time::Instant::now();
        let deadline = tokio::time::sleep(command.client_deadline());
        tokio::pin!(deadline);
        let mut exit: Option<Outcome> = None;
        let mut interrupted = false;
        // After Ctrl-C: how long the command gets to exit before the channel is closed.
        let grace = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut feed, if !fed => fed = true,
                msg = reader.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => output.chunk(Stream::Stdout, &data).await,
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => output.chunk(Stream::Stderr, &data).await,
                    Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(outcome_of_exit(exit_status)),
                    // `timeout -k` ends a command that ignored TERM with KILL on its whole group.
                    Some(ChannelMsg::ExitSignal { signal_name: Sig::KILL, .. }) if started.elapsed() >= command.timeout => {
                        exit = Some(Outcome::TimedOut)
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        exit = Some(Outcome::Signaled { signal: signal_text(&signal_name) })
                    }
                    Some(ChannelMsg::Failure) => {
                        output.finish().await;
                        return Outcome::Unreachable { reason: "the host refused to run the command".into() };
                    }
                    // Exit status comes between Eof and Close: keep reading until Close.
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                },
                _ = cancel.cancelled(), if !interrupted => {
                    interrupted = true;
                    // `timeout` on the host forwards TERM to the command's whole process group.
                    let _ = channel.signal(Sig::TERM).await;
                    let _ = channel.eof().await;
                    grace.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(2));
                }
                _ = &mut grace, if interrupted => {
                    let _ = channel.close().await;
                    break;
                }
                _ = &mut deadline => {
                    let _ = channel.close().await;
                    output.finish().await;
                    return Outcome::TimedOut;
                }
            }
        }
        output.finish().await;
        if interrupted {
            return Outcome::Interrupted;
        }
        exit.unwrap_or_else(|| Outcome::Unreachable {
            reason: format!("connection lost while the command ran ({})", lost(&self.shared)),
        })
    }

    fn is_alive(&self) -> bool {
        !self.handle.is_closed()
    }

    async fn connect_port(&mut self, port: u16) -> std::io::Result<Box<dyn Duplex>> {
        let channel = self
            .handle
            .channel_open_direct_tcpip("127.0.0.1", u32::from(port), "127.0.0.1", 0)
            .await
            .map_err(|e| std::io::Error::other(format!("ssh forwarding to port {port}: {}", lower(&e))))?;
        Ok(Box::new(channel.into_stream()))
    }

    async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

fn lost(shared: &Mutex<Shared>) -> String {
    shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .disconnect
        .clone()
        .unwrap_or_else(|| "connection closed".into())
}

fn signal_text(sig: &Sig) -> String {
    match sig {
        Sig::Custom(name) => name.clone(),
        other => format!("{other:?}"),
    }
}

fn lower(e: &impl std::fmt::Display) -> String {
    e.to_string().to_lowercase()
}

fn classify_io(e: &std::io::Error, target: &str) -> ConnectError {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => ConnectError::Refused(target.to_owned()),
        ConnectionReset | TimedOut | ConnectionAborted | HostUnreachable | NetworkUnreachable | UnexpectedEof => {
            ConnectError::Network(format!("{} ({target})", lower(e)))
        }
        _ => ConnectError::Protocol(format!("cannot connect to {target}: {}", lower(e))),
    }
}

fn classify_russh(e: russh::Error, target: &str) -> ConnectError {
    match e {
        russh::Error::IO(io) => classify_io(&io, target),
        // The peer hung up before or during the handshake: sshd still starting, or MaxStartups.
        russh::Error::Disconnect | russh::Error::HUP => {
            ConnectError::Network(format!("connection closed during the SSH handshake ({target})"))
        }
        russh::Error::NoCommonAlgo { kind, theirs, .. } => ConnectError::Protocol(format!(
            "no common {kind:?} algorithm with {target} (it offers {})",
            theirs.join(", ")
        )),
        other => ConnectError::Protocol(format!("ssh error with {target}: {}", lower(&other))),
    }
}

/// The number shells report for a signal (`128 + N`).
fn signal_number(s: &Sig) -> u32 {
    match s {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        _ => 0,
    }
}

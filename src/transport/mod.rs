//! An open line to one host that runs [`RemoteCommand`]s: over SSH ([`crate::transport::ssh::SshSession`])
//! or on this machine ([`LocalSession`]). Output goes out as [`Event`]s while it arrives.

pub mod connect;
pub mod ssh;

use std::future::Future;
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{Event, HostId, LineSplitter, Outcome, Stream};
use crate::script::RemoteCommand;

pub trait Session: Send {
    /// Runs one command to its end, writing `input` to its stdin (then end-of-file) while
    /// streaming its output. Every way it can end is an [`Outcome`]; none waits longer than
    /// the command's own deadline.
    fn exec(
        &mut self,
        command: &RemoteCommand,
        input: &[Payload],
        output: &mut Output,
        cancel: &CancellationToken,
    ) -> impl Future<Output = Outcome> + Send;

    /// A TCP connection to `port` on the host's loopback, made from the host itself (over
    /// SSH: a direct-tcpip channel), for health checks.
    fn connect_port(&mut self, port: u16) -> impl Future<Output = std::io::Result<Box<dyn Duplex>>> + Send;

    /// False once the line to the host is known to be gone.
    fn is_alive(&self) -> bool {
        true
    }

    fn close(self) -> impl Future<Output = ()> + Send;
}

/// What a command reads on its stdin: bytes in memory (shared by every host), or a file
/// streamed from disk so a large upload never sits in memory.
#[derive(Debug, Clone)]
pub enum Payload {
    Bytes(Bytes),
    File(std::path::PathBuf),
}

impl Payload {
    pub async fn reader(&self) -> std::io::Result<Box<dyn AsyncRead + Unpin + Send>> {
        Ok(match self {
            Payload::Bytes(b) => Box::new(std::io::Cursor::new(b.clone())),
            Payload::File(path) => Box::new(tokio::fs::File::open(path).await?),
        })
    }
}

/// A byte stream both ways (a TCP socket, an SSH channel).
pub trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// Turns a host's byte streams into [`Event::Line`]s, or keeps stdout lines for the caller.
pub struct Output {
    host: HostId,
    tx: mpsc::Sender<Event>,
    stdout: LineSplitter,
    stderr: LineSplitter,
    captured: Option<Vec<String>>,
}

impl Output {
    pub fn new(host: HostId, tx: mpsc::Sender<Event>) -> Self {
        Output {
            host,
            tx,
            stdout: LineSplitter::default(),
            stderr: LineSplitter::default(),
            captured: None,
        }
    }

    /// From now on stdout lines are kept (see [`Output::take_captured`]), not sent; stderr
    /// still is.
    pub fn capture(&mut self) {
        self.captured = Some(Vec::new());
    }

    /// The stdout lines kept since [`Output::capture`]; sends stdout again from now on.
    pub fn take_captured(&mut self) -> Vec<String> {
        self.captured.take().unwrap_or_default()
    }

    pub async fn chunk(&mut self, stream: Stream, bytes: &[u8]) {
        let mut lines = Vec::new();
        match stream {
            Stream::Stdout => self.stdout.push(bytes, |l| lines.push(l)),
            Stream::Stderr => self.stderr.push(bytes, |l| lines.push(l)),
        }
        for line in lines {
            self.send(stream, line).await;
        }
    }

    /// Emits unterminated last lines; call once the command ended.
    pub async fn finish(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let tail = match stream {
                Stream::Stdout => self.stdout.finish(),
                Stream::Stderr => self.stderr.finish(),
            };
            if let Some(line) = tail {
                self.send(stream, line).await;
            }
        }
    }

    pub async fn notice(&self, message: String) {
        let _ = self
            .tx
            .send(Event::Notice {
                host: self.host,
                message,
            })
            .await;
    }

    async fn send(&mut self, stream: Stream, line: String) {
        if let (Stream::Stdout, Some(kept)) = (stream, &mut self.captured) {
            kept.push(line);
            return;
        }
        // A closed receiver means the renderer is gone (shutdown): output has nowhere to go.
        let _ = self
            .tx
            .send(Event::Line {
                host: self.host,
                stream,
                line,
            })
            .await;
    }
}

/// 124 is what `timeout` exits with when the limit was reached and the command obeyed TERM.
pub fn outcome_of_exit(code: u32) -> Outcome {
    match code {
        124 => Outcome::TimedOut,
        code => Outcome::Exited { code },
    }
}

/// Runs commands on this machine, through the same rendered command line as SSH hosts get.
pub struct LocalSession;

impl Session for LocalSession {
    async fn exec(
        &mut self,
        command: &RemoteCommand,
        input: &[Payload],
        output: &mut Output,
        cancel: &CancellationToken,
    ) -> Outcome {
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command.render())
            .stdin(if input.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Unreachable {
                    reason: format!("cannot start /bin/sh: {e}"),
                };
            }
        };
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let stdin = child.stdin.take();
        let input: Vec<Payload> = input.to_vec();
        // Written beside the reads: a command that fails early must not leave us blocked on
        // a full pipe. Write errors mean the command stopped reading; its exit status says why.
        let feed = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                for payload in input {
                    let Ok(mut reader) = payload.reader().await else { return };
                    if tokio::io::copy(&mut reader, &mut stdin).await.is_err() {
                        return;
                    }
                }
                let _ = stdin.shutdown().await;
            }
        });
        let _feed = AbortOnDrop(feed);
        let (mut obuf, mut ebuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
        let (mut odone, mut edone) = (false, false);
        let deadline = tokio::time::sleep(command.client_deadline());
        tokio::pin!(deadline);
        let mut interrupted = false;
        while !(odone && edone) {
            tokio::select! {
                n = out.read(&mut obuf), if !odone => match n {
                    Ok(0) | Err(_) => odone = true,
                    Ok(n) => output.chunk(Stream::Stdout, &obuf[..n]).await,
                },
                n = err.read(&mut ebuf), if !edone => match n {
                    Ok(0) | Err(_) => edone = true,
                    Ok(n) => output.chunk(Stream::Stderr, &ebuf[..n]).await,
                },
                _ = cancel.cancelled(), if !interrupted => {
                    interrupted = true;
                    // `timeout` (the child after exec) forwards TERM to the command's group.
                    if let Some(pid) = child.id() {
                        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
                    }
                }
                _ = &mut deadline => break,
            }
        }
        output.finish().await;
        if interrupted {
            let _ = child.kill().await;
            return Outcome::Interrupted;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(1), child.wait()).await {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    (Some(code), _) => outcome_of_exit(code as u32),
                    (None, Some(sig)) => Outcome::Signaled {
                        signal: sig.to_string(),
                    },
                    _ => Outcome::Unreachable {
                        reason: "no exit status".into(),
                    },
                }
            }
            _ => {
                let _ = child.kill().await;
                Outcome::TimedOut
            }
        }
    }

    async fn connect_port(&mut self, port: u16) -> std::io::Result<Box<dyn Duplex>> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        Ok(Box::new(stream))
    }

    async fn close(self) {}
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

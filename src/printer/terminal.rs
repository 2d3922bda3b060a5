//! The local terminal for `agent ssh`: raw mode while the session lasts (restored however
//! it ends), the window's size and its changes, stdin and stdout as byte streams, and the
//! prompt that picks a host.

use std::io::{self, BufRead, IsTerminal, Write};

use tokio::sync::mpsc;

/// The terminal as an interactive session uses it.
pub struct Terminal {
    /// `$TERM`, or `xterm` off a terminal.
    pub name: String,
    /// Columns and rows (80 × 24 off a terminal).
    pub size: (u32, u32),
    /// Every new size, while the session lasts.
    pub resize: mpsc::Receiver<(u32, u32)>,
    raw: Option<Raw>,
}

impl Terminal {
    /// Raw mode on stdin when it is a terminal (keys go to the host as typed, Ctrl-C too).
    pub fn open() -> io::Result<Terminal> {
        let raw = if io::stdin().is_terminal() {
            Some(Raw::enable()?)
        } else {
            None
        };
        let (tx, resize) = mpsc::channel(4);
        if io::stdout().is_terminal() {
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut changes) = signal(SignalKind::window_change()) else {
                    return;
                };
                while changes.recv().await.is_some() {
                    if tx.send(size()).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Terminal {
            name: std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
            size: size(),
            resize,
            raw,
        })
    }

    pub fn input(&self) -> tokio::io::Stdin {
        tokio::io::stdin()
    }

    pub fn output(&self) -> tokio::io::Stdout {
        tokio::io::stdout()
    }

    /// Back to the terminal's own mode.
    pub fn close(mut self) {
        self.raw.take();
    }
}

/// The window's columns and rows, or 80 × 24.
fn size() -> (u32, u32) {
    // SAFETY: TIOCGWINSZ fills the winsize it is given; the fd is this process's stdout.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (u32::from(ws.ws_col), u32::from(ws.ws_row))
    } else {
        (80, 24)
    }
}

/// Raw mode on stdin, restored on drop (also when the session fails or panics).
struct Raw(libc::termios);

impl Raw {
    fn enable() -> io::Result<Raw> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios they fill and read.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return Err(io::Error::last_os_error());
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Raw(saved))
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: restores the termios read in `enable`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}

/// Asks which of `names` on a terminal; `None` off one (the caller says to name a host).
pub fn choose(names: &[String]) -> io::Result<Option<usize>> {
    if !io::stdin().is_terminal() || !io::stderr().is_terminal() {
        return Ok(None);
    }
    let mut err = io::stderr().lock();
    for (i, n) in names.iter().enumerate() {
        writeln!(err, "{:>3}  {n}", i + 1)?;
    }
    loop {
        write!(err, "which host (1-{})? ", names.len())?;
        err.flush()?;
        let mut line = String::new();
        if io::stdin().lock().read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Ok(n) = line.trim().parse::<usize>()
            && (1..=names.len()).contains(&n)
        {
            return Ok(Some(n - 1));
        }
    }
}

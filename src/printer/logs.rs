//! Per-host log files: every line a host printed, with a header saying what ran, and how
//! it ended.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::event::{Event, Stream, describe};
use crate::inventory::Host;

/// Full per-host output in `<dir>/<host>.log`, written as it arrives.
pub struct HostLogs {
    dir: PathBuf,
    files: Vec<Option<BufWriter<File>>>,
    failed: bool,
}

impl HostLogs {
    pub fn new(dir: PathBuf, n: usize) -> Self {
        HostLogs {
            dir,
            files: (0..n).map(|_| None).collect(),
            failed: false,
        }
    }

    pub fn record(&mut self, hosts: &[Host], title: &str, event: &Event) {
        if self.failed {
            return;
        }
        let host = event.host();
        if self.files[host].is_none() {
            let opened = std::fs::create_dir_all(&self.dir)
                .and_then(|_| File::create(self.dir.join(format!("{}.log", file_name(&hosts[host].name)))));
            match opened {
                Ok(f) => {
                    let mut w = BufWriter::new(f);
                    let _ = writeln!(
                        w,
                        "# {title} on {} ({}@{}:{})",
                        hosts[host].name, hosts[host].user, hosts[host].address, hosts[host].port
                    );
                    self.files[host] = Some(w);
                }
                Err(e) => {
                    // Logs are a convenience: say so once and keep the run going.
                    eprintln!("agent: cannot write logs to {}: {e}", self.dir.display());
                    self.failed = true;
                    return;
                }
            }
        }
        let w = self.files[host].as_mut().expect("opened above");
        let _ = match event {
            Event::Line {
                stream: Stream::Stdout,
                line,
                ..
            } => writeln!(w, "{line}"),
            Event::Line {
                stream: Stream::Stderr,
                line,
                ..
            } => writeln!(w, "[stderr] {line}"),
            Event::Notice { message, .. } => writeln!(w, "# {message}"),
            Event::Stage { stage, .. } => writeln!(w, "# stage: {}", stage.name()),
            Event::Step {
                stage,
                status,
                detail,
                elapsed,
                ..
            } => writeln!(
                w,
                "# {}: {} {detail} ({:.2}s)",
                stage.name(),
                status.name(),
                elapsed.as_secs_f64()
            ),
            Event::Finished { outcome, elapsed, .. } => {
                writeln!(w, "# {} after {:.2}s", describe(outcome), elapsed.as_secs_f64())
            }
        };
    }

    pub fn close(self) -> PathBuf {
        for mut w in self.files.into_iter().flatten() {
            let _ = w.flush();
        }
        self.dir
    }
}

/// Host names come from inventories; keep them from escaping the log folder.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_names_stay_in_folder() {
        assert_eq!(file_name("../etc/passwd"), ".._etc_passwd");
        assert_eq!(file_name("[::1]:22"), "___1__22");
    }
}

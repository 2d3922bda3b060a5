//! A bench's progress as it runs (a bar per stream on a terminal, a line per pause and per
//! finished stream otherwise, nothing with JSON), and its summary at the end.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::Mode;
use crate::bench::load::Stream;
use crate::bench::{Summary, Watch};

/// Draws what [`crate::bench::drive`] reports.
pub struct Bars {
    multi: Option<(MultiProgress, Vec<ProgressBar>)>,
    names: Vec<String>,
    lines: bool,
}

impl Bars {
    pub fn new(streams: &[Stream], mode: Mode) -> Bars {
        let names: Vec<String> = streams.iter().map(|s| s.name.clone()).collect();
        if !matches!(mode, Mode::Tty { .. }) {
            return Bars {
                multi: None,
                names,
                lines: mode == Mode::Plain,
            };
        }
        let multi = MultiProgress::new();
        let width = names.iter().map(String::len).max().unwrap_or(0);
        let style = ProgressStyle::with_template(&format!("{{prefix:<{width}}} {{bar:30}} {{pos:>5}}/{{len}} {{msg}}"))
            .expect("valid template");
        let bars = streams
            .iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new(s.requests() as u64));
                bar.set_style(style.clone());
                bar.set_prefix(s.name.clone());
                bar
            })
            .collect();
        Bars {
            multi: Some((multi, bars)),
            names,
            lines: false,
        }
    }

    /// Removes the bars once the run is over.
    pub fn clear(self) {
        if let Some((multi, _)) = self.multi {
            let _ = multi.clear();
        }
    }
}

impl Watch for Bars {
    fn sent(&self, i: usize, ok: bool) {
        if let Some((_, bars)) = &self.multi {
            bars[i].inc(1);
            if !ok {
                bars[i].set_message("errors");
            }
        }
    }

    fn pausing(&self, i: usize, d: Duration) {
        let text = format!("pausing {} s", d.as_secs_f64().round());
        match &self.multi {
            Some((_, bars)) => bars[i].set_message(text),
            None if self.lines => eprintln!("{}: {text}", self.names[i]),
            None => {}
        }
    }

    fn done(&self, i: usize) {
        match &self.multi {
            Some((_, bars)) => bars[i].set_message("done"),
            None if self.lines => eprintln!("{}: done", self.names[i]),
            None => {}
        }
    }
}

/// The summary on stdout: the table and where the results are, or one JSON object.
pub fn summary(summary: &Summary, out: &Path, mode: Mode) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    if mode == Mode::Json {
        writeln!(stdout, "{}", serde_json::to_string(summary).map_err(io::Error::other)?)
    } else {
        write!(stdout, "{}", summary.text())?;
        writeln!(
            stdout,
            "results: {} (report.md, requests.csv, summary.json, charts)",
            out.display()
        )
    }
}

//! A bench's results folder: `requests.csv` (one row per request), `summary.json`,
//! `deployment.json`, the charts and `report.md`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::bench::{Deployment, Run, Summary};

/// Writes requests.csv, summary.json, the charts and report.md into `dir` (created).
pub fn save(run: &Run, summary: &Summary, deployment: &Deployment, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut files = Vec::new();
    let path = dir.join("requests.csv");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?,
    );
    run.write_csv(&mut f)
        .and_then(|()| f.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    files.push(path);
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    files.push(path);
    let path = dir.join("deployment.json");
    std::fs::write(&path, serde_json::to_vec_pretty(deployment)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    files.push(path);
    files.extend(super::chart::bench(run, summary, dir)?);
    files.push(super::report::write(dir)?);
    Ok(files)
}

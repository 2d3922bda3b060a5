//! The classification head as a reproducible artifact.
//!
//! distilbert-base-uncased ships no classification weights; transformers makes a random head
//! at every start, so the course lab's probabilities changed with every restart and differed
//! between workers. Here the head is drawn once from a seed, as transformers initialises it
//! (weights normal with the config's `initializer_range`, biases zero), and saved beside the
//! weights: every worker with the same seed gives the same answer, across restarts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use agent_protocol::model::{HEAD as HEAD_FILE, WEIGHTS};

use crate::model::{Config, Header, LoadError};

/// The lab's model: DistilBertForSequenceClassification with num_labels=2.
pub const LABELS: usize = 2;

/// What [`ensure`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// The weights already hold a head (a fine-tuned model): nothing written.
    InWeights,
    /// A head file from this seed was already there.
    Present(PathBuf),
    Written(PathBuf),
}

/// Makes sure `dir` has a classification head, writing one from `seed` if it has none.
/// A head file from another seed is an error: silently keeping it would make workers disagree.
pub fn ensure(dir: &Path, seed: u64) -> Result<Head, LoadError> {
    let config = Config::read(dir)?;
    // Only the header: deploys run this every time, and the weights are hundreds of MB.
    let weights = Header::read(&dir.join(WEIGHTS))?;
    if weights.meta.tensors().contains_key("classifier.weight") {
        return Ok(Head::InWeights);
    }
    let path = dir.join(HEAD_FILE);
    if path.exists() {
        let found = seed_of(&path)?;
        if found == Some(seed) {
            return Ok(Head::Present(path));
        }
        return Err(LoadError(format!(
            "{} was made from seed {}, not {seed}: delete it to make a new head",
            path.display(),
            found.map_or("unknown".into(), |s| s.to_string())
        )));
    }
    let tensors = draw(&config, seed);
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck(data)).expect("shape matches data");
            (*name, view)
        })
        .collect();
    // One entry: a map's order is random, and the same seed must give the same bytes.
    let metadata = HashMap::from([("seed".to_owned(), seed.to_string())]);
    let data =
        safetensors::serialize(views, Some(metadata)).map_err(|e| LoadError(format!("cannot encode the head: {e}")))?;
    // Written aside and renamed: a worker starting meanwhile sees no head or a whole one.
    let tmp = dir.join(format!(".{HEAD_FILE}.{}", std::process::id()));
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            LoadError(format!("cannot write {}: {e}", path.display()))
        })?;
    Ok(Head::Written(path))
}

fn seed_of(path: &Path) -> Result<Option<u64>, LoadError> {
    Ok(Header::read(path)?
        .meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("seed"))
        .and_then(|s| s.parse().ok()))
}

/// The head's tensors, in transformers' names and shapes (out, in).
fn draw(config: &Config, seed: u64) -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    let mut normal = Normal::new(seed);
    let std = config.initializer_range;
    let d = config.dim;
    let mut weights = |n: usize| (0..n).map(|_| (normal.sample() * std) as f32).collect::<Vec<_>>();
    let pre = weights(d * d);
    let cls = weights(LABELS * d);
    vec![
        ("pre_classifier.weight", vec![d, d], pre),
        ("pre_classifier.bias", vec![d], vec![0.0; d]),
        ("classifier.weight", vec![LABELS, d], cls),
        ("classifier.bias", vec![LABELS], vec![0.0; LABELS]),
    ]
}

fn bytemuck(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; safetensors is little-endian,
    // as is every target agent-worker runs on (x86_64).
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}

/// Standard normal numbers from SplitMix64 and Box–Muller: defined here, so a seed gives the
/// same head on every machine and with every version of every dependency.
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Normal {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so the logarithm below is finite.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * v;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_draws_have_the_right_moments_and_repeat() {
        let mut a = Normal::new(7);
        let xs: Vec<f64> = (0..100_000).map(|_| a.sample()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let mut b = Normal::new(7);
        assert_eq!(xs[..10], (0..10).map(|_| b.sample()).collect::<Vec<_>>()[..]);
        assert_ne!(Normal::new(8).sample(), xs[0]);
    }
}

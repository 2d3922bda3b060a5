//! DistilBERT sequence classification (the distilbert-base-uncased architecture) on the CPU,
//! from a Hugging Face model folder: `config.json`, `model.safetensors`, `tokenizer.json`, and
//! the classification head either in the weights or beside them in `head.safetensors` (see
//! [`crate::head`]).
//!
//! The forward pass is written out on plain f32 buffers: the linear layers go to
//! [`crate::dense`] (AMX tiles or f32 gemm), the attention's per-head products to gemm with
//! strides (no copies per head), the rest is loops. On candle tensors the same pass spent a
//! quarter of its time outside the linear layers, in head reshapes and narrow kernels.
//! GELU is the exact erf form, as transformers' (the tanh form drifts ~5e-5). One request is
//! one sequence: no padding, so no mask.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use agent_protocol::model as files;
use safetensors::tensor::{Dtype, Metadata};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use crate::dense::{Dense, Kernel, Strided, product};

/// What can go wrong loading a model folder: each says which file and what to do.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// The fields of a transformers `DistilBertConfig` the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub hidden_dim: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "gelu_name")]
    pub activation: String,
    #[serde(default = "initializer_range")]
    pub initializer_range: f64,
}

fn gelu_name() -> String {
    "gelu".into()
}
fn initializer_range() -> f64 {
    0.02
}

impl Config {
    pub fn read(dir: &Path) -> Result<Config, LoadError> {
        let path = dir.join(files::CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            LoadError(format!(
                "cannot read {}: {e}; is this a Hugging Face model folder?",
                path.display()
            ))
        })?;
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| LoadError(format!("{}: not a DistilBERT config ({e})", path.display())))?;
        if config.activation != "gelu" {
            return Err(LoadError(format!(
                "{}: activation {:?} is not supported (DistilBERT uses \"gelu\")",
                path.display(),
                config.activation
            )));
        }
        if config.n_heads == 0 || !config.dim.is_multiple_of(config.n_heads) {
            return Err(LoadError(format!(
                "{}: dim {} is not a multiple of n_heads {}",
                path.display(),
                config.dim,
                config.n_heads
            )));
        }
        Ok(config)
    }
}

/// A loaded model: tokenizer, encoder, head. Immutable, so one instance serves every request.
pub struct Model {
    tokenizer: Tokenizer,
    kernel: Kernel,
    dim: usize,
    vocab: usize,
    /// (vocab × dim) and (positions × dim), row-major.
    words: Vec<f32>,
    positions: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    pre_classifier: Dense,
    classifier: Dense,
}

struct Layer {
    /// Query, key and value in one product (3·dim outputs): one pass over the activations.
    qkv: Dense,
    out: Dense,
    attention_norm: Norm,
    ffn_in: Dense,
    ffn_out: Dense,
    output_norm: Norm,
    heads: usize,
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// transformers' DistilBERT LayerNorm epsilon.
const EPS: f64 = 1e-12;

impl Model {
    /// The model in `dir`, on the fastest kernel this CPU has ([`Kernel::detect`]).
    pub fn load(dir: &Path) -> Result<Model, LoadError> {
        Model::load_with(dir, Kernel::detect())
    }

    pub fn load_with(dir: &Path, kernel: Kernel) -> Result<Model, LoadError> {
        if !kernel.available() {
            return Err(LoadError(format!(
                "the {} kernel needs a CPU with AMX-INT8 (Sapphire Rapids or later) and Linux 5.16+; use --kernel f32",
                kernel.name()
            )));
        }
        let config = Config::read(dir)?;
        let widest = config.dim.max(config.hidden_dim);
        if widest > kernel.max_input() {
            return Err(LoadError(format!(
                "{}: layers {widest} wide are more than the {} kernel sums exactly ({}); use --kernel f32",
                dir.join(files::CONFIG).display(),
                kernel.name(),
                kernel.max_input()
            )));
        }
        let tokenizer_path = dir.join(files::TOKENIZER);
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| LoadError(format!("cannot load {}: {e}", tokenizer_path.display())))?;
        // As transformers' `truncation=True`: longer texts keep their first tokens, and the
        // special tokens still fit in the model's positions.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_position_embeddings,
                ..Default::default()
            }))
            .map_err(|e| LoadError(format!("{}: {e}", tokenizer_path.display())))?;

        let weights = dir.join(files::WEIGHTS);
        if !weights.is_file() {
            return Err(LoadError(format!(
                "{} is missing: the model folder needs its weights in safetensors form",
                weights.display()
            )));
        }
        let mut tensors = read_safetensors(&weights)?;
        let head = dir.join(files::HEAD);
        if head.is_file() {
            tensors.extend(read_safetensors(&head)?);
        }
        if !tensors.contains_key("classifier.weight") {
            return Err(LoadError(format!(
                "{} has no classification head (pre_classifier, classifier): run `agent-worker head {}` once to make a reproducible one",
                dir.display(),
                dir.display()
            )));
        }
        // Saved from DistilBertFor* the encoder sits under `distilbert.`; from DistilBertModel, at the root.
        let prefix = if tensors.contains_key("distilbert.embeddings.word_embeddings.weight") {
            "distilbert."
        } else {
            ""
        };
        let mut t = Tensors { tensors, dir, kernel };
        let c = &config;
        let (d, h) = (c.dim, c.hidden_dim);
        let e = format!("{prefix}embeddings.");
        let words = t.take(&format!("{e}word_embeddings.weight"), &[c.vocab_size, d])?;
        let positions = t.take(
            &format!("{e}position_embeddings.weight"),
            &[c.max_position_embeddings, d],
        )?;
        let embedding_norm = t.norm(&format!("{e}LayerNorm"), d)?;
        let layers = (0..c.n_layers)
            .map(|i| {
                let l = format!("{prefix}transformer.layer.{i}.");
                let a = format!("{l}attention.");
                let mut weight = Vec::with_capacity(3 * d * d);
                let mut bias = Vec::with_capacity(3 * d);
                for part in ["q_lin", "k_lin", "v_lin"] {
                    weight.extend(t.take(&format!("{a}{part}.weight"), &[d, d])?);
                    bias.extend(t.take(&format!("{a}{part}.bias"), &[d])?);
                }
                Ok(Layer {
                    qkv: Dense::new(weight, bias, d, 3 * d, kernel),
                    out: t.dense(&format!("{a}out_lin"), d, d)?,
                    attention_norm: t.norm(&format!("{l}sa_layer_norm"), d)?,
                    ffn_in: t.dense(&format!("{l}ffn.lin1"), d, h)?,
                    ffn_out: t.dense(&format!("{l}ffn.lin2"), h, d)?,
                    output_norm: t.norm(&format!("{l}output_layer_norm"), d)?,
                    heads: c.n_heads,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        let labels = t.tensors["classifier.weight"].shape.first().copied().unwrap_or(0);
        Ok(Model {
            tokenizer,
            kernel,
            dim: d,
            vocab: c.vocab_size,
            words,
            positions,
            embedding_norm,
            layers,
            pre_classifier: t.dense("pre_classifier", d, d)?,
            classifier: t.dense("classifier", d, labels)?,
        })
    }

    /// The token ids the model sees for `text` ([CLS] … [SEP], truncated to its positions).
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>, String> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| format!("cannot tokenize: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The logits of each label for `text`.
    pub fn logits(&self, text: &str) -> Result<Vec<f32>, String> {
        let ids = self.tokens(text)?;
        if let Some(id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(format!(
                "inference failed: token id {id} is outside the model's vocabulary of {}; tokenizer.json and config.json disagree",
                self.vocab
            ));
        }
        Ok(self.forward(&ids))
    }

    /// Softmax of [`Model::logits`], computed in f64 so the sum is 1 to double precision.
    pub fn probabilities(&self, text: &str) -> Result<Vec<f64>, String> {
        Ok(softmax(&self.logits(text)?))
    }

    pub fn labels(&self) -> usize {
        self.classifier.output()
    }

    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    fn forward(&self, ids: &[u32]) -> Vec<f32> {
        // rayon's pool is sized by the worker's --threads (RAYON_NUM_THREADS).
        let threads = rayon::current_num_threads();
        let (n, d) = (ids.len(), self.dim);
        let mut x = vec![0f32; n * d];
        for (t, (row, &id)) in x.chunks_exact_mut(d).zip(ids).enumerate() {
            let word = &self.words[id as usize * d..][..d];
            let position = &self.positions[t * d..][..d];
            for ((v, w), p) in row.iter_mut().zip(word).zip(position) {
                *v = w + p;
            }
        }
        self.embedding_norm.apply(&mut x);
        for layer in &self.layers {
            x = layer.forward(&x, n, threads);
        }
        // The [CLS] position summarises the sequence, as in DistilBertForSequenceClassification.
        let mut hidden = self.pre_classifier.forward(&x[..d], 1, threads);
        hidden.iter_mut().for_each(|v| *v = v.max(0.0));
        self.classifier.forward(&hidden, 1, threads)
    }
}

impl Layer {
    /// One transformer block on `x` (tokens × dim), post-norm as DistilBERT.
    fn forward(&self, x: &[f32], n: usize, threads: usize) -> Vec<f32> {
        let qkv = self.qkv.forward(x, n, threads);
        let context = attention(&qkv, n, self.heads, threads);
        let mut h = self.out.forward(&context, n, threads);
        add(&mut h, x);
        self.attention_norm.apply(&mut h);
        let mut ffn = self.ffn_in.forward(&h, n, threads);
        gelu(&mut ffn);
        let mut out = self.ffn_out.forward(&ffn, n, threads);
        add(&mut out, &h);
        self.output_norm.apply(&mut out);
        out
    }
}

/// Multi-head self-attention over one sequence (no padding, so no mask). `qkv` is n rows of
/// [q | k | v]; each head's products read its columns in place through gemm's strides.
fn attention(qkv: &[f32], n: usize, heads: usize, threads: usize) -> Vec<f32> {
    let dim = qkv.len() / n / 3;
    let hd = dim / heads;
    let row = 3 * dim as isize;
    let mut context = vec![0f32; n * dim];
    let mut scores = vec![0f32; n * n];
    for h in 0..heads {
        let (q, k, v) = (h * hd, dim + h * hd, 2 * dim + h * hd);
        // SAFETY: scores (n × n) from q (n × hd) and kᵀ (hd × n: k read down its rows), whose
        // rows are 3·dim apart in qkv.
        unsafe {
            product(
                (n, n, hd),
                Strided::new(scores.as_mut_ptr(), n as isize, 1),
                Strided::new(qkv[q..].as_ptr(), row, 1),
                Strided::new(qkv[k..].as_ptr(), 1, row),
                1.0 / (hd as f32).sqrt(),
                threads,
            )
        };
        for r in scores.chunks_exact_mut(n) {
            let max = max(r);
            let mut sum = 0.0;
            for s in r.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            r.iter_mut().for_each(|s| *s /= sum);
        }
        // SAFETY: this head's columns of context (n × hd, rows dim apart) from the weights
        // (n × n) and v (n × hd, rows 3·dim apart).
        unsafe {
            product(
                (n, hd, n),
                Strided::new(context[h * hd..].as_mut_ptr(), dim as isize, 1),
                Strided::new(scores.as_ptr(), n as isize, 1),
                Strided::new(qkv[v..].as_ptr(), row, 1),
                1.0,
                threads,
            )
        };
    }
    context
}

/// The largest of `values`, written so the compiler vectorises it (`f32::max` in a fold,
/// with its NaN rule, stays one value at a time).
fn max(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for chunk in values.chunks(16) {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = if v > *l { v } else { *l };
        }
    }
    lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// The exact (erf) GELU, as transformers' "gelu" (the tanh form drifts by ~5e-5), in place;
/// 16 values per instruction where the CPU has AVX-512.
fn gelu(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        return unsafe { gelu_avx512(values) };
    }
    gelu_each(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_avx512(values: &mut [f32]) {
    gelu_each(values)
}

#[inline(always)]
fn gelu_each(values: &mut [f32]) {
    for v in values {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf(x) as Eigen's `generic_fast_erf_float`: a rational function of x on [-4, 4] (erf is 1
/// to f32 beyond), within 4.2e-7 of the exact value; PyTorch's own GELU is within 1.1e-6.
/// Pure arithmetic, so it vectorises, unlike libm's erff (7 % of a request).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.9546e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + c;
    }
    x * p / q
}

fn add(x: &mut [f32], residual: &[f32]) {
    x.iter_mut().zip(residual).for_each(|(v, r)| *v += r);
}

impl Norm {
    /// LayerNorm of every row of `x`, in place; the statistics in f64.
    fn apply(&self, x: &mut [f32]) {
        let d = self.weight.len();
        for row in x.chunks_exact_mut(d) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            let scale = 1.0 / (var + EPS).sqrt();
            for ((v, w), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = ((*v as f64 - mean) * scale) as f32 * w + b;
            }
        }
    }
}

/// A checkpoint's tensors, taken one by one as the layers are built (so each f32 copy can be
/// dropped once packed).
struct Tensors<'a> {
    tensors: HashMap<String, Stored>,
    dir: &'a Path,
    kernel: Kernel,
}

struct Stored {
    shape: Vec<usize>,
    values: Vec<f32>,
}

impl Tensors<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let dir = self.dir.display();
        match self.tensors.remove(name) {
            Some(t) if t.shape == shape => Ok(t.values),
            Some(t) => Err(LoadError(format!(
                "the weights in {dir} do not fit its config.json: {name} has shape {:?}, the config needs {shape:?}",
                t.shape
            ))),
            None => Err(LoadError(format!(
                "the weights in {dir} do not fit its config.json: {name} is missing"
            ))),
        }
    }

    fn dense(&mut self, name: &str, input: usize, output: usize) -> Result<Dense, LoadError> {
        let weight = self.take(&format!("{name}.weight"), &[output, input])?;
        let bias = self.take(&format!("{name}.bias"), &[output])?;
        Ok(Dense::new(weight, bias, input, output, self.kernel))
    }

    fn norm(&mut self, name: &str, dim: usize) -> Result<Norm, LoadError> {
        Ok(Norm {
            weight: self.take(&format!("{name}.weight"), &[dim])?,
            bias: self.take(&format!("{name}.bias"), &[dim])?,
        })
    }
}

/// Every tensor of a safetensors file, as f32, each read straight into its own buffer (not
/// mapped: a mapping beside the copies made the peak memory twice the model's size).
fn read_safetensors(path: &Path) -> Result<HashMap<String, Stored>, LoadError> {
    let bad = |e: String| LoadError(format!("{}: {e}", path.display()));
    let Header {
        file,
        meta,
        data_start,
        size,
    } = Header::read(path)?;
    let mut out = HashMap::new();
    for (name, info) in meta.tensors() {
        let (begin, end) = info.data_offsets;
        let count: usize = info.shape.iter().product();
        let bytes = (end - begin) as u64;
        if data_start + end as u64 > size || bytes != (count * info.dtype.bitsize() / 8) as u64 {
            return Err(bad(format!(
                "tensor {name}: its data is out of bounds or of the wrong size"
            )));
        }
        let read = |raw: &mut [u8]| {
            file.read_exact_at(raw, data_start + begin as u64)
                .map_err(|e| bad(format!("tensor {name}: {e}")))
        };
        let values = match info.dtype {
            Dtype::F32 => {
                let mut values = vec![0f32; count];
                // SAFETY: any byte pattern is a valid f32; the file is little-endian like x86_64.
                read(unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), count * 4) })?;
                values
            }
            Dtype::F16 | Dtype::BF16 => {
                let mut raw = vec![0u8; count * 2];
                read(&mut raw)?;
                let halves = raw.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
                if info.dtype == Dtype::F16 {
                    halves.map(|h| half::f16::from_bits(h).to_f32()).collect()
                } else {
                    halves.map(|h| f32::from_bits((h as u32) << 16)).collect()
                }
            }
            other => {
                return Err(bad(format!(
                    "tensor {name}: type {other:?} is not supported (use float32)"
                )));
            }
        };
        out.insert(
            name,
            Stored {
                shape: info.shape.clone(),
                values,
            },
        );
    }
    Ok(out)
}

/// A safetensors file's header, read without its data (which may be hundreds of MB).
pub(crate) struct Header {
    pub file: File,
    pub meta: Metadata,
    /// Where the tensors' data begins, and the file's size.
    pub data_start: u64,
    pub size: u64,
}

impl Header {
    pub fn read(path: &Path) -> Result<Header, LoadError> {
        let bad = |e: String| LoadError(format!("{}: {e}", path.display()));
        let mut file = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let header_len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
        let size = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        if header_len as u64 > size.saturating_sub(8) || header_len > 100 << 20 {
            return Err(bad("not a safetensors file (bad header length)".into()));
        }
        let mut header = vec![0u8; header_len];
        file.read_exact(&mut header)
            .map_err(|e| bad(format!("truncated header ({e})")))?;
        let meta: Metadata =
            serde_json::from_slice(&header).map_err(|e| bad(format!("not a safetensors header ({e})")))?;
        Ok(Header {
            file,
            meta,
            data_start: 8 + header_len as u64,
            size,
        })
    }
}

pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_5e_7_of_libm_and_gelu_vectorised_matches_one_by_one() {
        let xs: Vec<f32> = (-60_000..=60_000).map(|i| i as f32 / 10_000.0).collect();
        let worst = xs
            .iter()
            .map(|&x| (erf(x) as f64 - libm::erf(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "erf off by {worst:e}");
        let mut fast = xs.clone();
        gelu(&mut fast);
        let mut each = xs.clone();
        gelu_each(&mut each);
        assert_eq!(fast, each);
        assert_eq!(max(&xs[..1000]), xs[999]);
        assert_eq!(max(&[-3.0, -2.0, -5.0]), -2.0);
    }
}

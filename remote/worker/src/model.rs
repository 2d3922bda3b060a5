//! DistilBERT sequence classification (the distilbert-base-uncased architecture) on the CPU,
//! with candle, from a Hugging Face model folder: `config.json`, `model.safetensors`,
//! `tokenizer.json`, and the classification head either in the weights or beside them in
//! `head.safetensors` (see [`crate::head`]).
//!
//! Written here rather than taken from candle-transformers, whose DistilBERT uses the tanh
//! approximation of GELU (logits ~5e-5 off PyTorch's) and an inverted attention mask, and
//! whose one crate dominates the build. One request is one sequence: no padding, so no mask.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use agent_protocol::model as files;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, LayerNorm, Module, VarBuilder};
use safetensors::tensor::{Dtype, Metadata};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

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
    #[serde(default = "gelu")]
    pub activation: String,
    #[serde(default = "initializer_range")]
    pub initializer_range: f64,
}

fn gelu() -> String {
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
    embeddings: Embeddings,
    layers: Vec<Layer>,
    pre_classifier: Dense,
    classifier: Dense,
    labels: usize,
}

struct Embeddings {
    words: Embedding,
    positions: Embedding,
    norm: LayerNorm,
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    out: Dense,
    attention_norm: LayerNorm,
    ffn_in: Dense,
    ffn_out: Dense,
    output_norm: LayerNorm,
    heads: usize,
}

/// transformers' DistilBERT LayerNorm epsilon.
const EPS: f64 = 1e-12;

impl Model {
    pub fn load(dir: &Path) -> Result<Model, LoadError> {
        let config = Config::read(dir)?;
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
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        if !vb.contains_tensor("classifier.weight") {
            return Err(LoadError(format!(
                "{} has no classification head (pre_classifier, classifier): run `agent-worker head {}` once to make a reproducible one",
                dir.display(),
                dir.display()
            )));
        }
        // Saved from DistilBertFor* the encoder sits under `distilbert.`; from DistilBertModel, at the root.
        let encoder = if vb.contains_tensor("distilbert.embeddings.word_embeddings.weight") {
            vb.pp("distilbert")
        } else {
            vb.clone()
        };
        let wrong = |e: candle_core::Error| {
            LoadError(format!(
                "the weights in {} do not fit its config.json: {e}",
                dir.display()
            ))
        };
        let c = &config;
        let emb = encoder.pp("embeddings");
        let embeddings = Embeddings {
            words: candle_nn::embedding(c.vocab_size, c.dim, emb.pp("word_embeddings")).map_err(wrong)?,
            positions: candle_nn::embedding(c.max_position_embeddings, c.dim, emb.pp("position_embeddings"))
                .map_err(wrong)?,
            norm: candle_nn::layer_norm(c.dim, EPS, emb.pp("LayerNorm")).map_err(wrong)?,
        };
        let layers = (0..c.n_layers)
            .map(|i| {
                let l = encoder.pp(format!("transformer.layer.{i}"));
                let a = l.pp("attention");
                Ok(Layer {
                    query: dense(c.dim, c.dim, a.pp("q_lin"))?,
                    key: dense(c.dim, c.dim, a.pp("k_lin"))?,
                    value: dense(c.dim, c.dim, a.pp("v_lin"))?,
                    out: dense(c.dim, c.dim, a.pp("out_lin"))?,
                    attention_norm: candle_nn::layer_norm(c.dim, EPS, l.pp("sa_layer_norm"))?,
                    ffn_in: dense(c.dim, c.hidden_dim, l.pp("ffn.lin1"))?,
                    ffn_out: dense(c.hidden_dim, c.dim, l.pp("ffn.lin2"))?,
                    output_norm: candle_nn::layer_norm(c.dim, EPS, l.pp("output_layer_norm"))?,
                    heads: c.n_heads,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(wrong)?;
        let labels = vb
            .get_unchecked("classifier.weight")
            .map_err(wrong)?
            .dim(0)
            .map_err(wrong)?;
        Ok(Model {
            tokenizer,
            embeddings,
            layers,
            pre_classifier: dense(c.dim, c.dim, vb.pp("pre_classifier")).map_err(wrong)?,
            classifier: dense(c.dim, labels, vb.pp("classifier")).map_err(wrong)?,
            labels,
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
        self.forward(&ids).map_err(|e| format!("inference failed: {e}"))
    }

    /// Softmax of [`Model::logits`], computed in f64 so the sum is 1 to double precision.
    pub fn probabilities(&self, text: &str) -> Result<Vec<f64>, String> {
        Ok(softmax(&self.logits(text)?))
    }

    pub fn labels(&self) -> usize {
        self.labels
    }

    fn forward(&self, ids: &[u32]) -> candle_core::Result<Vec<f32>> {
        let device = Device::Cpu;
        let n = ids.len();
        let words = self.embeddings.words.forward(&Tensor::new(ids, &device)?)?;
        let positions = self
            .embeddings
            .positions
            .forward(&Tensor::arange(0u32, n as u32, &device)?)?;
        let mut x = self.embeddings.norm.forward(&(words + positions)?)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        // The [CLS] position summarises the sequence, as in DistilBertForSequenceClassification.
        let cls = x.narrow(0, 0, 1)?;
        let hidden = self.pre_classifier.forward(&cls)?.relu()?;
        self.classifier.forward(&hidden)?.squeeze(0)?.to_vec1()
    }
}

impl Layer {
    /// One transformer block on `x` of shape (tokens, dim), post-norm as DistilBERT.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, dim) = x.dims2()?;
        let head_dim = dim / self.heads;
        // (tokens, dim) → (heads, tokens, head_dim)
        let split = |t: Tensor| t.reshape((n, self.heads, head_dim))?.transpose(0, 1)?.contiguous();
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights.matmul(&v)?.transpose(0, 1)?.reshape((n, dim))?;
        let x = self.attention_norm.forward(&(self.out.forward(&context)? + x)?)?;
        // The exact (erf) GELU, as transformers' "gelu"; the tanh form drifts by ~5e-5.
        let ffn = self.ffn_out.forward(&self.ffn_in.forward(&x)?.gelu_erf()?)?;
        self.output_norm.forward(&(ffn + x)?)
    }
}

/// Every tensor of a safetensors file, as f32, each read straight into its own buffer. Not
/// mapped: candle copies mapped tensors, so the mapping and the copies together made the
/// peak memory twice the model's size.
fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, LoadError> {
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
        let tensor = match info.dtype {
            Dtype::F32 => {
                let mut values = vec![0f32; count];
                // SAFETY: any byte pattern is a valid f32; the file is little-endian like x86_64.
                let raw = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), count * 4) };
                file.read_exact_at(raw, data_start + begin as u64)
                    .map_err(|e| bad(format!("tensor {name}: {e}")))?;
                Tensor::from_vec(values, info.shape.as_slice(), &Device::Cpu)
            }
            Dtype::F16 | Dtype::BF16 => {
                let mut raw = vec![0u8; end - begin];
                file.read_exact_at(&mut raw, data_start + begin as u64)
                    .map_err(|e| bad(format!("tensor {name}: {e}")))?;
                let dtype = if info.dtype == Dtype::F16 {
                    DType::F16
                } else {
                    DType::BF16
                };
                Tensor::from_raw_buffer(&raw, dtype, &info.shape, &Device::Cpu).and_then(|t| t.to_dtype(DType::F32))
            }
            other => {
                return Err(bad(format!(
                    "tensor {name}: type {other:?} is not supported (use float32)"
                )));
            }
        }
        .map_err(|e| bad(format!("tensor {name}: {e}")))?;
        out.insert(name, tensor);
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

/// A linear layer computed as (W · xᵀ)ᵀ rather than x · Wᵀ: gemm then streams the large
/// weight as its left operand against the few token columns, which was faster here at
/// short texts than candle's `Linear` (and than storing W transposed).
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

fn dense(input: usize, output: usize, vb: VarBuilder) -> candle_core::Result<Dense> {
    Ok(Dense {
        weight: vb.get((output, input), "weight")?,
        bias: vb.get(output, "bias")?,
    })
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.weight.matmul(&x.t()?)?.t()?.broadcast_add(&self.bias)
    }
}

pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

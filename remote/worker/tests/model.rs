//! The worker's model against PyTorch: the same random weights (tests fixture, made once by
//! fixtures/make_model.py with transformers) must give the same tokens and probabilities.

use std::path::{Path, PathBuf};

use agent_worker::head::{self, Head};
use agent_worker::{Kernel, Model};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    text: String,
    input_ids: Vec<u32>,
    logits: Vec<f64>,
    probabilities: Vec<f64>,
}

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny")
}

fn reference() -> Vec<Case> {
    serde_json::from_slice(&std::fs::read(tiny().join("reference.json")).unwrap()).unwrap()
}

#[test]
fn probabilities_match_pytorch_within_1e_5_on_f32() {
    matches_pytorch(Kernel::F32);
}

/// On a CPU without AMX, loading with it must fail with one line instead.
#[test]
fn probabilities_match_pytorch_within_1e_5_on_amx_tiles() {
    if !Kernel::Amx.available() {
        let e = Model::load_with(&tiny(), Kernel::Amx).err().unwrap().to_string();
        assert!(e.contains("AMX") && e.contains("--kernel f32"), "{e}");
        return;
    }
    matches_pytorch(Kernel::Amx);
}

fn matches_pytorch(kernel: Kernel) {
    let model = Model::load_with(&tiny(), kernel).unwrap();
    assert_eq!(model.kernel(), kernel);
    let cases = reference();
    assert_eq!(cases.len(), 10);
    let mut worst = 0f64;
    for case in &cases {
        assert_eq!(
            model.tokens(&case.text).unwrap(),
            case.input_ids,
            "tokens of {:?}",
            case.text
        );
        let logits = model.logits(&case.text).unwrap();
        let probabilities = model.probabilities(&case.text).unwrap();
        for (got, want) in logits.iter().zip(&case.logits) {
            assert!(
                (*got as f64 - want).abs() < 1e-4,
                "logits of {:?}: {logits:?} vs {:?}",
                case.text,
                case.logits
            );
        }
        for (got, want) in probabilities.iter().zip(&case.probabilities) {
            worst = worst.max((got - want).abs());
        }
        assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
    assert!(worst < 1e-5, "largest probability difference from PyTorch: {worst:e}");
    // The fixture is sensitive: its answers are far from the uninformative [0.5, 0.5].
    assert!(cases.iter().any(|c| c.probabilities[0] < 0.05));
}

/// The tiny model without its head, as the hub's distilbert-base-uncased comes.
fn headless(into: &Path) {
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(tiny().join(f), into.join(f)).unwrap();
    }
    let bytes = std::fs::read(tiny().join("model.safetensors")).unwrap();
    let all = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = all
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("classifier.") && !name.starts_with("pre_classifier."))
        .collect();
    assert_eq!(kept.len(), all.len() - 4);
    safetensors::serialize_to_file(kept, None, &into.join("model.safetensors")).unwrap();
}

#[test]
fn a_model_without_a_head_gets_a_reproducible_one_from_its_seed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    headless(a.path());
    headless(b.path());

    let err = Model::load(a.path()).err().unwrap().to_string();
    assert!(
        err.contains("has no classification head") && err.contains("agent-worker head"),
        "{err}"
    );

    let written = head::ensure(a.path(), 42).unwrap();
    assert_eq!(written, Head::Written(a.path().join("head.safetensors")));
    assert_eq!(
        head::ensure(a.path(), 42).unwrap(),
        Head::Present(a.path().join("head.safetensors"))
    );
    let other = head::ensure(a.path(), 7).unwrap_err().to_string();
    assert!(other.contains("made from seed 42, not 7"), "{other}");

    // Another machine, the same seed: the same bytes, so every worker answers alike.
    head::ensure(b.path(), 42).unwrap();
    let head_a = std::fs::read(a.path().join("head.safetensors")).unwrap();
    assert_eq!(head_a, std::fs::read(b.path().join("head.safetensors")).unwrap());
    let text = "the same text on every worker";
    let (pa, pb) = (
        Model::load(a.path()).unwrap().probabilities(text).unwrap(),
        Model::load(b.path()).unwrap().probabilities(text).unwrap(),
    );
    assert_eq!(pa, pb);
    assert!((pa.iter().sum::<f64>() - 1.0).abs() < 1e-12);

    // The fixture's own head is in its weights: nothing to write.
    assert_eq!(head::ensure(&tiny(), 42).unwrap(), Head::InWeights);
}

#[test]
fn a_broken_model_folder_fails_with_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = Model::load(dir.path()).err().unwrap().to_string();
    assert!(err.starts_with("cannot read ") && err.contains("config.json"), "{err}");

    headless(dir.path());
    std::fs::write(dir.path().join("model.safetensors"), b"\x08\0\0\0\0\0\0\0{}").unwrap();
    let err = Model::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

//! The sentence encoder against sentence-transformers: all-MiniLM-L6-v2's vectors for the sentences
//! of `fixtures/encoder_sentences.json`, computed by sentence-transformers 6.0.1 on CPU
//! (`benches/mig/st_vectors.py`, run on the GPU machine; the command is in benches/mig/README.md).
//! The model comes from PyPI through `scripts/models.sh` (CI runs it).

use std::path::PathBuf;

use burn::backend::NdArray;
use firebrand_train::encoder::{SentenceEncoder, default_model_dir};

fn model_dir() -> PathBuf {
    let dir = default_model_dir();
    assert!(
        dir.join("model.safetensors").exists(),
        "{}: all-MiniLM-L6-v2 is missing; run `bash scripts/models.sh` (or set FIREBRAND_MINILM)",
        dir.display()
    );
    dir
}

#[test]
fn minilm_vectors_match_sentence_transformers() {
    // Read at run time (see `tests/cli.rs::manifest_dir` at the workspace root).
    let fixtures = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures");
    let expected: Vec<(String, Vec<f32>)> = std::fs::read_to_string(fixtures.join("minilm_vectors.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let vector = v["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (v["text"].as_str().unwrap().to_string(), vector)
        })
        .collect();
    let texts: Vec<String> = expected.iter().map(|(t, _)| t.clone()).collect();
    let device = Default::default();
    let encoder = SentenceEncoder::<NdArray<f32>>::load(&model_dir(), &device).unwrap();
    assert_eq!(encoder.dim(), 384);
    assert!(encoder.normalizes());
    // Batches of 5 mix lengths, so padding is exercised; the long text is truncated at 256 tokens.
    let got = encoder.encode(&texts, 5).unwrap();
    assert_eq!(got.len(), expected.len());
    let mut worst = 0.0f32;
    for ((text, want), have) in expected.iter().zip(&got) {
        let cos: f32 = want.iter().zip(have).map(|(a, b)| a * b).sum();
        let diff = want.iter().zip(have).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        worst = worst.max(diff);
        assert!(
            cos > 0.999_999 && diff < 5e-6,
            "{text:?}: cosine {cos}, largest difference {diff}"
        );
    }
    eprintln!("largest element difference from sentence-transformers: {worst:e}");
    // One at a time gives the same vectors as in a padded batch.
    let single = encoder.encode(&texts[..3], 1).unwrap();
    for (a, b) in single.iter().zip(&got) {
        let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(d < 1e-5, "batching changed a vector by {d}");
    }
}

//! Hugging Face interop: logits against transformers' own on fixtures it saved, and save → load
//! round trips (single file and sharded) with identical logits.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use firebrand_train::{Decoder, hf};

type B = NdArray<f32>;

fn fixture(name: &str) -> PathBuf {
    // Read at run time (see `tests/cli.rs::manifest_dir` at the workspace root).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures")
        .join(name)
}

fn ints(rows: &[Vec<i64>]) -> Tensor<B, 2, Int> {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [b, t]), &Default::default())
}

fn logits(model: &Decoder<B>, ids: &[Vec<i64>], pos: &[Vec<i64>], seg: &[Vec<i64>]) -> Vec<f32> {
    model
        .forward(ints(ids), ints(pos), ints(seg))
        .into_data()
        .to_vec()
        .unwrap()
}

fn flat(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(a) => a.iter().flat_map(flat).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not a number"),
    }
}

/// Largest |a - b| relative to the largest |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn positions(t: usize, b: usize) -> Vec<Vec<i64>> {
    vec![(0..t as i64).collect(); b]
}

#[test]
fn parity_with_transformers_logits() {
    // Every family and RoPE scaling `benches/hf/make_fixtures.py` saves (see there for what each
    // exercises).
    for name in [
        "llama",
        "qwen2",
        "llama31",
        "llama-dynamic",
        "qwen3",
        "mistral",
        "phi3",
        "gemma2",
        "gemma3",
    ] {
        let dir = fixture(name);
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let ids: Vec<Vec<i64>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
        let (b, t) = (ids.len(), ids[0].len());
        let (_, model) = hf::load::<B>(&dir, &Default::default()).unwrap();
        let ours = logits(&model, &ids, &positions(t, b), &vec![vec![0; t]; b]);
        let err = rel_err(&ours, &flat(&expected["logits"]));
        assert!(err <= 1e-4, "{name}: relative error {err}");

        // Row 1 packed as two documents: its second half, with positions restarting and its own
        // segment, gives the logits transformers computes for that half alone.
        let half = t / 2;
        let pos = vec![(0..half as i64).chain(0..half as i64).collect::<Vec<_>>()];
        let seg = vec![[vec![0; half], vec![1; half]].concat()];
        let packed = logits(&model, &ids[1..], &pos, &seg);
        let vocab = packed.len() / t;
        let err = rel_err(&packed[half * vocab..], &flat(&expected["segment_logits"]));
        assert!(err <= 1e-4, "{name} packed: relative error {err}");
    }
}

#[test]
fn save_then_load_gives_identical_logits_single_and_sharded() {
    for name in ["llama", "qwen3", "mistral", "phi3", "gemma2", "gemma3"] {
        save_then_load(name);
    }
}

fn save_then_load(name: &str) {
    let (config, model) = hf::load::<B>(&fixture(name), &Default::default()).unwrap();
    let ids = vec![vec![1i64, 5, 9, 2, 7, 3, 3, 8, 1, 4]];
    let reference = logits(&model, &ids, &positions(10, 1), &[vec![0; 10]]);
    let dir = tempfile::tempdir().unwrap();
    // The files keep the family's names: Phi-3's projections stay fused.
    let names = |dir: &std::path::Path| -> Vec<String> {
        let (t, _) = hf::read_tensors(&dir.join(hf::WEIGHTS)).unwrap();
        t.into_keys().collect()
    };
    let out = dir.path().join("names");
    hf::save(&model, &config, &out, usize::MAX).unwrap();
    assert_eq!(names(&out), names(&fixture(name)), "{name}");
    for (sub, shard) in [("single", usize::MAX), ("sharded", 60_000)] {
        let out = dir.path().join(sub);
        let files = hf::save(&model, &config, &out, shard).unwrap();
        assert_eq!(files.len() > 1, sub == "sharded", "{files:?}");
        assert_eq!(out.join(hf::INDEX).exists(), sub == "sharded");
        let (config2, model2) = hf::load::<B>(&out, &Default::default()).unwrap();
        assert_eq!(config2, config);
        assert_eq!(
            logits(&model2, &ids, &positions(10, 1), &[vec![0; 10]]),
            reference,
            "{name} {sub}"
        );
    }
}

#[test]
fn a_wrong_config_or_missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("llama").join(f), dir.path().join(f)).unwrap();
    }
    // One layer fewer in the config: the second layer's tensors are left over.
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        text.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1"),
    )
    .unwrap();
    let err = hf::load::<B>(dir.path(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not used") && err.contains("model.layers.1."), "{err}");
    // A wider config: the first tensor read has the wrong shape.
    std::fs::write(
        dir.path().join("config.json"),
        text.replace("\"hidden_size\": 64", "\"hidden_size\": 128"),
    )
    .unwrap();
    let err = hf::load::<B>(dir.path(), &Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`model.embed_tokens.weight` has shape [96, 64]"), "{err}");
}

#[test]
fn a_firebrand_export_reads_the_same_in_transformers() {
    // The folder is `firebrand export` of the quickstart's sft-tiny run; expected.json holds what
    // transformers computed on it (benches/hf/check_export.py): its tokenization of a ChatML prompt
    // and the logits of LlamaForCausalLM loaded with AutoModelForCausalLM.
    let dir = fixture("firebrand-export");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let tok = firebrand_data::tokenizer::load(&dir).unwrap();
    let ids: Vec<Vec<i64>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
    let ours: Vec<i64> = tok
        .encode(expected["text"].as_str().unwrap(), false)
        .unwrap()
        .get_ids()
        .iter()
        .map(|&i| i as i64)
        .collect();
    assert_eq!(ours, ids[0], "AutoTokenizer and firebrand tokenize alike");
    let t = ids[0].len();
    let (_, model) = hf::load::<B>(&dir, &Default::default()).unwrap();
    let logits = logits(&model, &ids, &positions(t, 1), &[vec![0; t]]);
    let err = rel_err(&logits, &flat(&expected["logits"]));
    assert!(err <= 1e-4, "relative error {err}");
}

//! Parity with the reference implementation (yichengchen24/MIG @969eb53), on inputs and picks
//! committed under `synth/tests/fixtures/mig/` (see its README for the commands that made them).
//!
//! The reference computes in float32. Where two candidates' gains differ by less than float32
//! can resolve, its order is decided by rounding: its own float32 and float64 runs disagree at such
//! steps (each swaps a different pair). So the test demands the same picks in the same order,
//! except for adjacent swaps of two records whose gains (computed here in f64) differ by less than
//! `TIE`, and it bounds how many there may be.

use super::{Gain, GraphOptions, LabelGraph, LabelVectors, Phi, Pool, PoolOptions, PoolReport, Selection, select};

/// Relative gap below which the reference's float32 arithmetic cannot order two gains (its W is
/// float32, ε = 1.2e-7, and each gain sums several rounded products).
const TIE: f64 = 2e-7;

fn fixture(path: &str) -> String {
    // Read at run time: a test binary reused from a target directory that another checkout shares
    // must read this checkout's fixtures.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let full = format!("{dir}/tests/fixtures/mig/{path}");
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn load(dir: &str) -> (Pool, LabelGraph) {
    load_with(dir, "pool.jsonl", &PoolOptions::default(), GraphOptions::default())
}

fn load_with(dir: &str, pool_file: &str, options: &PoolOptions, graph: GraphOptions) -> (Pool, LabelGraph) {
    let records: Vec<(String, u64, Vec<String>, Option<f64>)> = fixture(&format!("{dir}/{pool_file}"))
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let labels = v["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            // The reference stores scores in a float32 tensor.
            let score = v["score"].as_f64().unwrap() as f32 as f64;
            (v["id"].as_str().unwrap().to_string(), i as u64, labels, Some(score))
        })
        .collect();
    let mut labels = Vec::new();
    let mut rows = Vec::new();
    for l in fixture(&format!("{dir}/vectors.jsonl")).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        labels.push(v["label"].as_str().unwrap().to_string());
        rows.push(
            v["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        );
    }
    let vectors = LabelVectors::new(labels, rows).unwrap();
    let pool = Pool::from_records(records, options, &mut PoolReport::default()).unwrap();
    let graph = LabelGraph::build(&pool.names, &vectors, graph).unwrap();
    (pool, graph)
}

fn reference_picks(path: &str) -> (Vec<String>, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(&fixture(path)).unwrap();
    let picks = v["picks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    (picks, v)
}

/// Checks `ours` against `theirs`; returns the positions of the rounding-tie swaps.
fn compare(pool: &Pool, ours: &Selection, theirs: &[String]) -> Vec<usize> {
    let ids: Vec<&str> = ours.picks.iter().map(|p| pool.ids[p.index].as_str()).collect();
    assert_eq!(ids.len(), theirs.len());
    let mut swaps = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        if ids[i] == theirs[i] {
            i += 1;
            continue;
        }
        assert!(
            i + 1 < ids.len() && ids[i] == theirs[i + 1] && ids[i + 1] == theirs[i],
            "pick {i}: firebrand {} {:?}, reference {:?}",
            ids[i],
            &ids[i..(i + 3).min(ids.len())],
            &theirs[i..(i + 3).min(theirs.len())]
        );
        let (a, b) = (ours.picks[i].gain, ours.picks[i + 1].gain);
        assert!(
            (a - b).abs() <= TIE * a.abs(),
            "pick {i}: a swap with gains {a} and {b}, a gap float32 resolves"
        );
        swaps.push(i);
        i += 2;
    }
    swaps
}

#[test]
fn synthetic_pool_picks_match_the_reference() {
    let (pool, graph) = load("synthetic");
    assert_eq!((pool.len(), graph.len()), (10_000, 1000));
    let (fp32, meta) = reference_picks("synthetic/reference_fp32.json");
    // The same graph: the reference counted its edges at the same threshold.
    assert_eq!(graph.edges() as u64, meta["edges"].as_u64().unwrap());
    let ours = select(&pool, &graph, fp32.len(), Phi::default(), Gain::FirstOrder, |_| {}).unwrap();
    let swaps32 = compare(&pool, &ours, &fp32);
    let (fp64, _) = reference_picks("synthetic/reference_f64.json");
    let swaps64 = compare(&pool, &ours, &fp64);
    // Measured when the fixtures were made: float32 swaps 2 pairs (picks 4349, 8450), float64 one
    // (7580); the first 4349 picks agree with both.
    assert!(swaps32.len() <= 2 && swaps64.len() <= 1, "{swaps32:?} {swaps64:?}");
    assert!(swaps32.first().is_none_or(|&s| s >= 4000), "{swaps32:?}");
}

#[test]
fn example_data_picks_match_the_reference() {
    // The reference's data/example.jsonl through its own loading (valid tags, DEITA scores) and
    // SimLabelGraph with all-MiniLM-L6-v2 as the embedder: at its default threshold (no edges among
    // these 27 labels), at 0.5 (6 edges, so propagation matters), and at 0.5 with `norm`; 8 picks of
    // the 9 records (the reference crashes on the last one).
    for (file, threshold, norm) in [
        ("reference_t0.9.json", 0.9, false),
        ("reference_t0.5.json", 0.5, false),
        ("reference_t0.5_norm.json", 0.5, true),
    ] {
        let (picks, meta) = reference_picks(&format!("example/{file}"));
        let graph_options = GraphOptions {
            threshold,
            prop_weight: 1.0,
        };
        let options = PoolOptions {
            norm,
            ..PoolOptions::default()
        };
        let (pool, graph) = load_with("example", "pool.jsonl", &options, graph_options);
        assert_eq!(
            pool.len(),
            9,
            "line 3 of the reference's example is malformed and skipped"
        );
        assert_eq!(graph.len() as u64, meta["labels"].as_u64().unwrap());
        assert_eq!(graph.edges() as u64, meta["edges"].as_u64().unwrap(), "{file}");
        let ours = select(&pool, &graph, picks.len(), Phi::default(), Gain::FirstOrder, |_| {}).unwrap();
        let ids: Vec<&str> = ours.picks.iter().map(|p| pool.ids[p.index].as_str()).collect();
        assert_eq!(ids, picks, "{file}");
        // The raw tags through our vocabulary filter (the part of the reference's valid-tag list these
        // records touch) give the same pool, so the same picks; with `norm`, the same division.
        let vocabulary: Vec<String> = serde_json::from_str(&fixture("example/vocab.json")).unwrap();
        let raw = PoolOptions {
            vocabulary: Some(vocabulary.into_iter().collect()),
            norm,
            ..PoolOptions::default()
        };
        let (pool, graph) = load_with("example", "pool_raw.jsonl", &raw, graph_options);
        let ours = select(&pool, &graph, picks.len(), Phi::default(), Gain::FirstOrder, |_| {}).unwrap();
        let ids: Vec<&str> = ours.picks.iter().map(|p| pool.ids[p.index].as_str()).collect();
        assert_eq!(ids, picks, "{file}, raw tags");
    }
    // The thresholds do change the order, so the edges are exercised.
    assert_ne!(
        reference_picks("example/reference_t0.9.json").0,
        reference_picks("example/reference_t0.5.json").0
    );
}

#[test]
fn exact_gain_differs_from_first_order_and_does_not_lose_information() {
    // Not parity: the exact marginal gain optimises E(S) itself, so its selection's information
    // should not fall below the linearised one's by more than noise on this pool.
    let (pool, graph) = load("synthetic");
    let n = 500;
    let first = select(&pool, &graph, n, Phi::default(), Gain::FirstOrder, |_| {}).unwrap();
    let exact = select(&pool, &graph, n, Phi::default(), Gain::Exact, |_| {}).unwrap();
    let ids = |s: &Selection| s.picks.iter().map(|p| p.index).collect::<Vec<_>>();
    assert_ne!(ids(&first), ids(&exact));
    assert!(
        exact.information >= first.information * 0.999,
        "{} < {}",
        exact.information,
        first.information
    );
    // Deterministic: the parallel initial gains do not change the picks.
    let again = select(&pool, &graph, n, Phi::default(), Gain::Exact, |_| {}).unwrap();
    assert_eq!(ids(&exact), ids(&again));
}

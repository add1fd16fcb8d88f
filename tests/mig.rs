//! MIG end to end: the reference's example data imported as a dataset, its labels embedded by
//! `firebrand embed`, and `synth mig` picking what the reference picked (fixtures in
//! synth/tests/fixtures/mig/); then the bad inputs the issue names.

use firebrand_data::Dataset;
use firebrand_data::records::CompletionRow;

use crate::cli::{firebrand, text};

fn fixtures() -> String {
    crate::cli::manifest_dir()
        .join("synth/tests/fixtures/mig")
        .display()
        .to_string()
}

/// The example pool as `completion` JSONL (labels and score kept), plus `extra` rows.
fn write_pool(d: &std::path::Path, extra: &[&str]) {
    let mut out = String::new();
    for line in std::fs::read_to_string(format!("{}/example/pool.jsonl", fixtures()))
        .unwrap()
        .lines()
    {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["prompt"] = "q".into();
        v["completion"] = "a".into();
        v["meta"] = r#"{"origin": "example"}"#.into();
        out.push_str(&v.to_string());
        out.push('\n');
    }
    for e in extra {
        out.push_str(e);
        out.push('\n');
    }
    std::fs::write(d.join("pool.jsonl"), out).unwrap();
    let o = firebrand(d, &["data", "import", "pool.jsonl", "--out", "pool.lance"]);
    assert!(o.status.success(), "{:?}", text(&o));
}

fn reference_picks() -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}/example/reference_t0.5.json", fixtures())).unwrap())
            .unwrap();
    v["picks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn embed_then_select_matches_the_reference_on_its_example() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pool(d, &[]);
    let o = firebrand(d, &["embed", "pool.lance", "--out", "labels.lance"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("embedded 27 labels (384 dims)"), "{out}");
    // At threshold 0.5 the example's labels have 6 edges: our vectors must put the same pairs above
    // it as sentence-transformers' did for the reference, or the picks differ.
    let mig = |extra: &[&str]| {
        let mut args = vec!["synth", "mig", "pool.lance", "--n", "8", "--threshold", "0.5"];
        args.extend_from_slice(extra);
        firebrand(d, &args)
    };
    let o = mig(&[
        "--embeddings",
        "labels.lance",
        "--out",
        "sel.lance",
        "--picks",
        "picks.jsonl",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("pool: 9 records read, 9 in the pool"), "{out}");
    assert!(out.contains("graph: 27 labels, 6 edges at similarity >= 0.5"), "{out}");
    let want = reference_picks();
    let rows: Vec<CompletionRow> = Dataset::open(d.join("sel.lance")).unwrap().read_all().unwrap();
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, want);
    // Rows keep their content and meta, with the pick recorded in order.
    for (rank, row) in rows.iter().enumerate() {
        let meta: serde_json::Value = serde_json::from_str(&row.provenance.meta).unwrap();
        assert_eq!(meta["origin"], "example");
        assert_eq!(meta["mig"]["rank"], rank);
        assert!(meta["mig"]["gain"].as_f64().unwrap() > 0.0);
        assert_eq!(row.completion, "a");
    }
    let picks = std::fs::read_to_string(d.join("picks.jsonl")).unwrap();
    assert_eq!(picks.lines().count(), 8);
    // Embedding on the fly (the default model) picks the same.
    let o = mig(&["--out", "sel2.lance"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let rows: Vec<CompletionRow> = Dataset::open(d.join("sel2.lance")).unwrap().read_all().unwrap();
    assert_eq!(rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), want);
    // Existing outputs (the dataset, the picks file) are refused without --overwrite.
    let o = mig(&["--out", "sel2.lance"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("sel2.lance: already exists"), "{:?}", text(&o));
    let o = mig(&["--out", "sel3.lance", "--picks", "picks.jsonl"]);
    assert!(text(&o).1.contains("picks.jsonl: already exists"), "{:?}", text(&o));
}

#[test]
fn bad_inputs_are_counted_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pool(
        d,
        &[
            r#"{"id": "nolabels", "prompt": "q", "completion": "a", "labels": [], "score": 3.0}"#,
            r#"{"id": "noscore", "prompt": "q", "completion": "a", "labels": ["code translation"]}"#,
            r#"{"id": "unknown", "prompt": "q", "completion": "a", "labels": ["no such label anywhere"], "score": 2.0}"#,
        ],
    );
    // Vectors for only the example's labels: the new label has none.
    std::fs::copy(format!("{}/example/vectors.jsonl", fixtures()), d.join("v.jsonl")).unwrap();
    let base = [
        "synth",
        "mig",
        "pool.lance",
        "--embeddings",
        "v.jsonl",
        "--out",
        "s.lance",
        "--overwrite",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        firebrand(d, &args)
    };
    let o = run(&["--n", "3"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("pool: 12 records read, 10 in the pool"), "{out}");
    assert!(out.contains("left out, no labels: 1"), "{out}");
    assert!(out.contains("left out, no score: 1"), "{out}");
    assert!(out.contains("labels removed, no vector: 1"), "{out}");
    assert!(
        out.contains("records with no label left (kept, zero information): 1"),
        "{out}"
    );
    // --strict makes each an error, naming the record.
    let o = run(&["--n", "3", "--strict"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("record `nolabels`"), "{:?}", text(&o));
    // More than the pool holds.
    let o = run(&["--n", "11"]);
    assert!(!o.status.success());
    let err = text(&o).1;
    assert!(err.contains("asked for 11 records but the pool holds 10"), "{err}");
    // A label without a vector is an error with --strict (the only problem in this pool).
    let dir2 = tempfile::tempdir().unwrap();
    let d2 = dir2.path();
    write_pool(
        d2,
        &[r#"{"id": "unknown", "prompt": "q", "completion": "a", "labels": ["no such label anywhere"], "score": 2.0}"#],
    );
    std::fs::copy(format!("{}/example/vectors.jsonl", fixtures()), d2.join("v.jsonl")).unwrap();
    let o = firebrand(
        d2,
        &[
            "synth",
            "mig",
            "pool.lance",
            "--embeddings",
            "v.jsonl",
            "--out",
            "s.lance",
            "--n",
            "2",
            "--strict",
        ],
    );
    assert!(!o.status.success());
    let err = text(&o).1;
    assert!(
        err.contains("1 label(s) of the pool have no vector, e.g. `no such label anywhere`"),
        "{err}"
    );
    // A vocabulary that matches nothing leaves no information: refused, not the first N rows.
    std::fs::write(d.join("none.json"), r#"["Code Translation"]"#).unwrap();
    let o = run(&["--n", "2", "--vocab", "none.json"]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("no record carries any information"),
        "{:?}",
        text(&o)
    );
    // A vocabulary removes labels outside it (the reference's valid-tag filter).
    std::fs::write(d.join("vocab.json"), r#"["code translation", "information retrieval"]"#).unwrap();
    let o = run(&["--n", "2", "--vocab", "vocab.json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("labels removed, not in the vocabulary"), "{out}");
    assert!(out.contains("graph: 2 labels"), "{out}");
}

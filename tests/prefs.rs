//! `synth prefs` end to end: the embedded VIF-RAG queries become prompts, an OpenAI-compatible
//! server (the test responder on 127.0.0.1) answers under each passage condition, and the pairs
//! obey their perspective's rule; `--resume` skips what is built.

use firebrand_data::Dataset;
use firebrand_data::records::PreferenceRow;
use firebrand_synth::generator::responder::{Responder, last_user_message};

use crate::cli::{firebrand, text};

/// Even choices repeat the passages they were shown (so they carry the answer exactly when a
/// golden passage is shown); odd choices know nothing.
fn reader(request: &serde_json::Value, i: usize) -> String {
    let user = last_user_message(request);
    if i.is_multiple_of(2) {
        let passages = user.split("Question:").next().unwrap_or("").replace("Passages:", "");
        format!(
            "From the passages: {}",
            passages.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    } else {
        "no idea".to_string()
    }
}

#[test]
fn pairs_follow_their_perspective_and_resume() {
    let server = Responder::with_answer(vec![], reader);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = firebrand(d, &["synth", "vifrag", "--sample", "--out", "p.lance", "--seed", "1"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let url = server.url();
    let args = [
        "synth",
        "prefs",
        "p.lance",
        "--out",
        "prefs.lance",
        "--endpoint",
        &url,
        "--model",
        "reader",
        "--n",
        "2",
    ];
    let o = firebrand(d, &args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("pairs per perspective"), "{out}");
    let rows: Vec<PreferenceRow> = Dataset::open(d.join("prefs.lance")).unwrap().read_all().unwrap();
    assert!(!rows.is_empty(), "{out}");
    let mut seen = std::collections::BTreeSet::new();
    for r in &rows {
        let meta: serde_json::Value = serde_json::from_str(&r.provenance.meta).unwrap();
        let perspective = meta["perspective"].as_str().unwrap();
        seen.insert(perspective.to_string());
        assert_eq!(r.provenance.labels[0], format!("perspective:{perspective}"));
        assert_ne!(r.chosen, r.rejected);
        match perspective {
            "informativeness" | "robustness" => {
                assert_eq!(meta["chosen"]["condition"], "golden");
                assert_eq!(meta["chosen"]["has_answer"], true);
                assert_eq!(meta["rejected"]["has_answer"], false);
                let worse = if perspective == "robustness" {
                    "noisy"
                } else {
                    "partial"
                };
                assert_eq!(meta["rejected"]["condition"], worse);
            }
            _ => {
                assert_eq!(meta["chosen"]["condition"], "full");
                assert!(
                    meta["chosen"]["verifiers_passed"].as_f64().unwrap()
                        > meta["rejected"]["verifiers_passed"].as_f64().unwrap()
                );
            }
        }
    }
    assert!(seen.len() >= 2, "{seen:?}\n{out}");
    // Resume: nothing new to build, every built pair recognised.
    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = firebrand(d, &resume);
    let (out2, err2) = text(&o);
    assert!(o.status.success(), "{out2}\n{err2}");
    assert!(
        out2.contains(&format!(
            "wrote 0 pairs from 16 prompts into prefs.lance ({} already there)",
            rows.len()
        )),
        "{out2}"
    );
    // A bad perspective is refused before any work.
    let o = firebrand(
        d,
        &[
            "synth",
            "prefs",
            "p.lance",
            "--out",
            "x.lance",
            "--model",
            "m",
            "--perspectives",
            "citation",
        ],
    );
    assert!(!o.status.success());
    assert!(text(&o).1.contains("unknown `citation`"), "{:?}", text(&o));
}

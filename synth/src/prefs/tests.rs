//! The builder against an in-process generator whose answers depend on the passages it is shown.

use super::*;
use firebrand_data::records::Provenance;

const G1: &str = "Hamlet is a tragedy by William Shakespeare.";
const G2: &str = "Shakespeare was born in Stratford-upon-Avon.";
const N1: &str = "Christopher Marlowe wrote Doctor Faustus.";
const N2: &str = "The Globe theatre burned down in 1613.";

/// A prompt as `synth vifrag` writes it: passages in `meta`, one no-comma instruction.
fn row(id: &str, passages: &[&str], answer: Option<&str>) -> PromptsRow {
    let passages: Vec<Passage> = passages
        .iter()
        .map(|t| Passage {
            title: String::new(),
            text: t.to_string(),
        })
        .collect();
    let verifiers = r#"[{"id": "punctuation:no_comma", "kwargs": {}}]"#;
    let instruction = parse_verifiers(verifiers).unwrap()[0].describe(0);
    let ctx = Context {
        query: "Who wrote Hamlet?".into(),
        passages: passages.clone(),
        answer: None,
    };
    PromptsRow {
        id: id.into(),
        prompt: vec![Message::new(Role::User, render_prompt(&ctx, &[instruction]))],
        verifiers: verifiers.into(),
        answer: answer.map(str::to_string),
        provenance: Provenance {
            source: "vifrag".into(),
            labels: vec!["punctuation:no_comma".into()],
            score: None,
            meta: json!({"query": "Who wrote Hamlet?", "passages": passages, "phrasings": [0]}).to_string(),
        },
    }
}

/// Knows the answer only with both golden passages and no noise; with noise it is right on even
/// draws (without a comma) and wrong on odd ones (with one); with one golden passage it is lost.
struct Reader;

impl Generator for Reader {
    fn generate(&self, conversations: &[Vec<Message>], params: &GenParams) -> Vec<crate::generator::Answers> {
        conversations
            .iter()
            .map(|c| {
                let text = &c[0].content;
                let golden = [G1, G2].iter().filter(|g| text.contains(*g)).count();
                let noisy = text.contains(N1) || text.contains(N2);
                Ok((0..params.n)
                    .map(|i| match (golden, noisy) {
                        (_, true) if i % 2 == 0 => "Shakespeare wrote it".to_string(),
                        (_, true) => "Marlowe, I think".to_string(),
                        (2, false) => "William Shakespeare wrote it".to_string(),
                        _ => "I am not sure".to_string(),
                    })
                    .collect())
            })
            .collect()
    }
}

fn options() -> PrefsOptions {
    PrefsOptions {
        perspectives: Perspective::ALL.to_vec(),
        params: GenParams {
            n: 4,
            ..GenParams::default()
        },
    }
}

fn inputs(rows: &[PromptsRow]) -> Vec<(PromptsRow, Perspective)> {
    rows.iter()
        .flat_map(|r| Perspective::ALL.map(|p| (r.clone(), p)))
        .collect()
}

#[test]
fn each_perspective_pairs_the_right_answers() {
    let r = row("q1", &[N1, G1, N2, G2], Some("William Shakespeare/Shakespeare"));
    let scene = Scene::from_row(&r).unwrap();
    assert_eq!(scene.golden.len(), 2);
    assert_eq!(scene.noise.len(), 2);
    let out = build_pairs(&Reader, &inputs(std::slice::from_ref(&r)), &options(), 7);
    let kept: Vec<PreferenceRow> = out
        .into_iter()
        .map(|o| match o {
            Outcome::Keep(p) => p,
            Outcome::Drop(why) => panic!("dropped: {why}"),
        })
        .collect();
    let by = |p: &str| kept.iter().find(|k| k.id == format!("q1:{p}")).unwrap();
    let ri = by("informativeness");
    assert_eq!(
        (ri.chosen.as_str(), ri.rejected.as_str()),
        ("William Shakespeare wrote it", "I am not sure")
    );
    let rr = by("robustness");
    assert_eq!(
        (rr.chosen.as_str(), rr.rejected.as_str()),
        ("William Shakespeare wrote it", "Marlowe, I think")
    );
    let inst = by("instruction");
    assert_eq!(
        (inst.chosen.as_str(), inst.rejected.as_str()),
        ("Shakespeare wrote it", "Marlowe, I think")
    );
    // The pair's prompt is the full prompt; labels carry the perspective; meta the conditions.
    assert!(kept.iter().all(|k| k.prompt == r.prompt));
    assert_eq!(rr.provenance.labels[0], "perspective:robustness");
    let meta: serde_json::Value = serde_json::from_str(&rr.provenance.meta).unwrap();
    assert_eq!(meta["chosen"]["condition"], "golden");
    assert_eq!(meta["rejected"]["condition"], "noisy");
    assert_eq!(meta["rejected"]["has_answer"], false);
    // Same seed, same pairs.
    let again = build_pairs(&Reader, &inputs(&[r]), &options(), 7);
    assert_eq!(again.len(), 3);
    for (a, b) in again.iter().zip(&kept) {
        match a {
            Outcome::Keep(p) => assert_eq!(p, b),
            Outcome::Drop(why) => panic!("{why}"),
        }
    }
}

#[test]
fn conditions_follow_pa_rag() {
    let r = row("q", &[N1, G1, N2, G2], Some("Shakespeare"));
    let scene = Scene::from_row(&r).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    // Partial: remain_num = [1, 1, 1, 2, 2][2 − 1] = 1 golden passage.
    let partial = scene.passages(Condition::Partial, &mut rng).unwrap().unwrap();
    assert_eq!(partial.len(), 1);
    assert!(scene.passages[partial[0]].text == G1 || scene.passages[partial[0]].text == G2);
    // Noisy: every passage, the golden ones still in their order.
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let noisy = scene.passages(Condition::Noisy, &mut rng).unwrap().unwrap();
        assert_eq!(noisy.len(), 4);
        let g: Vec<&str> = noisy
            .iter()
            .map(|&i| scene.passages[i].text.as_str())
            .filter(|t| *t == G1 || *t == G2)
            .collect();
        assert_eq!(g, vec![G1, G2]);
    }
    // The re-rendered golden prompt keeps the question and the instruction.
    let golden = scene.conversation(scene.passages(Condition::Golden, &mut rng).unwrap().as_deref());
    assert!(golden[0].content.contains("Question: Who wrote Hamlet?"));
    assert!(golden[0].content.contains("Instructions: "));
    assert!(!golden[0].content.contains(N1));
    // Golden shows passages 2 and 4 of the full prompt as [1] and [2]: an answer's citations are
    // renumbered to the full prompt's, which is what the pair shows.
    assert_eq!(scene.golden, vec![1, 3]);
    assert_eq!(
        Scene::renumber("see [1] and [2], not [9]", Some(&scene.golden)),
        "see [2] and [4], not [9]"
    );
    assert_eq!(Scene::renumber("[1]", None), "[1]");
}

#[test]
fn prompts_without_a_pair_are_counted_by_reason() {
    let rows = vec![
        row("noanswer", &[G1, N1], None),
        row("onegolden", &[G1, N1], Some("Shakespeare")),
        row("nonoise", &[G1, G2], Some("Shakespeare")),
    ];
    let out = build_pairs(&Reader, &inputs(&rows), &options(), 0);
    let reasons: Vec<String> = out
        .iter()
        .map(|o| match o {
            Outcome::Keep(p) => format!("kept {}", p.id),
            Outcome::Drop(why) => why.clone(),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            "informativeness: no answer",
            "robustness: no answer",
            // Without an answer every passage is golden; both full answers differ in the comma.
            "kept noanswer:instruction",
            "informativeness: fewer than 2 golden passages",
            // One golden passage and no noise-free golden answer: the reader is lost.
            "robustness: all fail",
            "kept onegolden:instruction",
            // Golden only (both): the reader knows; partial: lost → a pair.
            "kept nonoise:informativeness",
            "robustness: no noise passages",
            // No noise: every full answer is "William Shakespeare wrote it": identical scores.
            "instruction: all pass",
        ]
    );
}

/// Records every conversation it is asked, with the request's seed; answers like [`Reader`].
struct Recorder(std::sync::Mutex<Vec<(u64, String)>>);

impl Generator for Recorder {
    fn generate(&self, conversations: &[Vec<Message>], params: &GenParams) -> Vec<crate::generator::Answers> {
        let mut seen = self.0.lock().unwrap();
        for c in conversations {
            seen.push((params.seed, c[0].content.clone()));
        }
        Reader.generate(conversations, params)
    }
}

#[test]
fn requests_are_the_same_for_a_seed_and_differ_across_seeds() {
    let rows: Vec<PromptsRow> = (0..6)
        .map(|i| {
            row(
                &format!("q{i}"),
                &[N1, G1, N2, G2, "Extra noise passage."],
                Some("Shakespeare"),
            )
        })
        .collect();
    let asked = |seed: u64| {
        let r = Recorder(std::sync::Mutex::new(Vec::new()));
        build_pairs(&r, &inputs(&rows), &options(), seed);
        r.0.into_inner().unwrap()
    };
    let a = asked(11);
    // Per prompt: golden, partial and noisy renderings plus the full prompt.
    assert_eq!(a.len(), 6 * 4);
    assert_eq!(a, asked(11), "the same seed asks the same things with the same seeds");
    let b = asked(12);
    assert_ne!(
        a.iter().map(|(_, t)| t).collect::<Vec<_>>(),
        b.iter().map(|(_, t)| t).collect::<Vec<_>>(),
        "another seed draws other partial subsets or noise positions"
    );
    assert!(a.iter().zip(&b).all(|(x, y)| x.0 != y.0), "and other generation seeds");
}

//! VIF-RAG end to end: embedded queries → prompts with verifiers → answers from an
//! OpenAI-compatible server (the test responder on 127.0.0.1) → kept responses, cross-checked by
//! `eval follow`; and `eval follow` on IFEval's own file convention.

use firebrand_data::records::{ChatRow, PromptsRow};
use firebrand_data::{Dataset, DatasetKind};
use firebrand_synth::generator::responder::{Responder, last_user_message};
use firebrand_verify::{Mode, parse_verifiers};

use crate::cli::{firebrand, text};

/// Four voices, one per sampled choice, each following a different set of instructions.
fn voices(request: &serde_json::Value, i: usize) -> String {
    let cites = last_user_message(request).contains("Passages:");
    let cite = if cites { " [1]" } else { "" };
    match i % 4 {
        0 => format!("the passages answer this question directly{cite} and that is all there is to say."),
        1 => format!("THE PASSAGES ANSWER THIS QUESTION DIRECTLY{cite}. THAT IS ALL THERE IS TO SAY."),
        2 => "{\"answer\": \"see the passages\", \"citations\": [1], \"explanation\": \"short\"}".to_string(),
        _ => {
            format!("<<Answer>>\n* The passages answer it{cite}.\n* Nothing else is needed.\n\nP.S. I hope this helps.")
        }
    }
}

/// `firebrand synth vifrag` on the sample, answered by the endpoint at `url`, plus `extra` flags.
fn synth(d: &std::path::Path, url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "synth",
        "vifrag",
        "--sample",
        "--out",
        "p.lance",
        "--per-query",
        "4",
        "--generate",
        "chat.lance",
        "--endpoint",
        url,
        "--model",
        "voices",
        "--n",
        "4",
        "--seed",
        "3",
    ];
    args.extend_from_slice(extra);
    firebrand(d, &args)
}

#[test]
fn sample_queries_are_answered_verified_and_kept_then_scored() {
    let server = Responder::with_answer(vec![], voices);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = server.url();
    let o = synth(d, &url, &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("wrote 64 prompts from <embedded sample> into p.lance"),
        "{out}"
    );
    assert!(out.contains("pass rate per instruction"), "{out}");
    assert!(out.contains("no response passed all its instructions"), "{out}");
    // 64 prompts, 4 choices each, one request per prompt.
    assert_eq!(server.requests().len(), 64);

    let prompts: Vec<PromptsRow> = Dataset::open_kind(d.join("p.lance"), DatasetKind::Prompts)
        .unwrap()
        .read_all()
        .unwrap();
    let kept: Vec<ChatRow> = Dataset::open_kind(d.join("chat.lance"), DatasetKind::Chat)
        .unwrap()
        .read_all()
        .unwrap();
    assert!(!kept.is_empty() && kept.len() < prompts.len(), "{} kept", kept.len());
    // Every kept response passes every verifier of its prompt; every dropped prompt had none.
    for row in &kept {
        let prompt = prompts.iter().find(|p| p.id == row.id).unwrap();
        let response = &row.messages.last().unwrap().content;
        for v in parse_verifiers(&prompt.verifiers).unwrap() {
            assert!(
                v.follows(response, Mode::Strict),
                "{}: {:?} fails {:?}",
                row.id,
                response,
                v.spec
            );
        }
        assert_eq!(row.messages.len(), 2);
    }
    let voice_outputs: Vec<String> = (0..4)
        .flat_map(|i| {
            [
                voices(
                    &serde_json::json!({"messages": [{"role": "user", "content": "Passages:"}]}),
                    i,
                ),
                voices(&serde_json::json!({"messages": []}), i),
            ]
        })
        .collect();
    for p in prompts.iter().filter(|p| !kept.iter().any(|k| k.id == p.id)) {
        let vs = parse_verifiers(&p.verifiers).unwrap();
        let cites = p.prompt[0].content.contains("Passages:");
        for (i, v) in voice_outputs.iter().enumerate() {
            if (i % 2 == 0) == cites {
                assert!(
                    !vs.iter().all(|x| x.follows(v, Mode::Strict)),
                    "{} dropped but {v:?} passes",
                    p.id
                );
            }
        }
    }

    // `eval follow` agrees: the kept responses pass strictly, the missing ones fail.
    let o = firebrand(
        d,
        &[
            "eval",
            "follow",
            "p.lance",
            "--responses",
            "chat.lance",
            "--allow-missing",
            "--json",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["prompt"]["strict"]["passed"], kept.len());
    assert_eq!(report["prompt"]["strict"]["total"], prompts.len());
    // Without --allow-missing, missing responses are an error naming one.
    let o = firebrand(d, &["eval", "follow", "p.lance", "--responses", "chat.lance"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("have no response"), "{:?}", text(&o));

    // Resume: kept prompts are not asked again; the ones left out are (only kept rows are recorded).
    let before = server.requests().len();
    let o = synth(d, &url, &["--resume"]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(server.requests().len() - before, prompts.len() - kept.len());
}

#[test]
fn eval_follow_reads_ifeval_files_and_writes_details() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = [
        serde_json::json!({"key": 1, "prompt": "Write a haiku.", "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"], "kwargs": [{}, {"relation": "less than", "num_words": 10}]}),
        serde_json::json!({"key": 2, "prompt": "Shout.", "instruction_id_list": ["cases_uppercase"], "kwargs": [{"num_words": null}]}),
        serde_json::json!({"key": 3, "prompt": "Title?", "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]}),
    ];
    let responses = [
        serde_json::json!({"prompt": "Write a haiku.", "response": "old pond frog jumps in"}),
        serde_json::json!({"prompt": "Shout.", "response": "Sure:\nTHIS IS A VERY LOUD ENGLISH SENTENCE ABOUT THE WEATHER."}),
        serde_json::json!({"prompt": "Title?", "response": "no title here"}),
    ];
    let lines = |rows: &[serde_json::Value]| rows.iter().map(|r| format!("{r}\n")).collect::<String>();
    std::fs::write(d.join("input_data.jsonl"), lines(&input)).unwrap();
    std::fs::write(d.join("responses.jsonl"), lines(&responses)).unwrap();
    let o = firebrand(
        d,
        &[
            "eval",
            "follow",
            "--input",
            "input_data.jsonl",
            "--responses",
            "responses.jsonl",
            "--details",
            "d.jsonl",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    // Strict: prompt 1 passes; prompt 2 fails (the "Sure:" line), prompt 3 fails. Loose: 1 and 2.
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>())
            .unwrap()
    };
    assert_eq!(row("prompt-level"), ["0.3333", "0.6667", "3"], "{out}");
    assert_eq!(row("instruction-level"), ["0.5000", "0.7500", "4"], "{out}");
    let details: Vec<serde_json::Value> = std::fs::read_to_string(d.join("d.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(details.len(), 3);
    assert_eq!(details[1]["key"], 2);
    assert_eq!(details[1]["follow_instruction_list_strict"], serde_json::json!([false]));
    assert_eq!(details[1]["follow_instruction_list_loose"], serde_json::json!([true]));
    assert_eq!(details[0]["follow_all_instructions_strict"], true);

    // An unknown id is an error naming the file and line.
    std::fs::write(
        d.join("bad.jsonl"),
        "{\"key\": 9, \"prompt\": \"p\", \"instruction_id_list\": [\"nope:x\"], \"kwargs\": [{}]}\n",
    )
    .unwrap();
    let o = firebrand(
        d,
        &[
            "eval",
            "follow",
            "--input",
            "bad.jsonl",
            "--responses",
            "responses.jsonl",
        ],
    );
    let (_, err) = text(&o);
    assert!(
        err.contains("bad.jsonl: line 1") && err.contains("unknown instruction id `nope:x`"),
        "{err}"
    );
}

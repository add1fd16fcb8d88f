//! JSONL import: every accepted layout, and the promised errors on bad input.

use firebrand_data::import::{ImportOptions, export_jsonl, import_jsonl};
use firebrand_data::records::*;
use firebrand_data::{DataError, Dataset, DatasetKind, WriteMode};

use crate::write_file;

fn opts(kind: Option<DatasetKind>) -> ImportOptions {
    ImportOptions {
        kind,
        skip_bad: false,
        mode: WriteMode::Create,
        source: None,
    }
}

fn import<R: Record>(jsonl: &str, kind: Option<DatasetKind>) -> (Vec<R>, firebrand_data::import::ImportReport) {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "in.jsonl", jsonl);
    let out = dir.path().join("out.lance");
    let report = import_jsonl(&input, &out, &opts(kind), |_| {}).unwrap();
    let ds = Dataset::open_kind(&out, R::KIND).unwrap();
    (ds.read_all().unwrap(), report)
}

fn import_err(jsonl: &[u8], kind: Option<DatasetKind>) -> (DataError, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "in.jsonl", jsonl);
    let out = dir.path().join("out.lance");
    let err = import_jsonl(&input, &out, &opts(kind), |_| {}).unwrap_err();
    assert!(!out.exists(), "a failed import leaves nothing at the output");
    (err, out, dir)
}

fn msgs(pairs: &[(Role, &str)]) -> Vec<Message> {
    pairs.iter().map(|(r, c)| Message::new(*r, *c)).collect()
}

#[test]
fn chat_layouts_openai_sharegpt_alpaca_trl() {
    let jsonl = concat!(
        r#"{"id": "a", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant", "content": "yo"}], "extra": 7}"#,
        "\n",
        r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "r"}], "system": "sys"}"#,
        "\n",
        "\n",
        r#"{"instruction": "Add", "input": "1 2", "output": "3", "labels": ["math"], "score": 0.5}"#,
        "\n",
        r#"{"id": 9, "prompt": [{"role": "user", "content": "p"}], "completion": [{"role": "assistant", "content": "c"}]}"#,
        "\n",
        r#"{"prompt": "p2", "completion": "c2", "source": "elsewhere"}"#,
        "\n",
    );
    let (rows, report) = import::<ChatRow>(jsonl, Some(DatasetKind::Chat));
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].id, "a");
    assert_eq!(
        rows[0].messages,
        msgs(&[(Role::System, "s"), (Role::User, "hi"), (Role::Assistant, "yo")])
    );
    let meta: serde_json::Value = serde_json::from_str(&rows[0].provenance.meta).unwrap();
    assert_eq!(meta["extra"], 7, "unknown fields are kept in meta");
    assert_eq!(rows[0].provenance.source, "in.jsonl");
    assert_eq!(
        rows[1].messages,
        msgs(&[(Role::System, "sys"), (Role::User, "q"), (Role::Assistant, "r")])
    );
    assert_eq!(rows[1].id, "in:2", "a missing id is FILE:LINE");
    assert_eq!(
        rows[2].messages,
        msgs(&[(Role::User, "Add\n\n1 2"), (Role::Assistant, "3")])
    );
    assert_eq!(rows[2].provenance.labels, vec!["math"]);
    assert_eq!(rows[2].provenance.score, Some(0.5));
    assert_eq!(rows[3].id, "9");
    assert_eq!(rows[3].messages, msgs(&[(Role::User, "p"), (Role::Assistant, "c")]));
    assert_eq!(rows[4].provenance.source, "elsewhere");
    assert_eq!(report.layouts["openai-messages"], 1);
    assert_eq!(report.layouts["sharegpt"], 1);
    assert_eq!(report.layouts["alpaca"], 1);
    assert_eq!(report.layouts["trl-prompt-completion"], 2);
}

#[test]
fn completion_layouts_trl_and_alpaca() {
    let jsonl = concat!(
        r#"{"prompt": "2+2=", "completion": "4"}"#,
        "\n",
        r#"{"instruction": "Say hi", "input": "", "output": "hi"}"#,
        "\n",
    );
    let (rows, _) = import::<CompletionRow>(jsonl, Some(DatasetKind::Completion));
    assert_eq!((rows[0].prompt.as_str(), rows[0].completion.as_str()), ("2+2=", "4"));
    assert_eq!((rows[1].prompt.as_str(), rows[1].completion.as_str()), ("Say hi", "hi"));
}

#[test]
fn preference_layouts_explicit_conversational_and_implicit() {
    let jsonl = concat!(
        r#"{"prompt": "q", "chosen": "good", "rejected": "bad"}"#,
        "\n",
        r#"{"prompt": [{"role": "user", "content": "q2"}], "chosen": [{"role": "assistant", "content": "g"}], "rejected": [{"role": "assistant", "content": "b"}]}"#,
        "\n",
        r#"{"chosen": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "g3"}], "rejected": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "b3"}]}"#,
        "\n",
    );
    // The kind is inferred from the first record.
    let (rows, report) = import::<PreferenceRow>(jsonl, None);
    assert_eq!(report.kind, Some(DatasetKind::Preference));
    assert_eq!(rows[0].prompt, msgs(&[(Role::User, "q")]));
    assert_eq!((rows[1].chosen.as_str(), rows[1].rejected.as_str()), ("g", "b"));
    assert_eq!(rows[2].prompt, msgs(&[(Role::User, "q3")]));
    assert_eq!((rows[2].chosen.as_str(), rows[2].rejected.as_str()), ("g3", "b3"));
    assert!(rows.iter().all(|r| r.ref_chosen_logp.is_none()));
}

#[test]
fn prompts_layouts_plain_and_ifeval() {
    let jsonl = concat!(
        r#"{"key": 1000, "prompt": "Write 300+ words.", "instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"relation": "at least", "num_words": 300}]}"#,
        "\n",
        r#"{"messages": [{"role": "user", "content": "2+2?"}], "answer": 4, "verifiers": [{"id": "x", "kwargs": {}}]}"#,
        "\n",
    );
    let (rows, report) = import::<PromptsRow>(jsonl, None);
    assert_eq!(report.kind, Some(DatasetKind::Prompts));
    assert_eq!(rows[0].id, "1000");
    let v: serde_json::Value = serde_json::from_str(&rows[0].verifiers).unwrap();
    assert_eq!(v[0]["id"], "length_constraints:number_words");
    assert_eq!(v[0]["kwargs"]["num_words"], 300);
    assert_eq!(rows[1].answer.as_deref(), Some("4"));
    assert_eq!(report.layouts["ifeval"], 1);
}

#[test]
fn export_then_import_gives_the_same_rows() {
    let jsonl = concat!(
        r#"{"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "labels": ["x"], "score": 1.5, "meta": {"k": [1, 2]}}"#,
        "\n",
        r#"{"id": "b", "messages": [{"role": "user", "content": "ünï"}, {"role": "assistant", "content": "\"q\"\n"}]}"#,
        "\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "a.jsonl", jsonl);
    let first = dir.path().join("a.lance");
    import_jsonl(&input, &first, &opts(None), |_| {}).unwrap();
    let ds = Dataset::open(&first).unwrap();
    let mut exported = Vec::new();
    assert_eq!(export_jsonl(&ds, &mut exported, |_| {}).unwrap(), 2);
    let again = write_file(dir.path(), "b.jsonl", &exported);
    let second = dir.path().join("b.lance");
    import_jsonl(&again, &second, &opts(Some(DatasetKind::Chat)), |_| {}).unwrap();
    let a: Vec<ChatRow> = ds.read_all().unwrap();
    let b: Vec<ChatRow> = Dataset::open(&second).unwrap().read_all().unwrap();
    assert_eq!(a, b);
}

#[test]
fn malformed_json_names_file_and_line() {
    let (err, _, _dir) = import_err(b"{\"messages\": []}\n{\"messages\": [\n", Some(DatasetKind::Chat));
    let msg = err.to_string();
    // line 1 is an empty conversation: the first error is there
    assert!(
        msg.contains("in.jsonl: line 1, field `messages`: the conversation is empty"),
        "{msg}"
    );
    let (err, _, _dir) = import_err(
        b"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n{not json}\n",
        Some(DatasetKind::Chat),
    );
    let msg = err.to_string();
    assert!(msg.contains("in.jsonl: line 2: not JSON"), "{msg}");
    let (err, _, _dir) = import_err(b"[1, 2]\n", Some(DatasetKind::Chat));
    assert!(
        err.to_string().contains("expected a JSON object, found a list"),
        "{err}"
    );
}

#[test]
fn wrong_types_name_the_nested_field_with_a_hint() {
    let (err, _, _dir) = import_err(
        br#"{"messages": [{"role": "user", "content": "x"}, {"role": "asistant", "content": "y"}]}"#,
        Some(DatasetKind::Chat),
    );
    let msg = err.to_string();
    assert!(
        msg.contains("line 1, field `messages[1].role`: unknown role \"asistant\""),
        "{msg}"
    );
    assert!(msg.contains("hint: roles are system, user, assistant, tool"), "{msg}");
    let (err, _, _dir) = import_err(br#"{"prompt": "p", "completion": 5}"#, Some(DatasetKind::Completion));
    assert!(
        err.to_string()
            .contains("field `completion`: expected a string, found a number"),
        "{err}"
    );
    let (err, _, _dir) = import_err(
        br#"{"prompt": "p", "chosen": "a", "rejected": "b", "score": "high"}"#,
        None,
    );
    assert!(
        err.to_string()
            .contains("field `score`: expected a number, found a string"),
        "{err}"
    );
    let (err, _, _dir) = import_err(
        br#"{"messages": [{"role": "user", "content": "x"}], "labels": [1]}"#,
        None,
    );
    assert!(err.to_string().contains("field `labels[0]`"), "{err}");
}

#[test]
fn non_utf8_bytes_are_reported_with_their_column() {
    let mut bytes = br#"{"prompt": "p", "completion": "ok"}"#.to_vec();
    bytes.extend_from_slice(b"\n{\"prompt\": \"caf\xe9\", \"completion\": \"x\"}\n");
    let (err, _, _dir) = import_err(&bytes, Some(DatasetKind::Completion));
    let msg = err.to_string();
    assert!(
        msg.contains("line 2: not UTF-8 (invalid byte at column 16)") && msg.contains("hint: re-encode"),
        "{msg}"
    );
}

#[test]
fn an_empty_file_is_an_error() {
    let (err, _, _dir) = import_err(b"", Some(DatasetKind::Chat));
    assert!(matches!(err, DataError::Empty { .. }), "{err}");
    let (err, _, _dir) = import_err(b"\n  \n", None);
    assert!(err.to_string().contains("no records"), "{err}");
}

#[test]
fn an_unrecognised_record_without_kind_asks_for_one() {
    let (err, _, _dir) = import_err(br#"{"text": "hello"}"#, None);
    assert!(err.to_string().contains("pass --kind"), "{err}");
    let (err, _, _dir) = import_err(br#"{"text": "hello"}"#, Some(DatasetKind::Tokens));
    assert!(err.to_string().contains("not `tokens`"), "{err}");
}

#[test]
fn skip_bad_counts_by_reason_and_keeps_the_good_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"{\"prompt\": \"a\", \"completion\": \"b\"}\n{oops\n{\"prompt\": \"a\"}\n\xff\n{\"prompt\": \"c\", \"completion\": \"d\"}\n{\"prompt\": \"e\"}\n".to_vec();
    bytes.extend_from_slice(b"");
    let input = write_file(dir.path(), "in.jsonl", bytes);
    let out = dir.path().join("out.lance");
    let o = ImportOptions {
        skip_bad: true,
        ..opts(Some(DatasetKind::Completion))
    };
    let report = import_jsonl(&input, &out, &o, |_| {}).unwrap();
    assert_eq!(report.rows, 2);
    assert_eq!(report.skipped["`completion`: missing"], 2);
    assert_eq!(report.skipped["not JSON"], 1);
    assert_eq!(report.skipped["not UTF-8 (invalid byte at column 1)"], 1);
    let rows: Vec<CompletionRow> = Dataset::open(&out).unwrap().read_all().unwrap();
    assert_eq!(
        rows.iter().map(|r| r.prompt.as_str()).collect::<Vec<_>>(),
        vec!["a", "c"]
    );
}

#[test]
fn a_bad_line_late_in_a_resumed_import_leaves_the_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_file(dir.path(), "a.jsonl", r#"{"prompt": "a", "completion": "b"}"#);
    let out = dir.path().join("out.lance");
    import_jsonl(&first, &out, &opts(None), |_| {}).unwrap();
    let before = Dataset::open(&out).unwrap();
    // Many good rows (several batches reach Lance) and then one bad line.
    let mut big = String::new();
    for i in 0..20_000 {
        big.push_str(&format!("{{\"prompt\": \"p{i}\", \"completion\": \"c\"}}\n"));
    }
    big.push_str("{\"prompt\": 1}\n");
    let second = write_file(dir.path(), "b.jsonl", big);
    let o = ImportOptions {
        mode: WriteMode::Append,
        ..opts(None)
    };
    let err = import_jsonl(&second, &out, &o, |_| {}).unwrap_err();
    assert!(err.to_string().contains("line 20001, field `prompt`"), "{err}");
    let after = Dataset::open(&out).unwrap();
    assert_eq!(after.version(), before.version());
    assert_eq!(after.len().unwrap(), 1);
}

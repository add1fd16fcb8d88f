//! The CLI as a user runs it: help, plain errors with exit code 2, the quickstart, data commands.

use std::path::Path;
use std::process::{Command, Output};

pub fn firebrand(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebrand"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn help_lists_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let o = firebrand(dir.path(), &["--help"]);
    assert!(o.status.success());
    let (out, _) = text(&o);
    for sub in [
        "data",
        "tokenizer",
        "synth",
        "train",
        "generate",
        "export",
        "eval",
        "plot",
        "bench",
        "quickstart",
    ] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(sub)),
            "{sub} missing from:\n{out}"
        );
    }
}

#[test]
fn subcommands_not_landed_say_so_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let o = firebrand(dir.path(), &["eval", "follow", "x.lance"]);
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(
        err.contains("firebrand eval: not available in this build yet") && err.contains("issue 7"),
        "{err}"
    );
}

#[test]
fn a_bad_import_prints_file_line_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}\n",
    )
    .unwrap();
    let o = firebrand(
        dir.path(),
        &["data", "import", "in.jsonl", "--kind", "chat", "--out", "c.lance"],
    );
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(err.starts_with("error: importing in.jsonl into c.lance: in.jsonl: line 1, field `messages[0].content`: expected a string, found a number"), "{err}");
    assert!(!dir.path().join("c.lance").exists());
    // A wrong kind is refused by name.
    let o = firebrand(
        dir.path(),
        &["data", "import", "in.jsonl", "--kind", "chats", "--out", "c.lance"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("unknown dataset kind `chats`"));
}

#[test]
fn quickstart_imports_trains_a_tokenizer_tokenizes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let o = firebrand(dir.path(), &["quickstart", "--dir", "qs"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("imported 160 rows into qs/chat.lance (chat; layouts openai-messages: 160)"),
        "{out}"
    );
    assert!(out.contains("tokens (at most 1024; 8 special) on 425 texts"), "{out}");
    assert!(out.contains("tokenized 160 rows into 160 documents"), "{out}");
    assert!(
        out.contains("[[") && out.contains("<|im_end|>]]"),
        "the debug view brackets trained tokens:\n{out}"
    );
    // The recipe's 120 CPU steps memorise the sample: greedy answers come back from the export.
    assert!(out.contains("$ firebrand generate qs/export"), "{out}");
    assert!(
        out.contains("\nTokyo.\n"),
        "the trained model answers the sample's question:\n{out}"
    );
    assert!(dir.path().join("qs/checkpoints/sft-tiny/metrics.png").exists());
    // Running it again replaces its outputs rather than failing.
    let o = firebrand(dir.path(), &["quickstart", "--dir", "qs", "--train-steps", "2"]);
    assert!(o.status.success(), "{:?}", text(&o));

    // The data commands on what it wrote.
    let o = firebrand(dir.path(), &["data", "stats", "qs/chat.lance"]);
    let (out, _) = text(&o);
    assert!(
        out.contains("chat dataset") && out.contains("140  arithmetic") && out.contains("20  faq"),
        "{out}"
    );
    let o = firebrand(
        dir.path(),
        &[
            "data",
            "query",
            "SELECT count(*) AS n FROM 'qs/chat.lance' WHERE array_has(labels, 'faq')",
        ],
    );
    assert!(text(&o).0.contains("| 20 |"), "{}", text(&o).0);
    let o = firebrand(
        dir.path(),
        &[
            "data",
            "query",
            "SELECT * FROM 'qs/chat.lance' WHERE array_has(labels, 'faq')",
            "--out",
            "faq.lance",
        ],
    );
    assert!(
        text(&o).0.contains("wrote 20 rows (chat) to faq.lance"),
        "{:?}",
        text(&o)
    );
    let o = firebrand(dir.path(), &["data", "export", "faq.lance", "--out", "faq.jsonl"]);
    assert!(o.status.success());
    let exported = std::fs::read_to_string(dir.path().join("faq.jsonl")).unwrap();
    assert_eq!(exported.lines().count(), 20);
    let o = firebrand(dir.path(), &["data", "show", "qs/tokens.lance", "-n", "1"]);
    assert!(text(&o).0.contains("tokens dataset"));
    // Reading a tokens dataset where chat is expected names both kinds.
    let o = firebrand(
        dir.path(),
        &[
            "data",
            "tokenize",
            "qs/tokens.lance",
            "--tokenizer",
            "qs/tokenizer.json",
            "--max-len",
            "64",
            "--out",
            "x.lance",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o)
            .1
            .contains("reads chat or completion datasets, this one is `tokens`"),
        "{}",
        text(&o).1
    );
}

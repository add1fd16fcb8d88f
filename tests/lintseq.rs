//! `firebrand synth lintseq` end to end: a folder of Python, Go and JavaScript programs (the
//! embedded corpus plus files that must be dropped) becomes a `lintseq` dataset whose every
//! sequence rebuilds its program and passes the checker after every edit; the SFT dataset holds
//! the reference's training text; results do not depend on threads or chunking; `--resume` skips
//! finished programs; JSONL and chat inputs take code from fenced blocks; `--lint` and `--verify`.

use std::path::Path;

use firebrand_data::{CompletionRow, Dataset, DatasetKind, DatasetWriter, LintseqRow, Provenance, WriteMode};
use firebrand_synth::lintseq;

use crate::cli::{firebrand, text};

fn corpus_dir() -> std::path::PathBuf {
    crate::cli::manifest_dir().join("assets/lintseq")
}

/// The corpus copied into `dir/src`, plus programs every drop reason applies to.
fn corpus(dir: &Path) -> usize {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("nested")).unwrap();
    let mut programs = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        std::fs::copy(&path, src.join(&name)).unwrap();
        programs += usize::from(lintseq::by_extension(path.extension().unwrap().to_str().unwrap()).is_some());
    }
    std::fs::write(src.join("nested/broken.py"), "def f(:\n    return 1\n").unwrap();
    std::fs::write(src.join("nested/notes.py"), "# only comments\n\n# here\n").unwrap();
    let big: String = (0..250).map(|i| format!("x{i} = {i}\n")).collect();
    std::fs::write(src.join("nested/big.py"), big).unwrap();
    std::fs::write(src.join("latin1.py"), b"s = '\xe9'\n").unwrap();
    programs
}

fn read_rows(path: &Path) -> Vec<LintseqRow> {
    let mut rows: Vec<LintseqRow> = Dataset::open_kind(path, DatasetKind::Lintseq)
        .unwrap()
        .read_all()
        .unwrap();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

fn run(dir: &Path, args: &[&str]) -> String {
    let o = firebrand(dir, args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?}\n{out}\n{err}");
    out
}

#[test]
fn a_folder_becomes_verified_edit_sequences_and_sft_text() {
    let dir = tempfile::tempdir().unwrap();
    let programs = corpus(dir.path());
    let out = run(
        dir.path(),
        &[
            "synth",
            "lintseq",
            "src",
            "--out",
            "ls.lance",
            "--samples-per-program",
            "3",
            "--max-lines",
            "200",
            "--emit-sft",
            "sft.lance",
        ],
    );
    // Every drop reason is reported once.
    for reason in ["unparsable", "comment-only", "too large", "not UTF-8"] {
        assert!(
            out.lines().any(|l| l.trim() == format!("1  {reason}")),
            "{reason} missing:\n{out}"
        );
    }
    let rows = read_rows(&dir.path().join("ls.lance"));
    assert_eq!(rows.len(), 3 * programs, "{out}");
    let mut languages = std::collections::BTreeSet::new();
    for r in &rows {
        let lang = lintseq::by_name(&r.language).unwrap();
        languages.insert(r.language.clone());
        assert_eq!(lintseq::verify(&r.program, lang, &r.edits), Ok(()), "{}", r.id);
        assert_eq!(r.id, format!("{}#{}", lintseq::program_id(&r.id), r.sample));
        assert!(r.source_file.ends_with(lintseq::program_id(&r.id)), "{}", r.source_file);
        assert!(r.provenance.labels.contains(&format!("language:{}", r.language)));
        assert!(
            r.edits.iter().all(|e| e.starts_with("@@ -")),
            "{}: empty or headed edit",
            r.id
        );
        assert!(r.edits.len() >= 2, "{}", r.id);
    }
    assert_eq!(
        languages.into_iter().collect::<Vec<_>>(),
        ["go", "javascript", "python"]
    );
    // Three samples of one program are not all the same sequence (the seed has the sample index).
    let inv: Vec<&LintseqRow> = rows.iter().filter(|r| r.id.starts_with("inventory.py#")).collect();
    assert!(inv[0].edits != inv[1].edits || inv[1].edits != inv[2].edits);

    // The SFT dataset: the instruction, then the reference's `\n<|diff|>`-separated edits.
    let sft: Vec<CompletionRow> = Dataset::open_kind(dir.path().join("sft.lance"), DatasetKind::Completion)
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(sft.len(), rows.len());
    for s in &sft {
        let r = rows.iter().find(|r| r.id == s.id).unwrap();
        assert_eq!(s.prompt, r.instruction);
        assert_eq!(s.completion, lintseq::training_text(&r.edits));
        assert!(s.completion.starts_with("\n<|diff|>@@ -0,0 +1") && s.completion.ends_with("\n<|diff|>\n<|diff|>"));
        assert_eq!(lintseq::split_edits(&s.completion), r.edits);
    }

    // One thread and one program per chunk give the same rows.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_firebrand"))
        .current_dir(dir.path())
        .env("RAYON_NUM_THREADS", "1")
        .args([
            "synth",
            "lintseq",
            "src",
            "--out",
            "one.lance",
            "--samples-per-program",
            "3",
        ])
        .args(["--max-lines", "200", "--chunk", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        read_rows(&dir.path().join("one.lance")) == rows,
        "rows depend on threads or chunks"
    );

    // --resume: programs already in the output are skipped; a partial output is completed to the
    // same rows as a straight run.
    let out = run(
        dir.path(),
        &[
            "synth",
            "lintseq",
            "src",
            "--out",
            "ls.lance",
            "--samples-per-program",
            "3",
            "--max-lines",
            "200",
            "--resume",
        ],
    );
    assert!(out.contains(&format!("({programs} already there)")), "{out}");
    assert_eq!(read_rows(&dir.path().join("ls.lance")).len(), rows.len());
    std::fs::create_dir_all(dir.path().join("half")).unwrap();
    for name in ["bank.py", "stack.go", "todo.js"] {
        std::fs::copy(dir.path().join("src").join(name), dir.path().join("half").join(name)).unwrap();
    }
    run(
        dir.path(),
        &[
            "synth",
            "lintseq",
            "half",
            "--out",
            "part.lance",
            "--samples-per-program",
            "3",
        ],
    );
    run(
        dir.path(),
        &[
            "synth",
            "lintseq",
            "src",
            "--out",
            "part.lance",
            "--samples-per-program",
            "3",
            "--max-lines",
            "200",
            "--resume",
        ],
    );
    // Same sequences; `source_file` says which folder each program was read from.
    let seqs = |rows: &[LintseqRow]| rows.iter().map(|r| (r.id.clone(), r.edits.clone())).collect::<Vec<_>>();
    assert!(seqs(&read_rows(&dir.path().join("part.lance"))) == seqs(&rows));

    // Resuming with another seed is refused.
    let o = firebrand(
        dir.path(),
        &[
            "synth",
            "lintseq",
            "src",
            "--out",
            "ls.lance",
            "--samples-per-program",
            "3",
            "--resume",
            "--seed",
            "7",
        ],
    );
    assert!(!o.status.success() && text(&o).1.contains("--seed 0"), "{:?}", text(&o));

    // An existing output is refused without --overwrite or --resume.
    let o = firebrand(dir.path(), &["synth", "lintseq", "src", "--out", "ls.lance"]);
    assert!(!o.status.success());
}

#[test]
fn jsonl_and_chat_inputs_take_code_from_fenced_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let records = [
        serde_json::json!({"id": "add", "instruction": "Write add.", "response": "Sure:\n```python\ndef add(a, b):\n    return a + b\n```\nAnd a check:\n```python\nprint(add(1, 2))\n```"}),
        serde_json::json!({"instruction": "Explain.", "response": "It is a loop that adds numbers."}),
        serde_json::json!({"instruction": "Shell.", "response": "```bash\nls -la\n```"}),
        serde_json::json!({"id": "add", "instruction": "Again.", "response": "```python\nx = 1\n```"}),
    ];
    let jsonl: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.path().join("oss.jsonl"), jsonl).unwrap();
    let out = run(
        dir.path(),
        &[
            "synth",
            "lintseq",
            "oss.jsonl",
            "--out",
            "ls.lance",
            "--samples-per-program",
            "2",
        ],
    );
    assert!(out.lines().any(|l| l.trim() == "2  unparsable"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "1  duplicate id"), "{out}");
    let rows = read_rows(&dir.path().join("ls.lance"));
    assert_eq!(
        rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["add#0", "add#1"]
    );
    let r = &rows[0];
    assert_eq!(r.instruction, "Write add.");
    assert_eq!(r.program, "def add(a, b):\n    return a + b\n\nprint(add(1, 2))");
    assert_eq!(r.source_file, "oss.jsonl:1");
    // `print(add(...))` needs `add`: the def comes first, in one edit with its body.
    for r in &rows {
        let first = lintseq::replay(&r.edits[..1]).unwrap();
        assert!(first.starts_with("def add(a, b):\n    return a + b"), "{:?}", r.edits);
    }

    // A chat dataset (imported from OpenAI messages): the user turn is the instruction.
    let chat = serde_json::json!({"id": "c1", "messages": [
        {"role": "user", "content": "Square it."},
        {"role": "assistant", "content": "```py\ndef sq(x):\n    return x * x\n\n\nprint(sq(3))\n```"}
    ]});
    std::fs::write(dir.path().join("chat.jsonl"), format!("{chat}\n")).unwrap();
    run(dir.path(), &["data", "import", "chat.jsonl", "--out", "chat.lance"]);
    run(
        dir.path(),
        &[
            "synth",
            "lintseq",
            "chat.lance",
            "--out",
            "chat-ls.lance",
            "--samples-per-program",
            "1",
        ],
    );
    let rows = self::read_rows(&dir.path().join("chat-ls.lance"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].instruction, "Square it.");
    assert_eq!(
        lintseq::replay(&rows[0].edits).unwrap(),
        "def sq(x):\n    return x * x\n\n\nprint(sq(3))"
    );
}

#[test]
fn lint_shows_flags_and_verify_catches_a_broken_sequence() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("p/a.py"), "import os\n\nprint(os.sep, missing)\n").unwrap();
    let out = run(dir.path(), &["synth", "lintseq", "p", "--lint"]);
    assert!(out.contains("a.py:3: undefined-name: print(os.sep, missing)"), "{out}");
    assert!(out.contains("1 of 1 programs flagged"), "{out}");

    // A dataset whose second state uses a name before the edit that defines it.
    let bad = LintseqRow {
        id: "x#0".into(),
        instruction: String::new(),
        program: "x = 1\nprint(x)".into(),
        edits: vec!["@@ -0,0 +1 @@\n+print(x)".into(), "@@ -0,0 +1 @@\n+x = 1".into()],
        language: "python".into(),
        source_file: "x.py".into(),
        sample: 0,
        provenance: Provenance::from_source("test"),
    };
    let mut w = DatasetWriter::create(dir.path().join("bad.lance"), DatasetKind::Lintseq, WriteMode::Create).unwrap();
    w.write(&[bad]).unwrap();
    w.commit().unwrap();
    let o = firebrand(dir.path(), &["synth", "lintseq", "bad.lance", "--verify"]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("x#0: after edit 1: line 1: undefined-name"), "{out}");
}

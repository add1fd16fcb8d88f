//! The CLI as a user runs it: help, plain errors with exit code 2, the quickstart, data commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn firebrand(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_firebrand"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

/// This package's folder, read when the test runs (cargo sets `CARGO_MANIFEST_DIR` then): a test
/// binary reused from a target directory that another checkout shares must read this checkout's
/// files, not those of the path it was compiled in.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Runs `firebrand args` in `dir` and kills it with SIGKILL as soon as `checkpoint` (relative to
/// `dir`) exists; fails when it does not appear within `within`.
pub fn kill_once_written<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    args: &[S],
    checkpoint: &str,
    within: std::time::Duration,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firebrand"))
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + within;
    while !dir.join(checkpoint).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {checkpoint} within {within:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
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

/// Output into a pipe whose reader has gone (`... | head -1`) ends the command quietly, with
/// success, not with a panic.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_firebrand"))
        .current_dir(dir.path())
        .args(["data", "import", "in.jsonl", "--out", "c.lance"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line is printed
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(o.status.success(), "{:?} {err}", o.status);
    assert!(dir.path().join("c.lance").exists(), "the work itself was done");
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
    // The VIF-RAG loop ran with the exported model: 16 prompts, 2 answers each, all judged.
    assert!(
        out.contains("wrote 16 prompts from <embedded sample> into qs/vifrag.lance"),
        "{out}"
    );
    assert!(out.contains(" of 32 responses passed all their instructions)"), "{out}");
    // MIG picked 8 of the 16 prompts by instruction-label coverage.
    assert!(out.contains("pool: 16 records read, 16 in the pool"), "{out}");
    assert!(out.contains("wrote qs/vifrag_mig.lance (8 rows, version 1)"), "{out}");
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
    // A tokenizer folder with its own Jinja chat template: `data tokenize` renders through it by
    // default, and trains each assistant turn with its end-of-turn token.
    let tpl = dir.path().join("tpl");
    std::fs::create_dir_all(&tpl).unwrap();
    std::fs::copy(dir.path().join("qs/tokenizer.json"), tpl.join("tokenizer.json")).unwrap();
    let template = concat!(
        "{% for m in messages %}### {{ m.role }}: {{ m.content | trim }}{{ eos_token }}\n{% endfor %}",
        "{% if add_generation_prompt %}### assistant: {% endif %}"
    );
    let config = serde_json::json!({"chat_template": template, "eos_token": "<|im_end|>"});
    std::fs::write(tpl.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tokenize = |extra: &[&str]| {
        let mut args = vec![
            "data",
            "tokenize",
            "faq.lance",
            "--tokenizer",
            "tpl",
            "--max-len",
            "256",
            "--out",
            "m.lance",
            "--overwrite",
        ];
        args.extend_from_slice(extra);
        firebrand(dir.path(), &args)
    };
    let o = tokenize(&[]);
    assert!(o.status.success(), "{:?}", text(&o));
    let o = firebrand(
        dir.path(),
        &["data", "debug", "m.lance", "--tokenizer", "tpl", "--color", "never"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // (A word's leading space may be in its token, so the brackets open before or after it.)
    let opens = |role: &str| out.contains(&format!("### {role}:[[")) || out.contains(&format!("### {role}: [["));
    assert!(opens("assistant") && !opens("user"), "{out}");
    assert!(out.contains("<|im_end|>]]"), "{out}");
    let o = tokenize(&["--template", "vicuna"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("chatml, llama3, plain, model"), "{}", text(&o).1);
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
            .contains("reads chat, completion or multiverse datasets, this one is `tokens`"),
        "{}",
        text(&o).1
    );
}

#[test]
fn multiverse_sample_converts_validates_and_tokenizes_into_the_reference_mask() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = firebrand(d, &["synth", "multiverse", "convert", "--sample", "--out", "mv.lance"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("converted 5 of 6 traces from <embedded sample> into mv.lance"),
        "{out}"
    );
    assert!(out.contains("1  no explicit parallel structure"), "{out}");
    // Running again resumes: nothing is converted twice.
    let o = firebrand(
        d,
        &[
            "synth",
            "multiverse",
            "convert",
            "--sample",
            "--out",
            "mv.lance",
            "--resume",
        ],
    );
    assert!(
        text(&o).0.contains("converted 0 of 6 traces") && text(&o).0.contains("(5 already there)"),
        "{:?}",
        text(&o)
    );

    // What it wrote passes the validator; a broken trace does not, with line, tag and rule.
    assert!(
        firebrand(d, &["data", "export", "mv.lance", "--out", "mv.jsonl"])
            .status
            .success()
    );
    let o = firebrand(d, &["synth", "multiverse", "validate", "mv.jsonl"]);
    let (out, _) = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains(": ok (")).count(), 5, "{out}");
    assert!(out.contains("(mv-quadratic-sign): ok (2 parallel block(s))"), "{out}");
    std::fs::write(
        d.join("bad.txt"),
        "<Think>\n<Parallel>\n<Goal><Outline>a</Outline></Goal>\n<Path>x</Path>\nstray\n<Conclusion>c</Conclusion>\n</Parallel>\n</Think>",
    )
    .unwrap();
    let o = firebrand(d, &["synth", "multiverse", "validate", "bad.txt"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o)
            .0
            .contains("bad.txt: line 5, text: only whitespace is allowed between the parts of a <Parallel> block"),
        "{:?}",
        text(&o)
    );

    // Tokenize with Multiverse attention: the tags are single tokens, and every row's compact
    // structure expands to the reference's mask (with separators inside their paths).
    let o = firebrand(
        d,
        &[
            "tokenizer",
            "train",
            "mv.lance",
            "--vocab-size",
            "700",
            "--multiverse",
            "--out",
            "tok.json",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = firebrand(
        d,
        &[
            "data",
            "tokenize",
            "mv.lance",
            "--tokenizer",
            "tok.json",
            "--multiverse",
            "--max-len",
            "4096",
            "--pack",
            "--out",
            "mvtok.lance",
        ],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let tok = firebrand_data::tokenizer::load(&d.join("tok.json")).unwrap();
    let ds = firebrand_data::Dataset::open(d.join("mvtok.lance")).unwrap();
    let mut rows = 0;
    for row in ds.rows::<firebrand_data::TokensRow>(16).unwrap() {
        let row = row.unwrap();
        rows += 1;
        assert!(row.has_parents());
        let ours = firebrand_data::packing::dense_mask(&row);
        // Per document (a root segment starts one), compare with the reference on its tokens.
        let starts: Vec<usize> = (0..row.segment_ids.len())
            .filter(|&i| {
                (i == 0 || row.segment_ids[i] != row.segment_ids[i - 1])
                    && row.parents_of(row.segment_ids[i] as usize).is_empty()
            })
            .chain([row.segment_ids.len()])
            .collect();
        for w in starts.windows(2) {
            let (a, b) = (w[0], w[1]);
            let strings: Vec<String> = row.input_ids[a..b]
                .iter()
                .map(|&id| tok.id_to_token(id as u32).unwrap_or_default())
                .collect();
            let reference = firebrand_data::multiverse::reference::mask(&strings, true);
            for q in a..b {
                assert_eq!(ours[q][a..b], reference[q - a][..], "row {rows}, token {q}");
                assert!(ours[q][..a].iter().all(|&x| !x), "documents stay apart");
            }
            assert!(strings.iter().filter(|s| *s == "<Path>").count() >= 2);
        }
    }
    assert!(rows >= 1);

    // SFT trains on the rows with Multiverse attention (the mask is built from the segment graph).
    std::fs::write(
        d.join("mv.toml"),
        "[model]\nmodel_type = \"qwen2\"\nhidden_size = 32\nintermediate_size = 64\nnum_attention_heads = 4\nnum_hidden_layers = 1\nmax_position_embeddings = 4096\n[data]\ntokens = \"mvtok.lance\"\ntokenizer = \"tok.json\"\n[train]\nmax_steps = 2\nmicro_batch_size = 1\nlr = 1e-3\nwarmup_steps = 0\ncheckpoint_every = 0\n[method]\nkind = \"sft\"\n[output]\ndir = \"runs\"\n",
    )
    .unwrap();
    let o = firebrand(d, &["train", "mv.toml"]);
    let (out, err) = text(&o);
    assert!(o.status.success() && out.contains("trained 2 steps"), "{out}\n{err}");

    // The LLM path runs the prompts through that model; an untrained model writes no valid trace,
    // and every input is reported with its last reason after the given tries.
    let o = firebrand(
        d,
        &[
            "synth",
            "multiverse",
            "convert",
            "--sample",
            "--model",
            "runs/mv",
            "--tries",
            "2",
            "--max-new-tokens",
            "8",
            "--out",
            "llm.lance",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("converted 0 of 6 traces"), "{out}");
    let reported: usize = out
        .lines()
        .filter(|l| l.ends_with("(after 2 tries)"))
        .map(|l| l.split_whitespace().next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(reported, 6, "{out}");
}

//! Lance round trips, kind checks, random access, scans and atomic writes.

use firebrand_data::records::*;
use firebrand_data::{DataError, Dataset, DatasetKind, DatasetWriter, WriteMode};

fn chat(i: usize) -> ChatRow {
    ChatRow {
        id: format!("c{i}"),
        messages: vec![
            Message::new(Role::User, format!("q{i}")),
            Message::new(Role::Assistant, format!("a{i}")),
        ],
        provenance: Provenance {
            source: "t".into(),
            labels: vec![format!("l{}", i % 3)],
            score: Some(i as f32 / 2.0),
            meta: "{}".into(),
        },
    }
}

fn write<R: Record>(path: &std::path::Path, rows: &[R], mode: WriteMode) -> Dataset {
    let mut w = DatasetWriter::create(path, R::KIND, mode).unwrap();
    // several batches, so that streaming and ordering are exercised
    for chunk in rows.chunks(7) {
        w.write(chunk).unwrap();
    }
    w.commit().unwrap()
}

fn round_trip<R: Record + PartialEq + std::fmt::Debug>(rows: Vec<R>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.lance");
    write(&path, &rows, WriteMode::Create);
    let ds = Dataset::open(&path).unwrap();
    assert_eq!(ds.kind(), R::KIND);
    assert_eq!(ds.len().unwrap(), rows.len());
    assert_eq!(ds.read_all::<R>().unwrap(), rows, "{}", R::KIND);
    // random access in any order
    let idx = [rows.len() as u64 - 1, 0];
    let got: Vec<R> = ds.take(&idx).unwrap();
    assert_eq!(got, vec![rows[rows.len() - 1].clone(), rows[0].clone()]);
}

#[test]
fn every_kind_round_trips_through_lance() {
    let prov = || Provenance::from_source("s");
    round_trip((0..20).map(chat).collect());
    round_trip(
        (0..9)
            .map(|i| CompletionRow {
                id: i.to_string(),
                prompt: "p".repeat(i),
                completion: "c".into(),
                provenance: prov(),
            })
            .collect(),
    );
    round_trip(
        (0..9)
            .map(|i| PreferenceRow {
                id: i.to_string(),
                prompt: vec![Message::new(Role::User, "q")],
                chosen: "y".into(),
                rejected: "n".into(),
                ref_chosen_logp: (i % 2 == 0).then_some(-(i as f64)),
                ref_rejected_logp: None,
                provenance: prov(),
            })
            .collect(),
    );
    round_trip(
        (0..9)
            .map(|i| PromptsRow {
                id: i.to_string(),
                prompt: vec![Message::new(Role::System, "s"), Message::new(Role::User, "q")],
                verifiers: "[]".into(),
                answer: (i % 2 == 1).then(|| i.to_string()),
                provenance: prov(),
            })
            .collect(),
    );
    round_trip(
        (0..9)
            .map(|i| LintseqRow {
                id: i.to_string(),
                instruction: "write".into(),
                program: "x = 1\n".into(),
                edits: vec!["@@ -0,0 +1,1 @@\n+x = 1".into(); i],
                language: "python".into(),
                source_file: "a.py".into(),
                sample: i as i32,
                provenance: prov(),
            })
            .collect(),
    );
    round_trip(
        (0..9)
            .map(|i| MultiverseRow {
                id: i.to_string(),
                question: "q".into(),
                parallel_trace: "<Parallel></Parallel>".into(),
                sequential_trace: "s".into(),
                original_trace: "o".into(),
                answer: "a".into(),
                distance: Some(0.25),
                provenance: prov(),
            })
            .collect(),
    );
    round_trip(
        (0..30)
            .map(|i| TokensRow {
                input_ids: (0..i).collect(),
                loss_mask: (0..i).map(|t| t % 2 == 0).collect(),
                position_ids: (0..i).collect(),
                segment_ids: vec![0; i as usize],
                segment_parents: if i % 3 == 0 { vec![vec![], vec![0]] } else { vec![] },
                source_ids: vec![format!("d{i}")],
            })
            .collect(),
    );
}

#[test]
fn a_reader_refuses_a_dataset_of_another_kind_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.lance");
    write(&path, &[chat(0)], WriteMode::Create);
    let err = Dataset::open_kind(&path, DatasetKind::Tokens).unwrap_err();
    assert!(matches!(
        err,
        DataError::WrongKind {
            found: DatasetKind::Chat,
            expected: DatasetKind::Tokens,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("chat.lance")
            && msg.contains("`chat`")
            && msg.contains("`tokens`")
            && msg.contains("data tokenize"),
        "{msg}"
    );
    let ds = Dataset::open(&path).unwrap();
    assert!(ds.read_all::<TokensRow>().is_err());
}

#[test]
fn a_lance_dataset_without_our_metadata_is_refused() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.lance");
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "x",
        arrow_schema::DataType::Int32,
        false,
    )]));
    let batch = arrow_array::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(arrow_array::Int32Array::from(vec![1, 2]))],
    )
    .unwrap();
    let reader = arrow_array::RecordBatchIterator::new(vec![Ok(batch)], schema);
    firebrand_data::store::block_on(lance::Dataset::write(reader, path.to_str().unwrap(), None)).unwrap();
    let err = Dataset::open(&path).unwrap_err().to_string();
    assert!(
        err.contains("not a firebrand dataset") && err.contains("firebrand.kind"),
        "{err}"
    );
}

#[test]
fn streaming_scans_project_columns_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.lance");
    let rows: Vec<ChatRow> = (0..50).map(chat).collect();
    let ds = write(&path, &rows, WriteMode::Create);
    let mut ids = Vec::new();
    for batch in ds.scan(Some(&["id"]), 8).unwrap() {
        let batch = batch.unwrap();
        assert!(batch.num_rows() <= 8);
        assert_eq!(batch.num_columns(), 1);
        let col = batch.column(0);
        for i in 0..batch.num_rows() {
            ids.push(
                firebrand_data::records::array_value(col.as_ref(), i)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    assert_eq!(ids, rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
    let streamed: Vec<ChatRow> = ds.rows::<ChatRow>(5).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(streamed, rows);
    assert!(
        ds.take_batch(&[50], None)
            .unwrap_err()
            .to_string()
            .contains("out of range")
    );
}

#[test]
fn an_aborted_write_leaves_the_previous_version_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.lance");
    let first: Vec<ChatRow> = (0..10).map(chat).collect();
    let v1 = write(&path, &first, WriteMode::Create).version();
    // An append that dies half way: rows sent, never committed.
    let mut w = DatasetWriter::create(&path, DatasetKind::Chat, WriteMode::Append).unwrap();
    w.write(&(10..500).map(chat).collect::<Vec<_>>()).unwrap();
    drop(w);
    let ds = Dataset::open(&path).unwrap();
    assert_eq!(ds.version(), v1);
    assert_eq!(ds.read_all::<ChatRow>().unwrap(), first);
    // An overwrite that dies the same way.
    let mut w = DatasetWriter::create(&path, DatasetKind::Chat, WriteMode::Overwrite).unwrap();
    w.write(&[chat(99)]).unwrap();
    w.abort();
    assert_eq!(Dataset::open(&path).unwrap().read_all::<ChatRow>().unwrap(), first);
    // A fresh dataset whose only write aborts leaves nothing behind.
    let fresh = dir.path().join("fresh.lance");
    let mut w = DatasetWriter::create(&fresh, DatasetKind::Chat, WriteMode::Create).unwrap();
    w.write(&first).unwrap();
    drop(w);
    assert!(!fresh.exists());
}

#[test]
fn flush_commits_progress_and_append_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.lance");
    let mut w = DatasetWriter::create(&path, DatasetKind::Chat, WriteMode::Create).unwrap();
    w.write(&(0..5).map(chat).collect::<Vec<_>>()).unwrap();
    w.flush().unwrap();
    w.write(&(5..9).map(chat).collect::<Vec<_>>()).unwrap();
    drop(w); // dies after the flush: the first five rows are durable
    assert_eq!(Dataset::open(&path).unwrap().len().unwrap(), 5);
    let mut w = DatasetWriter::create(&path, DatasetKind::Chat, WriteMode::Append).unwrap();
    w.write(&(5..9).map(chat).collect::<Vec<_>>()).unwrap();
    let ds = w.commit().unwrap();
    assert_eq!(ds.read_all::<ChatRow>().unwrap(), (0..9).map(chat).collect::<Vec<_>>());
    // Appending another kind is refused.
    assert!(matches!(
        DatasetWriter::create(&path, DatasetKind::Tokens, WriteMode::Append).err(),
        Some(DataError::WrongKind { .. })
    ));
    // Creating over an existing dataset is refused with a hint.
    let err = DatasetWriter::create(&path, DatasetKind::Chat, WriteMode::Create)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("already exists") && err.contains("--overwrite"), "{err}");
    // Older versions stay readable.
    assert_eq!(ds.checkout(ds.version() - 1).unwrap().len().unwrap(), 5);
}

#[test]
fn an_empty_commit_creates_an_empty_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.lance");
    let ds = DatasetWriter::create(&path, DatasetKind::Prompts, WriteMode::Create)
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(ds.kind(), DatasetKind::Prompts);
    assert!(ds.is_empty().unwrap());
}

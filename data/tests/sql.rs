//! SQL over datasets: joins, filters, writing a result back as a typed dataset.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use firebrand_data::records::array_value;
use firebrand_data::records::*;
use firebrand_data::sql::{Query, query_to_dataset};
use firebrand_data::{Dataset, DatasetKind, DatasetWriter, WriteMode};

fn setup(dir: &std::path::Path) -> (String, String) {
    let chats: Vec<ChatRow> = (0..10)
        .map(|i| ChatRow {
            id: format!("r{i}"),
            messages: vec![
                Message::new(Role::User, format!("q{i}")),
                Message::new(Role::Assistant, format!("a{i}")),
            ],
            provenance: Provenance {
                labels: vec![if i % 2 == 0 { "even" } else { "odd" }.into()],
                ..Provenance::from_source("chat")
            },
        })
        .collect();
    let scores: Vec<CompletionRow> = (0..10)
        .step_by(3)
        .map(|i| CompletionRow {
            id: format!("r{i}"),
            prompt: String::new(),
            completion: String::new(),
            provenance: Provenance {
                score: Some(i as f32),
                ..Provenance::from_source("judge")
            },
        })
        .collect();
    let a = dir.join("chat.lance");
    let b = dir.join("scores.lance");
    let mut w = DatasetWriter::create(&a, DatasetKind::Chat, WriteMode::Create).unwrap();
    w.write(&chats).unwrap();
    w.commit().unwrap();
    let mut w = DatasetWriter::create(&b, DatasetKind::Completion, WriteMode::Create).unwrap();
    w.write(&scores).unwrap();
    w.commit().unwrap();
    (a.display().to_string(), b.display().to_string())
}

#[test]
fn a_query_joins_two_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = setup(dir.path());
    let sql =
        format!("SELECT c.id, s.score FROM '{a}' c JOIN '{b}' s ON c.id = s.id WHERE s.score >= 3 ORDER BY s.score");
    let q = Query::new(&sql).unwrap();
    assert_eq!(q.inputs.len(), 2);
    let batches = q.collect().unwrap();
    let mut got = Vec::new();
    for batch in &batches {
        for i in 0..batch.num_rows() {
            // Lance hands strings to DataFusion as views: read through the generic accessor.
            let id = array_value(batch.column(0).as_ref(), i).unwrap();
            let score = array_value(batch.column(1).as_ref(), i).unwrap();
            got.push((id.as_str().unwrap().to_string(), score.as_f64().unwrap()));
        }
    }
    assert_eq!(got, vec![("r3".into(), 3.0), ("r6".into(), 6.0), ("r9".into(), 9.0)]);
}

#[test]
fn a_result_with_a_kinds_columns_is_written_as_that_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = setup(dir.path());
    let out = dir.path().join("picked.lance");
    // Keep the chat rows that have a score; array_has filters on a label.
    let sql = format!(
        "SELECT c.* FROM '{a}' c WHERE c.id IN (SELECT id FROM '{b}') AND array_has(c.labels, 'even') ORDER BY c.id"
    );
    let ds = query_to_dataset(&sql, &out, None, WriteMode::Create).unwrap();
    assert_eq!(ds.kind(), DatasetKind::Chat);
    let rows: Vec<ChatRow> = ds.read_all().unwrap();
    assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), vec!["r0", "r6"]);
    assert_eq!(rows[1].messages[1].content, "a6");
    // Counting with SQL sees the same rows.
    let q = Query::new(&format!("SELECT count(*) FROM '{}'", out.display())).unwrap();
    let n = q.collect().unwrap()[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(n, 2);
    // A result that is no kind is refused, and nothing is written.
    let bad = dir.path().join("bad.lance");
    let err = query_to_dataset(&format!("SELECT id FROM '{a}'"), &bad, None, WriteMode::Create).unwrap_err();
    assert!(err.to_string().contains("not a firebrand dataset kind"), "{err}");
    assert!(!bad.exists());
    assert_eq!(Dataset::open(&out).unwrap().len().unwrap(), 2);
}

#[test]
fn a_query_naming_no_dataset_or_a_missing_one_is_an_error() {
    assert!(
        Query::new("SELECT 1")
            .err()
            .unwrap()
            .to_string()
            .contains("reads no dataset")
    );
    let err = Query::new("SELECT * FROM 'nowhere/x.lance'").err().unwrap().to_string();
    assert!(err.contains("nowhere/x.lance"), "{err}");
}

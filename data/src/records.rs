//! Typed rows, one struct per dataset kind, and their conversion to and from Arrow record batches.
//!
//! Writing goes through `arrow_json`'s serde decoder against the kind's schema (see `kind.rs`), so a
//! struct and its schema cannot silently disagree: a field of the wrong type is an error naming it.
//! Reading converts each row into a JSON value and deserializes it, except for [`TokensRow`], which
//! trainers read in bulk and which therefore has a direct columnar path in both directions.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{DataError, Result};
use crate::kind::DatasetKind;

/// A typed row of one dataset kind.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + Clone + 'static {
    /// The kind this row belongs to.
    const KIND: DatasetKind;

    /// Converts rows into one record batch of the kind's schema.
    ///
    /// # Errors
    /// When a value does not fit its column (never for rows built through the struct fields,
    /// since the struct mirrors the schema).
    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        serde_to_batch(Self::KIND, rows)
    }

    /// Converts a record batch of this kind into rows.
    ///
    /// # Errors
    /// When a row does not deserialize; the error names the row (counted from 0 within the batch).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        serde_from_batch(batch)
    }
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person.
    User,
    /// The model; its turns are what SFT trains on by default.
    Assistant,
    /// A tool's output.
    Tool,
}

impl Role {
    /// The role's name in datasets and chat templates.
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Parses a role name, accepting ShareGPT's speaker names as well (`human`, `gpt`, ...).
    pub fn parse(name: &str) -> Option<Role> {
        Some(match name {
            "system" => Role::System,
            "user" | "human" => Role::User,
            "assistant" | "gpt" | "model" | "bot" => Role::Assistant,
            "tool" | "function" | "observation" | "ipython" => Role::Tool,
            _ => return None,
        })
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A message of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// Columns every text kind carries: where a row came from and what MIG selects on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The input it came from (file name, synthesizer, upstream dataset).
    pub source: String,
    /// Free labels (tasks, languages, instruction ids) used for selection and statistics.
    pub labels: Vec<String>,
    /// A quality score, if one is known.
    pub score: Option<f32>,
    /// Any further fields, as a JSON object in text.
    pub meta: String,
}

impl Provenance {
    /// Provenance with only a source.
    pub fn from_source(source: impl Into<String>) -> Self {
        Provenance {
            source: source.into(),
            labels: Vec::new(),
            score: None,
            meta: "{}".to_string(),
        }
    }
}

/// A row of a `chat` dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRow {
    /// Unique id.
    pub id: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Provenance columns.
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// A row of a `completion` dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRow {
    /// Unique id.
    pub id: String,
    /// The text the model is given.
    pub prompt: String,
    /// The text it learns to continue with.
    pub completion: String,
    /// Provenance columns.
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// A row of a `preference` dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceRow {
    /// Unique id.
    pub id: String,
    /// The conversation so far.
    pub prompt: Vec<Message>,
    /// The preferred assistant reply.
    pub chosen: String,
    /// The dispreferred assistant reply.
    pub rejected: String,
    /// Reference model log-prob of `chosen`, once precomputed.
    pub ref_chosen_logp: Option<f64>,
    /// Reference model log-prob of `rejected`, once precomputed.
    pub ref_rejected_logp: Option<f64>,
    /// Provenance columns.
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// A row of a `prompts` dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptsRow {
    /// Unique id.
    pub id: String,
    /// The conversation to answer.
    pub prompt: Vec<Message>,
    /// JSON list of `{id, kwargs}` verifiers a response must pass.
    pub verifiers: String,
    /// The reference answer, when there is one.
    pub answer: Option<String>,
    /// Provenance columns.
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// A row of a `lintseq` dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LintseqRow {
    /// Unique id.
    pub id: String,
    /// The instruction the program answers (may be empty for bare source files).
    pub instruction: String,
    /// The full program.
    pub program: String,
    /// Insertion-only unified-diff hunks that build the program.
    pub edits: Vec<String>,
    /// Programming language.
    pub language: String,
    /// File the program came from.
    pub source_file: String,
    /// Index of this trajectory among the program's samples.
    pub sample: i32,
    /// Provenance columns.
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// A row of a `multiverse` dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiverseRow {
    /// Unique id.
    pub id: String,
    /// The question.
    pub question: String,
    /// The tagged parallel trace.
    pub parallel_trace: String,
    /// The same trace with tags removed.
    pub sequential_trace: String,
    /// The trace the conversion started from.
    pub original_trace: String,
    /// The final answer.
    pub answer: String,
    /// Normalised edit distance between sequential and original traces.
    pub distance: Option<f32>,
    /// Provenance columns.
    #[serde(flatten)]
    pub provenance: Provenance,
}

/// A row of a `tokens` dataset: one training sequence, possibly several packed documents.
///
/// Conventions: `loss_mask[t]` is true when token `t` is a prediction target (the trainer predicts
/// it from tokens before it); `segment_ids` number the segments of the row from 0 in order of first
/// appearance; a token sees earlier tokens of its own segment and of the segments its segment
/// sees through `segment_parents` (transitively). Plain packing has one segment per document and
/// no parents (`segment_parents` empty), so attention never crosses documents and `position_ids`
/// restart at 0 in every document. Multiverse rows cut a document into segments with parents
/// (see `multiverse.rs`); a segment without parents starts a document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokensRow {
    /// Token ids.
    pub input_ids: Vec<i32>,
    /// Whether each token is trained on.
    pub loss_mask: Vec<bool>,
    /// Position of each token within its segment.
    pub position_ids: Vec<i32>,
    /// Segment of each token.
    pub segment_ids: Vec<i32>,
    /// For each segment, the segments it sees directly; empty (or shorter than the number of
    /// segments) where segments see no others.
    #[serde(default)]
    pub segment_parents: Vec<Vec<i32>>,
    /// Id of the source row of each document.
    pub source_ids: Vec<String>,
}

impl TokensRow {
    /// The direct parents of segment `s`.
    pub fn parents_of(&self, s: usize) -> &[i32] {
        self.segment_parents.get(s).map_or(&[], Vec::as_slice)
    }

    /// Whether any segment sees another (a Multiverse row).
    pub fn has_parents(&self) -> bool {
        self.segment_parents.iter().any(|p| !p.is_empty())
    }
}

impl Record for ChatRow {
    const KIND: DatasetKind = DatasetKind::Chat;
}
impl Record for CompletionRow {
    const KIND: DatasetKind = DatasetKind::Completion;
}
impl Record for PreferenceRow {
    const KIND: DatasetKind = DatasetKind::Preference;
}
impl Record for PromptsRow {
    const KIND: DatasetKind = DatasetKind::Prompts;
}
impl Record for LintseqRow {
    const KIND: DatasetKind = DatasetKind::Lintseq;
}
impl Record for MultiverseRow {
    const KIND: DatasetKind = DatasetKind::Multiverse;
}

impl Record for TokensRow {
    const KIND: DatasetKind = DatasetKind::Tokens;

    fn to_batch(rows: &[Self]) -> Result<RecordBatch> {
        let ints = |get: fn(&TokensRow) -> &[i32]| -> ArrayRef {
            let mut b = ListBuilder::new(Int32Builder::new()).with_field(item_field(DataType::Int32));
            for row in rows {
                b.values().append_slice(get(row));
                b.append(true);
            }
            Arc::new(b.finish())
        };
        let mut mask = ListBuilder::new(BooleanBuilder::new()).with_field(item_field(DataType::Boolean));
        let mut sources = ListBuilder::new(StringBuilder::new());
        let mut parents =
            ListBuilder::new(ListBuilder::new(Int32Builder::new()).with_field(item_field(DataType::Int32)))
                .with_field(item_field(DataType::List(item_field(DataType::Int32))));
        for row in rows {
            for p in &row.segment_parents {
                parents.values().values().append_slice(p);
                parents.values().append(true);
            }
            parents.append(true);
            mask.values().append_slice(&row.loss_mask);
            mask.append(true);
            for s in &row.source_ids {
                sources.values().append_value(s);
            }
            sources.append(true);
        }
        let columns = vec![
            ints(|r| &r.input_ids),
            Arc::new(mask.finish()) as ArrayRef,
            ints(|r| &r.position_ids),
            ints(|r| &r.segment_ids),
            Arc::new(parents.finish()),
            Arc::new(sources.finish()) as ArrayRef,
        ];
        RecordBatch::try_new(DatasetKind::Tokens.schema(), columns).map_err(|e| DataError::arrow("tokens batch", e))
    }

    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
        let list = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_list_opt::<i32>())
                .ok_or_else(|| DataError::arrow("tokens batch", format!("no list column `{name}`")))
        };
        let ints = |name: &str| -> Result<Vec<Vec<i32>>> {
            let l = list(name)?;
            (0..l.len())
                .map(|i| {
                    let v = l.value(i);
                    v.as_primitive_opt::<Int32Type>()
                        .map(|p| p.values().to_vec())
                        .ok_or_else(|| DataError::arrow("tokens batch", format!("`{name}` is not int32")))
                })
                .collect()
        };
        let mask = list("loss_mask")?;
        let sources = list("source_ids")?;
        let input_ids = ints("input_ids")?;
        let position_ids = ints("position_ids")?;
        let segment_ids = ints("segment_ids")?;
        // Absent in schema-version-1 datasets: no parents.
        let parents = batch
            .column_by_name("segment_parents")
            .and_then(|c| c.as_list_opt::<i32>());
        let parents_of = |i: usize| -> Result<Vec<Vec<i32>>> {
            let Some(l) = parents else { return Ok(Vec::new()) };
            let per_segment = l.value(i);
            let per_segment = per_segment
                .as_list_opt::<i32>()
                .ok_or_else(|| DataError::arrow("tokens batch", "`segment_parents` is not a list of lists"))?;
            (0..per_segment.len())
                .map(|s| {
                    per_segment
                        .value(s)
                        .as_primitive_opt::<Int32Type>()
                        .map(|p| p.values().to_vec())
                        .ok_or_else(|| DataError::arrow("tokens batch", "`segment_parents` is not int32"))
                })
                .collect()
        };
        let mut rows = Vec::with_capacity(batch.num_rows());
        for (i, ((input_ids, position_ids), segment_ids)) in
            input_ids.into_iter().zip(position_ids).zip(segment_ids).enumerate()
        {
            let m = mask.value(i);
            let loss_mask = m.as_boolean().iter().map(|b| b.unwrap_or(false)).collect();
            let s = sources.value(i);
            let source_ids = s
                .as_string::<i32>()
                .iter()
                .map(|x| x.unwrap_or("").to_string())
                .collect();
            rows.push(TokensRow {
                input_ids,
                loss_mask,
                position_ids,
                segment_ids,
                segment_parents: parents_of(i)?,
                source_ids,
            });
        }
        Ok(rows)
    }
}

fn item_field(dt: DataType) -> Arc<arrow_schema::Field> {
    Arc::new(arrow_schema::Field::new("item", dt, false))
}

fn serde_to_batch<R: Serialize>(kind: DatasetKind, rows: &[R]) -> Result<RecordBatch> {
    let schema = kind.schema();
    let context = || format!("converting {kind} rows to Arrow");
    let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(|e| DataError::arrow(context(), e))?;
    decoder.serialize(rows).map_err(|e| DataError::arrow(context(), e))?;
    let batch = decoder
        .flush()
        .map_err(|e| DataError::arrow(context(), e))?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    // The decoder builds its batch against a schema without our metadata; put the kind back.
    batch.with_schema(schema).map_err(|e| DataError::arrow(context(), e))
}

fn serde_from_batch<R: DeserializeOwned>(batch: &RecordBatch) -> Result<Vec<R>> {
    let schema = batch.schema();
    (0..batch.num_rows())
        .map(|row| {
            let mut object = Map::with_capacity(schema.fields().len());
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                object.insert(field.name().clone(), array_value(column.as_ref(), row)?);
            }
            serde_json::from_value(Value::Object(object)).map_err(|e| DataError::arrow(format!("row {row}"), e))
        })
        .collect()
}

/// Row `row` of `batch` as a JSON object of its columns, with `meta` expanded from its JSON text
/// into an object: the layout `data export` writes, `data show` prints and `data import` reads.
///
/// # Errors
/// When a column has a type our schemas never use and that cannot be formatted.
pub fn row_json(batch: &RecordBatch, row: usize) -> Result<Map<String, Value>> {
    let schema = batch.schema();
    let mut object = Map::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let mut v = array_value(column.as_ref(), row)?;
        if field.name() == "meta"
            && let Some(parsed) = v.as_str().and_then(|s| serde_json::from_str::<Value>(s).ok())
        {
            v = parsed;
        }
        object.insert(field.name().clone(), v);
    }
    Ok(object)
}

/// The value at `row` of `array` as JSON, for the types our schemas use.
pub fn array_value(array: &dyn Array, row: usize) -> Result<Value> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(array.as_string_view().value(row)),
        DataType::Boolean => Value::from(array.as_boolean().value(row)),
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => {
            // Through the shortest decimal text, so 0.1f32 reads back as 0.1, not 0.100000001.
            let v = array.as_primitive::<Float32Type>().value(row);
            v.to_string().parse::<f64>().map(Value::from).unwrap_or(Value::Null)
        }
        DataType::Float64 => Value::from(array.as_primitive::<Float64Type>().value(row)),
        DataType::List(_) => {
            let values = array.as_list::<i32>().value(row);
            Value::Array(
                (0..values.len())
                    .map(|i| array_value(values.as_ref(), i))
                    .collect::<Result<_>>()?,
            )
        }
        DataType::LargeList(_) => {
            let values = array.as_list::<i64>().value(row);
            Value::Array(
                (0..values.len())
                    .map(|i| array_value(values.as_ref(), i))
                    .collect::<Result<_>>()?,
            )
        }
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut object = Map::with_capacity(fields.len());
            for (field, column) in fields.iter().zip(s.columns()) {
                object.insert(field.name().clone(), array_value(column.as_ref(), row)?);
            }
            Value::Object(object)
        }
        other => {
            let formatted = arrow::util::display::array_value_to_string(array, row)
                .map_err(|e| DataError::arrow(format!("column of type {other}"), e))?;
            Value::from(formatted)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prov() -> Provenance {
        Provenance {
            source: "test".into(),
            labels: vec!["a".into(), "b".into()],
            score: Some(0.5),
            meta: r#"{"k":1}"#.into(),
        }
    }

    fn round_trip<R: Record + PartialEq + std::fmt::Debug>(rows: Vec<R>) {
        let batch = R::to_batch(&rows).unwrap();
        assert_eq!(batch.schema().metadata()[crate::kind::KIND_KEY], R::KIND.name());
        assert_eq!(batch.num_rows(), rows.len());
        assert_eq!(R::from_batch(&batch).unwrap(), rows);
    }

    #[test]
    fn every_kind_round_trips_through_arrow() {
        round_trip(vec![ChatRow {
            id: "c1".into(),
            messages: vec![
                Message::new(Role::User, "hi ünïcode"),
                Message::new(Role::Assistant, ""),
            ],
            provenance: prov(),
        }]);
        round_trip(vec![CompletionRow {
            id: "p".into(),
            prompt: "2+2=".into(),
            completion: "4".into(),
            provenance: Provenance { score: None, ..prov() },
        }]);
        round_trip(vec![PreferenceRow {
            id: "x".into(),
            prompt: vec![Message::new(Role::System, "s"), Message::new(Role::User, "q")],
            chosen: "good".into(),
            rejected: "bad".into(),
            ref_chosen_logp: Some(-1.25),
            ref_rejected_logp: None,
            provenance: prov(),
        }]);
        round_trip(vec![PromptsRow {
            id: "q".into(),
            prompt: vec![Message::new(Role::User, "q")],
            verifiers: r#"[{"id":"x","kwargs":{}}]"#.into(),
            answer: None,
            provenance: prov(),
        }]);
        round_trip(vec![LintseqRow {
            id: "l".into(),
            instruction: "".into(),
            program: "x = 1\n".into(),
            edits: vec!["@@ -0,0 +1,1 @@\n+x = 1".into()],
            language: "python".into(),
            source_file: "a.py".into(),
            sample: 3,
            provenance: prov(),
        }]);
        round_trip(vec![MultiverseRow {
            id: "m".into(),
            question: "q".into(),
            parallel_trace: "<Parallel>".into(),
            sequential_trace: "s".into(),
            original_trace: "o".into(),
            answer: "42".into(),
            distance: Some(0.1),
            provenance: prov(),
        }]);
        round_trip(vec![
            TokensRow {
                input_ids: vec![1, 2, 3],
                loss_mask: vec![false, true, true],
                position_ids: vec![0, 0, 1],
                segment_ids: vec![0, 1, 1],
                segment_parents: vec![vec![], vec![0]],
                source_ids: vec!["a".into(), "b".into()],
            },
            TokensRow {
                input_ids: vec![],
                loss_mask: vec![],
                position_ids: vec![],
                segment_ids: vec![],
                segment_parents: vec![],
                source_ids: vec![],
            },
        ]);
    }

    #[test]
    fn an_unknown_role_in_a_batch_is_an_error_naming_the_row() {
        let rows = vec![ChatRow {
            id: "c".into(),
            messages: vec![Message::new(Role::User, "q")],
            provenance: prov(),
        }];
        let batch = ChatRow::to_batch(&rows).unwrap();
        // A batch written by another tool with a misspelled role.
        let json = r#"{"id":"c","messages":[{"role":"asistant","content":"x"}],"source":"s","labels":[],"score":null,"meta":"{}"}"#;
        let mut decoder = arrow_json::ReaderBuilder::new(batch.schema()).build_decoder().unwrap();
        decoder.decode(json.as_bytes()).unwrap();
        let bad = decoder.flush().unwrap().unwrap();
        let err = ChatRow::from_batch(&bad).unwrap_err().to_string();
        assert!(err.contains("row 0") && err.contains("asistant"), "{err}");
    }
}

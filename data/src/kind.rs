//! Dataset kinds and their Arrow schemas: the table of DESIGN.md in code.
//!
//! The kind is stored in the schema metadata under [`KIND_KEY`]; readers compare it with the kind
//! they expect and refuse any other by name.
//!
//! Choices beyond DESIGN.md (each exercised by the round-trip tests in `records.rs`):
//! - every text kind carries the provenance columns `source`, `labels`, `score` and `meta`, so MIG
//!   can select over any of them and nothing an import saw is lost (`meta` keeps unknown fields);
//! - `preference` has nullable `ref_chosen_logp` / `ref_rejected_logp` from the start, null until the
//!   reference log-probs are precomputed;
//! - `tokens` stores `source_ids` (one id per packed segment, `source_ids[s]` is segment `s`)
//!   instead of a single `source_id` string, which cannot describe a packed row.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};

/// Schema metadata key holding the kind name.
pub const KIND_KEY: &str = "firebrand.kind";
/// Schema metadata key holding the schema version of the kind.
pub const SCHEMA_VERSION_KEY: &str = "firebrand.schema_version";
/// The schema version this build writes. 2: `tokens` gained `segment_parents` (readers treat a
/// version-1 `tokens` dataset, which lacks it, as having no parents).
pub const SCHEMA_VERSION: &str = "2";

/// What a dataset holds; see DESIGN.md, "Datasets (Lance)".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DatasetKind {
    /// Conversations: `messages` of role and content.
    Chat,
    /// A prompt string and its completion string.
    Completion,
    /// A prompt (messages) with a chosen and a rejected completion.
    Preference,
    /// Prompts with verifiers and an optional answer: GRPO and pair-building input.
    Prompts,
    /// LintSeq edit sequences.
    Lintseq,
    /// Multiverse parallel-reasoning traces.
    Multiverse,
    /// Token ids with loss masks and segment structure: what trainers read.
    Tokens,
}

impl DatasetKind {
    /// Every kind, in the order of DESIGN.md.
    pub const ALL: [DatasetKind; 7] = [
        DatasetKind::Chat,
        DatasetKind::Completion,
        DatasetKind::Preference,
        DatasetKind::Prompts,
        DatasetKind::Lintseq,
        DatasetKind::Multiverse,
        DatasetKind::Tokens,
    ];

    /// The name stored in metadata and typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Chat => "chat",
            DatasetKind::Completion => "completion",
            DatasetKind::Preference => "preference",
            DatasetKind::Prompts => "prompts",
            DatasetKind::Lintseq => "lintseq",
            DatasetKind::Multiverse => "multiverse",
            DatasetKind::Tokens => "tokens",
        }
    }

    /// The Arrow schema of this kind, with the kind in its metadata.
    pub fn schema(self) -> SchemaRef {
        let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
        let utf8_list = |name: &str| {
            Field::new(
                name,
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            )
        };
        let provenance = || {
            vec![
                utf8("source"),
                utf8_list("labels"),
                Field::new("score", DataType::Float32, true),
                utf8("meta"),
            ]
        };
        let mut fields = match self {
            DatasetKind::Chat => vec![utf8("id"), messages_field("messages")],
            DatasetKind::Completion => vec![utf8("id"), utf8("prompt"), utf8("completion")],
            DatasetKind::Preference => vec![
                utf8("id"),
                messages_field("prompt"),
                utf8("chosen"),
                utf8("rejected"),
                Field::new("ref_chosen_logp", DataType::Float64, true),
                Field::new("ref_rejected_logp", DataType::Float64, true),
            ],
            DatasetKind::Prompts => vec![
                utf8("id"),
                messages_field("prompt"),
                utf8("verifiers"),
                Field::new("answer", DataType::Utf8, true),
            ],
            DatasetKind::Lintseq => vec![
                utf8("id"),
                utf8("instruction"),
                utf8("program"),
                utf8_list("edits"),
                utf8("language"),
                utf8("source_file"),
                Field::new("sample", DataType::Int32, false),
            ],
            DatasetKind::Multiverse => vec![
                utf8("id"),
                utf8("question"),
                utf8("parallel_trace"),
                utf8("sequential_trace"),
                utf8("original_trace"),
                utf8("answer"),
                Field::new("distance", DataType::Float32, true),
            ],
            DatasetKind::Tokens => {
                let list = |name: &str, item: DataType| {
                    Field::new(name, DataType::List(Arc::new(Field::new("item", item, false))), false)
                };
                vec![
                    list("input_ids", DataType::Int32),
                    list("loss_mask", DataType::Boolean),
                    list("position_ids", DataType::Int32),
                    list("segment_ids", DataType::Int32),
                    // Per segment, the segments it also sees (Multiverse); empty for plain packing.
                    list(
                        "segment_parents",
                        DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
                    ),
                    utf8_list("source_ids"),
                ]
            }
        };
        if self != DatasetKind::Tokens {
            fields.extend(provenance());
        }
        let metadata = HashMap::from([
            (KIND_KEY.to_string(), self.name().to_string()),
            (SCHEMA_VERSION_KEY.to_string(), SCHEMA_VERSION.to_string()),
        ]);
        Arc::new(Schema::new_with_metadata(fields, metadata))
    }

    /// The kind whose columns are exactly `names` (in any order), if one is.
    pub fn from_columns<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<DatasetKind> {
        let mut names: Vec<&str> = names.into_iter().collect();
        names.sort_unstable();
        DatasetKind::ALL.into_iter().find(|kind| {
            let schema = kind.schema();
            let mut own: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            own.sort_unstable();
            own == names
        })
    }
}

/// `list<struct<role utf8, content utf8>>`, the messages column type.
pub fn messages_type() -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(Fields::from(vec![
            Field::new("role", DataType::Utf8, false),
            Field::new("content", DataType::Utf8, false),
        ])),
        true,
    )))
}

fn messages_field(name: &str) -> Field {
    Field::new(name, messages_type(), false)
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DatasetKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = DatasetKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown dataset kind `{s}` (kinds: {})", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_and_carries_its_name() {
        for kind in DatasetKind::ALL {
            assert_eq!(kind.name().parse::<DatasetKind>(), Ok(kind));
            assert_eq!(kind.schema().metadata()[KIND_KEY], kind.name());
        }
        assert!("chats".parse::<DatasetKind>().unwrap_err().contains("chat"));
    }

    #[test]
    fn kinds_are_recognised_from_their_columns() {
        for kind in DatasetKind::ALL {
            let schema = kind.schema();
            let names = schema.fields().iter().rev().map(|f| f.name().as_str());
            assert_eq!(DatasetKind::from_columns(names), Some(kind));
        }
        assert_eq!(DatasetKind::from_columns(["id", "prompt"]), None);
    }
}

//! SQL over Lance datasets through DataFusion.
//!
//! Every quoted path ending in `.lance` in the query (`'data/a.lance'`) is opened, registered as a
//! table through Lance's DataFusion table provider, and replaced by that table's name, so users
//! filter, join, mix and sample datasets without registering anything:
//! `SELECT * FROM 'a.lance' ORDER BY random() LIMIT 100`.
//!
//! A result written back with [`query_to_dataset`] must be a firebrand kind: its columns are those of
//! one kind (checked by name, then cast to the kind's exact types), so nothing downstream reads a
//! dataset whose schema it cannot trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::error::{DataError, Result};
use crate::kind::DatasetKind;
use crate::sql_table::PlainLanceTable;
use crate::store::{Dataset, DatasetWriter, WriteMode, block_on};

/// A query with its `.lance` paths resolved to registered tables.
pub struct Query {
    ctx: SessionContext,
    sql: String,
    /// The datasets the query reads, in order of first mention.
    pub inputs: Vec<Dataset>,
}

/// Finds quoted `.lance` paths in `sql`: `(start, end, path)` of each literal, quotes included.
fn lance_literals(sql: &str) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let quote = bytes[i];
        if (quote == b'\'' || quote == b'"')
            && let Some(len) = sql[i + 1..].find(quote as char)
        {
            let inner = &sql[i + 1..i + 1 + len];
            if inner.trim_end_matches('/').ends_with(".lance") {
                found.push((i, i + len + 2, inner.to_string()));
            }
            i += len + 2;
            continue;
        }
        i += 1;
    }
    found
}

impl Query {
    /// Parses the paths out of `sql`, opens and registers each dataset.
    ///
    /// # Errors
    /// When a dataset cannot be opened, or the query names none.
    pub fn new(sql: &str) -> Result<Self> {
        let ctx = SessionContext::new();
        let mut inputs: Vec<Dataset> = Vec::new();
        let mut rewritten = String::with_capacity(sql.len());
        let mut last = 0;
        for (start, end, path) in lance_literals(sql) {
            let path = PathBuf::from(path);
            let index = match inputs.iter().position(|d| d.path() == path) {
                Some(i) => i,
                None => {
                    let ds = Dataset::open(&path)?;
                    let provider = PlainLanceTable::new(ds.lance().clone());
                    ctx.register_table(format!("t{}", inputs.len()), Arc::new(provider))?;
                    inputs.push(ds);
                    inputs.len() - 1
                }
            };
            rewritten.push_str(&sql[last..start]);
            rewritten.push_str(&format!("t{index}"));
            last = end;
        }
        rewritten.push_str(&sql[last..]);
        if inputs.is_empty() {
            return Err(DataError::Invalid(
                "the query reads no dataset\n  hint: name datasets by their quoted path, e.g. SELECT * FROM 'data/chat.lance'"
                    .into(),
            ));
        }
        Ok(Query {
            ctx,
            sql: rewritten,
            inputs,
        })
    }

    /// The query as DataFusion runs it (paths replaced by `t0`, `t1`, ...).
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Runs the query and streams its batches to `each`.
    ///
    /// # Errors
    /// When DataFusion cannot plan or run the query, or `each` fails.
    pub fn for_each_batch(&self, mut each: impl FnMut(RecordBatch) -> Result<()>) -> Result<()> {
        block_on(async {
            let df = self.ctx.sql(&self.sql).await?;
            let mut stream = df.execute_stream().await?;
            while let Some(batch) = stream.next().await {
                each(batch?)?;
            }
            Ok(())
        })
    }

    /// Runs the query and collects every batch.
    ///
    /// # Errors
    /// As [`Query::for_each_batch`].
    pub fn collect(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        self.for_each_batch(|b| {
            out.push(b);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Casts a query result batch to the exact schema of `kind`, matching columns by name.
fn conform(batch: &RecordBatch, kind: DatasetKind) -> Result<RecordBatch> {
    let schema = kind.schema();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = batch.column_by_name(field.name()).ok_or_else(|| {
            DataError::Invalid(format!(
                "the query result has no column `{}` of the `{kind}` kind",
                field.name()
            ))
        })?;
        let cast = arrow::compute::cast(column, field.data_type())
            .map_err(|e| DataError::arrow(format!("casting column `{}` to the `{kind}` kind", field.name()), e))?;
        if !field.is_nullable() && cast.null_count() > 0 {
            return Err(DataError::Invalid(format!(
                "the query result has nulls in column `{}`, which the `{kind}` kind does not allow\n  hint: use COALESCE({}, ...) in the query",
                field.name(),
                field.name()
            )));
        }
        columns.push(cast);
    }
    RecordBatch::try_new(schema, columns).map_err(|e| DataError::arrow(format!("building `{kind}` rows"), e))
}

/// Runs `sql` and writes its result to a new dataset at `out`.
///
/// The kind is `kind` when given, else the kind whose columns the result has exactly.
/// Returns the written dataset.
///
/// # Errors
/// When the result matches no kind, a column cannot be cast, or the write fails (which then
/// leaves nothing at `out`).
pub fn query_to_dataset(sql: &str, out: &Path, kind: Option<DatasetKind>, mode: WriteMode) -> Result<Dataset> {
    let query = Query::new(sql)?;
    let mut writer: Option<DatasetWriter> = None;
    let mut resolved = kind;
    query.for_each_batch(|batch| {
        let kind = match resolved {
            Some(k) => k,
            None => {
                let schema = batch.schema();
                let k = DatasetKind::from_columns(schema.fields().iter().map(|f| f.name().as_str()))
                    .ok_or_else(|| no_kind_error(&schema))?;
                resolved = Some(k);
                k
            }
        };
        if writer.is_none() {
            writer = Some(DatasetWriter::create(out, kind, mode)?);
        }
        writer.as_mut().expect("just set").write_batch(conform(&batch, kind)?)
    })?;
    match writer {
        Some(w) => w.commit(),
        None => {
            // No batch came back: the kind is the given one or, failing that, the inputs' common kind.
            let kind = resolved.or_else(|| {
                let first = query.inputs[0].kind();
                query.inputs.iter().all(|d| d.kind() == first).then_some(first)
            });
            let kind = kind.ok_or_else(|| {
                DataError::Invalid("the query returned no rows and no kind was given\n  hint: pass --kind".into())
            })?;
            DatasetWriter::create(out, kind, mode)?.commit()
        }
    }
}

fn no_kind_error(schema: &arrow_schema::Schema) -> DataError {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    DataError::Invalid(format!(
        "the query result (columns {}) is not a firebrand dataset kind\n  hint: select exactly the columns of one kind (see `firebrand data show` on an input), or pass --kind",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_quoted_lance_paths_only() {
        let sql = r#"SELECT * FROM 'a.lance' JOIN "dir/b.lance/" ON x = 'y' WHERE s = 'c.txt'"#;
        let found: Vec<String> = lance_literals(sql).into_iter().map(|f| f.2).collect();
        assert_eq!(found, vec!["a.lance", "dir/b.lance/"]);
    }
}

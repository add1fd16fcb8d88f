//! Vector tables: one row per key (`label` utf8, `vector` fixed_size_list<float32>), the label
//! embeddings MIG builds its graph from (`firebrand embed` writes them). A plain Lance table, not
//! one of the dataset kinds: it holds no training records. JSONL (`{"label", "vector"}` per line)
//! is read too, for vectors made elsewhere.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, FixedSizeListArray, Float32Array, RecordBatch, RecordBatchIterator, StringArray};
use arrow_schema::{DataType, Field, Schema};
use futures::TryStreamExt;
use lance::dataset::{WriteMode as LanceWriteMode, WriteParams};

use crate::error::{DataError, Result};
use crate::store::{block_on, uri};

/// Keys and their vectors, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorTable {
    /// The keys, in row order.
    pub labels: Vec<String>,
    /// Vector length.
    pub dim: usize,
    /// `labels.len() * dim` values.
    pub data: Vec<f32>,
}

/// Writes `table` to a Lance table at `path` (or JSONL when the name ends in `.jsonl`), replacing
/// what is there when `overwrite`.
///
/// # Errors
/// When the path exists and `overwrite` is off, or the write fails.
pub fn write_vectors(path: &Path, table: &VectorTable, overwrite: bool) -> Result<()> {
    if path.exists() && !overwrite {
        return Err(DataError::Invalid(format!(
            "{}: already exists\n  hint: pass --overwrite to replace it",
            path.display()
        )));
    }
    if table.dim == 0 || table.data.len() != table.labels.len() * table.dim {
        return Err(DataError::Invalid(format!(
            "{}: {} labels, vectors of length {} and {} values do not agree",
            path.display(),
            table.labels.len(),
            table.dim,
            table.data.len()
        )));
    }
    if path.extension().is_some_and(|e| e == "jsonl") {
        let mut text = String::new();
        for (i, label) in table.labels.iter().enumerate() {
            let row = serde_json::json!({"label": label, "vector": &table.data[i * table.dim..(i + 1) * table.dim]});
            text.push_str(&row.to_string());
            text.push('\n');
        }
        return std::fs::write(path, text).map_err(|e| DataError::io(path, e));
    }
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("vector", DataType::FixedSizeList(item.clone(), table.dim as i32), false),
    ]));
    let labels = StringArray::from_iter_values(table.labels.iter());
    let values = Float32Array::from(table.data.clone());
    let vectors = FixedSizeListArray::try_new(item, table.dim as i32, Arc::new(values), None)
        .map_err(|e| DataError::arrow("building vectors", e))?;
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(labels), Arc::new(vectors)])
        .map_err(|e| DataError::arrow("building vectors", e))?;
    let reader = RecordBatchIterator::new(vec![Ok(batch)], schema);
    let params = WriteParams {
        mode: if path.exists() {
            LanceWriteMode::Overwrite
        } else {
            LanceWriteMode::Create
        },
        ..WriteParams::default()
    };
    block_on(lance::Dataset::write(reader, uri(path)?.as_str(), Some(params)))
        .map_err(|e| DataError::lance(path, e))?;
    Ok(())
}

/// Reads a vector table: a Lance table with `label` and `vector` columns, or a `.jsonl` file of
/// `{"label", "vector"}` objects.
///
/// # Errors
/// When the file is missing, lacks the columns, or vectors differ in length.
pub fn read_vectors(path: &Path) -> Result<VectorTable> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        return read_jsonl(path);
    }
    if !path.exists() {
        return Err(DataError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such vector table"),
        ));
    }
    let ds = block_on(lance::Dataset::open(&uri(path)?)).map_err(|e| DataError::lance(path, e))?;
    let batches: Vec<RecordBatch> = block_on(async {
        let mut scan = ds.scan();
        scan.project(&["label", "vector"])?;
        scan.try_into_stream().await?.try_collect().await
    })
    .map_err(|e| DataError::lance(path, e))?;
    let mut table = VectorTable::default();
    let bad = |problem: &str| DataError::BadField {
        path: path.to_path_buf(),
        location: "schema".into(),
        field: "vector".into(),
        problem: problem.into(),
        hint: "vector tables hold `label` utf8 and `vector` fixed_size_list<float32>".into(),
    };
    for batch in batches {
        let labels = batch
            .column_by_name("label")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(|| bad("no utf8 `label` column"))?;
        let vectors = batch
            .column_by_name("vector")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
            .ok_or_else(|| bad("no fixed-size-list `vector` column"))?;
        let values = vectors
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| bad("vector items are not float32"))?;
        table.dim = vectors.value_length() as usize;
        for i in 0..batch.num_rows() {
            table.labels.push(labels.value(i).to_string());
        }
        let start = vectors.offset() * table.dim;
        table
            .data
            .extend_from_slice(&values.values()[start..start + batch.num_rows() * table.dim]);
    }
    Ok(table)
}

fn read_jsonl(path: &Path) -> Result<VectorTable> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut table = VectorTable::default();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |field: &str, problem: String| DataError::BadField {
            path: path.to_path_buf(),
            location: format!("line {}", n + 1),
            field: field.into(),
            problem,
            hint: "each line is {\"label\": \"...\", \"vector\": [numbers]}".into(),
        };
        #[derive(serde::Deserialize)]
        struct Row {
            label: String,
            vector: Vec<f32>,
        }
        let row: Row = serde_json::from_str(line).map_err(|e| bad("?", e.to_string()))?;
        if table.labels.is_empty() {
            table.dim = row.vector.len();
        }
        if row.vector.len() != table.dim || table.dim == 0 {
            return Err(bad(
                "vector",
                format!("{} values; the first vector has {}", row.vector.len(), table.dim),
            ));
        }
        table.labels.push(row.label);
        table.data.extend(row.vector);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_through_lance_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let table = VectorTable {
            labels: vec!["a".into(), "b".into()],
            dim: 3,
            data: vec![1.0, 0.0, 0.5, -0.25, 2.0, 3.0],
        };
        let path = dir.path().join("v.lance");
        write_vectors(&path, &table, false).unwrap();
        assert_eq!(read_vectors(&path).unwrap(), table);
        assert!(write_vectors(&path, &table, false).is_err());
        write_vectors(&path, &table, true).unwrap();
        let jsonl = dir.path().join("v.jsonl");
        std::fs::write(
            &jsonl,
            "{\"label\":\"a\",\"vector\":[1,0,0.5]}\n{\"label\":\"b\",\"vector\":[-0.25,2,3]}\n",
        )
        .unwrap();
        assert_eq!(read_vectors(&jsonl).unwrap(), table);
        let written = dir.path().join("w.jsonl");
        write_vectors(&written, &table, false).unwrap();
        assert_eq!(read_vectors(&written).unwrap(), table);
        std::fs::write(
            &jsonl,
            "{\"label\":\"a\",\"vector\":[1,0,0.5]}\n{\"label\":\"b\",\"vector\":[1]}\n",
        )
        .unwrap();
        let err = read_vectors(&jsonl).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}

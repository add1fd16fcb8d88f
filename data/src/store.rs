//! Lance datasets on disk: a writer that streams batches and commits atomically, and a reader with
//! random access by row and streaming, projected scans.
//!
//! The API is synchronous; Lance's async calls run on one process-wide tokio runtime.
//! Atomicity: a [`DatasetWriter`] feeds one Lance write transaction through a channel. Nothing is
//! visible until [`DatasetWriter::commit`]; dropping the writer (an error, a panic, a bad input line)
//! aborts the transaction, and the previous version stays the readable one. [`DatasetWriter::flush`]
//! commits what has been written so far as a version, which is how long jobs make progress durable
//! and resumable.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{ArrowError, SchemaRef};
use futures::StreamExt;
use lance::dataset::{WriteMode as LanceWriteMode, WriteParams};

use crate::error::{DataError, Result};
use crate::kind::{DatasetKind, KIND_KEY};
use crate::records::Record;

/// The process-wide runtime that drives Lance and DataFusion.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("firebrand-io")
            .build()
            .expect("the tokio runtime starts (it needs only threads)")
    })
}

/// Runs a future to completion on [`runtime`]. Must not be called from inside the runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// How a writer treats an existing dataset at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// The path must not exist.
    Create,
    /// Replace the dataset with a new version (older versions stay in Lance's history).
    Overwrite,
    /// Add rows to the dataset (which must hold the same kind); creates it when absent.
    Append,
}

/// An opened Lance dataset of a known kind.
#[derive(Clone)]
pub struct Dataset {
    path: PathBuf,
    kind: DatasetKind,
    inner: Arc<lance::Dataset>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("version", &self.version())
            .finish()
    }
}

pub(crate) fn uri(path: &Path) -> Result<String> {
    // Lance takes URIs; an absolute path keeps relative paths from depending on Lance's cwd handling.
    let abs = std::path::absolute(path).map_err(|e| DataError::io(path, e))?;
    abs.to_str()
        .map(str::to_string)
        .ok_or_else(|| DataError::Invalid(format!("{}: dataset paths must be UTF-8", path.display())))
}

impl Dataset {
    /// Opens the dataset at `path`, whatever its kind.
    ///
    /// # Errors
    /// When the path is not a Lance dataset, or not one written by firebrand.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(DataError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such dataset"),
            ));
        }
        let inner = block_on(lance::Dataset::open(&uri(&path)?)).map_err(|e| DataError::lance(&path, e))?;
        let kind = match inner.schema().metadata.get(KIND_KEY) {
            None => {
                return Err(DataError::NotFirebrand {
                    path,
                    problem: format!("its schema has no `{KIND_KEY}` metadata"),
                });
            }
            Some(name) => name.parse::<DatasetKind>().map_err(|problem| DataError::NotFirebrand {
                path: path.clone(),
                problem,
            })?,
        };
        Ok(Dataset {
            path,
            kind,
            inner: Arc::new(inner),
        })
    }

    /// Opens the dataset at `path` and checks that it holds `expected`.
    ///
    /// # Errors
    /// As [`Dataset::open`], and [`DataError::WrongKind`] for another kind.
    pub fn open_kind(path: impl AsRef<Path>, expected: DatasetKind) -> Result<Self> {
        let ds = Dataset::open(path)?;
        ds.expect_kind(expected)?;
        Ok(ds)
    }

    /// Checks that this dataset holds `expected`.
    ///
    /// # Errors
    /// [`DataError::WrongKind`], with a hint on how to get the expected kind.
    pub fn expect_kind(&self, expected: DatasetKind) -> Result<()> {
        if self.kind == expected {
            return Ok(());
        }
        let hint = match expected {
            DatasetKind::Tokens => "run `firebrand data tokenize` on it first".to_string(),
            _ => format!(
                "`firebrand data import FILE.jsonl --kind {expected}` makes one; `firebrand data show` tells what a dataset holds"
            ),
        };
        Err(DataError::WrongKind {
            path: self.path.clone(),
            found: self.kind,
            expected,
            hint,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its kind.
    pub fn kind(&self) -> DatasetKind {
        self.kind
    }

    /// The Lance version opened.
    pub fn version(&self) -> u64 {
        self.inner.version().version
    }

    /// The underlying Lance dataset (for DataFusion and advanced use).
    pub fn lance(&self) -> &Arc<lance::Dataset> {
        &self.inner
    }

    /// Opens an older version of the same dataset.
    ///
    /// # Errors
    /// When the version does not exist.
    pub fn checkout(&self, version: u64) -> Result<Self> {
        let inner = block_on(self.inner.checkout_version(version)).map_err(|e| DataError::lance(&self.path, e))?;
        Ok(Dataset {
            path: self.path.clone(),
            kind: self.kind,
            inner: Arc::new(inner),
        })
    }

    /// Number of rows.
    ///
    /// # Errors
    /// When Lance cannot read the manifest.
    pub fn len(&self) -> Result<usize> {
        block_on(self.inner.count_rows(None)).map_err(|e| DataError::lance(&self.path, e))
    }

    /// Whether the dataset has no rows.
    ///
    /// # Errors
    /// As [`Dataset::len`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The Arrow schema, with its metadata.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(arrow_schema::Schema::from(self.inner.schema()))
    }

    /// Rows at the given indices, in that order, as a batch holding `columns` (all when `None`).
    ///
    /// # Errors
    /// When an index is out of range or a column does not exist.
    pub fn take_batch(&self, rows: &[u64], columns: Option<&[&str]>) -> Result<RecordBatch> {
        let len = self.len()? as u64;
        if let Some(bad) = rows.iter().find(|&&r| r >= len) {
            return Err(DataError::Invalid(format!(
                "{}: row {bad} is out of range (the dataset has {len} rows)",
                self.path.display()
            )));
        }
        let schema = match columns {
            Some(cols) => self
                .inner
                .schema()
                .project(cols)
                .map_err(|e| DataError::lance(&self.path, e))?,
            None => self.inner.schema().clone(),
        };
        block_on(self.inner.take(rows, schema)).map_err(|e| DataError::lance(&self.path, e))
    }

    /// Typed rows at the given indices, in that order.
    ///
    /// # Errors
    /// As [`Dataset::take_batch`], plus [`DataError::WrongKind`] when `R` is another kind.
    pub fn take<R: Record>(&self, rows: &[u64]) -> Result<Vec<R>> {
        self.expect_kind(R::KIND)?;
        let batch = self.take_batch(rows, None)?;
        R::from_batch(&batch).map_err(|e| self.locate(e, rows.first().copied().unwrap_or(0)))
    }

    /// Streams the dataset in order as batches of at most `batch_size` rows holding `columns`.
    ///
    /// Batches are read ahead in the background while the caller works on the current one.
    ///
    /// # Errors
    /// When a column does not exist; read errors arrive through the iterator.
    pub fn scan(&self, columns: Option<&[&str]>, batch_size: usize) -> Result<BatchIter> {
        let mut scanner = self.inner.scan();
        scanner.batch_size(batch_size.max(1));
        if let Some(cols) = columns {
            scanner.project(cols).map_err(|e| DataError::lance(&self.path, e))?;
        }
        let path = self.path.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        runtime().spawn(async move {
            let mut stream = match scanner.try_into_stream().await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(DataError::lance(&path, e))).await;
                    return;
                }
            };
            while let Some(item) = stream.next().await {
                let item = item.map_err(|e| DataError::lance(&path, e));
                if tx.send(item).await.is_err() {
                    break; // the reader went away
                }
            }
        });
        Ok(BatchIter { rx })
    }

    /// Streams typed rows in order, `batch_size` rows read at a time.
    ///
    /// # Errors
    /// [`DataError::WrongKind`] when `R` is another kind; read and conversion errors (naming the
    /// row) arrive through the iterator.
    pub fn rows<R: Record>(&self, batch_size: usize) -> Result<impl Iterator<Item = Result<R>> + use<R>> {
        self.expect_kind(R::KIND)?;
        let this = self.clone();
        let mut offset = 0u64;
        let batches = self.scan(None, batch_size)?;
        Ok(batches.flat_map(move |batch| {
            let rows: Vec<Result<R>> = match batch.and_then(|b| {
                let start = offset;
                offset += b.num_rows() as u64;
                R::from_batch(&b).map_err(|e| this.locate(e, start))
            }) {
                Ok(rows) => rows.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            rows
        }))
    }

    /// Reads every row into memory.
    ///
    /// # Errors
    /// As [`Dataset::rows`].
    pub fn read_all<R: Record>(&self) -> Result<Vec<R>> {
        self.rows(8192)?.collect()
    }

    /// Turns a row-relative conversion error into one naming the dataset and absolute row.
    fn locate(&self, e: DataError, batch_start: u64) -> DataError {
        match e {
            DataError::Arrow { context, problem } => {
                let row = context
                    .strip_prefix("row ")
                    .and_then(|r| r.parse::<u64>().ok())
                    .map(|r| r + batch_start);
                match row {
                    Some(row) => DataError::BadField {
                        path: self.path.clone(),
                        location: format!("row {row}"),
                        field: field_in(&problem),
                        problem,
                        hint: String::new(),
                    },
                    None => DataError::Arrow { context, problem },
                }
            }
            other => other,
        }
    }
}

/// The field a serde error message names (`missing field `x``, `unknown variant`...), or `?`.
fn field_in(problem: &str) -> String {
    problem
        .split('`')
        .nth(1)
        .filter(|_| problem.starts_with("missing field") || problem.starts_with("unknown field"))
        .unwrap_or("?")
        .to_string()
}

/// Batches of a scan, read ahead in the background.
pub struct BatchIter {
    rx: tokio::sync::mpsc::Receiver<Result<RecordBatch>>,
}

impl Iterator for BatchIter {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.blocking_recv()
    }
}

/// The reader end Lance pulls batches from while it writes.
struct ChannelReader {
    schema: SchemaRef,
    rx: Receiver<std::result::Result<RecordBatch, ArrowError>>,
}

impl Iterator for ChannelReader {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}

impl RecordBatchReader for ChannelReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// One Lance write transaction in progress.
struct Pending {
    tx: SyncSender<std::result::Result<RecordBatch, ArrowError>>,
    handle: JoinHandle<std::result::Result<lance::Dataset, lance::Error>>,
}

/// Streams batches of one kind into a Lance dataset; see the module doc for the guarantees.
pub struct DatasetWriter {
    path: PathBuf,
    uri: String,
    kind: DatasetKind,
    schema: SchemaRef,
    next_mode: LanceWriteMode,
    pending: Option<Pending>,
    rows_pending: usize,
    rows_committed: usize,
    version: Option<u64>,
    /// The path did not exist before: an abort before the first commit removes what Lance left.
    fresh: bool,
}

impl DatasetWriter {
    /// Starts writing a dataset of `kind` at `path`.
    ///
    /// # Errors
    /// With [`WriteMode::Create`] when the path exists; with [`WriteMode::Append`] when the existing
    /// dataset holds another kind.
    pub fn create(path: impl AsRef<Path>, kind: DatasetKind, mode: WriteMode) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let exists = path.exists();
        let next_mode = match mode {
            WriteMode::Create if exists => {
                return Err(DataError::Invalid(format!(
                    "{}: already exists\n  hint: pass --overwrite to replace it (older versions stay readable), or --resume to append",
                    path.display()
                )));
            }
            WriteMode::Create => LanceWriteMode::Create,
            WriteMode::Overwrite if exists => LanceWriteMode::Overwrite,
            WriteMode::Overwrite => LanceWriteMode::Create,
            WriteMode::Append if exists => {
                Dataset::open_kind(&path, kind)?;
                LanceWriteMode::Append
            }
            WriteMode::Append => LanceWriteMode::Create,
        };
        Ok(DatasetWriter {
            uri: uri(&path)?,
            path,
            kind,
            schema: kind.schema(),
            next_mode,
            pending: None,
            rows_pending: 0,
            rows_committed: 0,
            version: None,
            fresh: !exists,
        })
    }

    /// The kind being written.
    pub fn kind(&self) -> DatasetKind {
        self.kind
    }

    /// Rows committed so far by this writer.
    pub fn rows_committed(&self) -> usize {
        self.rows_committed
    }

    /// Rows written but not yet committed.
    pub fn rows_pending(&self) -> usize {
        self.rows_pending
    }

    fn start(&mut self) -> &Pending {
        if self.pending.is_none() {
            // A small bound: the producer waits for Lance rather than filling memory.
            let (tx, rx) = sync_channel(4);
            let reader = ChannelReader {
                schema: self.schema.clone(),
                rx,
            };
            let params = WriteParams {
                mode: self.next_mode,
                ..WriteParams::default()
            };
            let uri = self.uri.clone();
            let handle = std::thread::Builder::new()
                .name("firebrand-lance-write".into())
                .spawn(move || block_on(lance::Dataset::write(reader, uri.as_str(), Some(params))))
                .expect("spawning a thread succeeds");
            self.pending = Some(Pending { tx, handle });
        }
        self.pending.as_ref().expect("just set")
    }

    /// Sends one batch of this writer's kind.
    ///
    /// # Errors
    /// When the batch has another schema, or the Lance write already failed.
    pub fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(DataError::arrow(
                format!("writing {}", self.path.display()),
                format!("batch schema does not match the `{}` kind", self.kind),
            ));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let rows = batch.num_rows();
        let batch = batch
            .with_schema(self.schema.clone())
            .map_err(|e| DataError::arrow("writing", e))?;
        let sent = self.start().tx.send(Ok(batch));
        if sent.is_err() {
            // Lance stopped reading: its error comes out of the join.
            return Err(self.finish_pending().err().unwrap_or_else(|| {
                DataError::Invalid(format!("{}: the Lance writer stopped early", self.path.display()))
            }));
        }
        self.rows_pending += rows;
        Ok(())
    }

    /// Converts and sends typed rows.
    ///
    /// # Errors
    /// As [`DatasetWriter::write_batch`].
    pub fn write<R: Record>(&mut self, rows: &[R]) -> Result<()> {
        if R::KIND != self.kind {
            return Err(DataError::Invalid(format!(
                "{}: writing `{}` rows into a `{}` dataset",
                self.path.display(),
                R::KIND,
                self.kind
            )));
        }
        self.write_batch(R::to_batch(rows)?)
    }

    fn finish_pending(&mut self) -> Result<Option<lance::Dataset>> {
        let Some(Pending { tx, handle }) = self.pending.take() else {
            return Ok(None);
        };
        drop(tx); // end of input: Lance commits
        let result = handle
            .join()
            .map_err(|_| DataError::Invalid(format!("{}: the Lance writer panicked", self.path.display())))?;
        let ds = result.map_err(|e| DataError::lance(&self.path, e))?;
        self.rows_committed += self.rows_pending;
        self.rows_pending = 0;
        self.next_mode = LanceWriteMode::Append;
        self.version = Some(ds.version().version);
        Ok(Some(ds))
    }

    /// Commits what has been written so far as a new version and keeps writing after it.
    ///
    /// # Errors
    /// When Lance fails to write or commit.
    pub fn flush(&mut self) -> Result<()> {
        self.finish_pending().map(|_| ())
    }

    /// Commits and returns the dataset. A writer that received no rows still creates (or, when
    /// overwriting, empties) the dataset.
    ///
    /// # Errors
    /// When Lance fails to write or commit.
    pub fn commit(mut self) -> Result<Dataset> {
        if self.pending.is_none() && self.version.is_none() && !matches!(self.next_mode, LanceWriteMode::Append) {
            // Nothing written: still create the (empty) dataset so that readers find it.
            self.start();
        }
        self.finish_pending()?;
        Dataset::open(&self.path)
    }

    /// Abandons the uncommitted rows; earlier flushed versions stay.
    pub fn abort(mut self) {
        self.abort_pending();
    }

    fn abort_pending(&mut self) {
        if let Some(Pending { tx, handle }) = self.pending.take() {
            let _ = tx.send(Err(ArrowError::ExternalError("write aborted".into())));
            drop(tx);
            let _ = handle.join();
        }
        if self.fresh && self.version.is_none() {
            // Data files of a transaction that never committed: no version refers to them.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        self.abort_pending();
    }
}

//! DPO's reference log-probabilities, computed once and cached in the preference dataset.
//!
//! The sequence log-probabilities of the reference model for each pair's chosen and rejected reply
//! are stored in the dataset's `ref_chosen_logp` and `ref_rejected_logp` columns (a new Lance
//! version), each row's `meta` recording `ref_logp_key`: a hash of the reference's weight and
//! config files, the template, the tokenizer file, the row length and the engine that computed the
//! values (each engine's numbers, bf16 kernels or f32 burn, stay its own). A run reuses the values of
//! rows whose key matches and recomputes the others, so training never holds two models, reruns
//! cost nothing, and a changed reference or template is never silently reused (TRL's
//! `precompute_ref_log_probs`, made persistent).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use firebrand_data::records::PreferenceRow;
use firebrand_data::{Dataset, DatasetKind, DatasetWriter, TokensRow, WriteMode};

use crate::checkpoint;
use crate::error::TrainError;

/// The `meta` key holding the cache key.
pub const META_KEY: &str = "ref_logp_key";

/// The folder holding the reference's weights: the folder itself for a Hugging Face folder or a
/// checkpoint, the latest checkpoint of a run.
fn weights_dir(reference: &Path) -> Result<PathBuf, TrainError> {
    if reference.join("config.json").exists() {
        Ok(reference.to_path_buf())
    } else {
        Ok(checkpoint::latest(reference)?.1)
    }
}

/// FNV-1a over bytes, continuing from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The cache key of a reference, template, tokenizer, row length and the engine that computes the
/// values (`numerics`: bf16 kernels and f32 burn give values a few 1e-3 apart over a reply).
///
/// # Errors
/// When the reference or tokenizer files cannot be read.
pub fn cache_key(
    reference: &Path,
    template: &str,
    tokenizer: &Path,
    max_len: usize,
    numerics: &str,
) -> Result<String, TrainError> {
    let dir = weights_dir(reference)?;
    // The model's own files only (a checkpoint's optimizer state is not the model), read in chunks
    // so that hashing never holds a whole file in memory.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| TrainError::io(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name == "config.json"
                || (name.ends_with(".safetensors") && name != crate::engine::state::OPTIMIZER_FILE)
                || name == "model.mpk"
                || name.ends_with(".index.json")
        })
        .collect();
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut buf = vec![0u8; 1 << 20];
    for f in files.iter().map(PathBuf::as_path).chain(std::iter::once(tokenizer)) {
        use std::io::Read;
        let mut file = std::fs::File::open(f).map_err(|e| TrainError::io(f, e))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| TrainError::io(f, e))?;
            if n == 0 {
                break;
            }
            h = fnv(h, &buf[..n]);
        }
        h = fnv(h, &[0xff]);
    }
    h = fnv(h, template.as_bytes());
    h = fnv(h, &max_len.to_le_bytes());
    h = fnv(h, numerics.as_bytes());
    Ok(format!("{h:016x}"))
}

/// Reference log-probabilities (chosen, rejected) by pair id.
pub type ReferenceLogps = HashMap<String, (f64, f64)>;

/// What [`ensure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheReport {
    /// Pairs whose cached values were reused.
    pub reused: usize,
    /// Pairs computed with the reference model now.
    pub computed: usize,
}

fn key_of(row: &PreferenceRow) -> Option<String> {
    let meta: serde_json::Value = serde_json::from_str(&row.provenance.meta).ok()?;
    meta.get(META_KEY)?.as_str().map(str::to_string)
}

/// A row's key: the run's key and the row's own text, so a pair edited in place is recomputed.
fn row_key(key: &str, row: &PreferenceRow) -> String {
    let mut h = fnv(0xcbf2_9ce4_8422_2325, key.as_bytes());
    for m in &row.prompt {
        h = fnv(h, m.role.name().as_bytes());
        h = fnv(h, &[0xfe]);
        h = fnv(h, m.content.as_bytes());
        h = fnv(h, &[0xff]);
    }
    h = fnv(h, row.chosen.as_bytes());
    h = fnv(h, &[0xff]);
    h = fnv(h, row.rejected.as_bytes());
    format!("{key}-{h:016x}")
}

/// The reference log-probabilities of every pair in `tokens` (rows 2k and 2k + 1), by pair id:
/// from the cache in `preferences` where its key is `key`, computed otherwise by `score` (each
/// row's summed log-probs of its counted targets under the reference, `batch` pairs at a time,
/// chosen rows first), and written back as a new version.
///
/// # Errors
/// When a dataset cannot be read or written, or `score` fails.
pub fn ensure(
    preferences: &Path,
    tokens: &Dataset,
    key: &str,
    batch: usize,
    mut score: impl FnMut(Vec<TokensRow>) -> Result<Vec<f64>, TrainError>,
) -> Result<(ReferenceLogps, CacheReport), TrainError> {
    let ds = Dataset::open_kind(preferences, DatasetKind::Preference)?;
    let version = ds.version();
    let mut rows: Vec<PreferenceRow> = ds.read_all()?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = rows.iter().find(|r| !seen.insert(r.id.as_str())) {
        return Err(TrainError::Config(format!(
            "{}: pair id `{}` appears twice; reference log-probs are kept by id\n  hint: give pairs unique ids",
            preferences.display(),
            dup.id
        )));
    }
    let mut values: HashMap<String, (f64, f64)> = HashMap::new();
    for r in &rows {
        if let (Some(c), Some(j), Some(k)) = (r.ref_chosen_logp, r.ref_rejected_logp, key_of(r))
            && k == row_key(key, r)
        {
            values.insert(r.id.clone(), (c, j));
        }
    }
    let mut todo: Vec<u64> = Vec::new();
    let mut report = CacheReport::default();
    for (p, id) in firebrand_data::pairs::pair_ids(tokens)?.iter().enumerate() {
        if values.contains_key(id) {
            report.reused += 1;
        } else {
            todo.push(p as u64);
        }
    }
    if todo.is_empty() {
        return Ok((values, report));
    }
    for chunk in todo.chunks(batch.max(1)) {
        let idx: Vec<u64> = chunk
            .iter()
            .map(|p| 2 * p)
            .chain(chunk.iter().map(|p| 2 * p + 1))
            .collect();
        let token_rows: Vec<TokensRow> = tokens.take(&idx)?;
        let ids: Vec<String> = token_rows[..chunk.len()]
            .iter()
            .map(|r| r.source_ids.first().cloned().unwrap_or_default())
            .collect();
        let logps = score(token_rows)?;
        let n = chunk.len();
        for (i, id) in ids.into_iter().enumerate() {
            values.insert(id, (logps[i], logps[n + i]));
        }
        report.computed += n;
    }
    // Write the values back as a new version of the preference dataset, unless it changed while
    // they were computed (rows added meanwhile would be lost) or cannot be written: the run goes
    // on with the values in memory either way.
    if Dataset::open(preferences).map(|d| d.version()).ok() != Some(version) {
        tracing::warn!(
            "{}: changed during the computation; the reference log-probs are not cached",
            preferences.display()
        );
        return Ok((values, report));
    }
    for r in &mut rows {
        if let Some(&(c, j)) = values.get(&r.id) {
            let meta = match serde_json::from_str::<serde_json::Value>(&r.provenance.meta) {
                Ok(serde_json::Value::Object(m)) => Some(m),
                _ if r.provenance.meta.trim().is_empty() => Some(serde_json::Map::new()),
                _ => None, // not a JSON object: left as it is, and not cached
            };
            if let Some(mut meta) = meta {
                meta.insert(META_KEY.into(), row_key(key, r).into());
                r.provenance.meta = serde_json::Value::Object(meta).to_string();
                r.ref_chosen_logp = Some(c);
                r.ref_rejected_logp = Some(j);
            }
        }
    }
    let written =
        DatasetWriter::create(preferences, DatasetKind::Preference, WriteMode::Overwrite).and_then(|mut w| {
            w.write(&rows)?;
            w.commit()
        });
    if let Err(e) = written {
        tracing::warn!("{}: the reference log-probs are not cached: {e}", preferences.display());
    }
    Ok((values, report))
}

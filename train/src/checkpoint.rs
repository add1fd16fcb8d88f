//! Step checkpoints: `RUN/step-000100/` holding the weights and the optimizer state
//! (`engine::state`: `model.safetensors`, `optimizer.safetensors`), the loop state (step, rows
//! consumed, seed), `config.json` and the resolved recipe, so `--resume RUN` continues exactly and
//! the folder opens in `transformers` as it is.
//!
//! Writes are atomic: everything goes into `RUN/.tmp-step-000100/`, which is renamed into place
//! only when complete, so a run killed mid-save leaves the previous checkpoint as the latest. Only
//! the last `keep_last` step folders are kept.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The loop state saved beside the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps done.
    pub step: usize,
    /// Training rows consumed so far (the position in the seeded data order).
    pub rows_consumed: u64,
    /// Seed of the run.
    pub seed: u64,
}

/// The folder name of step `step`.
pub fn step_dir_name(step: usize) -> String {
    format!("step-{step:06}")
}

/// Step folders of a run, oldest first.
///
/// # Errors
/// When the run folder cannot be listed.
pub fn list(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>, TrainError> {
    let mut out = Vec::new();
    if !run_dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(run_dir).map_err(|e| TrainError::io(run_dir, e))? {
        let entry = entry.map_err(|e| TrainError::io(run_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<usize>().ok()) {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint of a run.
///
/// # Errors
/// When the run has none.
pub fn latest(run_dir: &Path) -> Result<(usize, PathBuf), TrainError> {
    list(run_dir)?.pop().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: no checkpoint to resume from (no step-N folder)",
            run_dir.display()
        ))
    })
}

/// Creates the temporary folder of a checkpoint of `step`; call [`commit`] once it is filled.
///
/// # Errors
/// When the folder cannot be created.
pub fn begin(run_dir: &Path, step: usize) -> Result<PathBuf, TrainError> {
    let tmp = run_dir.join(format!(".tmp-{}", step_dir_name(step)));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    Ok(tmp)
}

/// Moves a filled temporary folder into place and removes checkpoints beyond the last `keep_last`.
///
/// # Errors
/// When the rename or a removal fails.
pub fn commit(run_dir: &Path, tmp: &Path, step: usize, keep_last: usize) -> Result<PathBuf, TrainError> {
    let dest = run_dir.join(step_dir_name(step));
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| TrainError::io(&dest, e))?;
    }
    std::fs::rename(tmp, &dest).map_err(|e| TrainError::io(&dest, e))?;
    let all = list(run_dir)?;
    let excess = all.len().saturating_sub(keep_last.max(1));
    for (_, old) in all.into_iter().take(excess) {
        std::fs::remove_dir_all(&old).map_err(|e| TrainError::io(&old, e))?;
    }
    Ok(dest)
}

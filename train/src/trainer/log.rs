//! A run's JSON-lines files (`metrics.jsonl`, GRPO's `completions.jsonl`): opened fresh, or for a
//! resumed run cut back to the lines of steps up to its checkpoint, so each reads as one
//! uninterrupted run.

use std::io::Write;
use std::path::Path;

use crate::error::TrainError;

/// Opens a JSON-lines file: truncated for a fresh run; for a resumed one, cut back to the lines
/// whose `step` is at most `resume_step`.
///
/// # Errors
/// When the file cannot be written.
pub fn open(path: &Path, resume_step: Option<usize>) -> Result<std::fs::File, TrainError> {
    let kept = match resume_step {
        None => String::new(),
        Some(step) => std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s as usize <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect(),
    };
    std::fs::write(path, kept).map_err(|e| TrainError::io(path, e))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))
}

/// Appends one JSON value as a line.
///
/// # Errors
/// When the file cannot be written.
pub fn write_line(file: &mut std::fs::File, path: &Path, v: &serde_json::Value) -> Result<(), TrainError> {
    writeln!(file, "{v}").map_err(|e| TrainError::io(path, e))
}

//! A run's training data: a pre-tokenized `tokens` dataset, or chat/completion text (a dataset or
//! a SQL query) tokenized into the run folder when the run starts.
//!
//! Tokenizing at the start of a run (as TRL and Axolotl do) keeps one command from text to model;
//! writing the result to `RUN/data/tokens.lance` instead of keeping it in memory means a resumed
//! run reads exactly the rows the first one did, and the data can be inspected with
//! `firebrand data show|stats|debug`. A query's result is first written to `RUN/data/input.lance`
//! for the same reasons.

use std::path::{Path, PathBuf};

use firebrand_data::tokenize::{TokenizeReport, tokenize_dataset};
use firebrand_data::{Dataset, WriteMode, sql, tokenizer};

use crate::error::TrainError;
use crate::recipe::{Recipe, TextSource};

/// The `tokens` dataset a run trains on: `data.tokens`, or `RUN/data/tokens.lance`.
pub fn tokens_path(recipe: &Recipe, run_dir: &Path) -> PathBuf {
    match &recipe.data.tokens {
        Some(p) => p.clone(),
        None => run_dir.join("data").join("tokens.lance"),
    }
}

/// Where the run's text lives: `data.dataset`, or `RUN/data/input.lance` for a query (written
/// when the run starts); `None` for pre-tokenized data.
pub fn text_path(recipe: &Recipe, run_dir: &Path) -> Option<PathBuf> {
    match recipe.data.text_source()? {
        TextSource::Dataset(p) => Some(p),
        TextSource::Query(_) => Some(run_dir.join("data").join("input.lance")),
    }
}

/// Opens the text a recipe tokenizes (running its query into `RUN/data/input.lance`).
///
/// # Errors
/// When the dataset does not open or the query fails.
pub fn open_text(source: &TextSource, run_dir: &Path) -> Result<Dataset, TrainError> {
    Ok(match source {
        TextSource::Dataset(p) => Dataset::open(p)?,
        TextSource::Query(q) => {
            let dir = run_dir.join("data");
            std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            sql::query_to_dataset(q, &dir.join("input.lance"), None, WriteMode::Overwrite)?
        }
    })
}

/// Makes sure the run's `tokens` dataset exists: tokenizes `data.dataset`/`data.query` on a fresh
/// run, reuses `RUN/data/tokens.lance` on a resumed one. Returns the tokenize report when it ran.
///
/// # Errors
/// When the text cannot be read or tokenized, or a resumed run lost its tokenized data.
pub fn prepare(
    recipe: &Recipe,
    run_dir: &Path,
    resume: bool,
    progress: impl FnMut(usize),
) -> Result<Option<TokenizeReport>, TrainError> {
    let Some(source) = recipe.data.text_source() else {
        return Ok(None);
    };
    if recipe.method.grpo().is_some() {
        // GRPO tokenizes its prompts when it loads them; a query's result is written when the
        // run starts and kept for resumes.
        let input = text_path(recipe, run_dir).unwrap_or_default();
        match source {
            TextSource::Query(_) if !resume => {
                open_text(&source, run_dir)?;
            }
            _ if !input.exists() => {
                return Err(TrainError::Config(format!("{}: the prompts are gone", input.display())));
            }
            _ => {}
        }
        return Ok(None);
    }
    let out = tokens_path(recipe, run_dir);
    if resume {
        if out.exists() {
            return Ok(None);
        }
        return Err(TrainError::Config(format!(
            "{}: the resumed run's tokenized data is gone; an exact resume needs the rows the run started with",
            out.display()
        )));
    }
    let tok_path = recipe
        .data
        .tokenizer
        .as_ref()
        .ok_or_else(|| TrainError::Config("data.dataset and data.query need data.tokenizer".into()))?;
    let tok = tokenizer::load(tok_path)?;
    let input = open_text(&source, run_dir)?;
    let opts = recipe.data.tokenize_options()?;
    if let crate::recipe::Method::Dpo { strict, .. } = &recipe.method {
        // Pairs: two rows each (chosen, rejected), never packed.
        let mut progress = progress;
        let pairs =
            firebrand_data::pairs::tokenize_pairs(&input, &tok, opts.template, opts.max_len, &out, opts.mode, *strict)?;
        progress(pairs.pairs_in);
        return Ok(Some(TokenizeReport {
            rows_in: pairs.pairs_in,
            docs: 2 * pairs.pairs_out,
            rows_out: 2 * pairs.pairs_out,
            tokens: pairs.tokens,
            loss_tokens: pairs.loss_tokens,
            truncated: 0,
            dropped: pairs.dropped,
        }));
    }
    Ok(Some(tokenize_dataset(&input, &tok, &out, &opts, progress)?))
}

//! Tokenizers: loading HF `tokenizer.json` files and training byte-level BPE from datasets.
//!
//! A trained tokenizer follows GPT-2/Llama 3 byte-level BPE: the byte-level pre-tokenizer with its
//! split regex and no prefix space, the 256 byte symbols as the initial alphabet (so any text
//! encodes, with no unknown token), and the special tokens of every built-in chat template, so one
//! tokenizer serves ChatML, Llama 3 and plain rendering.

use std::path::{Path, PathBuf};

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, ModelWrapper, PreTokenizerWrapper};

pub use tokenizers::Tokenizer;

use crate::error::{DataError, Result};
use crate::kind::DatasetKind;
use crate::store::Dataset;

/// Special tokens every tokenizer trained here has, in id order from 0.
pub const SPECIAL_TOKENS: &[&str] = &[
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
];

/// Loads a tokenizer from a `tokenizer.json` file or a folder containing one (a HF model folder).
///
/// # Errors
/// When no tokenizer is found or the file does not parse.
pub fn load(path: &Path) -> Result<Tokenizer> {
    let file: PathBuf = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    if !file.exists() {
        return Err(DataError::Tokenizer {
            path: file,
            problem: "not found".into(),
            hint: "pass a tokenizer.json, a model folder that has one, or train one with `firebrand tokenizer train`"
                .into(),
        });
    }
    Tokenizer::from_file(&file).map_err(|e| DataError::Tokenizer {
        path: file,
        problem: e.to_string(),
        hint: "only HF `tokenizers` JSON files are read (tokenizer.model files of sentencepiece are not)".into(),
    })
}

/// Options of BPE training.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Target vocabulary size, special tokens and the 256 bytes included.
    pub vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    pub min_frequency: u64,
    /// Special tokens added after [`SPECIAL_TOKENS`] (e.g. the Multiverse control tags).
    pub extra_special: Vec<String>,
}

/// The text columns of a kind that tokenizer training reads (`messages` yields its contents).
fn text_columns(kind: DatasetKind) -> &'static [&'static str] {
    match kind {
        DatasetKind::Chat => &["messages"],
        DatasetKind::Completion => &["prompt", "completion"],
        DatasetKind::Preference => &["prompt", "chosen", "rejected"],
        DatasetKind::Prompts => &["prompt", "answer"],
        DatasetKind::Lintseq => &["instruction", "program"],
        DatasetKind::Multiverse => &["question", "parallel_trace", "answer"],
        DatasetKind::Tokens => &[],
    }
}

fn collect_strings(v: serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.into_iter().for_each(|i| collect_strings(i, out)),
        serde_json::Value::Object(mut o) => {
            if let Some(c) = o.remove("content") {
                collect_strings(c, out);
            }
        }
        _ => {}
    }
}

/// Every training text of the datasets, read in streaming order.
///
/// # Errors
/// When a dataset is a `tokens` dataset (it has no text) or cannot be read.
pub fn dataset_texts(datasets: &[Dataset]) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    for ds in datasets {
        let cols = text_columns(ds.kind());
        if cols.is_empty() {
            return Err(DataError::Invalid(format!(
                "{}: a `tokens` dataset has no text to train a tokenizer on",
                ds.path().display()
            )));
        }
        for batch in ds.scan(Some(cols), 4096)? {
            let batch = batch?;
            for column in batch.columns() {
                for row in 0..batch.num_rows() {
                    collect_strings(crate::records::array_value(column.as_ref(), row)?, &mut texts);
                }
            }
        }
    }
    Ok(texts)
}

/// Trains a byte-level BPE tokenizer on `texts`.
///
/// # Errors
/// When the vocabulary cannot hold the specials and the byte alphabet, or training fails.
pub fn train_bpe(texts: &[String], opts: &TrainOptions) -> Result<Tokenizer> {
    let floor = SPECIAL_TOKENS.len() + opts.extra_special.len() + 256;
    if opts.vocab_size < floor {
        return Err(DataError::Invalid(format!(
            "--vocab-size {} is too small: the {} special tokens and 256 byte symbols need {floor}",
            opts.vocab_size,
            SPECIAL_TOKENS.len() + opts.extra_special.len()
        )));
    }
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| t.to_string())
        .chain(opts.extra_special.iter().cloned())
        .map(|t| AddedToken::from(t, true))
        .collect();
    let mut tokenizer = Tokenizer::new(ModelWrapper::BPE(BPE::default()));
    let byte_level = ByteLevel::default().add_prefix_space(false);
    tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(byte_level)));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(byte_level)));
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainer::builder()
            .vocab_size(opts.vocab_size)
            .min_frequency(opts.min_frequency)
            .show_progress(false)
            .special_tokens(specials.clone())
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let memory = PathBuf::from("<training>");
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| DataError::Tokenizer {
            path: memory.clone(),
            problem: e.to_string(),
            hint: String::new(),
        })?;
    tokenizer.add_special_tokens(&specials);
    Ok(tokenizer)
}

/// Saves a tokenizer as `tokenizer.json` at `path` (a file path, or a folder to put it in).
///
/// # Errors
/// When the file cannot be written.
pub fn save(tokenizer: &Tokenizer, path: &Path) -> Result<PathBuf> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    }
    tokenizer.save(&file, true).map_err(|e| DataError::Tokenizer {
        path: file.clone(),
        problem: e.to_string(),
        hint: String::new(),
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_tokenizer_round_trips_text_and_keeps_specials_whole() {
        let texts: Vec<String> = (0..200)
            .map(|i| format!("the cat sat on mat number {i}; héllo wörld"))
            .collect();
        let tok = train_bpe(
            &texts,
            &TrainOptions {
                vocab_size: 400,
                min_frequency: 2,
                extra_special: Vec::new(),
            },
        )
        .unwrap();
        assert!(tok.get_vocab_size(true) <= 400);
        for (i, s) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.token_to_id(s), Some(i as u32), "{s}");
        }
        let text = "<|im_start|>user\nthe cat 🐈 sat<|im_end|>";
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(enc.get_ids()[0], 1, "the special token is one token");
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
        // Merges were learned: a frequent word is fewer tokens than its bytes.
        assert!(tok.encode("the cat sat", false).unwrap().len() < "the cat sat".len());
    }

    #[test]
    fn too_small_a_vocabulary_is_refused() {
        let err = train_bpe(
            &["a".into()],
            &TrainOptions {
                vocab_size: 100,
                min_frequency: 1,
                extra_special: Vec::new(),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("too small"));
    }
}

//! LintSeq's forward phase and its inverse.
//!
//! The reference (`src/utils.py::inflate_edit_path`, `get_diff`) reverses the chain of backward
//! states and diffs each pair with `difflib.unified_diff(a.strip().splitlines(),
//! b.strip().splitlines(), n=0)`, dropping the two file-header lines. We emit the same text
//! directly from the line indices each edit inserts, so every edit is insertion-only by
//! construction (difflib is not an LCS and sometimes emits `-` lines on files with repeated lines;
//! research notes §2.4):
//!
//! - a hunk per run of consecutive inserted lines: `@@ -a,0 +c,k @@` (`+c` alone when k = 1), where
//!   `a` counts the old lines before the insertion and `c` is the 1-based row of the first inserted
//!   line in the new text, then the `+` lines; hunks of one edit are joined by `\n`;
//! - each state is trimmed of blank lines at both ends, as `strip()` trims it there (we do not strip
//!   the first line's indentation or the last line's trailing spaces, which would make later edits
//!   replace those lines instead of inserting around them);
//! - edits that insert nothing (a first state of blank lines only) are dropped, as pylintseq drops
//!   them (the original repository keeps `""` entries).
//!
//! [`replay`] applies edits to an empty file and checks every hunk strictly; [`training_text`] is
//! the reference's SFT text (`src/finetune.py::encode_edit_seq_with_coding_completion_format`).

use thiserror::Error;

/// The token between edits in the training text.
pub const DIFF_TOKEN: &str = "<|diff|>";

/// Lines `0..n` of a state: which are present.
fn visible(present: &[bool], lines: &[&str]) -> Vec<usize> {
    let idx: Vec<usize> = (0..lines.len()).filter(|&i| present[i]).collect();
    let blank = |i: &usize| lines[*i].trim().is_empty();
    let start = idx.iter().position(|i| !blank(i)).unwrap_or(idx.len());
    let end = idx.iter().rposition(|i| !blank(i)).map_or(start, |e| e + 1);
    idx[start..end].to_vec()
}

/// The hunks that turn the `old` rows into the `new` rows (`old` ⊆ `new`, both sorted).
fn hunks(old: &[usize], new: &[usize], lines: &[&str]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut o = 0; // old rows passed
    let mut j = 0;
    while j < new.len() {
        if o < old.len() && old[o] == new[j] {
            o += 1;
            j += 1;
            continue;
        }
        let start = j;
        while j < new.len() && !(o < old.len() && old[o] == new[j]) {
            j += 1;
        }
        let k = j - start;
        let range = if k == 1 {
            format!("{}", start + 1)
        } else {
            format!("{},{k}", start + 1)
        };
        out.push(format!("@@ -{o},0 +{range} @@"));
        out.extend(new[start..j].iter().map(|&i| format!("+{}", lines[i])));
    }
    out.join("\n")
}

/// The forward edits of a backward trajectory: `chunks` are the deleted line indices per backward
/// step, first deletion first. The first edit inserts what no step deleted (comments, blank
/// lines), when that is not only blank; the last one inserts the first deleted chunk.
pub fn forward_edits(lines: &[&str], chunks: &[Vec<usize>]) -> Vec<String> {
    let mut present = vec![true; lines.len()];
    for chunk in chunks {
        for &i in chunk {
            present[i] = false;
        }
    }
    let mut edits = Vec::with_capacity(chunks.len() + 1);
    let mut old: Vec<usize> = Vec::new();
    let mut push = |present: &[bool], old: &mut Vec<usize>| {
        let new = visible(present, lines);
        if new.len() > old.len() {
            edits.push(hunks(old, &new, lines));
        }
        *old = new;
    };
    push(&present, &mut old);
    for chunk in chunks.iter().rev() {
        for &i in chunk {
            present[i] = true;
        }
        push(&present, &mut old);
    }
    edits
}

/// The program as LintSeq reconstructs it: blank lines trimmed at both ends.
pub fn trimmed(program: &str) -> String {
    let lines: Vec<&str> = program.split('\n').collect();
    let present = vec![true; lines.len()];
    visible(&present, &lines)
        .iter()
        .map(|&i| lines[i])
        .collect::<Vec<_>>()
        .join("\n")
}

/// A malformed edit.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplayError {
    /// A line that is neither a hunk header nor an inserted line.
    #[error("edit {edit}: line {line}: expected `@@ -a,0 +c,k @@` or a `+` line, found {found:?}")]
    Malformed {
        /// 1-based edit.
        edit: usize,
        /// 1-based line within the edit.
        line: usize,
        /// The line.
        found: String,
    },
    /// A hunk that does not fit the file as it stands.
    #[error("edit {edit}: hunk `{header}` {why}")]
    Mismatch {
        /// 1-based edit.
        edit: usize,
        /// The hunk header.
        header: String,
        /// What is wrong.
        why: String,
    },
}

/// Parses `@@ -a,0 +c[,k] @@` into (a, c, k).
fn parse_header(line: &str) -> Option<(usize, usize, usize)> {
    let inner = line.strip_prefix("@@ -")?.strip_suffix(" @@")?;
    let (old, new) = inner.split_once(" +")?;
    let (a, zero) = old.split_once(',')?;
    if zero != "0" {
        return None;
    }
    let (c, k) = match new.split_once(',') {
        Some((c, k)) => (c.parse().ok()?, k.parse().ok()?),
        None => (new.parse().ok()?, 1),
    };
    Some((a.parse().ok()?, c, k))
}

/// Applies insertion-only edits to an empty file and returns the text. Every hunk must insert
/// exactly its declared lines at a row consistent with its old-file position.
///
/// # Errors
/// On a line that is not a header or an inserted line, or a hunk that does not fit.
pub fn replay<S: AsRef<str>>(edits: &[S]) -> Result<String, ReplayError> {
    let mut file: Vec<String> = Vec::new();
    for (e, edit) in edits.iter().enumerate() {
        let edit = edit.as_ref();
        if edit.is_empty() {
            continue;
        }
        let body: Vec<&str> = edit.split('\n').collect();
        let mut inserted_here = 0usize;
        let mut previous: Option<usize> = None;
        let mut l = 0;
        while l < body.len() {
            let header = body[l];
            let Some((a, c, k)) = parse_header(header) else {
                return Err(ReplayError::Malformed {
                    edit: e + 1,
                    line: l + 1,
                    found: header.to_string(),
                });
            };
            let mismatch = |why: String| ReplayError::Mismatch {
                edit: e + 1,
                header: header.to_string(),
                why,
            };
            if previous.is_some_and(|p| a <= p) {
                return Err(mismatch("comes before the hunk above it".to_string()));
            }
            previous = Some(a);
            if c == 0 || a.checked_add(inserted_here) != Some(c - 1) || c - 1 > file.len() {
                return Err(mismatch(format!(
                    "does not fit: {} lines in the file, {inserted_here} inserted by this edit before it",
                    file.len()
                )));
            }
            let new: Vec<&str> = body[l + 1..]
                .iter()
                .take_while(|x| x.starts_with('+'))
                .map(|x| &x[1..])
                .collect();
            if new.len() != k {
                return Err(mismatch(format!("declares {k} lines and has {}", new.len())));
            }
            let at = c - 1;
            file.splice(at..at, new.iter().map(|s| s.to_string()));
            inserted_here += k;
            l += 1 + k;
        }
    }
    Ok(file.join("\n"))
}

/// The reference's training text after the instruction: `\n<|diff|>` before each edit and twice
/// after the last (the end marker).
pub fn training_text<S: AsRef<str>>(edits: &[S]) -> String {
    let mut out = String::new();
    for e in edits {
        out.push('\n');
        out.push_str(DIFF_TOKEN);
        out.push_str(e.as_ref());
    }
    out.push('\n');
    out.push_str(DIFF_TOKEN);
    out.push('\n');
    out.push_str(DIFF_TOKEN);
    out
}

/// The edits of a training text or a model's completion (the inverse of [`training_text`]):
/// pieces between `\n<|diff|>` markers, empty pieces left out.
pub fn split_edits(text: &str) -> Vec<&str> {
    text.split(&format!("\n{DIFF_TOKEN}"))
        .skip(1)
        .filter(|e| !e.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_match_the_reference_format() {
        // The reference's own output for this program (research notes §2.2), seed 0; its first
        // entry `""` is the empty edit pylintseq and we drop.
        let program = "import math\n\n\ndef circle_area(r):\n    if r < 0:\n        raise ValueError(\"negative radius\")\n    return math.pi * r ** 2\n\n\nprint(circle_area(2.0))";
        let lines: Vec<&str> = program.split('\n').collect();
        // Backward: the `raise` and its `if` (4, 5), then the def with its body and trailing
        // blank lines (3, 6, 7, 8) and the now-undefined print (9), then the import (0).
        let chunks = vec![vec![4, 5], vec![3, 6, 7, 8, 9], vec![0]];
        let edits = forward_edits(&lines, &chunks);
        assert_eq!(
            edits,
            vec![
                "@@ -0,0 +1 @@\n+import math".to_string(),
                "@@ -1,0 +2,7 @@\n+\n+\n+def circle_area(r):\n+    return math.pi * r ** 2\n+\n+\n+print(circle_area(2.0))".to_string(),
                "@@ -4,0 +5,2 @@\n+    if r < 0:\n+        raise ValueError(\"negative radius\")".to_string(),
            ]
        );
        assert_eq!(replay(&edits).unwrap(), program);
    }

    #[test]
    fn separate_runs_get_separate_hunks() {
        let lines = ["a", "b", "c", "d", "e"];
        let edits = forward_edits(&lines, &[vec![1, 3], vec![0, 2, 4]]);
        assert_eq!(
            edits,
            vec!["@@ -0,0 +1,3 @@\n+a\n+c\n+e", "@@ -1,0 +2 @@\n+b\n@@ -2,0 +4 @@\n+d"]
        );
        assert_eq!(replay(&edits).unwrap(), "a\nb\nc\nd\ne");
    }

    #[test]
    fn leftover_comments_form_the_first_edit_and_blank_ends_are_trimmed() {
        let lines = ["# header", "", "x = 1", ""];
        let edits = forward_edits(&lines, &[vec![2]]);
        assert_eq!(edits, vec!["@@ -0,0 +1 @@\n+# header", "@@ -1,0 +2,2 @@\n+\n+x = 1"]);
        assert_eq!(replay(&edits).unwrap(), trimmed("# header\n\nx = 1\n"));
        // Only blank lines left: no empty first edit.
        let lines = ["", "x = 1", ""];
        assert_eq!(forward_edits(&lines, &[vec![1]]), vec!["@@ -0,0 +1 @@\n+x = 1"]);
    }

    #[test]
    fn replay_refuses_what_is_not_an_insertion() {
        assert!(matches!(
            replay(&["@@ -0,0 +1 @@\n-x"]),
            Err(ReplayError::Mismatch { .. })
        ));
        assert!(matches!(
            replay(&["@@ -1,1 +1 @@\n+x"]),
            Err(ReplayError::Malformed { .. })
        ));
        assert!(matches!(
            replay(&["@@ -0,0 +3 @@\n+x"]),
            Err(ReplayError::Mismatch { .. })
        ));
        assert!(matches!(
            replay(&["@@ -0,0 +1,2 @@\n+x"]),
            Err(ReplayError::Mismatch { .. })
        ));
        assert!(matches!(replay(&["hello"]), Err(ReplayError::Malformed { .. })));
        // Hunks of one edit go top to bottom; huge numbers are refused, not overflowed.
        assert!(matches!(
            replay(&["@@ -0,0 +1 @@\n+a", "@@ -1,0 +2 @@\n+c\n@@ -0,0 +1 @@\n+b"]),
            Err(ReplayError::Mismatch { .. })
        ));
        let huge = format!("@@ -{},0 +1 @@\n+x", usize::MAX);
        assert!(matches!(replay(&[huge]), Err(ReplayError::Mismatch { .. })));
    }

    #[test]
    fn training_text_round_trips() {
        let edits = vec!["@@ -0,0 +1 @@\n+a", "@@ -1,0 +2 @@\n+b"];
        let text = training_text(&edits);
        assert_eq!(
            text,
            "\n<|diff|>@@ -0,0 +1 @@\n+a\n<|diff|>@@ -1,0 +2 @@\n+b\n<|diff|>\n<|diff|>"
        );
        assert_eq!(split_edits(&text), edits);
    }
}

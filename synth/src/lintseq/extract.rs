//! Code from an instruction-tuning response, as the reference takes it
//! (`src/utils.py::strip_chain_of_thought`): the contents of every fenced block tagged with the
//! language, joined by a newline and trimmed; the whole response when there is no such block.
//!
//! Choices where the reference is loose: a fence matches when its info string (the text after
//! the backticks, lowercased, up to the first space) is one of the language's tags (the
//! reference matches the prefix "```python", so "```python3" leaves a stray "3"); trimming removes
//! blank lines at both ends and trailing whitespace, not the first line's indentation.

use super::Language;

/// The code of `response` for `lang` (see the module docs).
pub fn code_of(response: &str, lang: &dyn Language) -> String {
    let mut blocks: Vec<&str> = Vec::new();
    let mut rest = response;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let (info, body) = after.split_once('\n').unwrap_or((after, ""));
        let tag = info.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        let Some(close) = body.find("```") else { break };
        if lang.fence_tags().contains(&tag.as_str()) {
            blocks.push(&body[..close]);
        }
        rest = &body[close + 3..];
    }
    let code = if blocks.is_empty() {
        response.to_string()
    } else {
        blocks.join("\n")
    };
    let code = code.trim_end();
    let start = code
        .split('\n')
        .take_while(|l| l.trim().is_empty())
        .map(|l| l.len() + 1)
        .sum::<usize>();
    code[start.min(code.len())..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lintseq::lang::python::Python;

    #[test]
    fn fenced_blocks_of_the_language_are_joined() {
        let r = "Here is the code:\n```python\n\ndef f():\n    return 1\n```\nand a test:\n```py\nassert f() == 1\n```\n```bash\nls\n```\n";
        assert_eq!(code_of(r, &Python), "def f():\n    return 1\n\nassert f() == 1");
    }

    #[test]
    fn a_response_without_blocks_is_taken_whole() {
        assert_eq!(code_of("x = 1\n\n", &Python), "x = 1");
        assert_eq!(
            code_of("```rust\nfn main() {}\n```", &Python),
            "```rust\nfn main() {}\n```"
        );
    }
}

//! Multiverse traces as attention structure: the 12 control tags, and the segment graph that turns
//! a tagged trace into `segment_ids`, `segment_parents` and `position_ids` of a `tokens` row.
//!
//! Follows the rules of the reference's `train/utils.py` (`generate_multiverse_attention_mask`,
//! `generate_multiverse_position_ids`; see ../shared/research/multiverse.md §3) in a compact form:
//! instead of a dense `T × T` mask, a trace is cut into segments at `<Path>` and `<Conclusion>` tags,
//! and each segment lists the segments it may see (its parents, transitively):
//!
//! - the text before a block, its `<Parallel>`, `<Goal>` and outlines stay in the current segment;
//! - each `<Path>` starts a segment whose parent is that segment, so every path sees the shared
//!   prefix and no sibling;
//! - `<Conclusion>` starts a segment whose parents are the prefix and the last segment of every path,
//!   so it, and everything after `</Parallel>` (which stays in it), sees all paths;
//! - nesting composes: a block inside a path cuts that path into more segments the same way.
//!
//! Query `q` sees key `k` iff `k ≤ q` and `seg(k)` is `seg(q)` or one of its ancestors. A plain
//! document is one segment without parents, so packing is the special case of no parents.
//!
//! Positions: a segment without parents starts at 0; any other starts one past the largest last
//! position among its parents. So every path restarts right after the shared prefix and the
//! Conclusion starts one past the longest path, as in the reference, nesting included.
//!
//! One deliberate difference from the reference: the whitespace between `</Path>` and the next
//! `<Path>` (or `<Conclusion>`) belongs to the preceding path's segment. In the reference that
//! newline lies outside every path span, so the next path attends to it while it has attended to the
//! previous path: a leak between siblings. Here it cannot happen. (Positions differ from the
//! reference only by those separator tokens, which now count toward their path's length.)

use std::ops::Range;

use crate::error::{DataError, Result};

/// The 12 control tags, in the order the reference adds them to the tokenizer.
pub const TAGS: [&str; 12] = [
    "<Think>",
    "</Think>",
    "<Parallel>",
    "</Parallel>",
    "<Goal>",
    "</Goal>",
    "<Outline>",
    "</Outline>",
    "<Path>",
    "</Path>",
    "<Conclusion>",
    "</Conclusion>",
];

/// What a tag is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagName {
    /// `<Think>`: the whole reasoning.
    Think,
    /// `<Parallel>`: a block of independent paths.
    Parallel,
    /// `<Goal>`: the outlines of a block.
    Goal,
    /// `<Outline>`: what one path will do.
    Outline,
    /// `<Path>`: one independent line of reasoning.
    Path,
    /// `<Conclusion>`: what the paths add up to.
    Conclusion,
}

impl TagName {
    /// The name inside the angle brackets.
    pub fn as_str(self) -> &'static str {
        match self {
            TagName::Think => "Think",
            TagName::Parallel => "Parallel",
            TagName::Goal => "Goal",
            TagName::Outline => "Outline",
            TagName::Path => "Path",
            TagName::Conclusion => "Conclusion",
        }
    }

    const ALL: [TagName; 6] = [
        TagName::Think,
        TagName::Parallel,
        TagName::Goal,
        TagName::Outline,
        TagName::Path,
        TagName::Conclusion,
    ];
}

/// One control tag found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// Which tag.
    pub name: TagName,
    /// `</...>` rather than `<...>`.
    pub close: bool,
    /// Its bytes in the text.
    pub span: Range<usize>,
}

/// Every control tag in `text`, in order. Anything else (`a < b`, `<div>`) is text.
pub fn lex(text: &str) -> Vec<Tag> {
    let bytes = text.as_bytes();
    let mut tags = Vec::new();
    let mut i = 0;
    while let Some(off) = text[i..].find('<') {
        let start = i + off;
        let rest = &text[start + 1..];
        let (close, body) = match rest.strip_prefix('/') {
            Some(b) => (true, b),
            None => (false, rest),
        };
        let found = TagName::ALL
            .into_iter()
            .find(|n| body.starts_with(n.as_str()) && body.as_bytes().get(n.as_str().len()) == Some(&b'>'));
        match found {
            Some(name) => {
                let end = start + 1 + usize::from(close) + name.as_str().len() + 1;
                debug_assert_eq!(bytes[end - 1], b'>');
                tags.push(Tag {
                    name,
                    close,
                    span: start..end,
                });
                i = end;
            }
            None => i = start + 1,
        }
    }
    tags
}

/// A trace cut into segments: `starts[s]` is the byte where segment `s` begins (segment 0 at 0),
/// `parents[s]` the segments it sees directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// Byte offset where each segment begins, increasing.
    pub starts: Vec<usize>,
    /// Direct parents of each segment (always earlier segments).
    pub parents: Vec<Vec<u32>>,
}

impl Segments {
    /// The segment holding byte `offset`.
    pub fn at(&self, offset: usize) -> u32 {
        (self.starts.partition_point(|&s| s <= offset).max(1) - 1) as u32
    }
}

/// Cuts `text` into segments at its `<Path>` and `<Conclusion>` tags (see the module docs).
///
/// # Errors
/// When the tags do not nest as blocks (`<Path>` or `<Conclusion>` outside a `<Parallel>`, a
/// `</Parallel>` without its `<Parallel>` or before its `<Conclusion>`, unclosed blocks), naming
/// the byte offset. The full grammar is checked by the synthesizer's validator; this is what
/// the attention structure needs.
pub fn segment(text: &str) -> Result<Segments> {
    struct Block {
        prefix: u32,
        path_ends: Vec<u32>,
        in_path: bool,
        concluded: bool,
    }
    let bad = |at: usize, what: &str| Err(DataError::Invalid(format!("multiverse trace, byte {at}: {what}")));
    let mut seg = Segments {
        starts: vec![0],
        parents: vec![Vec::new()],
    };
    let mut current = 0u32;
    let mut blocks: Vec<Block> = Vec::new();
    let new_segment = |seg: &mut Segments, at: usize, parents: Vec<u32>| -> u32 {
        seg.starts.push(at);
        seg.parents.push(parents);
        (seg.starts.len() - 1) as u32
    };
    for tag in lex(text) {
        let at = tag.span.start;
        match (tag.name, tag.close) {
            (TagName::Parallel, false) => {
                if blocks.last().is_some_and(|b| !b.in_path) {
                    return bad(at, "<Parallel> directly inside a <Parallel> block (outside its paths)");
                }
                blocks.push(Block {
                    prefix: current,
                    path_ends: Vec::new(),
                    in_path: false,
                    concluded: false,
                });
            }
            (TagName::Path, false) => {
                let Some(b) = blocks.last_mut() else {
                    return bad(at, "<Path> outside a <Parallel> block");
                };
                if b.concluded {
                    return bad(at, "<Path> after the block's <Conclusion>");
                }
                if b.in_path {
                    return bad(at, "<Path> inside an unclosed <Path>");
                }
                b.in_path = true;
                current = new_segment(&mut seg, at, vec![b.prefix]);
            }
            (TagName::Path, true) => {
                let Some(b) = blocks.last_mut() else {
                    return bad(at, "</Path> outside a <Parallel> block");
                };
                if !b.in_path {
                    return bad(at, "</Path> without its <Path>");
                }
                b.path_ends.push(current);
                b.in_path = false;
            }
            (TagName::Conclusion, false) => {
                let Some(b) = blocks.last_mut() else {
                    return bad(at, "<Conclusion> outside a <Parallel> block");
                };
                if b.in_path {
                    return bad(at, "<Conclusion> inside an unclosed <Path>");
                }
                if b.path_ends.is_empty() {
                    return bad(at, "<Conclusion> of a block without paths");
                }
                b.concluded = true;
                let parents = std::iter::once(b.prefix).chain(b.path_ends.iter().copied()).collect();
                current = new_segment(&mut seg, at, parents);
            }
            (TagName::Parallel, true) => {
                let Some(b) = blocks.pop() else {
                    return bad(at, "</Parallel> without its <Parallel>");
                };
                if !b.concluded {
                    return bad(at, "</Parallel> before the block's <Conclusion>");
                }
                // The conclusion segment continues the enclosing path (or the trunk).
            }
            _ => {}
        }
    }
    if !blocks.is_empty() {
        return bad(text.len(), "a <Parallel> block is not closed");
    }
    Ok(seg)
}

/// Position ids of tokens whose segments are `segment_ids` (local to one document, increasing in
/// first appearance) under `parents` (see the module docs).
pub fn positions(segment_ids: &[u32], parents: &[Vec<u32>]) -> Vec<i32> {
    let mut last: Vec<Option<i32>> = vec![None; parents.len()];
    let mut out = Vec::with_capacity(segment_ids.len());
    for &s in segment_ids {
        let s = s as usize;
        let p = match last[s] {
            Some(p) => p + 1,
            None => parents[s]
                .iter()
                .filter_map(|&q| last[q as usize])
                .max()
                .map_or(0, |m| m + 1),
        };
        last[s] = Some(p);
        out.push(p);
    }
    out
}

/// `visible[q][k]`: segment `q` may see segment `k` (itself and its ancestors).
pub fn visibility(parents: &[Vec<u32>]) -> Vec<Vec<bool>> {
    let n = parents.len();
    let mut vis = vec![vec![false; n]; n];
    for s in 0..n {
        vis[s][s] = true;
        for &p in &parents[s] {
            let p = p as usize;
            // Parents come first, so their rows are complete.
            let row = vis[p].clone();
            for (k, seen) in row.into_iter().enumerate() {
                vis[s][k] |= seen;
            }
        }
    }
    vis
}

/// The dense mask of a row: `mask[q][k]` is true when token `q` may attend to token `k`
/// (`k ≤ q` and `seg(k)` visible from `seg(q)`). For tests and debugging; training builds it per
/// batch and never stores it.
pub fn dense_mask(segment_ids: &[i32], parents: &[Vec<i32>]) -> Vec<Vec<bool>> {
    let n = segment_ids
        .iter()
        .map(|&s| s as usize + 1)
        .max()
        .unwrap_or(0)
        .max(parents.len());
    let as_u32: Vec<Vec<u32>> = (0..n)
        .map(|s| {
            parents
                .get(s)
                .map(|p| p.iter().map(|&x| x as u32).collect())
                .unwrap_or_default()
        })
        .collect();
    let vis = visibility(&as_u32);
    let t = segment_ids.len();
    (0..t)
        .map(|q| {
            (0..t)
                .map(|k| k <= q && vis[segment_ids[q] as usize][segment_ids[k] as usize])
                .collect()
        })
        .collect()
}

/// Direct re-implementations of the reference's dense mask and position rules
/// (`generate_multiverse_attention_mask`, `generate_multiverse_position_ids` in `train/utils.py`,
/// as ../shared/research/multiverse.md §3 states them), over token strings. They exist to check
/// the compact encoding against (tests, `firebrand data debug`-style audits), materialise `T × T`,
/// and panic on unbalanced tags; never use them for training.
pub mod reference {
    /// The reference's mask over token strings (each tag one token): causal, minus every pair of tokens in different sibling path spans
    /// (`<Path>` through `</Path>`). With `extend_spans`, a span also takes the tokens after its
    /// `</Path>` up to the next `<Path>` or `<Conclusion>` (our placement of separators).
    pub fn mask<S: AsRef<str>>(tokens: &[S], extend_spans: bool) -> Vec<Vec<bool>> {
        let tokens: Vec<&str> = tokens.iter().map(AsRef::as_ref).collect();
        let l = tokens.len();
        let mut mask: Vec<Vec<bool>> = (0..l).map(|q| (0..l).map(|k| k <= q).collect()).collect();
        enum Frame {
            Par(Vec<(usize, usize)>),
            Path(usize),
        }
        let mut stack: Vec<Frame> = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            match *t {
                "<Parallel>" => stack.push(Frame::Par(Vec::new())),
                "<Path>" => stack.push(Frame::Path(i)),
                "</Path>" => {
                    let Some(Frame::Path(start)) = stack.pop() else {
                        panic!("unbalanced")
                    };
                    let mut end = i + 1;
                    if extend_spans {
                        while end < l && tokens[end] != "<Path>" && tokens[end] != "<Conclusion>" {
                            end += 1;
                        }
                    }
                    match stack.last_mut() {
                        Some(Frame::Par(spans)) => spans.push((start, end)),
                        _ => panic!("path outside a block"),
                    }
                }
                "</Parallel>" => {
                    let Some(Frame::Par(spans)) = stack.pop() else {
                        panic!("unbalanced")
                    };
                    for (a, sa) in spans.iter().enumerate() {
                        for (c, sc) in spans.iter().enumerate() {
                            if a != c {
                                for row in &mut mask[sa.0..sa.1] {
                                    row[sc.0..sc.1].fill(false);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(stack.is_empty(), "unclosed blocks");
        mask
    }

    /// The reference's position ids (suffix shifts at `<Path>` and `<Conclusion>`).
    pub fn positions<S: AsRef<str>>(tokens: &[S]) -> Vec<i32> {
        let tokens: Vec<&str> = tokens.iter().map(AsRef::as_ref).collect();
        let mut pos: Vec<i32> = (0..tokens.len() as i32).collect();
        let mut stack: Vec<(i32, i32)> = Vec::new(); // (goal_end, max_len)
        for (i, t) in tokens.iter().enumerate() {
            let shift = |pos: &mut Vec<i32>, to: i32| {
                let d = to - pos[i];
                pos[i..].iter_mut().for_each(|p| *p += d);
            };
            match *t {
                "<Parallel>" => stack.push((-1, 0)),
                "</Goal>" => stack.last_mut().expect("</Goal> inside a block").0 = pos[i],
                "<Path>" => {
                    let goal_end = stack.last().expect("<Path> inside a block").0;
                    shift(&mut pos, goal_end + 1);
                }
                "</Path>" => {
                    let top = stack.last_mut().expect("</Path> inside a block");
                    top.1 = top.1.max(pos[i] - top.0);
                }
                "<Conclusion>" => {
                    let (goal_end, max_len) = *stack.last().expect("<Conclusion> inside a block");
                    shift(&mut pos, goal_end + max_len + 1);
                }
                "</Parallel>" => {
                    stack.pop();
                }
                _ => {}
            }
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lex_finds_only_control_tags() {
        let tags = lex("<Think>a < b and <b>x</b> <Path></Path> <Pathway></Think>");
        let names: Vec<(TagName, bool)> = tags.iter().map(|t| (t.name, t.close)).collect();
        assert_eq!(
            names,
            vec![
                (TagName::Think, false),
                (TagName::Path, false),
                (TagName::Path, true),
                (TagName::Think, true)
            ]
        );
        assert_eq!(tags[1].span, 26..32);
    }

    #[test]
    fn a_block_sees_prefix_siblings_are_blind_and_the_conclusion_sees_all() {
        let text = "<Think>p<Parallel><Goal>g</Goal><Path>a</Path>\n<Path>b</Path>\n<Conclusion>c</Conclusion></Parallel>e</Think>";
        let s = segment(text).unwrap();
        assert_eq!(s.parents, vec![vec![], vec![0], vec![0], vec![0, 1, 2]]);
        // The newline after the first </Path> belongs to the first path.
        let nl = text.find("</Path>\n").unwrap() + "</Path>".len();
        assert_eq!(s.at(nl), 1);
        assert_eq!(s.at(text.rfind("e</Think>").unwrap()), 3);
        let vis = visibility(&s.parents);
        assert!(vis[1][0] && !vis[1][2] && !vis[2][1] && vis[3][1] && vis[3][2] && vis[3][0]);
    }

    #[test]
    fn positions_restart_per_path_and_the_conclusion_follows_the_longest() {
        // prefix: 3 tokens (0..=2); path 1: 4 tokens; path 2: 2 tokens; conclusion.
        let segs = [0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3];
        let parents = vec![vec![], vec![0], vec![0], vec![0, 1, 2]];
        assert_eq!(positions(&segs, &parents), vec![0, 1, 2, 3, 4, 5, 6, 3, 4, 7, 8]);
    }

    #[test]
    fn malformed_blocks_are_errors_with_offsets() {
        for (text, what) in [
            ("<Path>x</Path>", "<Path> outside a <Parallel> block"),
            (
                "<Parallel><Path>x</Path></Parallel>",
                "</Parallel> before the block's <Conclusion>",
            ),
            (
                "<Parallel><Conclusion>c</Conclusion></Parallel>",
                "<Conclusion> of a block without paths",
            ),
            (
                "<Parallel><Path>x</Path><Conclusion>",
                "a <Parallel> block is not closed",
            ),
            ("x</Parallel>", "byte 1: </Parallel> without its <Parallel>"),
            (
                "<Parallel><Path>a</Path><Path>b<Conclusion>c</Conclusion></Parallel>",
                "<Conclusion> inside an unclosed <Path>",
            ),
            ("<Parallel><Path>a<Path>b</Path>", "<Path> inside an unclosed <Path>"),
            ("<Parallel><Parallel>", "<Parallel> directly inside a <Parallel> block"),
        ] {
            let err = segment(text).unwrap_err().to_string();
            assert!(err.contains(what), "{text}: {err}");
        }
    }
}

//! Packing tokenized documents into rows of a fixed capacity.
//!
//! Best-fit decreasing: documents in order of decreasing length (ties by input order, so the
//! result is deterministic), each into the open row with the least room that still fits it, a new
//! row when none does. With a sorted map of rows by free room this is O(n log n). Every document
//! keeps its tokens and loss-mask bits; its position ids restart at 0 and it gets its own segment
//! id, so attention (which never crosses segments) sees each document alone. A Multiverse document
//! brings several segments and their parents, renumbered after the row's earlier segments.
//!
//! Packing runs over windows of documents (`window` in [`pack`]) so that memory stays bounded on
//! large datasets; a window of a few thousand documents loses little fill against packing all.

use std::collections::BTreeMap;

use crate::records::TokensRow;

/// One tokenized document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Doc {
    /// Token ids.
    pub ids: Vec<i32>,
    /// Loss mask, one bit per token.
    pub mask: Vec<bool>,
    /// Id of the source row.
    pub source_id: String,
    /// Multiverse structure, when the document has one; plain documents are one segment.
    pub structure: Option<Structure>,
}

/// A document cut into segments with parents (see `multiverse.rs`), local to the document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Structure {
    /// Segment of each token, from 0.
    pub segments: Vec<u32>,
    /// Direct parents of each segment.
    pub parents: Vec<Vec<u32>>,
    /// Position of each token.
    pub positions: Vec<i32>,
}

impl Doc {
    /// Keeps the first `n` tokens.
    pub fn truncate(&mut self, n: usize) {
        self.ids.truncate(n);
        self.mask.truncate(n);
        if let Some(s) = &mut self.structure {
            s.segments.truncate(n);
            s.positions.truncate(n);
            // Segments are numbered by first appearance, so the ones cut away are the last.
            let kept = s.segments.iter().map(|&x| x as usize + 1).max().unwrap_or(0);
            s.parents.truncate(kept);
        }
    }
}

/// Appends `doc` to `row` as its next document(s), numbering its segments after the row's.
fn append(row: &mut TokensRow, doc: Doc) {
    let base = row.segment_ids.iter().map(|&s| s + 1).max().unwrap_or(0);
    let n = doc.ids.len();
    match doc.structure {
        None => {
            row.position_ids.extend(0..n as i32);
            row.segment_ids.extend(std::iter::repeat_n(base, n));
            if row.has_parents() {
                row.segment_parents.push(Vec::new());
            }
        }
        Some(s) => {
            // Materialise an entry per earlier segment, then this document's, offset.
            row.segment_parents.resize(base as usize, Vec::new());
            row.position_ids.extend(s.positions);
            row.segment_ids.extend(s.segments.iter().map(|&x| base + x as i32));
            row.segment_parents.extend(
                s.parents
                    .iter()
                    .map(|p| p.iter().map(|&x| base + x as i32).collect::<Vec<_>>()),
            );
        }
    }
    row.input_ids.extend(doc.ids);
    row.loss_mask.extend(doc.mask);
    row.source_ids.push(doc.source_id);
}

fn empty_row() -> TokensRow {
    TokensRow {
        input_ids: Vec::new(),
        loss_mask: Vec::new(),
        position_ids: Vec::new(),
        segment_ids: Vec::new(),
        segment_parents: Vec::new(),
        source_ids: Vec::new(),
    }
}

/// Assigns documents of the given lengths to bins of `capacity`; returns each bin's document
/// indices in ascending order. Every length must be at most `capacity`.
///
/// # Panics
/// When a length exceeds `capacity` (callers truncate or drop such documents first).
pub fn best_fit_decreasing(lengths: &[usize], capacity: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let mut bins: Vec<Vec<usize>> = Vec::new();
    // free room -> bins with that much room (a stack, so the choice is deterministic)
    let mut by_room: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in order {
        let len = lengths[i];
        assert!(
            len <= capacity,
            "document of {len} tokens exceeds the row capacity {capacity}"
        );
        let fit = by_room.range(len..).next().map(|(&room, _)| room);
        let (bin, room) = match fit {
            Some(room) => {
                let stack = by_room.get_mut(&room).expect("key from range");
                let bin = stack.pop().expect("stacks in the map are never empty");
                if stack.is_empty() {
                    by_room.remove(&room);
                }
                (bin, room)
            }
            None => {
                bins.push(Vec::new());
                (bins.len() - 1, capacity)
            }
        };
        bins[bin].push(i);
        let left = room - len;
        if left > 0 {
            by_room.entry(left).or_default().push(bin);
        }
    }
    for bin in &mut bins {
        bin.sort_unstable();
    }
    bins
}

/// One row holding one document.
pub fn single(doc: Doc) -> TokensRow {
    let mut row = empty_row();
    append(&mut row, doc);
    row
}

/// Packs documents into rows of at most `capacity` tokens, `window` documents at a time.
pub fn pack(docs: Vec<Doc>, capacity: usize, window: usize) -> Vec<TokensRow> {
    let mut rows = Vec::new();
    let mut docs = docs.into_iter().peekable();
    while docs.peek().is_some() {
        let chunk: Vec<Doc> = docs.by_ref().take(window.max(1)).collect();
        let lengths: Vec<usize> = chunk.iter().map(|d| d.ids.len()).collect();
        let bins = best_fit_decreasing(&lengths, capacity);
        let mut slots: Vec<Option<Doc>> = chunk.into_iter().map(Some).collect();
        for bin in bins {
            let mut row = empty_row();
            for i in bin {
                append(&mut row, slots[i].take().expect("each document is in one bin"));
            }
            rows.push(row);
        }
    }
    rows
}

/// Dense attention mask of a row: `allowed[q][k]` when query `q` may attend to key `k` (causal,
/// within its segment or the segments it sees). For tests and debugging; trainers never store it.
pub fn dense_mask(row: &TokensRow) -> Vec<Vec<bool>> {
    crate::multiverse::dense_mask(&row.segment_ids, &row.segment_parents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(len: usize, tag: i32) -> Doc {
        Doc {
            ids: (0..len as i32).map(|i| tag * 1000 + i).collect(),
            mask: (0..len).map(|i| (i + tag as usize).is_multiple_of(3)).collect(),
            source_id: format!("d{tag}"),
            structure: None,
        }
    }

    #[test]
    fn a_multiverse_document_keeps_its_segments_and_parents_after_a_plain_one() {
        let plain = doc(3, 1);
        let mv = Doc {
            ids: vec![1, 2, 3, 4, 5],
            mask: vec![true; 5],
            source_id: "mv".into(),
            structure: Some(Structure {
                segments: vec![0, 1, 1, 2, 3],
                parents: vec![vec![], vec![0], vec![0], vec![0, 1, 2]],
                positions: vec![0, 1, 2, 1, 3],
            }),
        };
        let mut row = single(plain.clone());
        append(&mut row, mv);
        append(&mut row, plain);
        assert_eq!(row.segment_ids, vec![0, 0, 0, 1, 2, 2, 3, 4, 5, 5, 5]);
        assert_eq!(
            row.segment_parents,
            vec![vec![], vec![], vec![1], vec![1], vec![1, 2, 3], vec![]]
        );
        assert_eq!(row.position_ids, vec![0, 1, 2, 0, 1, 2, 1, 3, 0, 1, 2]);
        let m = dense_mask(&row);
        assert!(!m[3][2], "documents stay apart");
        assert!(
            m[5][3] && !m[6][5] && m[7][5] && m[7][6],
            "paths see the prefix, the join sees all"
        );
        assert!(!m[8][7], "the next plain document sees nothing before it");
    }

    #[test]
    fn best_fit_fills_the_tightest_bin() {
        // 6, 5 and 4 open three rows (room 2, 3, 4); 3 takes the room-3 row, the 2s the rooms 2 and 4.
        let bins = best_fit_decreasing(&[6, 5, 4, 3, 2, 2], 8);
        assert_eq!(bins, vec![vec![0, 4], vec![1, 3], vec![2, 5]]);
    }

    proptest! {
        #[test]
        fn packing_keeps_every_token_and_mask_bit_and_isolates_segments(
            lens in proptest::collection::vec(1usize..40, 1..60),
            capacity in 40usize..100,
            window in 1usize..80,
        ) {
            let docs: Vec<Doc> = lens.iter().enumerate().map(|(i, &l)| doc(l, i as i32)).collect();
            let rows = pack(docs.clone(), capacity, window);
            let mut seen = Vec::new();
            for row in &rows {
                prop_assert!(row.input_ids.len() <= capacity);
                prop_assert_eq!(row.input_ids.len(), row.loss_mask.len());
                prop_assert_eq!(row.segment_ids.len(), row.input_ids.len());
                // each segment is one document, whole, with positions from 0
                for (s, source) in row.source_ids.iter().enumerate() {
                    let idx: Vec<usize> = (0..row.input_ids.len()).filter(|&t| row.segment_ids[t] == s as i32).collect();
                    let d = docs.iter().find(|d| &d.source_id == source).unwrap();
                    prop_assert_eq!(idx.iter().map(|&t| row.input_ids[t]).collect::<Vec<_>>(), d.ids.clone());
                    prop_assert_eq!(idx.iter().map(|&t| row.loss_mask[t]).collect::<Vec<_>>(), d.mask.clone());
                    prop_assert_eq!(idx.iter().map(|&t| row.position_ids[t]).collect::<Vec<_>>(), (0..d.ids.len() as i32).collect::<Vec<_>>());
                    seen.push(source.clone());
                }
                // no query sees a key of another segment
                let mask = dense_mask(row);
                for (q, keys) in mask.iter().enumerate() {
                    for (k, &allowed) in keys.iter().enumerate() {
                        if allowed {
                            prop_assert_eq!(row.segment_ids[q], row.segment_ids[k]);
                        }
                    }
                }
            }
            seen.sort();
            let mut all: Vec<String> = docs.iter().map(|d| d.source_id.clone()).collect();
            all.sort();
            prop_assert_eq!(seen, all);
        }
    }
}

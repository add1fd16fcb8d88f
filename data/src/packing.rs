//! Packing tokenized documents into rows of a fixed capacity.
//!
//! Best-fit decreasing: documents in order of decreasing length (ties by input order, so the
//! result is deterministic), each into the open row with the least room that still fits it, a new
//! row when none does. With a sorted map of rows by free room this is O(n log n). Every document
//! keeps its tokens and loss-mask bits; its position ids restart at 0 and it gets its own segment
//! id, so attention (which never crosses segments) sees each document alone.
//!
//! Packing runs over windows of documents (`window` in [`pack`]) so that memory stays bounded on
//! large datasets; a window of a few thousand documents loses little fill against packing all.

use std::collections::BTreeMap;

use crate::records::TokensRow;

/// One tokenized document.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Token ids.
    pub ids: Vec<i32>,
    /// Loss mask, one bit per token.
    pub mask: Vec<bool>,
    /// Id of the source row.
    pub source_id: String,
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
    let n = doc.ids.len();
    TokensRow {
        position_ids: (0..n as i32).collect(),
        segment_ids: vec![0; n],
        input_ids: doc.ids,
        loss_mask: doc.mask,
        source_ids: vec![doc.source_id],
    }
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
            let mut row = TokensRow {
                input_ids: Vec::new(),
                loss_mask: Vec::new(),
                position_ids: Vec::new(),
                segment_ids: Vec::new(),
                source_ids: Vec::new(),
            };
            for (segment, i) in bin.into_iter().enumerate() {
                let doc = slots[i].take().expect("each document is in one bin");
                row.position_ids.extend(0..doc.ids.len() as i32);
                row.segment_ids
                    .extend(std::iter::repeat_n(segment as i32, doc.ids.len()));
                row.input_ids.extend(doc.ids);
                row.loss_mask.extend(doc.mask);
                row.source_ids.push(doc.source_id);
            }
            rows.push(row);
        }
    }
    rows
}

/// Dense attention mask of a row: `allowed[q][k]` when query `q` may attend to key `k`
/// (causal within its segment). For tests and debugging; trainers build masks from segment ids.
pub fn dense_mask(row: &TokensRow) -> Vec<Vec<bool>> {
    let n = row.input_ids.len();
    (0..n)
        .map(|q| {
            (0..n)
                .map(|k| k <= q && row.segment_ids[k] == row.segment_ids[q])
                .collect()
        })
        .collect()
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
        }
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

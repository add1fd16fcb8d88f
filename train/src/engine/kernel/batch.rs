//! A micro-batch as the kernel engine consumes it, prepared on the host.
//!
//! Besides ids and positions this holds what the kernels need to skip work:
//! - The sequence is padded to a multiple of 64 (the attention tile). Padding tokens form one
//!   segment of their own per row, as in the burn engine's collation, and are never targets.
//! - Segments are renumbered per row. When no row of the batch has segment parents, a key is
//!   visible to a query iff it is not later and in the same segment (packing); otherwise the batch
//!   carries a bitset table `vis[row][segment]` of the segments each segment sees (itself and its
//!   ancestors: Multiverse paths never see their siblings).
//! - Tile ranges: for each 64-query tile the first key tile any of its queries sees (`qt_kt0`),
//!   and for each key tile one past the last query tile that sees any of its keys (`kt_qt1`). With
//!   packed documents most of the causal triangle is skipped. The ranges are conservative: the
//!   kernels still mask every element inside them.
//! - Targets are gathered into a compact list of counted positions, so the vocabulary projection
//!   and its gradients run only on rows that carry loss (TRL's chunked loss skips masked
//!   positions the same way).
//! - The embedding backward is made deterministic by listing, per distinct token id, the
//!   positions that hold it (a CSR index), so one block owns each row of the table gradient.

use firebrand_data::TokensRow;

use crate::engine::api::{check_row, counted_targets};
use crate::error::TrainError;

/// The attention tile (queries and keys) of the CUDA kernels.
pub const TILE: usize = 64;

/// Rotary positions that restart at every change of segment (what packing writes).
pub fn positions(seg: &[i32]) -> Vec<i32> {
    let mut pos = Vec::with_capacity(seg.len());
    for (i, &s) in seg.iter().enumerate() {
        pos.push(if i > 0 && seg[i - 1] == s { pos[i - 1] + 1 } else { 0 });
    }
    pos
}

/// One micro-batch, ready to upload.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// Rows.
    pub batch: usize,
    /// Padded sequence length (a multiple of [`TILE`]).
    pub seq: usize,
    /// `[batch * seq]` token ids (0 in padding).
    pub ids: Vec<i32>,
    /// `[batch * seq]` rotary positions.
    pub pos: Vec<i32>,
    /// `[batch * seq]` segments, renumbered per row from 0; padding has the row's last segment.
    pub seg: Vec<i32>,
    /// `[batch * seq / 64]` first key tile of each query tile.
    pub qt_kt0: Vec<i32>,
    /// `[batch * seq / 64]` one past the last query tile of each key tile.
    pub kt_qt1: Vec<i32>,
    /// `[batch, seq / 64, full_words]` bitsets: bit `kt` of `(row, qt)` is set when every query of
    /// tile `qt` sees every key of tile `kt` (the kernels then skip the per-element mask).
    pub full: Vec<i32>,
    /// 32-bit words per row of `full`.
    pub full_words: usize,
    /// `[batch, segments, words]` visibility bitsets, when a row has segment parents.
    pub vis: Option<Vec<i32>>,
    /// Segments per row of `vis`.
    pub segments: usize,
    /// 32-bit words per bitset.
    pub words: usize,
    /// Flat positions (`row * seq + t`) whose next token is a target, in order.
    pub rows: Vec<i32>,
    /// The target of each counted position.
    pub targets: Vec<i32>,
    /// Distinct token ids of real positions, ascending.
    pub emb_tok: Vec<i32>,
    /// `emb_tok.len() + 1` offsets into `emb_pos`.
    pub emb_starts: Vec<i32>,
    /// Real positions grouped by token id.
    pub emb_pos: Vec<i32>,
    /// Tokens in the batch, padding excluded.
    pub tokens: usize,
    /// With `[localist]`: `[batch * seq]` the block of each token (padding −2) and the target
    /// block of each query (padding −1), see `crate::localist`.
    pub local: Option<(Vec<i32>, Vec<i32>)>,
    /// Tokens of each row.
    pub lens: Vec<usize>,
}

impl HostBatch {
    /// Counted targets (the loss sums over these).
    pub fn count(&self) -> usize {
        self.rows.len()
    }

    /// Builds the batch of `rows`.
    ///
    /// # Errors
    /// When a row's columns disagree in length, a row is empty, or a segment id is negative.
    pub fn new(rows: &[TokensRow]) -> Result<Self, TrainError> {
        let longest = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
        if longest < 2 {
            return Err(TrainError::Batch(
                "a micro-batch needs rows of at least 2 tokens".into(),
            ));
        }
        let seq = longest.div_ceil(TILE) * TILE;
        let tiles = seq / TILE;
        let n = rows.len() * seq;
        let mut b = HostBatch {
            batch: rows.len(),
            seq,
            ids: vec![0; n],
            pos: vec![0; n],
            seg: vec![0; n],
            qt_kt0: vec![0; rows.len() * tiles],
            kt_qt1: vec![0; rows.len() * tiles],
            full: vec![0; rows.len() * tiles * tiles.div_ceil(32)],
            full_words: tiles.div_ceil(32),
            vis: None,
            segments: 0,
            words: 0,
            rows: Vec::new(),
            targets: Vec::new(),
            emb_tok: Vec::new(),
            emb_starts: Vec::new(),
            emb_pos: Vec::new(),
            tokens: 0,
            local: None,
            lens: rows.iter().map(|r| r.input_ids.len()).collect(),
        };
        // Segments renumbered per row (in order of first appearance), padding last.
        let mut parents: Vec<Vec<Vec<u32>>> = Vec::with_capacity(rows.len());
        let multiverse = rows.iter().any(TokensRow::has_parents);
        for (r, row) in rows.iter().enumerate() {
            check_row(row)?;
            let len = row.input_ids.len();
            b.tokens += len;
            let mut map = std::collections::HashMap::new();
            let mut order: Vec<i32> = Vec::new();
            for i in 0..len {
                let s = row.segment_ids[i];
                let next = map.len() as i32;
                let id = *map.entry(s).or_insert_with(|| {
                    order.push(s);
                    next
                });
                let k = r * seq + i;
                b.ids[k] = row.input_ids[i];
                b.pos[k] = row.position_ids[i];
                b.seg[k] = id;
            }
            let pad = map.len() as i32;
            for i in len..seq {
                b.seg[r * seq + i] = pad;
            }
            for (i, target) in counted_targets(row) {
                b.rows.push((r * seq + i) as i32);
                b.targets.push(target);
            }
            if multiverse {
                // Parents in the new numbering; a parent must come before its child.
                let mut p: Vec<Vec<u32>> = order
                    .iter()
                    .map(|&s| {
                        row.parents_of(s as usize)
                            .iter()
                            .filter_map(|q| map.get(q).map(|&x| x as u32))
                            .collect()
                    })
                    .collect();
                p.push(Vec::new()); // padding
                parents.push(p);
            }
        }
        if b.rows.is_empty() {
            return Err(TrainError::Batch(
                "a micro-batch has no token to train on (every loss-mask bit is off)\n  hint: check the dataset with `firebrand data debug`; `data tokenize` drops such rows".into(),
            ));
        }
        if multiverse {
            b.segments = parents.iter().map(Vec::len).max().unwrap_or(1);
            b.words = b.segments.div_ceil(32);
            let mut vis = vec![0i32; rows.len() * b.segments * b.words];
            for (r, p) in parents.iter().enumerate() {
                // Renumbering keeps first-appearance order, in which parents precede children.
                let ordered: Vec<Vec<u32>> = p
                    .iter()
                    .enumerate()
                    .map(|(s, ps)| ps.iter().copied().filter(|&q| (q as usize) < s).collect())
                    .collect();
                let v = firebrand_data::multiverse::visibility(&ordered);
                for (s, row) in v.iter().enumerate() {
                    for (k, &seen) in row.iter().enumerate() {
                        if seen {
                            let w = &mut vis[(r * b.segments + s) * b.words + k / 32];
                            *w = (*w as u32 | (1u32 << (k % 32))) as i32;
                        }
                    }
                }
            }
            b.vis = Some(vis);
        }
        b.tile_ranges();
        b.embedding_index(rows);
        Ok(b)
    }

    /// Adds the blocks and targets of `run`'s localist dial for `rows` (those the batch was built
    /// from).
    ///
    /// # Errors
    /// When the blocks come from embeddings (`blocks = "adaptive"`), which this batch cannot read.
    pub fn with_localist(mut self, rows: &[TokensRow], run: &crate::localist::LocalistRun) -> Result<Self, TrainError> {
        if run.needs_embeddings() {
            return Err(TrainError::Config(
                "the kernel engine has no adaptive localist blocks (they read the embedding table): set localist.blocks = \"anchors\" or \"segments\", or train.kernels = \"burn\"".into(),
            ));
        }
        let blocks = run.blocks_with(rows, |_| Vec::new());
        let targets = run.targets(&blocks, rows);
        let n = self.batch * self.seq;
        let (mut block, mut target) = (vec![-2; n], vec![-1; n]);
        for (r, (b, t)) in blocks.iter().zip(&targets).enumerate() {
            block[r * self.seq..r * self.seq + b.len()].copy_from_slice(b);
            target[r * self.seq..r * self.seq + t.len()].copy_from_slice(t);
        }
        self.local = Some((block, target));
        Ok(self)
    }

    /// Whether segment `sq` sees segment `sk` in row `r`.
    pub fn sees(&self, r: usize, sq: usize, sk: usize) -> bool {
        match &self.vis {
            None => sq == sk,
            Some(v) => (v[(r * self.segments + sq) * self.words + sk / 32] as u32 >> (sk % 32)) & 1 == 1,
        }
    }

    /// Fills `qt_kt0` and `kt_qt1` from each segment's first and last position.
    fn tile_ranges(&mut self) {
        let (seq, tiles) = (self.seq, self.seq / TILE);
        for r in 0..self.batch {
            let seg = &self.seg[r * seq..(r + 1) * seq];
            let nseg = seg.iter().map(|&s| s as usize + 1).max().unwrap_or(1);
            let (mut first, mut last) = (vec![usize::MAX; nseg], vec![0usize; nseg]);
            for (i, &s) in seg.iter().enumerate() {
                let s = s as usize;
                first[s] = first[s].min(i);
                last[s] = last[s].max(i);
            }
            // Earliest key any query of segment s sees; latest query that sees a key of segment s.
            let mut earliest = vec![usize::MAX; nseg];
            let mut latest = vec![0usize; nseg];
            for sq in 0..nseg {
                for sk in 0..nseg {
                    if first[sq] != usize::MAX && first[sk] != usize::MAX && self.sees(r, sq, sk) {
                        earliest[sq] = earliest[sq].min(first[sk]);
                        latest[sk] = latest[sk].max(last[sq]);
                    }
                }
            }
            // Fully visible tile pairs: strictly below the diagonal, and every segment of the
            // query tile sees every segment of the key tile.
            let distinct = |t: usize| {
                let mut d: Vec<usize> = seg[t * TILE..(t + 1) * TILE].iter().map(|&s| s as usize).collect();
                d.sort_unstable();
                d.dedup();
                d
            };
            let segs: Vec<Vec<usize>> = (0..tiles).map(distinct).collect();
            for qt in 0..tiles {
                for kt in 0..qt {
                    let all = segs[qt]
                        .iter()
                        .all(|&sq| segs[kt].iter().all(|&sk| self.sees(r, sq, sk)));
                    if all {
                        let w = &mut self.full[(r * tiles + qt) * self.full_words + kt / 32];
                        *w = (*w as u32 | (1u32 << (kt % 32))) as i32;
                    }
                }
            }
            for t in 0..tiles {
                let block = &seg[t * TILE..(t + 1) * TILE];
                let k0 = block
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| earliest[s as usize].min(t * TILE + i))
                    .min()
                    .unwrap_or(t * TILE);
                let q1 = block
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| latest[s as usize].max(t * TILE + i))
                    .max()
                    .unwrap_or(t * TILE);
                self.qt_kt0[r * tiles + t] = (k0 / TILE) as i32;
                self.kt_qt1[r * tiles + t] = (q1 / TILE + 1) as i32;
            }
        }
    }

    /// Fills the CSR index of real positions by token id.
    fn embedding_index(&mut self, rows: &[TokensRow]) {
        let mut by_token: Vec<(i32, i32)> = Vec::with_capacity(self.tokens);
        for (r, row) in rows.iter().enumerate() {
            for i in 0..row.input_ids.len() {
                by_token.push((row.input_ids[i], (r * self.seq + i) as i32));
            }
        }
        by_token.sort_unstable();
        self.emb_starts.push(0);
        for (i, &(tok, p)) in by_token.iter().enumerate() {
            if i == 0 || by_token[i - 1].0 != tok {
                if i > 0 {
                    self.emb_starts.push(i as i32);
                }
                self.emb_tok.push(tok);
            }
            self.emb_pos.push(p);
        }
        self.emb_starts.push(by_token.len() as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ids: &[i32], seg: &[i32], mask: &[bool], parents: Vec<Vec<i32>>) -> TokensRow {
        TokensRow {
            input_ids: ids.to_vec(),
            loss_mask: mask.to_vec(),
            position_ids: positions(seg),
            segment_ids: seg.to_vec(),
            segment_parents: parents,
            source_ids: vec![],
        }
    }

    /// The dense mask the kernels compute from the batch (causal + visibility).
    fn allowed(b: &HostBatch, r: usize, q: usize, k: usize) -> bool {
        let s = |i: usize| b.seg[r * b.seq + i] as usize;
        k <= q && b.sees(r, s(q), s(k))
    }

    #[test]
    fn packing_pads_renumbers_and_targets_within_documents() {
        // Two documents (segments 7 and 3), all tokens trained.
        let ids: Vec<i32> = (1..=6).collect();
        let b = HostBatch::new(&[row(&ids, &[7, 7, 7, 3, 3, 3], &[true; 6], vec![])]).unwrap();
        assert_eq!(b.seq, 64);
        assert_eq!(&b.seg[..7], &[0, 0, 0, 1, 1, 1, 2]);
        assert!(b.seg[6..].iter().all(|&s| s == 2), "padding is one segment");
        // Position 2 (last of doc 1) never predicts the first of doc 2; position 5 is last.
        assert_eq!(b.rows, vec![0, 1, 3, 4]);
        assert_eq!(b.targets, vec![2, 3, 5, 6]);
        assert_eq!(b.tokens, 6);
        assert!(b.vis.is_none());
        // The dense mask equals what the burn engine's AttentionMask::segments allows.
        assert!(allowed(&b, 0, 2, 0) && !allowed(&b, 0, 3, 2) && allowed(&b, 0, 5, 3));
    }

    #[test]
    fn tile_ranges_are_conservative_and_skip_other_documents() {
        // Documents of 100, 100 and 56 tokens in a 256-token row.
        let seg: Vec<i32> = (0..256)
            .map(|i| {
                if i < 100 {
                    0
                } else if i < 200 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let ids = vec![5; 256];
        let b = HostBatch::new(&[row(&ids, &seg, &[true; 256], vec![])]).unwrap();
        // Query tile 3 (192..255) holds docs 1 and 2: its first visible key is 100 (tile 1).
        assert_eq!(b.qt_kt0, vec![0, 0, 1, 1]);
        // Key tile 0 (0..63) is seen by doc 0's queries up to 99 (tile 1).
        assert_eq!(b.kt_qt1, vec![2, 4, 4, 4]);
        // A tile pair is marked full exactly when every (q, k) in it is allowed.
        let tiles = 4;
        for qt in 0..tiles {
            for kt in 0..tiles {
                let bit = (b.full[qt * b.full_words + kt / 32] as u32 >> (kt % 32)) & 1 == 1;
                let dense = (qt * 64..qt * 64 + 64).all(|q| (kt * 64..kt * 64 + 64).all(|k| allowed(&b, 0, q, k)));
                assert_eq!(bit, dense, "tile pair ({qt}, {kt})");
            }
        }
        // Conservative: every allowed (q, k) lies inside both ranges.
        for q in 0..256 {
            for k in 0..=q {
                if allowed(&b, 0, q, k) {
                    assert!(k / 64 >= b.qt_kt0[q / 64] as usize, "q {q} k {k}");
                    assert!(q / 64 < b.kt_qt1[k / 64] as usize, "q {q} k {k}");
                }
            }
        }
    }

    #[test]
    fn one_document_has_every_tile_below_the_diagonal_full() {
        let b = HostBatch::new(&[row(&[3; 200], &[0; 200], &[true; 200], vec![])]).unwrap();
        // 200 tokens in 4 tiles; the padding segment (200..255) sees only itself.
        let full = |qt: usize, kt: usize| (b.full[qt * b.full_words] as u32 >> kt) & 1 == 1;
        assert!(full(1, 0) && full(2, 0) && full(2, 1));
        assert!(!full(0, 0) && !full(1, 1), "diagonal tiles are masked per element");
        assert!(!full(3, 0), "tile 3 mixes the document with padding");
    }

    #[test]
    fn multiverse_paths_see_the_prefix_not_their_siblings() {
        // prefix (0), two paths (1, 2) with parent 0, conclusion (3) seeing both.
        let seg = [0, 0, 1, 1, 2, 2, 3, 3];
        let parents = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let b = HostBatch::new(&[row(&[1, 2, 3, 4, 5, 6, 7, 8], &seg, &[true; 8], parents.clone())]).unwrap();
        let dense = firebrand_data::multiverse::dense_mask(&seg, &parents);
        for (q, row) in dense.iter().enumerate() {
            for (k, &want) in row.iter().enumerate() {
                assert_eq!(allowed(&b, 0, q, k), want, "q {q} k {k}");
            }
        }
        // Padding sees only padding.
        assert!(allowed(&b, 0, 20, 10) && !allowed(&b, 0, 20, 7));
        // A path's first token predicts across the segment boundary (it has parents).
        assert!(b.rows.contains(&1));
    }

    #[test]
    fn embedding_index_lists_real_positions_by_token() {
        let b = HostBatch::new(&[
            row(&[9, 4, 9], &[0, 0, 0], &[true; 3], vec![]),
            row(&[4, 4], &[0, 0], &[true; 2], vec![]),
        ])
        .unwrap();
        assert_eq!(b.emb_tok, vec![4, 9]);
        assert_eq!(b.emb_starts, vec![0, 3, 5]);
        assert_eq!(b.emb_pos, vec![1, 64, 65, 0, 2]);
    }

    #[test]
    fn rows_without_targets_are_refused() {
        let e = HostBatch::new(&[row(&[1, 2, 3], &[0, 0, 0], &[false; 3], vec![])]).unwrap_err();
        assert!(e.to_string().contains("no token to train on"), "{e}");
    }
}

//! The order in which a run reads its training units (rows for SFT, pairs for DPO, prompts for
//! GRPO): a seeded split into held-out and training units, then a fresh seeded permutation of the
//! training units per epoch. The order is a pure function of the seed and the number of units
//! consumed, so a resumed run reads what the uninterrupted one would.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::recipe::Recipe;

/// The order in which training units are read: a seeded permutation per epoch.
pub struct DataOrder {
    units: Vec<u64>,
    seed: u64,
    epoch: Option<u64>,
    perm: Vec<u64>,
}

impl DataOrder {
    /// The order of `units` under `seed`.
    pub fn new(units: Vec<u64>, seed: u64) -> Self {
        Self {
            units,
            seed,
            epoch: None,
            perm: Vec::new(),
        }
    }

    /// The units at positions `start..start + n` of the infinite epoch sequence.
    pub fn take(&mut self, start: u64, n: usize) -> Vec<u64> {
        let len = self.units.len() as u64;
        (start..start + n as u64)
            .map(|p| {
                let epoch = p / len;
                if self.epoch != Some(epoch) {
                    let mut perm = self.units.clone();
                    perm.shuffle(&mut StdRng::seed_from_u64(
                        self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ));
                    self.perm = perm;
                    self.epoch = Some(epoch);
                }
                self.perm[(p % len) as usize]
            })
            .collect()
    }
}

/// A reading position in a [`DataOrder`]: what a method's window takes its units from.
pub struct Cursor<'a> {
    order: &'a mut DataOrder,
    /// The position of the next unit.
    pub pos: u64,
}

impl<'a> Cursor<'a> {
    /// Reads `order` from position `pos`.
    pub fn new(order: &'a mut DataOrder, pos: u64) -> Self {
        Cursor { order, pos }
    }

    /// The next `n` units.
    pub fn take(&mut self, n: usize) -> Vec<u64> {
        let idx = self.order.take(self.pos, n);
        self.pos += idx.len() as u64;
        idx
    }
}

/// Splits `n` units into held-out evaluation units and training units, by seed.
pub fn split(n: u64, eval_rows: usize, seed: u64) -> (Vec<u64>, Vec<u64>) {
    let mut all: Vec<u64> = (0..n).collect();
    all.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_add(0xE7A1)));
    let (eval, train) = all.split_at(eval_rows.min(all.len()));
    let (mut eval, mut train) = (eval.to_vec(), train.to_vec());
    eval.sort_unstable();
    train.sort_unstable();
    (eval, train)
}

/// The units that SFT or DPO steps `1..=steps` read, micro-batch by micro-batch, for a dataset of
/// `units` training units (rows; DPO: pairs, unit `k` being rows `2k` and `2k + 1`): the loop's
/// own split and order, so a run can be inspected (which rows did step 32 see?) or replayed in
/// another framework (`firebrand train --dry-run --rows FILE`).
pub fn step_rows(recipe: &Recipe, units: u64, steps: usize) -> Vec<Vec<Vec<u64>>> {
    let t = &recipe.train;
    let (_, train_units) = split(units, recipe.data.eval_rows, t.seed);
    if train_units.is_empty() {
        return Vec::new();
    }
    let mut order = DataOrder::new(train_units, t.seed);
    let mut cursor = Cursor::new(&mut order, 0);
    (0..steps)
        .map(|_| {
            (0..t.grad_accum_steps)
                .map(|_| cursor.take(t.micro_batch_size))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_order_is_a_seeded_permutation_per_epoch() {
        let mut a = DataOrder::new((10..20).collect(), 7);
        let first = a.take(0, 10);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (10..20).collect::<Vec<_>>());
        // Reading from any position gives the same units as reading straight through.
        let mut b = DataOrder::new((10..20).collect(), 7);
        let straight = b.take(0, 25);
        let mut c = DataOrder::new((10..20).collect(), 7);
        assert_eq!(c.take(13, 12), straight[13..].to_vec());
        assert_ne!(straight[..10], straight[10..20], "each epoch has its own order");
        let mut d = DataOrder::new((10..20).collect(), 7);
        let mut cursor = Cursor::new(&mut d, 3);
        assert_eq!([cursor.take(4), cursor.take(5)].concat(), straight[3..12].to_vec());
        assert_eq!(cursor.pos, 12);
    }

    #[test]
    fn eval_units_are_held_out() {
        let (eval, train) = split(100, 10, 3);
        assert_eq!(eval.len(), 10);
        assert_eq!(train.len(), 90);
        assert!(eval.iter().all(|e| !train.contains(e)));
        assert_eq!(split(100, 10, 3), (eval, train));
    }
}

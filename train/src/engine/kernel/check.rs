//! Checks and measurements of the kernel engine (`firebrand bench kernels`, `firebrand bench sft`).
//!
//! - [`kernel_checks`]: every operation of a device against the CPU reference on fresh random
//!   inputs, outputs poisoned with NaN first (an element a kernel forgets to write fails the
//!   check); the score is `‖out − ref‖ / ‖ref‖`, and NaN never passes.
//! - [`model_check`]: one micro-batch's log-probs, entropies and every parameter gradient of the
//!   kernel engine against the burn engine on the same weights and rows, with SFT's fused gradient
//!   or a random one sent back after the forward (DPO's and GRPO's split pass).
//! - [`Profiler`]: an [`Ops`] that synchronises after every call and adds its time to a bucket
//!   per operation: the profile of a step.
//! - [`random_rows`], [`random_weights`]: inputs of the checks and of the step benchmark
//!   (`trainer::bench`).

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;
use firebrand_data::TokensRow;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::batch::HostBatch;
use super::ops::{AdamWArgs, AttnMask, AttnShape, DType, Gemm, Host, Local, Ops, View};
use super::step::KernelEngine;
use crate::engine::api::{Engine, Forward, Grad, Want};
use crate::engine::autodiff::BurnEngine;
use crate::engine::optim::AdamW;
use crate::engine::state::EngineState;
use crate::error::TrainError;
use crate::model::ModelConfig;

/// One output of one operation compared with the reference.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// `operation: output`.
    pub name: String,
    /// `‖out − ref‖ / ‖ref‖` (NaN when an element was not written or is not finite).
    pub rel_err: f64,
    /// The tolerance it is held to.
    pub tol: f64,
}

impl Agreement {
    /// Whether the output agrees.
    pub fn ok(&self) -> bool {
        self.rel_err <= self.tol
    }
}

/// `‖a − b‖ / ‖b‖`; NaN when any element of `a` is not finite.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.iter().any(|x| !x.is_finite()) {
        return f64::NAN;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (num / den).sqrt()
}

fn uniform(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// `n` draws of normal(0, `std`) (Box–Muller).
fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random());
            (std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn put(ops: &mut dyn Ops, data: &[f32], dt: DType) -> Result<View, TrainError> {
    let v = ops.alloc(data.len(), dt)?;
    ops.upload(v, Host::F32(data))?;
    Ok(v)
}

fn put_i(ops: &mut dyn Ops, data: &[i32]) -> Result<View, TrainError> {
    let v = ops.alloc(data.len().max(1), DType::I32)?;
    if !data.is_empty() {
        ops.upload(v.prefix(data.len()), Host::I32(data))?;
    }
    Ok(v.prefix(data.len().max(1)))
}

/// An output buffer filled with NaN, so that an element left unwritten fails the comparison.
fn out(ops: &mut dyn Ops, len: usize, dt: DType) -> Result<View, TrainError> {
    put(ops, &vec![f32::NAN; len], dt)
}

type Outputs = Vec<(&'static str, Vec<f32>)>;

/// A check's computation, run once on each device.
type CaseFn = Box<dyn Fn(&mut dyn Ops) -> Result<Outputs, TrainError>>;

/// One check: a name, a tolerance per output dtype, and the computation (run once per device).
struct Case {
    name: String,
    tol: f64,
    run: CaseFn,
}

/// Packed rows (documents of random lengths) or Multiverse rows (a prefix, three paths of it, a
/// conclusion of the paths, then a plain document), token ids below 100.
pub fn attention_rows(rng: &mut StdRng, batch: usize, seq: usize, multiverse: bool) -> Vec<TokensRow> {
    (0..batch)
        .map(|_| {
            let (seg, parents): (Vec<i32>, Vec<Vec<i32>>) = if multiverse {
                // prefix, three paths of the prefix, a conclusion of the paths; then a plain document.
                let cuts = [seq / 5, 2 * seq / 5, 3 * seq / 5, 4 * seq / 5, 9 * seq / 10];
                let seg = (0..seq)
                    .map(|i| cuts.iter().filter(|&&c| i >= c).count() as i32)
                    .collect();
                (seg, vec![vec![], vec![0], vec![0], vec![0], vec![1, 2, 3], vec![]])
            } else {
                let mut seg = Vec::with_capacity(seq);
                let mut s = 0;
                while seg.len() < seq {
                    let len = rng.random_range(1..seq / 2);
                    seg.extend(std::iter::repeat_n(s, len.min(seq - seg.len())));
                    s += 1;
                }
                (seg, vec![])
            };
            let pos = super::batch::positions(&seg);
            TokensRow {
                input_ids: (0..seq).map(|_| rng.random_range(0..100)).collect(),
                loss_mask: vec![true; seq],
                position_ids: pos,
                segment_ids: seg,
                segment_parents: parents,
                source_ids: vec![],
            }
        })
        .collect()
}

/// The mask of `b` on `ops`; with `local` (`bias_log2`, `penalty`), a localist dial whose blocks
/// are 20-token runs (a new one at each segment change) pointing at the block before.
fn mask_on(
    ops: &mut dyn Ops,
    b: &HostBatch,
    rows: &[TokensRow],
    local: Option<(f32, f32)>,
) -> Result<AttnMask, TrainError> {
    let local = match local {
        None => None,
        Some((bias_log2, penalty)) => {
            let (mut block, mut target) = (vec![-2; b.batch * b.seq], vec![-1; b.batch * b.seq]);
            for (r, row) in rows.iter().enumerate() {
                let mut blocks = Vec::with_capacity(row.segment_ids.len());
                for (i, s) in row.segment_ids.iter().enumerate() {
                    let new = i == 0 || row.segment_ids[i - 1] != *s || i % 20 == 0;
                    let last = blocks.last().copied().unwrap_or(-1);
                    blocks.push(if new { last + 1 } else { last });
                }
                let targets =
                    crate::localist::targets(&blocks, &row.segment_ids, crate::localist::TargetRule::Previous);
                block[r * b.seq..r * b.seq + blocks.len()].copy_from_slice(&blocks);
                target[r * b.seq..r * b.seq + targets.len()].copy_from_slice(&targets);
            }
            let per_query = b.batch * b.seq * 64; // up to 64 heads
            Some(Local {
                block: put_i(ops, &block)?,
                target: put_i(ops, &target)?,
                bias_log2,
                fidelity: out(ops, per_query, DType::F32)?,
                entropy: out(ops, per_query, DType::F32)?,
                penalty,
            })
        }
    };
    Ok(AttnMask {
        seg: put_i(ops, &b.seg)?,
        qt_kt0: put_i(ops, &b.qt_kt0)?,
        kt_qt1: put_i(ops, &b.kt_qt1)?,
        vis: match &b.vis {
            Some(v) => Some(put_i(ops, v)?),
            None => None,
        },
        segments: b.segments,
        words: b.words,
        full: put_i(ops, &b.full)?,
        full_words: b.full_words,
        local,
    })
}

#[allow(clippy::too_many_lines)]
fn cases(seed: u64, head_dims: &[usize]) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases: Vec<Case> = Vec::new();
    let (f, bf) = (DType::F32, DType::Bf16);
    const BF: f64 = 1e-2;
    const F32: f64 = 1e-4;

    let x = uniform(&mut rng, 10_000, 3.0);
    cases.push(Case {
        name: "cast_bf16".into(),
        tol: BF,
        run: Box::new(move |o| {
            let s = put(o, &x, f)?;
            let d = out(o, x.len(), bf)?;
            o.cast_bf16(d, s)?;
            Ok(vec![("out", o.download(d)?)])
        }),
    });

    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for (out_f32, with_c) in [(true, false), (true, true), (false, false)] {
            let (m, n, k) = (192, 320, 256);
            let a = uniform(&mut rng, m * k, 1.0);
            let b = uniform(&mut rng, k * n, 1.0);
            let c = uniform(&mut rng, m * n, 1.0);
            cases.push(Case {
                name: format!(
                    "gemm ta={ta} tb={tb} out={}{}",
                    if out_f32 { "f32" } else { "bf16" },
                    if with_c { " +c" } else { "" }
                ),
                tol: if out_f32 { F32 } else { BF },
                run: Box::new(move |o| {
                    let dt = if out_f32 { f } else { bf };
                    let (av, bv) = (put(o, &a, bf)?, put(o, &b, bf)?);
                    let ov = if with_c { put(o, &c, dt)? } else { out(o, m * n, dt)? };
                    o.gemm(&Gemm {
                        out: ov,
                        a: av,
                        b: bv,
                        c: with_c.then_some(ov),
                        m,
                        n,
                        k,
                        ta,
                        tb,
                    })?;
                    Ok(vec![("out", o.download(ov)?)])
                }),
            });
        }
    }

    let (vocab, h, n) = (500, 256, 300);
    let table = uniform(&mut rng, vocab * h, 1.0);
    let ids: Vec<i32> = (0..n).map(|_| rng.random_range(0..50)).collect();
    let dx = uniform(&mut rng, n * h, 1.0);
    cases.push(Case {
        name: "embed forward and backward".into(),
        tol: F32,
        run: Box::new(move |o| {
            let t = put(o, &table, f)?;
            let iv = put_i(o, &ids)?;
            let y = out(o, n * h, f)?;
            o.embed(y, t, iv, n, h)?;
            // The CSR index as HostBatch builds it.
            let mut by: Vec<(i32, i32)> = ids.iter().enumerate().map(|(p, &t)| (t, p as i32)).collect();
            by.sort_unstable();
            let (mut tok, mut starts, mut pos) = (Vec::new(), vec![0], Vec::new());
            for (i, &(t, p)) in by.iter().enumerate() {
                if i > 0 && by[i - 1].0 != t {
                    starts.push(i as i32);
                }
                if i == 0 || by[i - 1].0 != t {
                    tok.push(t);
                }
                pos.push(p);
            }
            starts.push(by.len() as i32);
            let g = put(o, &table, f)?; // the gradient accumulates onto existing values
            let (tv, sv, pv, dv) = (put_i(o, &tok)?, put_i(o, &starts)?, put_i(o, &pos)?, put(o, &dx, f)?);
            o.embed_backward(g, dv, tv, sv, pv, tok.len(), h)?;
            Ok(vec![("out", o.download(y)?), ("dtable", o.download(g)?)])
        }),
    });

    let (n, h) = (300, 768);
    let x = uniform(&mut rng, n * h, 2.0);
    let w = uniform(&mut rng, h, 1.0);
    let dy = uniform(&mut rng, n * h, 1.0);
    let res = uniform(&mut rng, n * h, 1.0);
    let dw0 = uniform(&mut rng, h, 1.0);
    cases.push(Case {
        name: "rmsnorm forward".into(),
        tol: BF,
        run: Box::new({
            let (x, w) = (x.clone(), w.clone());
            move |o| {
                let (xv, wv) = (put(o, &x, f)?, put(o, &w, f)?);
                let (y, r) = (out(o, n * h, bf)?, out(o, n, f)?);
                o.rmsnorm(y, r, xv, wv, n, h, 1e-6)?;
                Ok(vec![("y", o.download(y)?), ("rstd", o.download(r)?)])
            }
        }),
    });
    cases.push(Case {
        name: "rmsnorm backward".into(),
        tol: 1e-3,
        run: Box::new(move |o| {
            let (xv, wv) = (put(o, &x, f)?, put(o, &w, f)?);
            let (y, r) = (out(o, n * h, bf)?, out(o, n, f)?);
            o.rmsnorm(y, r, xv, wv, n, h, 1e-6)?;
            let (dyv, dres, dw) = (put(o, &dy, bf)?, put(o, &res, f)?, put(o, &dw0, f)?);
            let db = out(o, n * h, bf)?;
            o.rmsnorm_backward(dres, db, dw, dyv, xv, wv, r, n, h, true)?;
            Ok(vec![
                ("dres", o.download(dres)?),
                ("dres_bf16", o.download(db)?),
                ("dw", o.download(dw)?),
            ])
        }),
    });

    let s = AttnShape {
        batch: 2,
        seq: 64,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        scale: AttnShape::plain_scale(64),
    };
    let tokens = s.batch * s.seq;
    let width = (s.heads + 2 * s.kv_heads) * s.head_dim;
    let qkv = uniform(&mut rng, tokens * width, 2.0);
    let bias = uniform(&mut rng, width, 0.5);
    let pos: Vec<i32> = (0..tokens as i32).map(|i| (i * 7) % 300).collect();
    let freq: Vec<f32> = (0..s.head_dim / 2)
        .map(|i| (1.0 / 10_000f64.powf(2.0 * i as f64 / s.head_dim as f64)) as f32)
        .collect();
    cases.push(Case {
        name: "rope split (bias) and merge".into(),
        tol: BF,
        run: Box::new(move |o| {
            let (x, b) = (put(o, &qkv, bf)?, put(o, &bias, f)?);
            let (p, fr) = (put_i(o, &pos)?, put(o, &freq, f)?);
            let qn = s.batch * s.heads * s.seq * s.head_dim;
            let kn = s.batch * s.kv_heads * s.seq * s.head_dim;
            let (q, k, v) = (out(o, qn, bf)?, out(o, kn, bf)?, out(o, kn, bf)?);
            o.rope_split(q, k, v, x, Some(b), p, fr, s)?;
            let back = out(o, tokens * width, bf)?;
            o.rope_merge(back, q, k, v, p, fr, s)?;
            Ok(vec![
                ("q", o.download(q)?),
                ("k", o.download(k)?),
                ("v", o.download(v)?),
                ("merged", o.download(back)?),
            ])
        }),
    });

    for &d in head_dims {
        for (multiverse, local) in [
            (false, None),
            (true, None),
            (false, Some((2.5f32, 0.3f32))),
            (true, Some((2.5, -0.2))),
        ] {
            let s = AttnShape {
                batch: 2,
                seq: 256,
                heads: 4,
                kv_heads: 2,
                head_dim: d,
                // A RoPE attention factor of 1.2 on the local cases (YaRN-scaled models).
                scale: AttnShape::plain_scale(d) * if local.is_some() { 1.44 } else { 1.0 },
            };
            let rows = attention_rows(&mut rng, s.batch, s.seq, multiverse);
            let qn = s.batch * s.heads * s.seq * d;
            let kn = s.batch * s.kv_heads * s.seq * d;
            let (q, k, v) = (
                uniform(&mut rng, qn, 2.0),
                uniform(&mut rng, kn, 2.0),
                uniform(&mut rng, kn, 1.0),
            );
            let dout = uniform(&mut rng, qn, 1.0);
            cases.push(Case {
                name: format!(
                    "attention d={d} {}{} forward and backward",
                    if multiverse { "multiverse" } else { "packed" },
                    if local.is_some() { ", localist" } else { "" }
                ),
                tol: 2e-2,
                run: Box::new(move |o| {
                    let mask = mask_on(o, &HostBatch::new(&rows)?, &rows, local)?;
                    let (qv, kv, vv) = (put(o, &q, bf)?, put(o, &k, bf)?, put(o, &v, bf)?);
                    let (ov, lse) = (out(o, qn, bf)?, out(o, s.batch * s.heads * s.seq, f)?);
                    o.attention(ov, lse, qv, kv, vv, &mask, s)?;
                    let dov = put(o, &dout, bf)?;
                    let (dq, dk, dv) = (out(o, qn, bf)?, out(o, kn, bf)?, out(o, kn, bf)?);
                    o.attention_backward(dq, dk, dv, dov, ov, lse, qv, kv, vv, &mask, s)?;
                    let mut outs = vec![
                        ("o", o.download(ov)?),
                        ("lse2", o.download(lse)?),
                        ("dq", o.download(dq)?),
                        ("dk", o.download(dk)?),
                        ("dv", o.download(dv)?),
                    ];
                    if let Some(l) = mask.local {
                        let n = s.batch * s.heads * s.seq;
                        outs.push(("fidelity", o.download(l.fidelity.prefix(n))?));
                        outs.push(("entropy", o.download(l.entropy.prefix(n))?));
                    }
                    Ok(outs)
                }),
            });
        }
    }

    let (n, inter) = (200, 512);
    let gu = uniform(&mut rng, n * 2 * inter, 3.0);
    let dh = uniform(&mut rng, n * inter, 1.0);
    cases.push(Case {
        name: "swiglu forward and backward".into(),
        tol: BF,
        run: Box::new(move |o| {
            let g = put(o, &gu, bf)?;
            let hv = out(o, n * inter, bf)?;
            o.swiglu(hv, g, n, inter)?;
            let (d, dg) = (put(o, &dh, bf)?, out(o, n * 2 * inter, bf)?);
            o.swiglu_backward(dg, d, g, n, inter)?;
            Ok(vec![("h", o.download(hv)?), ("dgu", o.download(dg)?)])
        }),
    });

    let (n, h) = (100, 256);
    let src = uniform(&mut rng, n * h, 1.0);
    let rows: Vec<i32> = (0..n as i32).filter(|i| i % 3 != 1).rev().collect();
    cases.push(Case {
        name: "gather and scatter rows".into(),
        tol: 0.0,
        run: Box::new(move |o| {
            let (sv, rv) = (put(o, &src, bf)?, put_i(o, &rows)?);
            let g = out(o, rows.len() * h, bf)?;
            o.gather_rows(g, sv, rv, rows.len(), h)?;
            let back = put(o, &vec![0.0; n * h], bf)?;
            o.scatter_rows(back, g, rv, rows.len(), h)?;
            Ok(vec![("gathered", o.download(g)?), ("scattered", o.download(back)?)])
        }),
    });

    let (r, vocab) = (50, 32_000);
    let logits = uniform(&mut rng, r * vocab, 8.0);
    let targets: Vec<i32> = (0..r).map(|_| rng.random_range(0..vocab as i32)).collect();
    let coefs: Vec<f32> = (0..r)
        .map(|i| if i % 7 == 3 { 0.0 } else { 0.25 - 0.01 * i as f32 })
        .collect();
    for (inv_temp, entropy, grad) in [(1.0f32, false, true), (1.0 / 0.7, true, true), (1.0, true, false)] {
        let (logits, targets, coefs) = (logits.clone(), targets.clone(), coefs.clone());
        cases.push(Case {
            name: format!(
                "log-probs at temperature {:.2}{}{}",
                1.0 / inv_temp,
                if entropy { ", entropy" } else { "" },
                if grad { ", gradient" } else { "" }
            ),
            tol: 1e-3,
            run: Box::new(move |o| {
                let (l, t, c) = (put(o, &logits, f)?, put_i(o, &targets)?, put(o, &coefs, f)?);
                let (dl, lp, ent) = (out(o, r * vocab, bf)?, out(o, r, f)?, out(o, r, f)?);
                o.cross_entropy(
                    grad.then_some(dl),
                    lp,
                    entropy.then_some(ent),
                    l,
                    t,
                    c,
                    r,
                    vocab,
                    inv_temp,
                )?;
                let mut outs = vec![("logp", o.download(lp)?)];
                if entropy {
                    outs.push(("entropy", o.download(ent)?));
                }
                if grad {
                    outs.push(("dlogits", o.download(dl)?));
                }
                Ok(outs)
            }),
        });
    }

    let (rows_n, cols) = (300, 320);
    let xs = uniform(&mut rng, rows_n * cols, 1.0);
    let base = uniform(&mut rng, cols, 1.0);
    let big = uniform(&mut rng, 100_000, 1.0);
    cases.push(Case {
        name: "column sums and sum of squares".into(),
        tol: F32,
        run: Box::new(move |o| {
            let (x, d) = (put(o, &xs, bf)?, put(o, &base, f)?);
            o.column_sum_add(d, x, rows_n, cols)?;
            let b = put(o, &big, f)?;
            let ss = o.sum_squares(b)? as f32;
            Ok(vec![("column_sum", o.download(d)?), ("sum_squares", vec![ss])])
        }),
    });

    let n = 5000;
    let (p, g, m, v) = (
        uniform(&mut rng, n, 1.0),
        uniform(&mut rng, n, 1.0),
        uniform(&mut rng, n, 0.1),
        uniform(&mut rng, n, 0.1).into_iter().map(f32::abs).collect::<Vec<_>>(),
    );
    cases.push(Case {
        name: "adamw".into(),
        tol: 1e-5,
        run: Box::new(move |o| {
            let (pv, gv, mv, vv) = (put(o, &p, f)?, put(o, &g, f)?, put(o, &m, f)?, put(o, &v, f)?);
            let pb = out(o, n, bf)?;
            o.adamw(&AdamWArgs {
                params: pv,
                params_bf16: pb,
                grads: gv,
                m: mv,
                v: vv,
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                bias_correction1: 0.19,
                bias_correction2: 0.0975,
                grad_scale: 0.5,
            })?;
            Ok(vec![
                ("params", o.download(pv)?),
                ("m", o.download(mv)?),
                ("v", o.download(vv)?),
                ("params_bf16", o.download(pb)?),
            ])
        }),
    });
    cases
}

/// Every operation of `dev` against `reference` (the CPU reference) on random inputs.
///
/// # Errors
/// When a device call fails (a failed comparison is a result, not an error).
pub fn kernel_checks(
    dev: &mut dyn Ops,
    reference: &mut dyn Ops,
    seed: u64,
    head_dims: &[usize],
) -> Result<Vec<Agreement>, TrainError> {
    let mut out = Vec::new();
    for case in cases(seed, head_dims) {
        let got = (case.run)(dev).map_err(|e| TrainError::Device(format!("{}: {e}", case.name)))?;
        let want = (case.run)(reference)?;
        for ((name, a), (_, b)) in got.iter().zip(&want) {
            // bf16 outputs round differently where fp32 values differ in the last bits.
            out.push(Agreement {
                name: format!("{}: {name}", case.name),
                rel_err: rel_err(a, b),
                tol: case.tol.max(if name.contains("bf16") { 1e-2 } else { 0.0 }),
            });
        }
    }
    Ok(out)
}

/// The kernel engine against the burn engine (burn's autodiff) on one micro-batch.
#[derive(Debug, Clone)]
pub struct ModelAgreement {
    /// `−Σ log p` of the burn engine.
    pub burn_loss: f64,
    /// `−Σ log p` of the kernel engine.
    pub kernel_loss: f64,
    /// `‖kernel − burn‖ / ‖burn‖` of the targets' log-probs.
    pub logp: f64,
    /// The same of their entropies (0 when not computed).
    pub entropy: f64,
    /// Per tensor `‖kernel − burn‖ / ‖burn‖` of the gradient.
    pub grads: Vec<(String, f64)>,
    /// The same over all gradients together.
    pub global: f64,
}

impl ModelAgreement {
    /// Relative difference of the losses.
    pub fn loss_rel(&self) -> f64 {
        (self.kernel_loss - self.burn_loss).abs() / self.burn_loss.abs().max(1e-12)
    }

    /// The worst gradient (name, error).
    pub fn worst(&self) -> (String, f64) {
        self.grads
            .iter()
            .cloned()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(std::cmp::Ordering::Greater))
            .unwrap_or_default()
    }
}

/// The gradient a check sends back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckGrad {
    /// SFT's: `∂loss/∂log p = −1` for every target, given with the forward (the fused pass).
    Sft,
    /// A random gradient per target, sent after the forward (the split pass DPO and GRPO take),
    /// at `temperature`, with entropies.
    Split {
        /// The forward's temperature.
        temperature: f32,
    },
}

/// Random rows of `seq` tokens: packed documents, every position trained except the first
/// token of each document's mask (so the loss mask is exercised).
pub fn random_rows(seed: u64, batch: usize, seq: usize, vocab: usize, packed: bool) -> Vec<TokensRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..batch)
        .map(|_| {
            let mut seg = Vec::with_capacity(seq);
            let mut s = 0;
            while seg.len() < seq {
                let len = if packed {
                    rng.random_range(8..seq.max(9) / 2 + 8)
                } else {
                    seq
                };
                seg.extend(std::iter::repeat_n(s, len.min(seq - seg.len())));
                s += 1;
            }
            let pos = super::batch::positions(&seg);
            TokensRow {
                input_ids: (0..seq).map(|_| rng.random_range(0..vocab as i32)).collect(),
                loss_mask: pos.iter().map(|&p| !packed || p > 2).collect(),
                position_ids: pos,
                segment_ids: seg,
                segment_parents: vec![],
                source_ids: vec![],
            }
        })
        .collect()
}

/// Log-probs and gradients of `rows` on the burn engine (`B`) and on the kernel engine over `ops`,
/// from the same randomly initialised weights, for the gradient `how`.
///
/// # Errors
/// On a device failure or bad rows.
pub fn model_check<B: AutodiffBackend>(
    ops: Box<dyn Ops>,
    config: &ModelConfig,
    rows: &[TokensRow],
    device: &B::Device,
    seed: u64,
    how: CheckGrad,
) -> Result<ModelAgreement, TrainError> {
    // Weights from a generator of our own: burn's is shared by the tests running in parallel.
    let state = EngineState {
        weights: random_weights(config, seed, config.initializer_range),
        moments: None,
    };
    let adamw = Some(AdamW::default());
    let mut burn: Box<dyn Engine<B>> = Box::new(BurnEngine::<B>::new(config, &state, adamw, None, device)?);
    let mut kernel: Box<dyn Engine<B>> = Box::new(KernelEngine::new(ops, config, &state, adamw)?);
    let want = match how {
        CheckGrad::Sft => Want::default(),
        CheckGrad::Split { temperature } => Want {
            temperature,
            entropy: true,
            grad: true,
        },
    };
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut outputs = Vec::new();
    let mut grad = None;
    for engine in [&mut burn, &mut kernel] {
        let micro = engine.prepare(rows.to_vec())?;
        let g = grad.get_or_insert_with(|| Grad {
            dlogp: match how {
                CheckGrad::Sft => vec![-1.0; micro.count()],
                CheckGrad::Split { .. } => (0..micro.count()).map(|_| rng.random_range(-1.0..1.0)).collect(),
            },
            domega: Vec::new(),
        });
        let fixed = (how == CheckGrad::Sft).then_some(&*g);
        engine.forward(&micro, want, fixed)?;
        let f = engine.collect()?;
        if fixed.is_none() {
            engine.backward(g)?;
        }
        outputs.push((f, engine.gradients()?));
    }
    let (kf, kg) = outputs.pop().expect("two engines ran");
    let (bf, bg) = outputs.pop().expect("two engines ran");
    let loss = |f: &Forward| -f.logp.iter().map(|&x| f64::from(x)).sum::<f64>();
    let (mut all_got, mut all_want) = (Vec::new(), Vec::new());
    let grads = bg
        .iter()
        .map(|(name, w)| {
            let g = kg.get(name).map(Vec::as_slice).unwrap_or(&[]);
            all_got.extend_from_slice(g);
            all_want.extend_from_slice(w);
            (name.clone(), rel_err(g, w))
        })
        .collect();
    Ok(ModelAgreement {
        burn_loss: loss(&bf),
        kernel_loss: loss(&kf),
        logp: rel_err(&kf.logp, &bf.logp),
        entropy: if bf.entropy.is_empty() {
            0.0
        } else {
            rel_err(&kf.entropy, &bf.entropy)
        },
        grads,
        global: rel_err(&all_got, &all_want),
    })
}

/// Weights as transformers initialises them: normal(0, `std`) matrices (transformers' default std
/// is 0.02), unit norms, zero biases; seeded.
pub fn random_weights(config: &ModelConfig, seed: u64, std: f64) -> crate::engine::state::Tensors {
    let mut rng = StdRng::seed_from_u64(seed);
    config
        .hf_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let len = shape.iter().product();
            let v = if shape.len() == 1 {
                // Gemma stores a norm's scale minus one.
                let unit = if config.gemma.is_some() { 0.0 } else { 1.0 };
                vec![if name.ends_with("bias") { 0.0 } else { unit }; len]
            } else {
                normal(&mut rng, len, std)
            };
            (name, v)
        })
        .collect()
}

/// An [`Ops`] that, when enabled, waits for the device after every call and adds the call's
/// time to a bucket named after the operation.
pub struct Profiler {
    inner: Box<dyn Ops>,
    on: bool,
    /// Seconds and calls per operation.
    pub times: BTreeMap<&'static str, (f64, usize)>,
}

impl Profiler {
    /// Wraps `inner`; timing starts when `on`.
    pub fn new(inner: Box<dyn Ops>, on: bool) -> Self {
        Profiler {
            inner,
            on,
            times: BTreeMap::new(),
        }
    }

    fn timed<T>(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut dyn Ops) -> Result<T, TrainError>,
    ) -> Result<T, TrainError> {
        if !self.on {
            return f(self.inner.as_mut());
        }
        let t0 = Instant::now();
        let r = f(self.inner.as_mut())?;
        self.inner.synchronize()?;
        let e = self.times.entry(name).or_insert((0.0, 0));
        e.0 += t0.elapsed().as_secs_f64();
        e.1 += 1;
        Ok(r)
    }
}

/// Names matmuls by role, from their shapes (the profile's buckets).
fn gemm_bucket(g: &Gemm) -> &'static str {
    match (g.ta, g.out.dtype) {
        (true, _) => "matmul: weight gradients",
        (false, DType::F32) if g.c.is_none() => "matmul: logits",
        (false, _) if g.tb => "matmul: forward",
        _ => "matmul: input gradients",
    }
}

#[allow(clippy::too_many_arguments)]
impl Ops for Profiler {
    fn profile(&mut self, on: bool) -> bool {
        self.on = on;
        true
    }
    fn take_profile(&mut self) -> BTreeMap<&'static str, (f64, usize)> {
        std::mem::take(&mut self.times)
    }
    fn alloc(&mut self, len: usize, dtype: DType) -> Result<View, TrainError> {
        self.inner.alloc(len, dtype)
    }
    fn free(&mut self, v: View) -> Result<(), TrainError> {
        self.inner.free(v)
    }
    fn upload(&mut self, dst: View, data: Host<'_>) -> Result<(), TrainError> {
        self.timed("upload", |o| o.upload(dst, data))
    }
    fn download(&mut self, src: View) -> Result<Vec<f32>, TrainError> {
        self.timed("download", |o| o.download(src))
    }
    fn zero(&mut self, dst: View) -> Result<(), TrainError> {
        self.timed("zero", |o| o.zero(dst))
    }
    fn cast_bf16(&mut self, dst: View, src: View) -> Result<(), TrainError> {
        self.timed("cast", |o| o.cast_bf16(dst, src))
    }
    fn gemm(&mut self, g: &Gemm) -> Result<(), TrainError> {
        self.timed(gemm_bucket(g), |o| o.gemm(g))
    }
    fn embed(&mut self, out: View, table: View, ids: View, n: usize, h: usize) -> Result<(), TrainError> {
        self.timed("embedding", |o| o.embed(out, table, ids, n, h))
    }
    fn embed_backward(
        &mut self,
        dt: View,
        dx: View,
        tok: View,
        st: View,
        pos: View,
        u: usize,
        h: usize,
    ) -> Result<(), TrainError> {
        self.timed("embedding", |o| o.embed_backward(dt, dx, tok, st, pos, u, h))
    }
    fn rmsnorm(&mut self, y: View, r: View, x: View, w: View, n: usize, h: usize, eps: f32) -> Result<(), TrainError> {
        self.timed("rmsnorm forward", |o| o.rmsnorm(y, r, x, w, n, h, eps))
    }
    fn rmsnorm_backward(
        &mut self,
        dres: View,
        db: View,
        dw: View,
        dy: View,
        x: View,
        w: View,
        r: View,
        n: usize,
        h: usize,
        acc: bool,
    ) -> Result<(), TrainError> {
        self.timed("rmsnorm backward", |o| {
            o.rmsnorm_backward(dres, db, dw, dy, x, w, r, n, h, acc)
        })
    }
    fn rope_split(
        &mut self,
        q: View,
        k: View,
        v: View,
        x: View,
        b: Option<View>,
        p: View,
        f: View,
        s: AttnShape,
    ) -> Result<(), TrainError> {
        self.timed("rope", |o| o.rope_split(q, k, v, x, b, p, f, s))
    }
    fn rope_merge(
        &mut self,
        d: View,
        q: View,
        k: View,
        v: View,
        p: View,
        f: View,
        s: AttnShape,
    ) -> Result<(), TrainError> {
        self.timed("rope", |o| o.rope_merge(d, q, k, v, p, f, s))
    }
    fn attention(
        &mut self,
        out: View,
        l: View,
        q: View,
        k: View,
        v: View,
        m: &AttnMask,
        s: AttnShape,
    ) -> Result<(), TrainError> {
        self.timed("attention forward", |o| o.attention(out, l, q, k, v, m, s))
    }
    fn attention_backward(
        &mut self,
        dq: View,
        dk: View,
        dv: View,
        d: View,
        out: View,
        l: View,
        q: View,
        k: View,
        v: View,
        m: &AttnMask,
        s: AttnShape,
    ) -> Result<(), TrainError> {
        self.timed("attention backward", |o| {
            o.attention_backward(dq, dk, dv, d, out, l, q, k, v, m, s)
        })
    }
    fn swiglu(&mut self, h: View, gu: View, n: usize, i: usize) -> Result<(), TrainError> {
        self.timed("swiglu", |o| o.swiglu(h, gu, n, i))
    }
    fn swiglu_backward(&mut self, d: View, dh: View, gu: View, n: usize, i: usize) -> Result<(), TrainError> {
        self.timed("swiglu", |o| o.swiglu_backward(d, dh, gu, n, i))
    }
    fn gather_rows(&mut self, d: View, s: View, r: View, c: usize, h: usize) -> Result<(), TrainError> {
        self.timed("loss rows", |o| o.gather_rows(d, s, r, c, h))
    }
    fn scatter_rows(&mut self, d: View, s: View, r: View, c: usize, h: usize) -> Result<(), TrainError> {
        self.timed("loss rows", |o| o.scatter_rows(d, s, r, c, h))
    }
    fn cross_entropy(
        &mut self,
        dl: Option<View>,
        lp: View,
        ent: Option<View>,
        l: View,
        t: View,
        c: View,
        rows: usize,
        vocab: usize,
        inv_temp: f32,
    ) -> Result<(), TrainError> {
        self.timed("log-probs", |o| {
            o.cross_entropy(dl, lp, ent, l, t, c, rows, vocab, inv_temp)
        })
    }
    fn column_sum_add(&mut self, d: View, x: View, r: usize, c: usize) -> Result<(), TrainError> {
        self.timed("bias gradients", |o| o.column_sum_add(d, x, r, c))
    }
    fn sum_squares(&mut self, x: View) -> Result<f64, TrainError> {
        self.timed("gradient norm", |o| o.sum_squares(x))
    }
    fn adamw(&mut self, a: &AdamWArgs) -> Result<(), TrainError> {
        self.timed("adamw", |o| o.adamw(a))
    }
    fn synchronize(&mut self) -> Result<(), TrainError> {
        self.inner.synchronize()
    }
}

/// One kernel family timed at the reference shapes, the kernel engine beside burn.
#[derive(Debug, Clone)]
pub struct Timing {
    /// What was timed.
    pub name: String,
    /// Median milliseconds of the kernel engine.
    pub fast_ms: f64,
    /// Median milliseconds of burn (the plain path's element type), when timed.
    pub burn_ms: Option<f64>,
    /// Floating-point operations of one call (for TFLOP/s), when meaningful.
    pub flops: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `f` on the kernel engine over `iters` runs after `warmup` runs.
fn time_fast(
    ops: &mut dyn Ops,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut(&mut dyn Ops) -> Result<(), TrainError>,
) -> Result<f64, TrainError> {
    for _ in 0..warmup {
        f(ops)?;
    }
    ops.synchronize()?;
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        f(ops)?;
        ops.synchronize()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

/// Median seconds of `f` on burn's device over `iters` runs after `warmup` runs.
fn time_burn<B: burn::tensor::backend::Backend>(
    device: &B::Device,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut(),
) -> Result<f64, TrainError> {
    let sync = || B::sync(device).map_err(|e| TrainError::Device(format!("burn sync: {e:?}")));
    for _ in 0..warmup {
        f();
    }
    sync()?;
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t0 = Instant::now();
        f();
        sync()?;
        t.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

/// The reference configuration's kernels (16 rows × 1024 tokens, hidden 768, 12 heads of 64,
/// intermediate 2048, vocabulary 32000) on the kernel engine, and where burn has the same operation,
/// on burn (`B`, the plain path) too.
///
/// # Errors
/// On a device failure.
#[allow(clippy::too_many_lines)]
pub fn kernel_timings<B: AutodiffBackend>(ops: &mut dyn Ops, device: &B::Device) -> Result<Vec<Timing>, TrainError> {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Distribution, Tensor};
    let (batch, seq, h, heads, d, inter, vocab) =
        (16usize, 1024usize, 768usize, 12usize, 64usize, 2048usize, 32_000usize);
    let n = batch * seq;
    let mut rng = StdRng::seed_from_u64(9);
    let (f, bf) = (DType::F32, DType::Bf16);
    let mut out = Vec::new();
    let rnd = |ops: &mut dyn Ops, rng: &mut StdRng, len: usize, dt: DType| put(ops, &uniform(rng, len, 1.0), dt);

    // Matmuls: the fused qkv projection and a weight gradient.
    let x = rnd(ops, &mut rng, n * h, bf)?;
    let w = rnd(ops, &mut rng, 3 * h * h, bf)?;
    let y = ops.alloc(n * 3 * h, bf)?;
    let g = Gemm {
        out: y,
        a: x,
        b: w,
        c: None,
        m: n,
        n: 3 * h,
        k: h,
        ta: false,
        tb: true,
    };
    let fast = time_fast(ops, 3, 20, |ops| ops.gemm(&g))?;
    let (bx, bw) = (
        Tensor::<B::InnerBackend, 2>::random([n, h], Distribution::Default, device),
        Tensor::<B::InnerBackend, 2>::random([h, 3 * h], Distribution::Default, device),
    );
    let burn = time_burn::<B>(device, 3, 20, || {
        let _ = bx.clone().matmul(bw.clone());
    })?;
    out.push(Timing {
        name: format!("matmul {n}x{}x{h} (qkv projection)", 3 * h),
        fast_ms: fast * 1e3,
        burn_ms: Some(burn * 1e3),
        flops: Some(2.0 * (n * 3 * h * h) as f64),
    });
    let dy = rnd(ops, &mut rng, n * h, bf)?;
    let act = rnd(ops, &mut rng, n * inter, bf)?;
    let gw = ops.alloc(h * inter, f)?;
    let g = Gemm {
        out: gw,
        a: dy,
        b: act,
        c: Some(gw),
        m: h,
        n: inter,
        k: n,
        ta: true,
        tb: false,
    };
    let fast = time_fast(ops, 3, 20, |ops| ops.gemm(&g))?;
    out.push(Timing {
        name: format!("matmul {h}x{inter}x{n} (down_proj weight gradient, accumulated)"),
        fast_ms: fast * 1e3,
        burn_ms: None,
        flops: Some(2.0 * (n * h * inter) as f64),
    });

    // Attention, causal over whole rows.
    let rows = random_rows(3, batch, seq, 100, false);
    let hb = HostBatch::new(&rows)?;
    let mask = mask_on(ops, &hb, &rows, None)?;
    let local_mask = mask_on(ops, &hb, &rows, Some((0.6 * 8.0 * std::f32::consts::LOG2_E, 0.1)))?;
    let s = AttnShape {
        batch,
        seq,
        heads,
        kv_heads: heads,
        head_dim: d,
        scale: AttnShape::plain_scale(d),
    };
    let qn = batch * heads * seq * d;
    let (q, k, v) = (
        rnd(ops, &mut rng, qn, bf)?,
        rnd(ops, &mut rng, qn, bf)?,
        rnd(ops, &mut rng, qn, bf)?,
    );
    let (o, lse) = (ops.alloc(qn, bf)?, ops.alloc(batch * heads * seq, f)?);
    let fwd = time_fast(ops, 2, 10, |ops| ops.attention(o, lse, q, k, v, &mask, s))?;
    let dout = rnd(ops, &mut rng, qn, bf)?;
    let (dq, dk, dv) = (ops.alloc(qn, bf)?, ops.alloc(qn, bf)?, ops.alloc(qn, bf)?);
    let bwd = time_fast(ops, 2, 10, |ops| {
        ops.attention_backward(dq, dk, dv, dout, o, lse, q, k, v, &mask, s)
    })?;
    let local_fwd = time_fast(ops, 2, 10, |ops| ops.attention(o, lse, q, k, v, &local_mask, s))?;
    let local_bwd = time_fast(ops, 2, 10, |ops| {
        ops.attention_backward(dq, dk, dv, dout, o, lse, q, k, v, &local_mask, s)
    })?;
    // burn: the decoder's attention as the plain path computes it (scores materialised).
    let shape = [batch, heads, seq, d];
    let (bq, bk, bv) = (
        Tensor::<B, 4>::random(shape, Distribution::Default, device).require_grad(),
        Tensor::<B, 4>::random(shape, Distribution::Default, device).require_grad(),
        Tensor::<B, 4>::random(shape, Distribution::Default, device).require_grad(),
    );
    let seg = Tensor::<B, 2, burn::tensor::Int>::zeros([batch, seq], device);
    let bmask = crate::attention::AttentionMask::segments(seg);
    let attend = || {
        let scores = bq
            .clone()
            .matmul(bk.clone().swap_dims(2, 3))
            .div_scalar((d as f64).sqrt());
        softmax(bmask.apply(scores), 3).matmul(bv.clone())
    };
    let burn_fwd = time_burn::<B>(device, 2, 5, || {
        let _ = attend();
    })?;
    let burn_all = time_burn::<B>(device, 2, 5, || {
        let _ = attend().sum().backward();
    })?;
    let flops = 4.0 * (batch * heads * seq * seq * d) as f64 / 2.0; // causal half
    out.push(Timing {
        name: format!("attention forward, causal {batch}x{heads}x{seq}x{d}"),
        fast_ms: fwd * 1e3,
        burn_ms: Some(burn_fwd * 1e3),
        flops: Some(flops),
    });
    out.push(Timing {
        name: "attention forward + backward".into(),
        fast_ms: (fwd + bwd) * 1e3,
        burn_ms: Some(burn_all * 1e3),
        flops: Some(3.5 * flops),
    });
    out.push(Timing {
        name: "attention forward + backward with the localist dial (λ 0.6, Δ 8, off-target penalty)".into(),
        fast_ms: (local_fwd + local_bwd) * 1e3,
        burn_ms: None,
        flops: Some(3.5 * flops),
    });

    // RMSNorm forward and backward.
    let xr = rnd(ops, &mut rng, n * h, f)?;
    let wr = put(ops, &vec![1.0; h], f)?;
    let (yr, rs) = (ops.alloc(n * h, bf)?, ops.alloc(n, f)?);
    let (dres, db, dw) = (ops.alloc(n * h, f)?, ops.alloc(n * h, bf)?, ops.alloc(h, f)?);
    let fast = time_fast(ops, 3, 20, |ops| {
        ops.rmsnorm(yr, rs, xr, wr, n, h, 1e-6)?;
        ops.rmsnorm_backward(dres, db, dw, dy, xr, wr, rs, n, h, true)
    })?;
    let norm = crate::model::RmsNorm::<B>::new(h, 1e-6, device);
    let bxr = Tensor::<B, 3>::random([batch, seq, h], Distribution::Default, device).require_grad();
    let burn = time_burn::<B>(device, 3, 10, || {
        let _ = norm.forward(bxr.clone()).sum().backward();
    })?;
    out.push(Timing {
        name: format!("rmsnorm forward + backward {n}x{h}"),
        fast_ms: fast * 1e3,
        burn_ms: Some(burn * 1e3),
        flops: None,
    });

    // SwiGLU forward and backward.
    let gu = rnd(ops, &mut rng, n * 2 * inter, bf)?;
    let (hh, dgu) = (ops.alloc(n * inter, bf)?, ops.alloc(n * 2 * inter, bf)?);
    let fast = time_fast(ops, 3, 20, |ops| {
        ops.swiglu(hh, gu, n, inter)?;
        ops.swiglu_backward(dgu, act, gu, n, inter)
    })?;
    out.push(Timing {
        name: format!("swiglu forward + backward {n}x{inter}"),
        fast_ms: fast * 1e3,
        burn_ms: None,
        flops: None,
    });

    // The vocabulary projection and cross-entropy of one chunk of 4096 rows, with its gradients.
    let r = 4096;
    let emb = rnd(ops, &mut rng, vocab * h, bf)?;
    let (logits, dl, loss) = (ops.alloc(r * vocab, f)?, ops.alloc(r * vocab, bf)?, ops.alloc(r, f)?);
    let t: Vec<i32> = (0..r).map(|_| rng.random_range(0..vocab as i32)).collect();
    let (tv, wv) = (put_i(ops, &t)?, put(ops, &vec![1.0; r], f)?);
    let (dxc, ge) = (ops.alloc(r * h, bf)?, ops.alloc(vocab * h, f)?);
    let xc = x.prefix(r * h);
    let fast = time_fast(ops, 2, 10, |ops| {
        ops.gemm(&Gemm {
            out: logits,
            a: xc,
            b: emb,
            c: None,
            m: r,
            n: vocab,
            k: h,
            ta: false,
            tb: true,
        })?;
        ops.cross_entropy(Some(dl), loss, None, logits, tv, wv, r, vocab, 1.0)?;
        ops.gemm(&Gemm {
            out: dxc,
            a: dl,
            b: emb,
            c: None,
            m: r,
            n: h,
            k: vocab,
            ta: false,
            tb: false,
        })?;
        ops.gemm(&Gemm {
            out: ge,
            a: dl,
            b: xc,
            c: Some(ge),
            m: vocab,
            n: h,
            k: r,
            ta: true,
            tb: false,
        })
    })?;
    let bh = Tensor::<B, 2>::random([r, h], Distribution::Default, device).require_grad();
    let be = Tensor::<B, 2>::random([h, vocab], Distribution::Default, device).require_grad();
    let bt = Tensor::<B, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(t.iter().map(|&x| x as i64).collect::<Vec<_>>(), [r, 1]),
        device,
    );
    let burn = time_burn::<B>(device, 2, 5, || {
        let logp = burn::tensor::activation::log_softmax(bh.clone().matmul(be.clone()), 1);
        let _ = logp.gather(1, bt.clone()).sum().neg().backward();
    })?;
    out.push(Timing {
        name: format!("lm head + cross-entropy + gradients, {r} rows x {vocab}"),
        fast_ms: fast * 1e3,
        burn_ms: Some(burn * 1e3),
        flops: Some(6.0 * (r * h * vocab) as f64),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernel::cpu::CpuOps;

    /// The checks' harness on the CPU reference against itself: every case runs at its stated
    /// shapes (a mis-sized buffer is an error here, not on the GPU machine), and writes every
    /// element of every output with a finite value (outputs start as NaN, which fails `ok`).
    #[test]
    fn every_kernel_check_runs_and_fills_its_outputs_on_the_reference() {
        let checks = kernel_checks(&mut CpuOps::new(), &mut CpuOps::new(), 7, &[64, 128]).unwrap();
        assert!(checks.len() > 50, "{}", checks.len());
        for c in &checks {
            assert!(c.ok(), "{}: {}", c.name, c.rel_err);
        }
    }
}

//! The reference implementation of the kernel engine's kernel set, in plain Rust on the CPU.
//!
//! Each operation is the mathematical statement of its CUDA kernel (`cuda/kernels.cu`), with the
//! same storage precision: a Bf16 view holds values rounded to bfloat16 (round to nearest even)
//! whenever they are written, arithmetic is fp32 (sums of squares and the loss in f64). It is
//! slow and exists to be right: the engine run on it is compared with burn's autodiff in CI, and
//! the CUDA kernels are compared with it on the GPU (`check.rs`).

// The reference is index arithmetic over flat buffers, like the kernels it states.
#![allow(clippy::needless_range_loop)]

use half::bf16;

use super::ops::{AdamWArgs, AttnMask, AttnShape, DType, Gemm, Host, Ops, View};
use crate::error::TrainError;

enum Store {
    F(Vec<f32>),
    I(Vec<i32>),
}

/// The CPU reference device.
#[derive(Default)]
pub struct CpuOps {
    bufs: Vec<Store>,
    /// Keep Bf16 views in full f32 precision (to check the engine's arithmetic against burn's f32
    /// exactly, apart from the order of sums).
    pub exact: bool,
}

fn round(x: f32) -> f32 {
    bf16::from_f32(x).to_f32()
}

impl CpuOps {
    /// An empty device that rounds Bf16 views as the GPU stores them.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty device without bf16 rounding.
    pub fn exact() -> Self {
        CpuOps {
            exact: true,
            ..Self::default()
        }
    }

    fn get(&self, v: View) -> Vec<f32> {
        match &self.bufs[v.buf] {
            Store::F(x) => x[v.offset..v.offset + v.len].to_vec(),
            Store::I(_) => panic!("float read of an integer view"),
        }
    }

    fn local(&self, mask: &AttnMask) -> Option<LocalHost> {
        mask.local.map(|l| LocalHost {
            block: self.get_i(l.block),
            target: self.get_i(l.target),
            bias_log2: l.bias_log2,
            fidelity: self.get(l.fidelity),
            penalty: l.penalty,
        })
    }

    fn get_i(&self, v: View) -> Vec<i32> {
        match &self.bufs[v.buf] {
            Store::I(x) => x[v.offset..v.offset + v.len].to_vec(),
            Store::F(_) => panic!("integer read of a float view"),
        }
    }

    fn put(&mut self, v: View, data: &[f32]) {
        assert_eq!(
            data.len(),
            v.len,
            "write of {} values into a view of {}",
            data.len(),
            v.len
        );
        let bf = v.dtype == DType::Bf16 && !self.exact;
        match &mut self.bufs[v.buf] {
            Store::F(x) => {
                for (dst, &s) in x[v.offset..v.offset + v.len].iter_mut().zip(data) {
                    *dst = if bf { round(s) } else { s };
                }
            }
            Store::I(_) => panic!("float write into an integer view"),
        }
    }
}

/// Whether key `k` of row `b` is visible to query `q` (causal, then the segment structure).
/// A layer's localist dial, read from the device (see [`super::ops::Local`]).
struct LocalHost {
    block: Vec<i32>,
    target: Vec<i32>,
    bias_log2: f32,
    fidelity: Vec<f32>,
    penalty: f32,
}

impl LocalHost {
    /// Whether key `k` lies in query `q`'s target block (row `b` of `t` tokens).
    fn on_target(&self, b: usize, t: usize, q: usize, k: usize) -> bool {
        self.block[b * t + k] == self.target[b * t + q]
    }

    /// What the dial subtracts from the (log2-domain) score of key `k` for query `q`.
    fn bias(&self, b: usize, t: usize, q: usize, k: usize) -> f32 {
        if self.on_target(b, t, q, k) {
            0.0
        } else {
            self.bias_log2
        }
    }
}

fn visible(seg: &[i32], vis: Option<&[i32]>, mask: &AttnMask, b: usize, t: usize, q: usize, k: usize) -> bool {
    if k > q {
        return false;
    }
    let (sq, sk) = (seg[b * t + q] as usize, seg[b * t + k] as usize);
    match vis {
        None => sq == sk,
        Some(bits) => {
            let word = bits[(b * mask.segments + sq) * mask.words + sk / 32] as u32;
            (word >> (sk % 32)) & 1 == 1
        }
    }
}

#[allow(clippy::too_many_arguments)]
impl Ops for CpuOps {
    fn alloc(&mut self, len: usize, dtype: DType) -> Result<View, TrainError> {
        self.bufs.push(match dtype {
            DType::I32 => Store::I(vec![0; len]),
            _ => Store::F(vec![0.0; len]),
        });
        Ok(View {
            buf: self.bufs.len() - 1,
            offset: 0,
            len,
            dtype,
        })
    }

    fn free(&mut self, v: View) -> Result<(), TrainError> {
        self.bufs[v.buf] = Store::F(Vec::new());
        Ok(())
    }

    fn upload(&mut self, dst: View, data: Host<'_>) -> Result<(), TrainError> {
        match data {
            Host::F32(x) => self.put(dst, x),
            Host::I32(x) => match &mut self.bufs[dst.buf] {
                Store::I(s) => s[dst.offset..dst.offset + dst.len].copy_from_slice(x),
                Store::F(_) => panic!("integer upload into a float view"),
            },
        }
        Ok(())
    }

    fn download(&mut self, src: View) -> Result<Vec<f32>, TrainError> {
        Ok(self.get(src))
    }

    fn zero(&mut self, dst: View) -> Result<(), TrainError> {
        match &mut self.bufs[dst.buf] {
            Store::F(x) => x[dst.offset..dst.offset + dst.len].fill(0.0),
            Store::I(x) => x[dst.offset..dst.offset + dst.len].fill(0),
        }
        Ok(())
    }

    fn cast_bf16(&mut self, dst: View, src: View) -> Result<(), TrainError> {
        let x = self.get(src);
        self.put(dst, &x);
        Ok(())
    }

    fn gemm(&mut self, g: &Gemm) -> Result<(), TrainError> {
        let (a, b) = (self.get(g.a.prefix(g.m * g.k)), self.get(g.b.prefix(g.k * g.n)));
        let mut out = match g.c {
            Some(c) => self.get(c.prefix(g.m * g.n)),
            None => vec![0.0; g.m * g.n],
        };
        let at = |i: usize, p: usize| if g.ta { a[p * g.m + i] } else { a[i * g.k + p] };
        let bt = |p: usize, j: usize| if g.tb { b[j * g.k + p] } else { b[p * g.n + j] };
        for i in 0..g.m {
            for j in 0..g.n {
                let mut s = 0.0f32;
                for p in 0..g.k {
                    s += at(i, p) * bt(p, j);
                }
                out[i * g.n + j] += s;
            }
        }
        self.put(g.out.prefix(g.m * g.n), &out);
        Ok(())
    }

    fn embed(&mut self, out: View, table: View, ids: View, n: usize, h: usize) -> Result<(), TrainError> {
        // A lookup is a gather of the table's rows.
        self.gather_rows(out, table, ids, n, h)
    }

    fn embed_backward(
        &mut self,
        dtable: View,
        dx: View,
        tok: View,
        starts: View,
        pos: View,
        uniq: usize,
        h: usize,
    ) -> Result<(), TrainError> {
        let (mut d, x) = (self.get(dtable), self.get(dx));
        let (tok, starts, pos) = (self.get_i(tok), self.get_i(starts), self.get_i(pos));
        for u in 0..uniq {
            let row = tok[u] as usize;
            for i in 0..h {
                let mut acc = 0.0f32;
                for &p in &pos[starts[u] as usize..starts[u + 1] as usize] {
                    acc += x[p as usize * h + i];
                }
                d[row * h + i] += acc;
            }
        }
        self.put(dtable, &d);
        Ok(())
    }

    fn rmsnorm(
        &mut self,
        y: View,
        rstd: View,
        x: View,
        w: View,
        n: usize,
        h: usize,
        eps: f32,
    ) -> Result<(), TrainError> {
        let (x, w) = (self.get(x.prefix(n * h)), self.get(w));
        let (mut out, mut rs) = (vec![0.0; n * h], vec![0.0; n]);
        for r in 0..n {
            let row = &x[r * h..(r + 1) * h];
            let ss: f32 = row.iter().map(|v| v * v).sum();
            let rr = 1.0 / (ss / h as f32 + eps).sqrt();
            rs[r] = rr;
            for i in 0..h {
                out[r * h + i] = row[i] * rr * w[i];
            }
        }
        self.put(y.prefix(n * h), &out);
        self.put(rstd.prefix(n), &rs);
        Ok(())
    }

    fn rmsnorm_backward(
        &mut self,
        dres: View,
        dres_bf16: View,
        dw: View,
        dy: View,
        x: View,
        w: View,
        rstd: View,
        n: usize,
        h: usize,
        accumulate: bool,
    ) -> Result<(), TrainError> {
        let (x, dy, w, rs) = (
            self.get(x.prefix(n * h)),
            self.get(dy.prefix(n * h)),
            self.get(w),
            self.get(rstd.prefix(n)),
        );
        let mut d = if accumulate {
            self.get(dres.prefix(n * h))
        } else {
            vec![0.0; n * h]
        };
        let mut gw = self.get(dw);
        for r in 0..n {
            let rr = rs[r];
            let s: f32 = (0..h).map(|i| w[i] * dy[r * h + i] * x[r * h + i]).sum();
            let c = s * rr * rr * rr / h as f32;
            for i in 0..h {
                d[r * h + i] += rr * w[i] * dy[r * h + i] - c * x[r * h + i];
                gw[i] += dy[r * h + i] * x[r * h + i] * rr;
            }
        }
        self.put(dres.prefix(n * h), &d);
        self.put(dres_bf16.prefix(n * h), &d);
        self.put(dw, &gw);
        Ok(())
    }

    fn rope_split(
        &mut self,
        q: View,
        k: View,
        v: View,
        qkv: View,
        bias: Option<View>,
        pos: View,
        inv_freq: View,
        s: AttnShape,
    ) -> Result<(), TrainError> {
        let (d, half) = (s.head_dim, s.head_dim / 2);
        let heads = s.heads + 2 * s.kv_heads;
        let n = s.batch * s.seq;
        let x = self.get(qkv.prefix(n * heads * d));
        let bias = bias.map(|b| self.get(b));
        let (pos, freq) = (self.get_i(pos), self.get(inv_freq));
        let mut qo = vec![0.0; s.batch * s.heads * s.seq * d];
        let mut ko = vec![0.0; s.batch * s.kv_heads * s.seq * d];
        let mut vo = ko.clone();
        for tok in 0..n {
            let (b, t) = (tok / s.seq, tok % s.seq);
            for hd in 0..heads {
                let src = tok * heads * d + hd * d;
                for i in 0..half {
                    let (mut x1, mut x2) = (x[src + i], x[src + i + half]);
                    if let Some(bias) = &bias {
                        x1 += bias[hd * d + i];
                        x2 += bias[hd * d + i + half];
                    }
                    if hd >= s.heads + s.kv_heads {
                        let dst = ((b * s.kv_heads + hd - s.heads - s.kv_heads) * s.seq + t) * d;
                        vo[dst + i] = x1;
                        vo[dst + i + half] = x2;
                        continue;
                    }
                    let (sn, cs) = (pos[tok] as f32 * freq[i]).sin_cos();
                    let (y1, y2) = (x1 * cs - x2 * sn, x2 * cs + x1 * sn);
                    let (out, dst) = if hd < s.heads {
                        (&mut qo, ((b * s.heads + hd) * s.seq + t) * d)
                    } else {
                        (&mut ko, ((b * s.kv_heads + hd - s.heads) * s.seq + t) * d)
                    };
                    out[dst + i] = y1;
                    out[dst + i + half] = y2;
                }
            }
        }
        self.put(q.prefix(qo.len()), &qo);
        self.put(k.prefix(ko.len()), &ko);
        self.put(v.prefix(vo.len()), &vo);
        Ok(())
    }

    fn rope_merge(
        &mut self,
        dqkv: View,
        dq: View,
        dk: View,
        dv: View,
        pos: View,
        inv_freq: View,
        s: AttnShape,
    ) -> Result<(), TrainError> {
        let (d, half) = (s.head_dim, s.head_dim / 2);
        let heads = s.heads + 2 * s.kv_heads;
        let n = s.batch * s.seq;
        let (gq, gk, gv) = (
            self.get(dq.prefix(s.batch * s.heads * s.seq * d)),
            self.get(dk.prefix(s.batch * s.kv_heads * s.seq * d)),
            self.get(dv.prefix(s.batch * s.kv_heads * s.seq * d)),
        );
        let (pos, freq) = (self.get_i(pos), self.get(inv_freq));
        let mut out = vec![0.0; n * heads * d];
        for tok in 0..n {
            let (b, t) = (tok / s.seq, tok % s.seq);
            for hd in 0..heads {
                let dst = tok * heads * d + hd * d;
                for i in 0..half {
                    if hd >= s.heads + s.kv_heads {
                        let src = ((b * s.kv_heads + hd - s.heads - s.kv_heads) * s.seq + t) * d;
                        out[dst + i] = gv[src + i];
                        out[dst + i + half] = gv[src + i + half];
                        continue;
                    }
                    let (g, src) = if hd < s.heads {
                        (&gq, ((b * s.heads + hd) * s.seq + t) * d)
                    } else {
                        (&gk, ((b * s.kv_heads + hd - s.heads) * s.seq + t) * d)
                    };
                    let (g1, g2) = (g[src + i], g[src + i + half]);
                    let (sn, cs) = (pos[tok] as f32 * freq[i]).sin_cos();
                    out[dst + i] = g1 * cs + g2 * sn;
                    out[dst + i + half] = g2 * cs - g1 * sn;
                }
            }
        }
        self.put(dqkv.prefix(out.len()), &out);
        Ok(())
    }

    fn attention(
        &mut self,
        o: View,
        lse2: View,
        q: View,
        k: View,
        v: View,
        mask: &AttnMask,
        s: AttnShape,
    ) -> Result<(), TrainError> {
        let (t, d) = (s.seq, s.head_dim);
        let (qs, ks, vs) = (self.get(q), self.get(k), self.get(v));
        let seg = self.get_i(mask.seg);
        let vis = mask.vis.map(|v| self.get_i(v));
        let local = self.local(mask);
        let scale_log2 = std::f32::consts::LOG2_E * s.scale;
        let mut out = vec![0.0; s.batch * t * s.heads * d];
        let mut lse = vec![0.0; s.batch * s.heads * t];
        let (mut fid, mut ent) = (vec![0.0; lse.len()], vec![0.0; lse.len()]);
        for b in 0..s.batch {
            for h in 0..s.heads {
                let kvh = h / (s.heads / s.kv_heads);
                for qi in 0..t {
                    let qrow = &qs[((b * s.heads + h) * t + qi) * d..][..d];
                    let scores: Vec<(usize, f32)> = (0..t)
                        .filter(|&kj| visible(&seg, vis.as_deref(), mask, b, t, qi, kj))
                        .map(|kj| {
                            let krow = &ks[((b * s.kv_heads + kvh) * t + kj) * d..][..d];
                            let dot: f32 = qrow.iter().zip(krow).map(|(a, c)| a * c).sum();
                            (
                                kj,
                                dot * scale_log2 - local.as_ref().map_or(0.0, |l| l.bias(b, t, qi, kj)),
                            )
                        })
                        .collect();
                    let m = scores.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
                    let l: f32 = scores.iter().map(|x| (x.1 - m).exp2()).sum();
                    let row = (b * s.heads + h) * t + qi;
                    lse[row] = m + l.log2();
                    let dst = ((b * t + qi) * s.heads + h) * d;
                    for &(kj, sc) in &scores {
                        let p = (sc - m).exp2() / l;
                        let vrow = &vs[((b * s.kv_heads + kvh) * t + kj) * d..][..d];
                        for i in 0..d {
                            out[dst + i] += p * vrow[i];
                        }
                        if let Some(loc) = &local {
                            fid[row] += if loc.on_target(b, t, qi, kj) { p } else { 0.0 };
                            ent[row] -= if p > 0.0 { p * p.log2() } else { 0.0 };
                        }
                    }
                }
            }
        }
        self.put(o.prefix(out.len()), &out);
        self.put(lse2.prefix(lse.len()), &lse);
        if let Some(l) = &mask.local {
            self.put(l.fidelity.prefix(fid.len()), &fid);
            self.put(l.entropy.prefix(ent.len()), &ent);
        }
        Ok(())
    }

    fn attention_backward(
        &mut self,
        dq: View,
        dk: View,
        dv: View,
        dout: View,
        o: View,
        lse2: View,
        q: View,
        k: View,
        v: View,
        mask: &AttnMask,
        s: AttnShape,
    ) -> Result<(), TrainError> {
        let (t, d) = (s.seq, s.head_dim);
        let (qs, ks, vs) = (self.get(q), self.get(k), self.get(v));
        let (go, os, lse) = (self.get(dout), self.get(o), self.get(lse2));
        let seg = self.get_i(mask.seg);
        let vis = mask.vis.map(|v| self.get_i(v));
        let local = self.local(mask);
        let scale = s.scale;
        let scale_log2 = std::f32::consts::LOG2_E * scale;
        let mut gq = vec![0.0; s.batch * s.heads * t * d];
        let mut gk = vec![0.0; s.batch * s.kv_heads * t * d];
        let mut gv = gk.clone();
        for b in 0..s.batch {
            for h in 0..s.heads {
                let kvh = h / (s.heads / s.kv_heads);
                for qi in 0..t {
                    let qrow = &qs[((b * s.heads + h) * t + qi) * d..][..d];
                    let orow = ((b * t + qi) * s.heads + h) * d;
                    let row = (b * s.heads + h) * t + qi;
                    // The penalty's gradient: dp gains c on target keys, delta gains c·fidelity.
                    let c = local.as_ref().map_or(0.0, |l| l.penalty);
                    let delta: f32 = (0..d).map(|i| go[orow + i] * os[orow + i]).sum::<f32>()
                        + local.as_ref().map_or(0.0, |l| c * l.fidelity[row]);
                    let l = lse[row];
                    for kj in 0..t {
                        if !visible(&seg, vis.as_deref(), mask, b, t, qi, kj) {
                            continue;
                        }
                        let kr = ((b * s.kv_heads + kvh) * t + kj) * d;
                        let dot: f32 = (0..d).map(|i| qrow[i] * ks[kr + i]).sum();
                        let bias = local.as_ref().map_or(0.0, |l| l.bias(b, t, qi, kj));
                        let p = (dot * scale_log2 - bias - l).exp2();
                        let on = local.as_ref().is_some_and(|l| l.on_target(b, t, qi, kj));
                        let dp: f32 = (0..d).map(|i| go[orow + i] * vs[kr + i]).sum::<f32>() + if on { c } else { 0.0 };
                        let ds = p * (dp - delta);
                        let qr = ((b * s.heads + h) * t + qi) * d;
                        for i in 0..d {
                            gv[kr + i] += p * go[orow + i];
                            gq[qr + i] += scale * ds * ks[kr + i];
                            gk[kr + i] += scale * ds * qrow[i];
                        }
                    }
                }
            }
        }
        self.put(dq.prefix(gq.len()), &gq);
        self.put(dk.prefix(gk.len()), &gk);
        self.put(dv.prefix(gv.len()), &gv);
        Ok(())
    }

    fn swiglu(&mut self, h: View, gu: View, n: usize, inter: usize) -> Result<(), TrainError> {
        let x = self.get(gu.prefix(n * 2 * inter));
        let mut out = vec![0.0; n * inter];
        for r in 0..n {
            for j in 0..inter {
                let (g, u) = (x[r * 2 * inter + j], x[r * 2 * inter + inter + j]);
                out[r * inter + j] = g / (1.0 + (-g).exp()) * u;
            }
        }
        self.put(h.prefix(n * inter), &out);
        Ok(())
    }

    fn swiglu_backward(&mut self, dgu: View, dh: View, gu: View, n: usize, inter: usize) -> Result<(), TrainError> {
        let (x, dy) = (self.get(gu.prefix(n * 2 * inter)), self.get(dh.prefix(n * inter)));
        let mut out = vec![0.0; n * 2 * inter];
        for r in 0..n {
            for j in 0..inter {
                let (g, u, d) = (x[r * 2 * inter + j], x[r * 2 * inter + inter + j], dy[r * inter + j]);
                let sig = 1.0 / (1.0 + (-g).exp());
                out[r * 2 * inter + j] = d * u * sig * (1.0 + g * (1.0 - sig));
                out[r * 2 * inter + inter + j] = d * g * sig;
            }
        }
        self.put(dgu.prefix(out.len()), &out);
        Ok(())
    }

    fn gather_rows(&mut self, dst: View, src: View, rows: View, count: usize, h: usize) -> Result<(), TrainError> {
        let (x, rows) = (self.get(src), self.get_i(rows));
        let mut out = vec![0.0; count * h];
        for r in 0..count {
            let s = rows[r] as usize;
            out[r * h..(r + 1) * h].copy_from_slice(&x[s * h..(s + 1) * h]);
        }
        self.put(dst.prefix(count * h), &out);
        Ok(())
    }

    fn scatter_rows(&mut self, dst: View, src: View, rows: View, count: usize, h: usize) -> Result<(), TrainError> {
        let (mut out, x, rows) = (self.get(dst), self.get(src), self.get_i(rows));
        for r in 0..count {
            let d = rows[r] as usize;
            out[d * h..(d + 1) * h].copy_from_slice(&x[r * h..(r + 1) * h]);
        }
        self.put(dst, &out);
        Ok(())
    }

    fn cross_entropy(
        &mut self,
        dlogits: Option<View>,
        logp: View,
        entropy: Option<View>,
        logits: View,
        targets: View,
        coef: View,
        rows: usize,
        vocab: usize,
        inv_temp: f32,
    ) -> Result<(), TrainError> {
        let (x, tg, c) = (
            self.get(logits.prefix(rows * vocab)),
            self.get_i(targets.prefix(rows)),
            self.get(coef.prefix(rows)),
        );
        let (mut dl, mut lp, mut ent) = (vec![0.0; rows * vocab], vec![0.0; rows], vec![0.0; rows]);
        for r in 0..rows {
            let z: Vec<f32> = x[r * vocab..(r + 1) * vocab].iter().map(|v| v * inv_temp).collect();
            let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f32>().ln();
            let t = tg[r] as usize;
            lp[r] = z[t] - lse;
            // −Σ p log p as Σ p (lse − z): non-negative terms, no cancellation.
            ent[r] = z.iter().map(|v| (v - lse).exp() * (lse - v)).sum::<f32>();
            for j in 0..vocab {
                let onehot = if j == t { 1.0 } else { 0.0 };
                dl[r * vocab + j] = c[r] * inv_temp * ((z[j] - lse).exp() - onehot);
            }
        }
        if let Some(d) = dlogits {
            self.put(d.prefix(dl.len()), &dl);
        }
        if let Some(e) = entropy {
            self.put(e.prefix(rows), &ent);
        }
        self.put(logp.prefix(rows), &lp);
        Ok(())
    }

    fn column_sum_add(&mut self, dst: View, x: View, rows: usize, cols: usize) -> Result<(), TrainError> {
        let (mut d, x) = (self.get(dst), self.get(x.prefix(rows * cols)));
        for r in 0..rows {
            for j in 0..cols {
                d[j] += x[r * cols + j];
            }
        }
        self.put(dst, &d);
        Ok(())
    }

    fn sum_squares(&mut self, x: View) -> Result<f64, TrainError> {
        Ok(self.get(x).iter().map(|&v| v as f64 * v as f64).sum())
    }

    fn adamw(&mut self, a: &AdamWArgs) -> Result<(), TrainError> {
        let (mut p, g, mut m, mut v) = (self.get(a.params), self.get(a.grads), self.get(a.m), self.get(a.v));
        for i in 0..p.len() {
            let gi = g[i] * a.grad_scale;
            m[i] = a.beta1 * m[i] + (1.0 - a.beta1) * gi;
            v[i] = a.beta2 * v[i] + (1.0 - a.beta2) * gi * gi;
            let pi = p[i] * (1.0 - a.lr * a.weight_decay);
            p[i] = pi - a.lr * (m[i] / a.bias_correction1) / ((v[i] / a.bias_correction2).sqrt() + a.eps);
        }
        self.put(a.params, &p);
        self.put(a.params_bf16, &p);
        self.put(a.m, &m);
        self.put(a.v, &v);
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), TrainError> {
        Ok(())
    }
}

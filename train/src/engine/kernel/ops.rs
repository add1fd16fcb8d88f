//! The kernel engine's kernel set: every operation a training step of the decoder needs, over
//! typed windows of device buffers.
//!
//! Two implementations: `cpu.rs` states each operation in plain Rust (the reference, and what CI
//! runs), `cuda/` launches our NVRTC-compiled kernels and cuBLASLt. The engine (`step.rs`) is
//! written once against this trait, so the CPU run of the engine checks the step's orchestration
//! (which matmul with which transposes, which buffer feeds which backward) against burn's autodiff,
//! and the GPU check compares each CUDA kernel with the CPU one on the same inputs.

use crate::error::TrainError;

/// Element type of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// bfloat16 (stored as 16-bit words; arithmetic is fp32).
    Bf16,
    /// 32-bit signed integer (token ids, positions, segments, indices, bitsets).
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::Bf16 => 2,
        }
    }
}

/// A typed window `[offset, offset + len)` (in elements) of buffer `buf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The buffer (an index into the implementation's allocations).
    pub buf: usize,
    /// First element.
    pub offset: usize,
    /// Elements.
    pub len: usize,
    /// Element type.
    pub dtype: DType,
}

impl View {
    /// The sub-window `[start, start + len)` of this one.
    ///
    /// # Panics
    /// When the sub-window does not fit (a bug in the caller's layout arithmetic).
    pub fn slice(self, start: usize, len: usize) -> View {
        assert!(start + len <= self.len, "view slice {start}+{len} past {}", self.len);
        View {
            offset: self.offset + start,
            len,
            ..self
        }
    }

    /// The first `len` elements.
    pub fn prefix(self, len: usize) -> View {
        self.slice(0, len)
    }
}

/// Host data to upload.
#[derive(Debug, Clone, Copy)]
pub enum Host<'a> {
    /// Floats, into an F32 or (rounded) Bf16 view.
    F32(&'a [f32]),
    /// Integers, into an I32 view.
    I32(&'a [i32]),
}

/// `out[m×n] = op(a) · op(b) (+ c)`, row-major. `op(a)` is `a` (`[m, k]`) or, with `ta`, the
/// transpose of `a` stored `[k, m]`; likewise `op(b)` is `b` (`[k, n]`) or, with `tb`, `b` stored
/// `[n, k]` transposed. `a` and `b` are bf16, accumulation is fp32, `out` is F32 or Bf16; `c`
/// (same type and shape as `out`, possibly `out` itself) is added when given.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    /// Result.
    pub out: View,
    /// Left operand.
    pub a: View,
    /// Right operand.
    pub b: View,
    /// Added to the product.
    pub c: Option<View>,
    /// Rows of the result.
    pub m: usize,
    /// Columns of the result.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `a` is stored transposed.
    pub ta: bool,
    /// `b` is stored transposed.
    pub tb: bool,
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnShape {
    /// Rows.
    pub batch: usize,
    /// Sequence length (a multiple of 64).
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Head dimension (64 or 128 on CUDA).
    pub head_dim: usize,
    /// Softmax scale of q·k: `1/sqrt(head_dim)`, times the square of the RoPE attention factor
    /// (YaRN, LongRoPE scale cos and sin, so both q and k).
    pub scale: f32,
}

impl AttnShape {
    /// The usual softmax scale, `1/sqrt(head_dim)`.
    pub fn plain_scale(head_dim: usize) -> f32 {
        1.0 / (head_dim as f32).sqrt()
    }
}

/// The attention mask of a batch, built on the host by `batch.rs` (see there for its meaning).
#[derive(Debug, Clone, Copy)]
pub struct AttnMask {
    /// `[batch, seq]` segment of each token.
    pub seg: View,
    /// `[batch, seq / 64]` first key tile each query tile sees.
    pub qt_kt0: View,
    /// `[batch, seq / 64]` one past the last query tile that sees each key tile.
    pub kt_qt1: View,
    /// `[batch, segments, words]` visibility bitsets, or `None` when a segment sees only itself.
    pub vis: Option<View>,
    /// Segments per row of the bitset table.
    pub segments: usize,
    /// 32-bit words per bitset.
    pub words: usize,
    /// `[batch, seq / 64, full_words]` tile pairs visible in full (see `batch.rs`).
    pub full: View,
    /// 32-bit words per row of `full`.
    pub full_words: usize,
    /// The localist dial of this layer (`crate::localist`), when the run has one.
    pub local: Option<Local>,
}

/// One layer's localist attention: keys off a query's target block get `−bias` on their
/// (log2-domain) scores; the forward reports each query's mass on its target block and its
/// entropy; the backward adds the gradient of the penalty `Ω = mean over real queries of
/// (1 − fidelity)`, weighted `penalty` (∂loss/∂Ω divided by the count of real (query, head)
/// pairs, negated: `∂loss/∂s_k += penalty·p_k·(1[k ∈ target] − fidelity)`).
#[derive(Debug, Clone, Copy)]
pub struct Local {
    /// `[batch, seq]` block of each key (padding: −2, no target's).
    pub block: View,
    /// `[batch, seq]` target block of each query (padding: −1).
    pub target: View,
    /// `λ_l·Δ·log2(e)`, subtracted from off-target scores in the log2 domain.
    pub bias_log2: f32,
    /// `[batch, heads, seq]` each query's attention mass on its target block (forward output,
    /// backward input).
    pub fidelity: View,
    /// `[batch, heads, seq]` each query's attention entropy in bits (forward output).
    pub entropy: View,
    /// The penalty's weight in the backward (see above); 0 for none.
    pub penalty: f32,
}

/// One AdamW update over a contiguous range of parameters (`torch.optim.AdamW`).
#[derive(Debug, Clone, Copy)]
pub struct AdamWArgs {
    /// fp32 master weights.
    pub params: View,
    /// Their bf16 copy, written in the same pass.
    pub params_bf16: View,
    /// Gradients.
    pub grads: View,
    /// First moments.
    pub m: View,
    /// Second moments.
    pub v: View,
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added outside the square root.
    pub eps: f32,
    /// Decoupled weight decay of this range.
    pub weight_decay: f32,
    /// `1 - beta1^t`.
    pub bias_correction1: f32,
    /// `1 - beta2^t`.
    pub bias_correction2: f32,
    /// Gradient scale (the clipping factor).
    pub grad_scale: f32,
}

/// The kernel engine's kernel set. All shapes are in elements; every view's dtype is checked by the
/// engine's layout, not here.
#[allow(clippy::too_many_arguments)]
pub trait Ops {
    /// A new zeroed buffer of `len` elements.
    fn alloc(&mut self, len: usize, dtype: DType) -> Result<View, TrainError>;
    /// Releases the buffer `v` belongs to (every view of it becomes invalid).
    fn free(&mut self, v: View) -> Result<(), TrainError>;
    /// Copies host data into `dst` (F32 data into a Bf16 view is rounded).
    fn upload(&mut self, dst: View, data: Host<'_>) -> Result<(), TrainError>;
    /// Reads `src` (F32 or Bf16) as floats; waits for the device.
    fn download(&mut self, src: View) -> Result<Vec<f32>, TrainError>;
    /// Sets `dst` to zero.
    fn zero(&mut self, dst: View) -> Result<(), TrainError>;
    /// `dst = bf16(src)`.
    fn cast_bf16(&mut self, dst: View, src: View) -> Result<(), TrainError>;
    /// See [`Gemm`].
    fn gemm(&mut self, g: &Gemm) -> Result<(), TrainError>;
    /// `out[t] = table[ids[t]]`, rows of width `h` (fp32).
    fn embed(&mut self, out: View, table: View, ids: View, n: usize, h: usize) -> Result<(), TrainError>;
    /// `dtable[tok[u]] += Σ_{j ∈ starts[u]..starts[u+1]} dx[pos[j]]` for the `uniq` distinct tokens.
    fn embed_backward(
        &mut self,
        dtable: View,
        dx: View,
        tok: View,
        starts: View,
        pos: View,
        uniq: usize,
        h: usize,
    ) -> Result<(), TrainError>;
    /// RMSNorm of fp32 rows `x` (`[n, h]`) with weight `w`: bf16 `y` and the fp32 `rstd` per row.
    fn rmsnorm(
        &mut self,
        y: View,
        rstd: View,
        x: View,
        w: View,
        n: usize,
        h: usize,
        eps: f32,
    ) -> Result<(), TrainError>;
    /// Backward of [`Ops::rmsnorm`] for bf16 `dy`: `dres` (fp32) gets `dx` added (or set, without
    /// `accumulate`), `dres_bf16` its bf16 copy, `dw` (fp32) the weight's gradient added.
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
    ) -> Result<(), TrainError>;
    /// Splits the fused projection `qkv` (`[tokens, (heads + 2 kv_heads) · d]` bf16, plus the
    /// optional fp32 bias) into head-major `q`, `k`, `v` (`[batch, heads, seq, d]`), rotating q and
    /// k by the positions `pos` with frequencies `inv_freq` (`[d / 2]`).
    fn rope_split(
        &mut self,
        q: View,
        k: View,
        v: View,
        qkv: View,
        bias: Option<View>,
        pos: View,
        inv_freq: View,
        shape: AttnShape,
    ) -> Result<(), TrainError>;
    /// The transpose of [`Ops::rope_split`]: gradients of q, k, v into the fused layout.
    fn rope_merge(
        &mut self,
        dqkv: View,
        dq: View,
        dk: View,
        dv: View,
        pos: View,
        inv_freq: View,
        shape: AttnShape,
    ) -> Result<(), TrainError>;
    /// Masked attention: `o` (`[batch, seq, heads, d]` bf16) and the log2-domain log-sum-exp of
    /// every query row, `lse2` (`[batch, heads, seq]` fp32).
    fn attention(
        &mut self,
        o: View,
        lse2: View,
        q: View,
        k: View,
        v: View,
        mask: &AttnMask,
        shape: AttnShape,
    ) -> Result<(), TrainError>;
    /// Backward of [`Ops::attention`] for `dout` (same layout as `o`).
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
        shape: AttnShape,
    ) -> Result<(), TrainError>;
    /// `h = silu(gate) · up` for `gu = [gate | up]` rows (`[n, 2 inter]` → `[n, inter]`, bf16).
    fn swiglu(&mut self, h: View, gu: View, n: usize, inter: usize) -> Result<(), TrainError>;
    /// Backward of [`Ops::swiglu`].
    fn swiglu_backward(&mut self, dgu: View, dh: View, gu: View, n: usize, inter: usize) -> Result<(), TrainError>;
    /// `dst[r] = src[rows[r]]` for `r < count` (bf16 rows of width `h`).
    fn gather_rows(&mut self, dst: View, src: View, rows: View, count: usize, h: usize) -> Result<(), TrainError>;
    /// `dst[rows[r]] = src[r]` for `r < count`.
    fn scatter_rows(&mut self, dst: View, src: View, rows: View, count: usize, h: usize) -> Result<(), TrainError>;
    /// Log-probabilities of fp32 logits rows (`[rows, vocab]`) at inverse temperature `inv_temp`:
    /// with `z = inv_temp · logits`, `logp[r] = z[target] − logsumexp(z)`; when given,
    /// `entropy[r] = logsumexp(z) − Σ softmax(z)·z` and
    /// `dlogits[r] = bf16(coef[r] · inv_temp · (softmax(z) − onehot(target)))`, the gradient of a
    /// loss whose derivative by `logp[r]` is `−coef[r]`.
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
    ) -> Result<(), TrainError>;
    /// `dst[j] += Σ_r x[r, j]` for bf16 `x` (`[rows, cols]`): bias gradients.
    fn column_sum_add(&mut self, dst: View, x: View, rows: usize, cols: usize) -> Result<(), TrainError>;
    /// Σ x² of an fp32 view (waits for the device).
    fn sum_squares(&mut self, x: View) -> Result<f64, TrainError>;
    /// See [`AdamWArgs`].
    fn adamw(&mut self, a: &AdamWArgs) -> Result<(), TrainError>;
    /// Waits for queued work.
    fn synchronize(&mut self) -> Result<(), TrainError>;
    /// Turns per-operation timing on or off, on devices that time (`check::Profiler`); returns
    /// whether this device does.
    fn profile(&mut self, _on: bool) -> bool {
        false
    }
    /// Seconds and calls per operation timed so far, emptied (see [`Ops::profile`]).
    fn take_profile(&mut self) -> std::collections::BTreeMap<&'static str, (f64, usize)> {
        std::collections::BTreeMap::new()
    }
}

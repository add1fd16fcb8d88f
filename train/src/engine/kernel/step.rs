//! The kernel engine's step for the Llama/Qwen2 decoder, written once over [`Ops`]: forward,
//! log-probabilities, backward and AdamW, with every intermediate in a buffer of its own.
//!
//! Precision (mixed, as PyTorch autocast trains): fp32 master weights, gradients and AdamW
//! moments; a bf16 copy of the weights, rewritten by each AdamW step, feeds the matmuls; matmul
//! inputs are bf16 with fp32 accumulation; the residual stream is fp32 (each block's output
//! projection adds into it in the matmul's epilogue); norms, RoPE, softmax and the log-probs
//! compute in fp32. Logits are never materialised for the whole batch: the counted rows are
//! gathered and projected in chunks of `logits_chunk` rows.
//!
//! The loss is the method's (`crate::trainer::method`): the engine reports log p of each counted target
//! and takes `coef = −∂loss/∂log p` back, so a chunk's logit gradient is
//! `coef · (softmax − onehot)` (with a temperature, scaled by its inverse). When the method knows
//! `coef` before the forward (SFT), each chunk's gradient is formed and consumed in the forward
//! pass; otherwise (DPO, GRPO) the forward keeps the layers' activations and the backward projects
//! the chunks again, which costs one vocabulary matmul more and never holds the logits.
//!
//! Weights live in one flat buffer in Hugging Face layout (`[out, in]`). The layout puts q/k/v and
//! gate/up of a layer next to each other, so each pair or triple is one matmul, and puts all
//! matrices (weight decay) before all norms and biases (none), so AdamW is two launches. AdamW is
//! `torch.optim.AdamW` with decay on matrices only, as the burn engine's (`engine/optim.rs`).

use super::batch::HostBatch;
use super::ops::{AdamWArgs, AttnMask, AttnShape, DType, Gemm, Host, Local, Ops, View};

use crate::engine::api::Forward;
use crate::engine::optim::AdamW;
use crate::engine::state::{EngineState, Moments, Tensors};
use crate::error::TrainError;
use crate::localist::{LayerMetrics, LocalistRun, Penalty};
use crate::model::ModelConfig;

/// One tensor of the flat parameter buffer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub name: String,
    /// First element.
    pub offset: usize,
    /// Shape in Hugging Face layout.
    pub shape: Vec<usize>,
}

impl Entry {
    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Offsets (in elements) of one layer's tensors.
#[derive(Debug, Clone, Copy)]
struct LayerAt {
    in_norm: usize,
    qkv_w: usize,
    qkv_b: Option<usize>,
    o_w: usize,
    post_norm: usize,
    gu_w: usize,
    down_w: usize,
}

/// Where every parameter lives in the flat buffers.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Every tensor, by HF name.
    pub entries: Vec<Entry>,
    layers: Vec<LayerAt>,
    embed: usize,
    head: usize,
    final_norm: usize,
    /// Matrices (decayed) are `[0, decay_end)`; norms and biases follow.
    pub decay_end: usize,
    /// Elements in all.
    pub total: usize,
}

/// Sizes the step needs, from the model configuration.
#[derive(Debug, Clone, Copy)]
struct Dims {
    h: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    inter: usize,
    vocab: usize,
    layers: usize,
    qkv: usize,
    bias: bool,
    eps: f32,
    /// Softmax scale of q·k (the RoPE attention factor squared over `sqrt(d)`).
    scale: f32,
}

impl Dims {
    fn of(c: &ModelConfig) -> Self {
        let factor = c.rope().frequencies(0).attention_factor;
        Dims {
            h: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            d: c.head_dim,
            inter: c.intermediate_size,
            vocab: c.vocab_size,
            layers: c.num_hidden_layers,
            qkv: (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim,
            bias: c.attention_bias,
            eps: c.rms_norm_eps as f32,
            scale: (factor * factor) as f32 * AttnShape::plain_scale(c.head_dim),
        }
    }
}

/// One linear map `y = x · wᵀ` with `w` stored `[out_f, in_f]` (HF's layout): its bf16 weight and
/// its fp32 gradient. Forward and backward are the step's matmuls; stated once here.
#[derive(Debug, Clone, Copy)]
struct Linear {
    w: View,
    g: View,
    out_f: usize,
    in_f: usize,
}

impl Linear {
    /// `y[tokens, out_f] = x[tokens, in_f] · wᵀ (+ residual)`.
    fn forward(
        &self,
        ops: &mut Box<dyn Ops>,
        y: View,
        x: View,
        residual: Option<View>,
        tokens: usize,
    ) -> Result<(), TrainError> {
        ops.gemm(&Gemm {
            out: y,
            a: x,
            b: self.w,
            c: residual,
            m: tokens,
            n: self.out_f,
            k: self.in_f,
            ta: false,
            tb: true,
        })
    }

    /// The gradients of `forward` for `dy`: the weight's (`g += dyᵀ · x`, accumulated over
    /// micro-batches in the epilogue) and the input's (`dx = dy · w`).
    fn backward(&self, ops: &mut Box<dyn Ops>, dx: View, dy: View, x: View, tokens: usize) -> Result<(), TrainError> {
        ops.gemm(&Gemm {
            out: self.g,
            a: dy,
            b: x,
            c: Some(self.g),
            m: self.out_f,
            n: self.in_f,
            k: tokens,
            ta: true,
            tb: false,
        })?;
        ops.gemm(&Gemm {
            out: dx,
            a: dy,
            b: self.w,
            c: None,
            m: tokens,
            n: self.in_f,
            k: self.out_f,
            ta: false,
            tb: false,
        })
    }
}

/// Rounds up to a multiple of 128 elements: every tensor of the bf16 weight copy starts 256-byte
/// aligned, the alignment cuBLASLt's heuristics may assume of an operand by default.
fn align(x: usize) -> usize {
    x.div_ceil(128) * 128
}

impl Layout {
    /// The layout of `config`'s parameters.
    pub fn of(config: &ModelConfig) -> Self {
        let d = Dims::of(config);
        let mut entries = Vec::new();
        let mut at = 0usize;
        let put = |entries: &mut Vec<Entry>, at: &mut usize, name: String, shape: Vec<usize>, aligned: bool| {
            if aligned {
                *at = align(*at);
            }
            let offset = *at;
            *at += shape.iter().product::<usize>();
            entries.push(Entry { name, offset, shape });
            offset
        };
        let embed = put(
            &mut entries,
            &mut at,
            "model.embed_tokens.weight".into(),
            vec![d.vocab, d.h],
            true,
        );
        let (q, kv) = (d.heads * d.d, d.kv_heads * d.d);
        let mut layers = Vec::with_capacity(d.layers);
        for i in 0..d.layers {
            let p = format!("model.layers.{i}");
            let qkv_w = put(
                &mut entries,
                &mut at,
                format!("{p}.self_attn.q_proj.weight"),
                vec![q, d.h],
                true,
            );
            put(
                &mut entries,
                &mut at,
                format!("{p}.self_attn.k_proj.weight"),
                vec![kv, d.h],
                false,
            );
            put(
                &mut entries,
                &mut at,
                format!("{p}.self_attn.v_proj.weight"),
                vec![kv, d.h],
                false,
            );
            let o_w = put(
                &mut entries,
                &mut at,
                format!("{p}.self_attn.o_proj.weight"),
                vec![d.h, q],
                true,
            );
            let gu_w = put(
                &mut entries,
                &mut at,
                format!("{p}.mlp.gate_proj.weight"),
                vec![d.inter, d.h],
                true,
            );
            put(
                &mut entries,
                &mut at,
                format!("{p}.mlp.up_proj.weight"),
                vec![d.inter, d.h],
                false,
            );
            let down_w = put(
                &mut entries,
                &mut at,
                format!("{p}.mlp.down_proj.weight"),
                vec![d.h, d.inter],
                true,
            );
            layers.push(LayerAt {
                in_norm: 0,
                qkv_w,
                qkv_b: None,
                o_w,
                post_norm: 0,
                gu_w,
                down_w,
            });
        }
        let head = if config.tie_word_embeddings {
            embed
        } else {
            put(&mut entries, &mut at, "lm_head.weight".into(), vec![d.vocab, d.h], true)
        };
        let decay_end = align(at);
        at = decay_end;
        for (i, l) in layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            l.in_norm = put(
                &mut entries,
                &mut at,
                format!("{p}.input_layernorm.weight"),
                vec![d.h],
                true,
            );
            l.post_norm = put(
                &mut entries,
                &mut at,
                format!("{p}.post_attention_layernorm.weight"),
                vec![d.h],
                true,
            );
            if d.bias {
                l.qkv_b = Some(put(
                    &mut entries,
                    &mut at,
                    format!("{p}.self_attn.q_proj.bias"),
                    vec![q],
                    true,
                ));
                put(
                    &mut entries,
                    &mut at,
                    format!("{p}.self_attn.k_proj.bias"),
                    vec![kv],
                    false,
                );
                put(
                    &mut entries,
                    &mut at,
                    format!("{p}.self_attn.v_proj.bias"),
                    vec![kv],
                    false,
                );
            }
        }
        let final_norm = put(&mut entries, &mut at, "model.norm.weight".into(), vec![d.h], true);
        Layout {
            entries,
            layers,
            embed,
            head,
            final_norm,
            decay_end,
            total: align(at),
        }
    }
}

/// The activations of one micro-batch of up to `tokens` positions (batch × padded sequence).
struct Acts {
    /// Every buffer, to free them together.
    owned: Vec<View>,
    batch: usize,
    seq: usize,
    res: Vec<View>,
    xn1: Vec<View>,
    xn2: Vec<View>,
    rstd1: Vec<View>,
    rstd2: Vec<View>,
    q: Vec<View>,
    k: Vec<View>,
    v: Vec<View>,
    attn: Vec<View>,
    lse: Vec<View>,
    gu: Vec<View>,
    hact: Vec<View>,
    xf: View,
    rstdf: View,
    qkv: View,
    xc: View,
    dxc: View,
    dxf: View,
    logits: View,
    dlogits: View,
    logp: View,
    entropy: View,
    coef: View,
    dres: View,
    dres_bf: View,
    dh: View,
    dgu: View,
    dxn: View,
    dattn: View,
    dq: View,
    dk: View,
    dv: View,
    ids: View,
    pos: View,
    seg: View,
    rows: View,
    targets: View,
    qt_kt0: View,
    kt_qt1: View,
    full: View,
    emb_tok: View,
    emb_starts: View,
    emb_pos: View,
    /// With `[localist]`: each token's block and each query's target (`[n]`), and each layer's
    /// per-query fidelity and entropy (`[batch, heads, seq]`).
    blk: View,
    tgt: View,
    fid: Vec<View>,
    ent: Vec<View>,
}

/// Allocations that remember what they allocated.
struct Alloc<'a> {
    ops: &'a mut dyn Ops,
    owned: Vec<View>,
}

impl Alloc<'_> {
    fn one(&mut self, len: usize, dt: DType) -> Result<View, TrainError> {
        let v = self.ops.alloc(len, dt)?;
        self.owned.push(v);
        Ok(v)
    }

    fn many(&mut self, count: usize, len: usize, dt: DType) -> Result<Vec<View>, TrainError> {
        (0..count).map(|_| self.one(len, dt)).collect()
    }
}

impl Acts {
    fn new(
        ops: &mut dyn Ops,
        d: &Dims,
        batch: usize,
        seq: usize,
        chunk: usize,
        local: bool,
    ) -> Result<Self, TrainError> {
        let n = batch * seq;
        let (f, bf, int) = (DType::F32, DType::Bf16, DType::I32);
        let mut al = Alloc { ops, owned: Vec::new() };
        let l = d.layers;
        let qlen = batch * d.heads * seq * d.d;
        let kvlen = batch * d.kv_heads * seq * d.d;
        let mut acts = Acts {
            owned: Vec::new(),
            batch,
            seq,
            res: al.many(2 * l + 1, n * d.h, f)?,
            xn1: al.many(l, n * d.h, bf)?,
            xn2: al.many(l, n * d.h, bf)?,
            rstd1: al.many(l, n, f)?,
            rstd2: al.many(l, n, f)?,
            q: al.many(l, qlen, bf)?,
            k: al.many(l, kvlen, bf)?,
            v: al.many(l, kvlen, bf)?,
            attn: al.many(l, n * d.heads * d.d, bf)?,
            lse: al.many(l, batch * d.heads * seq, f)?,
            gu: al.many(l, n * 2 * d.inter, bf)?,
            hact: al.many(l, n * d.inter, bf)?,
            xf: al.one(n * d.h, bf)?,
            rstdf: al.one(n, f)?,
            qkv: al.one(n * d.qkv, bf)?,
            xc: al.one(n * d.h, bf)?,
            dxc: al.one(n * d.h, bf)?,
            dxf: al.one(n * d.h, bf)?,
            logits: al.one(chunk.min(n) * d.vocab, f)?,
            dlogits: al.one(chunk.min(n) * d.vocab, bf)?,
            logp: al.one(n, f)?,
            entropy: al.one(n, f)?,
            coef: al.one(n, f)?,
            dres: al.one(n * d.h, f)?,
            dres_bf: al.one(n * d.h, bf)?,
            dh: al.one(n * d.inter, bf)?,
            dgu: al.one(n * 2 * d.inter, bf)?,
            dxn: al.one(n * d.h, bf)?,
            dattn: al.one(n * d.heads * d.d, bf)?,
            dq: al.one(qlen, bf)?,
            dk: al.one(kvlen, bf)?,
            dv: al.one(kvlen, bf)?,
            ids: al.one(n, int)?,
            pos: al.one(n, int)?,
            seg: al.one(n, int)?,
            rows: al.one(n, int)?,
            targets: al.one(n, int)?,
            qt_kt0: al.one(n / 64 + 1, int)?,
            kt_qt1: al.one(n / 64 + 1, int)?,
            full: al.one((n / 64 + 1) * (seq / 64 / 32 + 1), int)?,
            emb_tok: al.one(n, int)?,
            emb_starts: al.one(n + 1, int)?,
            emb_pos: al.one(n, int)?,
            blk: al.one(n, int)?,
            tgt: al.one(n, int)?,
            fid: al.many(if local { l } else { 0 }, batch * d.heads * seq, f)?,
            ent: al.many(if local { l } else { 0 }, batch * d.heads * seq, f)?,
        };
        acts.owned = al.owned;
        Ok(acts)
    }
}

/// A model on the kernel engine: weights, gradients, moments and activations on the device of its
/// [`Ops`].
pub struct KernelEngine {
    /// The device.
    pub ops: Box<dyn Ops>,
    config: ModelConfig,
    dims: Dims,
    /// Where each tensor lives in the flat buffers.
    pub layout: Layout,
    params: View,
    params_bf16: View,
    /// Gradients and moments; `None` for an engine that only scores.
    train: Option<TrainBufs>,
    inv_freq: View,
    acts: Option<Acts>,
    /// What the last forward left for [`KernelEngine::outputs`] and the backward.
    pending: Option<Pending>,
    /// AdamW updates applied so far (the bias correction's `t`).
    pub steps: usize,
    adamw: AdamW,
    /// Rows of logits per chunk of the loss.
    logits_chunk: usize,
    /// The localist dial (`crate::localist`), when the run has one.
    localist: Option<LocalistRun>,
    /// Tokens of each row of the last forward (the real queries of the localist statistics).
    lens: Vec<usize>,
}

/// The buffers only training needs.
#[derive(Debug, Clone, Copy)]
struct TrainBufs {
    grads: View,
    m: View,
    v: View,
}

/// The last forward: its sizes, mask and what it computed.
#[derive(Debug, Clone, Copy)]
struct Pending {
    n: usize,
    count: usize,
    uniq: usize,
    shape: AttnShape,
    mask: AttnMask,
    inv_temp: f32,
    entropy: bool,
    /// The forward ran the localist dial.
    local: bool,
    /// A backward may follow (the forward had `want.grad` and no fixed gradient).
    awaits_backward: bool,
}

impl KernelEngine {
    /// An engine for `config` holding `state`; with `adamw` it trains (gradients and moments are
    /// allocated), without it only scores.
    ///
    /// # Errors
    /// When the device cannot allocate the buffers, or `state` does not fit `config`.
    pub fn new(
        mut ops: Box<dyn Ops>,
        config: &ModelConfig,
        state: &EngineState,
        adamw: Option<AdamW>,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let dims = Dims::of(config);
        let layout = Layout::of(config);
        let params = ops.alloc(layout.total, DType::F32)?;
        let params_bf16 = ops.alloc(layout.total, DType::Bf16)?;
        let train = match adamw {
            Some(_) => Some(TrainBufs {
                grads: ops.alloc(layout.total, DType::F32)?,
                m: ops.alloc(layout.total, DType::F32)?,
                v: ops.alloc(layout.total, DType::F32)?,
            }),
            None => None,
        };
        // The rotary frequencies of `model/rope.rs` (the burn engine's). Length-dependent
        // scalings take their short-sequence table: `choose::unsupported` refuses rows past it.
        let freq = config.rope().frequencies(0).inv_freq;
        let inv_freq = ops.alloc(freq.len(), DType::F32)?;
        ops.upload(inv_freq, Host::F32(&freq))?;
        let mut engine = KernelEngine {
            ops,
            config: config.clone(),
            dims,
            layout,
            params,
            params_bf16,
            train,
            inv_freq,
            acts: None,
            pending: None,
            steps: 0,
            adamw: adamw.unwrap_or_default(),
            logits_chunk: 4096,
            localist: None,
            lens: Vec::new(),
        };
        engine.load_weights(&state.weights)?;
        if let (Some(m), Some(t)) = (&state.moments, engine.train) {
            engine.load_flat(t.m, &m.m)?;
            engine.load_flat(t.v, &m.v)?;
            engine.steps = m.steps;
        }
        Ok(engine)
    }

    /// The engine with `run`'s localist dial in every layer's attention: the −λ_l·Δ bias on
    /// off-target keys, each layer's entropy and fidelity, and the off-target penalty's gradient.
    ///
    /// # Errors
    /// The group-lasso penalty, which the attention kernels do not compute.
    pub fn with_localist(mut self, run: Option<LocalistRun>) -> Result<Self, TrainError> {
        if let Some(r) = &run
            && r.config.penalty == Penalty::GroupLasso
        {
            return Err(TrainError::Config(
                "the kernel engine computes the off-target localist penalty, not the group lasso: set localist.penalty = \"off_target\", or train.kernels = \"burn\"".into(),
            ));
        }
        self.localist = run;
        self.acts = None; // reallocated with the localist buffers
        Ok(self)
    }

    /// Refuses penalty gradients for layers without a weighing penalty (as the burn engine does).
    fn check_domega(&self, domega: &[f32]) -> Result<(), TrainError> {
        let layers = self.dims.layers;
        let weighs = |l: usize| {
            self.localist
                .as_ref()
                .is_some_and(|r| r.lambdas[l] * r.config.gamma > 0.0 && r.config.penalty == Penalty::OffTarget)
        };
        if !domega.is_empty() && domega.len() != layers {
            return Err(TrainError::Batch(format!(
                "{} penalty gradients for a model of {layers} layers",
                domega.len()
            )));
        }
        if domega.iter().enumerate().any(|(l, &g)| g != 0.0 && !weighs(l)) {
            return Err(TrainError::Batch(
                "a gradient for the penalty of a layer whose penalty does not weigh".into(),
            ));
        }
        Ok(())
    }

    /// The localist dial, when the engine has one.
    pub fn localist(&self) -> Option<&LocalistRun> {
        self.localist.as_ref()
    }

    /// The model's configuration.
    pub fn config(&self) -> ModelConfig {
        self.config.clone()
    }

    fn train_bufs(&self) -> Result<TrainBufs, TrainError> {
        self.train
            .ok_or_else(|| TrainError::Config("this kernel engine only scores (it has no gradients)".into()))
    }

    /// Loads weights given by HF name in HF layout (as `hf::state_dict` returns them).
    ///
    /// # Errors
    /// When a tensor is missing or has the wrong number of elements.
    pub fn load_weights(&mut self, tensors: &Tensors) -> Result<(), TrainError> {
        self.load_flat(self.params, tensors)?;
        self.ops.cast_bf16(self.params_bf16, self.params)
    }

    fn load_flat(&mut self, dst: View, tensors: &Tensors) -> Result<(), TrainError> {
        let mut flat = vec![0f32; self.layout.total];
        for e in &self.layout.entries {
            let t = tensors
                .get(&e.name)
                .ok_or_else(|| TrainError::Config(format!("kernel engine: tensor `{}` missing", e.name)))?;
            if t.len() != e.len() {
                return Err(TrainError::Config(format!(
                    "kernel engine: tensor `{}` has {} elements, expected {:?}",
                    e.name,
                    t.len(),
                    e.shape
                )));
            }
            flat[e.offset..e.offset + t.len()].copy_from_slice(t);
        }
        self.ops.upload(dst, Host::F32(&flat))
    }

    fn read_flat(&mut self, src: View) -> Result<Tensors, TrainError> {
        let flat = self.ops.download(src)?;
        Ok(self
            .layout
            .entries
            .iter()
            .map(|e| (e.name.clone(), flat[e.offset..e.offset + e.len()].to_vec()))
            .collect())
    }

    /// The weights by HF name, in HF layout.
    ///
    /// # Errors
    /// When the device cannot be read.
    pub fn weights(&mut self) -> Result<Tensors, TrainError> {
        self.read_flat(self.params)
    }

    /// The gradients accumulated since the last step, by HF name.
    ///
    /// # Errors
    /// When the device cannot be read, or the engine only scores.
    pub fn gradients(&mut self) -> Result<Tensors, TrainError> {
        let t = self.train_bufs()?;
        self.read_flat(t.grads)
    }

    /// The weights and AdamW state by HF name.
    ///
    /// # Errors
    /// When the device cannot be read.
    pub fn state(&mut self) -> Result<EngineState, TrainError> {
        let moments = match self.train {
            Some(t) if self.steps > 0 => Some(Moments {
                m: self.read_flat(t.m)?,
                v: self.read_flat(t.v)?,
                steps: self.steps,
            }),
            _ => None,
        };
        Ok(EngineState {
            weights: self.weights()?,
            moments,
        })
    }

    /// Activations for at least `batch × seq`, reusing the current ones when they are large enough.
    fn ensure_acts(&mut self, batch: usize, seq: usize) -> Result<(), TrainError> {
        let fits = self
            .acts
            .as_ref()
            .is_some_and(|a| a.batch * a.seq >= batch * seq && a.seq >= seq);
        if !fits {
            if let Some(old) = self.acts.take() {
                for v in old.owned {
                    self.ops.free(v)?;
                }
            }
            let local = self.localist.is_some();
            self.acts = Some(Acts::new(
                self.ops.as_mut(),
                &self.dims,
                batch,
                seq,
                self.logits_chunk,
                local,
            )?);
        }
        Ok(())
    }

    /// Sets the accumulated gradients to zero (the start of a window).
    ///
    /// # Errors
    /// On a device failure.
    pub fn zero_grads(&mut self) -> Result<(), TrainError> {
        let t = self.train_bufs()?;
        self.ops.zero(t.grads)
    }

    /// Frees what the last forward kept for its backward (the Multiverse visibility table).
    fn release(&mut self) -> Result<(), TrainError> {
        if let Some(p) = self.pending.take()
            && let Some(vis) = p.mask.vis
        {
            // Stream-ordered: freed after the kernels that read it.
            self.ops.free(vis)?;
        }
        Ok(())
    }

    /// Queues the forward of `batch`: log p (and with `entropy` the entropy) of each counted target
    /// under `softmax(logits · inv_temp)`. With `fixed` (`−∂loss/∂log p` per target), the backward
    /// runs in the same pass, each chunk of logits consumed by its gradient matmuls at once;
    /// without it, `grad` keeps what [`KernelEngine::run_backward`] needs.
    ///
    /// # Errors
    /// On token ids outside the vocabulary, a gradient asked of a scoring engine, or a device
    /// failure.
    pub fn run_forward(
        &mut self,
        batch: &HostBatch,
        inv_temp: f32,
        entropy: bool,
        grad: bool,
        fixed: Option<(&[f32], &[f32])>,
    ) -> Result<(), TrainError> {
        // A kernel would read out of bounds where burn would fail: refuse such ids up front.
        let vocab = self.dims.vocab;
        if let Some(bad) = batch
            .ids
            .iter()
            .chain(&batch.targets)
            .find(|&&i| i < 0 || i as usize >= vocab)
        {
            return Err(TrainError::Batch(format!(
                "token id {bad} is outside the model's vocabulary of {vocab}\n  hint: was the dataset tokenized with another tokenizer?"
            )));
        }
        if let Some((limit, what)) = self.config.plain_length() {
            // Past `limit` the model attends through a sliding window or another RoPE table,
            // which the kernels do not compute: refuse rather than compute another model.
            let longest = batch
                .rows
                .iter()
                .map(|&r| (r as usize % batch.seq + 1).max(batch.pos[r as usize] as usize + 1))
                .max()
                .unwrap_or(0);
            if longest > limit {
                return Err(TrainError::Config(format!(
                    "a row reaches {longest} tokens, past {what} of this model ({limit}), which the kernel engine does not compute\n  hint: set train.kernels = \"burn\", or keep rows to {limit} tokens"
                )));
            }
        }
        if (grad || fixed.is_some()) && self.train.is_none() {
            return Err(TrainError::Config(
                "this kernel engine only scores (it has no gradients)".into(),
            ));
        }
        if let Some((_, domega)) = fixed {
            self.check_domega(domega)?;
        }
        if let Some((c, _)) = fixed
            && c.len() != batch.count()
        {
            return Err(TrainError::Batch(format!(
                "{} gradients for {} targets",
                c.len(),
                batch.count()
            )));
        }
        self.release()?;
        self.ensure_acts(batch.batch, batch.seq)?;
        let a = self.acts.take().expect("activations were just ensured");
        let result = self.queue_forward(&a, batch, inv_temp, entropy, grad, fixed);
        self.acts = Some(a);
        let pending = result?;
        self.pending = Some(pending);
        if !pending.awaits_backward && pending.mask.vis.is_some() {
            // Nothing reads the visibility table after this pass; keep the sizes for `collect`.
            let keep = Pending {
                mask: AttnMask {
                    vis: None,
                    ..pending.mask
                },
                ..pending
            };
            self.release()?;
            self.pending = Some(keep);
        }
        Ok(())
    }

    /// The log p (and entropies, when the forward computed them) of the last forward's targets.
    ///
    /// # Errors
    /// On a device failure (an error of any queued kernel surfaces here), or without a forward.
    pub fn outputs(&mut self) -> Result<Forward, TrainError> {
        let p = self
            .pending
            .ok_or_else(|| TrainError::Batch("collect without a forward".into()))?;
        let a = self.acts.as_ref().expect("a forward allocated the activations");
        let (logp, ent) = (a.logp.prefix(p.count), a.entropy.prefix(p.count));
        let per_layer: Vec<(View, View)> = a.fid.iter().copied().zip(a.ent.iter().copied()).collect();
        let mut out = Forward {
            logp: self.ops.download(logp)?,
            entropy: if p.entropy { self.ops.download(ent)? } else { Vec::new() },
            ..Forward::default()
        };
        if let (Some(run), true) = (&self.localist, p.local) {
            // Means over the real (query, head) pairs, as `BlockTensors` takes them.
            let (heads, seq) = (self.dims.heads, p.shape.seq);
            let real = (self.lens.iter().sum::<usize>() * heads).max(1) as f64;
            for (l, (fid, ent)) in per_layer.into_iter().enumerate() {
                let (fid, ent) = (self.ops.download(fid)?, self.ops.download(ent)?);
                let (mut f, mut e) = (0.0, 0.0);
                for (b, &len) in self.lens.iter().enumerate() {
                    for h in 0..heads {
                        let row = (b * heads + h) * seq;
                        f += fid[row..row + len].iter().map(|&x| f64::from(x)).sum::<f64>();
                        e += ent[row..row + len].iter().map(|&x| f64::from(x)).sum::<f64>();
                    }
                }
                let weighs = run.lambdas[l] * run.config.gamma > 0.0 && run.config.penalty == Penalty::OffTarget;
                out.attention.push(LayerMetrics {
                    entropy_bits: e / real,
                    fidelity: f / real,
                });
                out.omega.push(if weighs { 1.0 - f / real } else { 0.0 });
            }
        }
        Ok(out)
    }

    /// Queues the backward of the last forward for `coef` (`−∂loss/∂log p` per target): the
    /// chunks of logits are computed again (one vocabulary matmul more than the fused pass) and
    /// each consumed by its gradient at once, then the layers' backward.
    ///
    /// # Errors
    /// Without a forward that awaits a backward, or on a device failure.
    pub fn run_backward(&mut self, coef: &[f32], domega: &[f32]) -> Result<(), TrainError> {
        let p = match self.pending {
            Some(p) if p.awaits_backward => p,
            _ => {
                return Err(TrainError::Batch(
                    "backward without a forward that kept its activations".into(),
                ));
            }
        };
        if coef.len() != p.count {
            return Err(TrainError::Batch(format!(
                "{} gradients for {} targets",
                coef.len(),
                p.count
            )));
        }
        self.check_domega(domega)?;
        let a = self.acts.take().expect("a forward allocated the activations");
        let r = self
            .ops
            .upload(a.coef.prefix(p.count), Host::F32(coef))
            .and_then(|()| self.head(&a, &p, true, false))
            .and_then(|()| self.layers_backward(&a, &p, domega));
        self.acts = Some(a);
        let released = self.release();
        r.and(released)
    }

    /// Uploads the batch and queues the forward (and with `fixed` the backward).
    fn queue_forward(
        &mut self,
        a: &Acts,
        batch: &HostBatch,
        inv_temp: f32,
        entropy: bool,
        grad: bool,
        fixed: Option<(&[f32], &[f32])>,
    ) -> Result<Pending, TrainError> {
        if self.localist.is_some() != batch.local.is_some() {
            return Err(TrainError::Batch(
                "a micro-batch prepared for another localist setting than the engine's".into(),
            ));
        }
        self.lens.clone_from(&batch.lens);
        let vis = match &batch.vis {
            None => None,
            Some(bits) => Some(self.ops.alloc(bits.len(), DType::I32)?),
        };
        let r = match (vis, &batch.vis) {
            (Some(v), Some(bits)) => self.ops.upload(v, Host::I32(bits)),
            _ => Ok(()),
        }
        .and_then(|()| self.queue_passes(a, batch, vis, inv_temp, entropy, grad, fixed));
        if let (Err(_), Some(v)) = (&r, vis) {
            // No pending forward will free it.
            self.ops.free(v)?;
        }
        r
    }

    /// [`KernelEngine::queue_forward`] once the visibility table is on the device.
    #[allow(clippy::too_many_arguments)]
    fn queue_passes(
        &mut self,
        a: &Acts,
        batch: &HostBatch,
        vis: Option<View>,
        inv_temp: f32,
        entropy: bool,
        grad: bool,
        fixed: Option<(&[f32], &[f32])>,
    ) -> Result<Pending, TrainError> {
        let d = self.dims;
        let n = batch.batch * batch.seq;
        let count = batch.count();
        let ops = &mut self.ops;
        ops.upload(a.ids.prefix(n), Host::I32(&batch.ids))?;
        ops.upload(a.pos.prefix(n), Host::I32(&batch.pos))?;
        ops.upload(a.seg.prefix(n), Host::I32(&batch.seg))?;
        ops.upload(a.rows.prefix(count), Host::I32(&batch.rows))?;
        ops.upload(a.targets.prefix(count), Host::I32(&batch.targets))?;
        ops.upload(a.qt_kt0.prefix(batch.qt_kt0.len()), Host::I32(&batch.qt_kt0))?;
        ops.upload(a.kt_qt1.prefix(batch.kt_qt1.len()), Host::I32(&batch.kt_qt1))?;
        ops.upload(a.full.prefix(batch.full.len()), Host::I32(&batch.full))?;
        let uniq = batch.emb_tok.len();
        ops.upload(a.emb_tok.prefix(uniq), Host::I32(&batch.emb_tok))?;
        ops.upload(a.emb_starts.prefix(uniq + 1), Host::I32(&batch.emb_starts))?;
        ops.upload(a.emb_pos.prefix(batch.emb_pos.len()), Host::I32(&batch.emb_pos))?;
        if let Some((c, _)) = fixed {
            ops.upload(a.coef.prefix(count), Host::F32(c))?;
        }
        if let Some((block, target)) = &batch.local {
            ops.upload(a.blk.prefix(n), Host::I32(block))?;
            ops.upload(a.tgt.prefix(n), Host::I32(target))?;
        }
        let p = Pending {
            n,
            count,
            uniq,
            shape: AttnShape {
                batch: batch.batch,
                seq: batch.seq,
                heads: d.heads,
                kv_heads: d.kv_heads,
                head_dim: d.d,
                scale: d.scale,
            },
            mask: AttnMask {
                seg: a.seg.prefix(n),
                qt_kt0: a.qt_kt0,
                kt_qt1: a.kt_qt1,
                vis,
                segments: batch.segments,
                words: batch.words,
                full: a.full,
                full_words: batch.full_words,
                local: None,
            },
            inv_temp,
            entropy,
            local: batch.local.is_some(),
            awaits_backward: grad && fixed.is_none(),
        };
        self.layers_forward(a, &p)?;
        self.head(a, &p, fixed.is_some(), true)?;
        if let Some((_, domega)) = fixed {
            self.layers_backward(a, &p, domega)?;
        }
        Ok(p)
    }

    /// A layer's four linear maps over the bf16 weights and fp32 gradients: qkv, o, gate/up, down.
    fn linears(&self, at: &LayerAt) -> [Linear; 4] {
        let d = self.dims;
        let (h, qd, inter) = (d.h, d.heads * d.d, d.inter);
        // Scoring engines have no gradients: their linears point the gradient at the weights,
        // which only a backward (never run on them) would write.
        let g = self.train.map_or(self.params, |t| t.grads);
        let lin = |off: usize, out_f: usize, in_f: usize| Linear {
            w: self.params_bf16.slice(off, out_f * in_f),
            g: g.slice(off, out_f * in_f),
            out_f,
            in_f,
        };
        [
            lin(at.qkv_w, d.qkv, h),
            lin(at.o_w, h, qd),
            lin(at.gu_w, 2 * inter, h),
            lin(at.down_w, h, inter),
        ]
    }

    /// Layer `l`'s attention mask: the batch's, with the localist dial at that layer's λ when the
    /// run has one, its penalty weighted by `domega` (∂loss/∂Ω_l) in the backward.
    fn layer_mask(&self, a: &Acts, p: &Pending, l: usize, domega: f32) -> AttnMask {
        let local = match (&self.localist, p.local) {
            (Some(run), true) => Some(Local {
                block: a.blk.prefix(p.n),
                target: a.tgt.prefix(p.n),
                bias_log2: (run.lambdas[l] * run.config.delta * std::f64::consts::LOG2_E) as f32,
                fidelity: a.fid[l],
                entropy: a.ent[l],
                // Ω_l is a mean over real (query, head) pairs of 1 − fidelity; see `ops::Local`.
                penalty: -domega / (self.lens.iter().sum::<usize>() * self.dims.heads).max(1) as f32,
            }),
            _ => None,
        };
        AttnMask { local, ..p.mask }
    }

    /// Embedding, every layer and the final norm.
    fn layers_forward(&mut self, a: &Acts, p: &Pending) -> Result<(), TrainError> {
        let d = self.dims;
        let (n, h, inter) = (p.n, d.h, d.inter);
        let pw = self.params;
        let w = |off: usize, len: usize| pw.slice(off, len);
        let layers: Vec<(LayerAt, [Linear; 4])> = self.layout.layers.iter().map(|at| (*at, self.linears(at))).collect();
        let masks: Vec<AttnMask> = (0..d.layers).map(|l| self.layer_mask(a, p, l, 0.0)).collect();
        let (embed, final_norm) = (self.layout.embed, self.layout.final_norm);
        let ops = &mut self.ops;
        ops.embed(a.res[0], w(embed, d.vocab * h), a.ids, n, h)?;
        for (l, (at, [qkv_l, o_l, gu_l, down_l])) in layers.iter().enumerate() {
            let (x, mid, out) = (a.res[2 * l], a.res[2 * l + 1], a.res[2 * l + 2]);
            ops.rmsnorm(a.xn1[l], a.rstd1[l], x, w(at.in_norm, h), n, h, d.eps)?;
            qkv_l.forward(ops, a.qkv.prefix(n * d.qkv), a.xn1[l], None, n)?;
            let bias = at.qkv_b.map(|o| w(o, d.qkv));
            ops.rope_split(a.q[l], a.k[l], a.v[l], a.qkv, bias, a.pos, self.inv_freq, p.shape)?;
            ops.attention(a.attn[l], a.lse[l], a.q[l], a.k[l], a.v[l], &masks[l], p.shape)?;
            o_l.forward(ops, mid, a.attn[l], Some(x), n)?;
            ops.rmsnorm(a.xn2[l], a.rstd2[l], mid, w(at.post_norm, h), n, h, d.eps)?;
            gu_l.forward(ops, a.gu[l], a.xn2[l], None, n)?;
            ops.swiglu(a.hact[l], a.gu[l], n, inter)?;
            down_l.forward(ops, out, a.hact[l], Some(mid), n)?;
        }
        let last = a.res[2 * d.layers];
        ops.rmsnorm(a.xf, a.rstdf, last, w(final_norm, h), n, h, d.eps)?;
        ops.gather_rows(a.xc, a.xf, a.rows, p.count, h)
    }

    /// The vocabulary projection of the counted rows, in chunks: each chunk's log p (and entropy,
    /// with `outputs` and `p.entropy`), and with `grad` its gradient for `a.coef`, consumed by the
    /// two gradient matmuls before the next chunk (logits are never held for the whole batch).
    fn head(&mut self, a: &Acts, p: &Pending, grad: bool, outputs: bool) -> Result<(), TrainError> {
        let d = self.dims;
        let h = d.h;
        let g = self.train.map_or(self.params, |t| t.grads);
        let head = Linear {
            w: self.params_bf16.slice(self.layout.head, d.vocab * h),
            g: g.slice(self.layout.head, d.vocab * h),
            out_f: d.vocab,
            in_f: h,
        };
        let ops = &mut self.ops;
        let chunk = self.logits_chunk.min(p.n).max(1);
        let mut start = 0;
        while start < p.count {
            let r = chunk.min(p.count - start);
            let xc = a.xc.slice(start * h, r * h);
            head.forward(ops, a.logits.prefix(r * d.vocab), xc, None, r)?;
            ops.cross_entropy(
                grad.then_some(a.dlogits),
                a.logp.slice(start, r),
                (outputs && p.entropy).then(|| a.entropy.slice(start, r)),
                a.logits,
                a.targets.slice(start, r),
                a.coef.slice(start, r),
                r,
                d.vocab,
                p.inv_temp,
            )?;
            if grad {
                let dl = a.dlogits.prefix(r * d.vocab);
                head.backward(ops, a.dxc.slice(start * h, r * h), dl, xc, r)?;
            }
            start += r;
        }
        Ok(())
    }

    /// The layers' backward from the gradient of the gathered rows (`a.dxc`), and of each layer's
    /// localist penalty (`domega`, empty for none), into the accumulated gradients.
    fn layers_backward(&mut self, a: &Acts, p: &Pending, domega: &[f32]) -> Result<(), TrainError> {
        let d = self.dims;
        let (n, h, qd, inter) = (p.n, d.h, d.heads * d.d, d.inter);
        let t = self.train_bufs()?;
        let pw = self.params;
        let w = |off: usize, len: usize| pw.slice(off, len);
        let gr = |off: usize, len: usize| t.grads.slice(off, len);
        let layers: Vec<(LayerAt, [Linear; 4])> = self.layout.layers.iter().map(|at| (*at, self.linears(at))).collect();
        let masks: Vec<AttnMask> = (0..d.layers)
            .map(|l| self.layer_mask(a, p, l, domega.get(l).copied().unwrap_or(0.0)))
            .collect();
        let (embed, final_norm) = (self.layout.embed, self.layout.final_norm);
        let ops = &mut self.ops;
        ops.zero(a.dxf.prefix(n * h))?;
        ops.scatter_rows(a.dxf, a.dxc, a.rows, p.count, h)?;
        let last = a.res[2 * d.layers];
        let (dres, dres_bf) = (a.dres.prefix(n * h), a.dres_bf.prefix(n * h));
        ops.rmsnorm_backward(
            dres,
            dres_bf,
            gr(final_norm, h),
            a.dxf,
            last,
            w(final_norm, h),
            a.rstdf,
            n,
            h,
            false,
        )?;
        for (l, (at, [qkv_l, o_l, gu_l, down_l])) in layers.iter().enumerate().rev() {
            let (x, mid) = (a.res[2 * l], a.res[2 * l + 1]);
            // MLP: out = mid + down(swiglu(gate_up(norm(mid)))).
            down_l.backward(ops, a.dh.prefix(n * inter), dres_bf, a.hact[l], n)?;
            ops.swiglu_backward(a.dgu, a.dh, a.gu[l], n, inter)?;
            gu_l.backward(ops, a.dxn.prefix(n * h), a.dgu.prefix(n * 2 * inter), a.xn2[l], n)?;
            ops.rmsnorm_backward(
                dres,
                dres_bf,
                gr(at.post_norm, h),
                a.dxn,
                mid,
                w(at.post_norm, h),
                a.rstd2[l],
                n,
                h,
                true,
            )?;
            // Attention: mid = x + o_proj(attention(rope(qkv(norm(x))))).
            o_l.backward(ops, a.dattn.prefix(n * qd), dres_bf, a.attn[l], n)?;
            ops.attention_backward(
                a.dq, a.dk, a.dv, a.dattn, a.attn[l], a.lse[l], a.q[l], a.k[l], a.v[l], &masks[l], p.shape,
            )?;
            let dqkv = a.qkv.prefix(n * d.qkv);
            ops.rope_merge(dqkv, a.dq, a.dk, a.dv, a.pos, self.inv_freq, p.shape)?;
            if let Some(off) = at.qkv_b {
                ops.column_sum_add(gr(off, d.qkv), dqkv, n, d.qkv)?;
            }
            qkv_l.backward(ops, a.dxn.prefix(n * h), dqkv, a.xn1[l], n)?;
            ops.rmsnorm_backward(
                dres,
                dres_bf,
                gr(at.in_norm, h),
                a.dxn,
                x,
                w(at.in_norm, h),
                a.rstd1[l],
                n,
                h,
                true,
            )?;
        }
        ops.embed_backward(
            gr(embed, d.vocab * h),
            dres,
            a.emb_tok,
            a.emb_starts,
            a.emb_pos,
            p.uniq,
            h,
        )
    }

    /// The global L2 norm of the accumulated gradients (waits for the device).
    ///
    /// # Errors
    /// On a device failure.
    pub fn grad_norm(&mut self) -> Result<f64, TrainError> {
        let t = self.train_bufs()?;
        Ok(self.ops.sum_squares(t.grads)?.sqrt())
    }

    /// One AdamW step at learning rate `lr` with the gradients scaled by `grad_scale` (clipping),
    /// then zeroes the gradients for the next window.
    ///
    /// # Errors
    /// On a device failure.
    pub fn apply(&mut self, lr: f64, grad_scale: f64) -> Result<(), TrainError> {
        let t = self.train_bufs()?;
        self.steps += 1;
        let c = self.adamw;
        let step = self.steps as i32;
        let args = |range: std::ops::Range<usize>, decay: f64| AdamWArgs {
            params: self.params.slice(range.start, range.len()),
            params_bf16: self.params_bf16.slice(range.start, range.len()),
            grads: t.grads.slice(range.start, range.len()),
            m: t.m.slice(range.start, range.len()),
            v: t.v.slice(range.start, range.len()),
            lr: lr as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            weight_decay: decay as f32,
            bias_correction1: (1.0 - c.beta1.powi(step)) as f32,
            bias_correction2: (1.0 - c.beta2.powi(step)) as f32,
            grad_scale: grad_scale as f32,
        };
        let (decayed, rest) = (
            args(0..self.layout.decay_end, c.weight_decay),
            args(self.layout.decay_end..self.layout.total, 0.0),
        );
        self.ops.adamw(&decayed)?;
        self.ops.adamw(&rest)?;
        self.zero_grads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::tiny_for_tests;

    #[test]
    fn layout_keeps_fused_groups_contiguous_and_matrices_first() {
        let mut c = tiny_for_tests();
        c.attention_bias = true;
        let l = Layout::of(&c);
        let at = |n: &str| l.entries.iter().find(|e| e.name == n).unwrap();
        let q = at("model.layers.1.self_attn.q_proj.weight");
        let k = at("model.layers.1.self_attn.k_proj.weight");
        let v = at("model.layers.1.self_attn.v_proj.weight");
        assert_eq!(k.offset, q.offset + q.len());
        assert_eq!(v.offset, k.offset + k.len());
        let gate = at("model.layers.0.mlp.gate_proj.weight");
        assert_eq!(at("model.layers.0.mlp.up_proj.weight").offset, gate.offset + gate.len());
        let qb = at("model.layers.0.self_attn.q_proj.bias");
        assert_eq!(at("model.layers.0.self_attn.k_proj.bias").offset, qb.offset + qb.len());
        for e in &l.entries {
            let matrix = e.shape.len() == 2;
            assert_eq!(matrix, e.offset < l.decay_end, "{}", e.name);
            assert!(e.offset + e.len() <= l.total);
        }
        // Every HF tensor of the model, once, with its HF shape, without overlap.
        let shapes: std::collections::BTreeMap<String, Vec<usize>> =
            l.entries.iter().map(|e| (e.name.clone(), e.shape.clone())).collect();
        assert_eq!(shapes.len(), l.entries.len());
        assert_eq!(shapes, c.hf_shapes());
        let model = crate::Decoder::<crate::TestBackend>::init(&c, &Default::default()).unwrap();
        let burn: std::collections::BTreeMap<String, Vec<usize>> = crate::hf::state_dict(&model)
            .into_iter()
            .map(|(k, v)| (k, v.shape.to_vec()))
            .collect();
        assert_eq!(burn, c.hf_shapes());
        let mut spans: Vec<(usize, usize)> = l.entries.iter().map(|e| (e.offset, e.offset + e.len())).collect();
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    }
}

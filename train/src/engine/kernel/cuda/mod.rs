//! The kernel engine's kernel set on CUDA: our kernels (`kernels.cu`, compiled by NVRTC at run time)
//! and cuBLASLt matmuls, queued on one stream of the device's primary context (the one burn-cuda
//! uses too). Buffers are plain stream-ordered allocations; kernels are launched with the driver
//! API directly, without per-launch bookkeeping, so a step's few hundred launches cost microseconds
//! of host time each.

pub mod blas;
pub mod compile;

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::result as dr;
use cudarc::driver::sys::{CUdevice_attribute, CUdeviceptr, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use half::bf16;

use super::ops::{AdamWArgs, AttnMask, AttnShape, DType, Gemm, Host, Ops, View};
use crate::error::TrainError;
use crate::model::ModelConfig;

fn derr(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Device(format!("{what}: {e:?}"))
}

/// A kernel argument, passed by value through an 8-byte slot (little-endian: an `int` reads the
/// low four bytes).
#[derive(Debug, Clone, Copy)]
enum Arg {
    /// A device pointer (0 for null).
    P(CUdeviceptr),
    /// `int`.
    I(i32),
    /// `long long`.
    L(i64),
    /// `float`.
    F(f32),
}

impl Arg {
    fn slot(self) -> u64 {
        match self {
            Arg::P(p) => p,
            Arg::I(i) => i as u32 as u64,
            Arg::L(l) => l as u64,
            Arg::F(f) => f.to_bits() as u64,
        }
    }
}

/// The kernels of `kernels.cu`, by name.
struct Kernels {
    cast_f32_bf16: CudaFunction,
    reduce_partials: CudaFunction,
    sum_squares: CudaFunction,
    column_sum_bf16: CudaFunction,
    embed_fwd: CudaFunction,
    embed_bwd: CudaFunction,
    rmsnorm_fwd: CudaFunction,
    rmsnorm_bwd: CudaFunction,
    /// Register-resident variants by hidden size / 128.
    rmsnorm_reg: Vec<(usize, CudaFunction, CudaFunction)>,
    rope_split: CudaFunction,
    rope_merge: CudaFunction,
    swiglu_fwd: CudaFunction,
    swiglu_bwd: CudaFunction,
    gather_rows_bf16: CudaFunction,
    scatter_rows_bf16: CudaFunction,
    cross_entropy: CudaFunction,
    adamw: CudaFunction,
    attn_bwd_delta: CudaFunction,
    /// Per head dimension: forward, dK/dV, dQ; plain, and with the localist dial.
    flash: Vec<(usize, [CudaFunction; 3], [CudaFunction; 3])>,
}

/// Hidden sizes / 128 the register-resident RMSNorm kernels are instantiated for.
const RMSNORM_VECTORS: [usize; 4] = [2, 4, 6, 8];

/// Head dimensions the attention kernels are instantiated for.
pub const HEAD_DIMS: [usize; 2] = [64, 128];

/// Dynamic shared memory of the attention kernels for head dimension `d`: forward, dK/dV, dQ
/// (with `local`, the localist instances', which hold 192 block ids more).
fn flash_smem(d: usize, local: bool) -> [u32; 3] {
    let tile = 64 * (d + 8) * 2;
    let extra = if local { 3 * 64 * 4 } else { 0 };
    [
        (5 * tile + 3 * 64 * 4 + extra) as u32,
        (6 * tile + (2 * 64 * 3 + 64) * 4 + extra) as u32,
        (6 * tile + 3 * 64 * 4 + extra) as u32,
    ]
}

/// The CUDA device of the kernel engine.
pub struct CudaOps {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    k: Kernels,
    blas: blas::Blas,
    bufs: Vec<Option<CUdeviceptr>>,
    scratch: (CUdeviceptr, usize),
    sms: u32,
    /// Dynamic shared memory one block may use (opt-in limit).
    max_smem: u32,
    /// Name of the card.
    pub name: String,
    /// Compute capability.
    pub cc: (i32, i32),
    /// Whether the kernels came from the on-disk cache.
    pub cached: bool,
}

impl CudaOps {
    /// Why this device cannot run `config`'s step, if it cannot: kernels whose shared memory
    /// exceeds the card's per-block limit (on cards of 99 KiB, such as sm_86/sm_89, head_dim 128's
    /// attention backward does not fit; the general RMSNorm backward needs 16 bytes per hidden
    /// unit).
    pub fn fits(&self, config: &ModelConfig) -> Option<String> {
        let d = config.head_dim;
        if let Some(need) = flash_smem(d, true).into_iter().max().filter(|&s| s > self.max_smem) {
            return Some(format!(
                "head_dim {d}: the attention kernels need {need} bytes of shared memory per block and {} allows {}",
                self.name, self.max_smem
            ));
        }
        let h = config.hidden_size;
        let need = (4 * h * 4) as u32;
        if self.reg_norm(h).is_none() && need > self.max_smem {
            return Some(format!(
                "hidden_size {h}: the RMSNorm backward needs {need} bytes of shared memory per block and {} allows {}",
                self.name, self.max_smem
            ));
        }
        None
    }

    /// Opens CUDA device `ordinal`, loads (or compiles) the kernels and cuBLASLt.
    ///
    /// # Errors
    /// When there is no such device, it is older than compute capability 8.0 (the kernels use
    /// bf16 tensor-core instructions), or NVRTC or cuBLASLt cannot be loaded.
    pub fn new(ordinal: usize) -> Result<Self, TrainError> {
        // SAFETY: probing for the library has no preconditions.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(TrainError::Device("the CUDA driver (libcuda) was not found".into()));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| derr(&format!("opening cuda:{ordinal}"), e))?;
        let cc = ctx.compute_capability().map_err(|e| derr("compute capability", e))?;
        if cc.0 < 8 {
            return Err(TrainError::Device(format!(
                "compute capability {}.{} is below 8.0 (the kernels need bf16 tensor cores)",
                cc.0, cc.1
            )));
        }
        let name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let sms = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| derr("multiprocessor count", e))? as u32;
        let max_smem = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| derr("shared memory limit", e))?;
        let cache = crate::device::configure_kernel_cache();
        let (cubin, mut cached) = compile::cubin(compile::SOURCE, cc, cache.as_deref(), false)?;
        let module = match ctx.load_module(Ptx::from_binary(cubin)) {
            Ok(m) => m,
            // A cached cubin this driver refuses (written under another driver or NVRTC): compile
            // afresh, replacing it.
            Err(_) if cached => {
                cached = false;
                let (cubin, _) = compile::cubin(compile::SOURCE, cc, cache.as_deref(), true)?;
                ctx.load_module(Ptx::from_binary(cubin)).map_err(|e| {
                    derr(
                        "loading the freshly compiled kernels (is NVRTC newer than the driver's CUDA?)",
                        e,
                    )
                })?
            }
            Err(e) => return Err(derr("loading the kernels (is NVRTC newer than the driver's CUDA?)", e)),
        };
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| derr(&format!("kernel {name}"), e))
        };
        let mut flash = Vec::new();
        for d in HEAD_DIMS {
            let load = |suffix: &str, local: bool| -> Result<[CudaFunction; 3], TrainError> {
                let fns = [
                    f(&format!("flash_fwd{suffix}_d{d}"))?,
                    f(&format!("flash_bwd_dkdv{suffix}_d{d}"))?,
                    f(&format!("flash_bwd_dq{suffix}_d{d}"))?,
                ];
                for (func, smem) in fns.iter().zip(flash_smem(d, local)) {
                    if smem as i32 > max_smem {
                        continue; // this head dimension is refused by `CudaOps::fits`
                    }
                    // All of the unified L1/shared memory as shared: the default carveout held the
                    // attention kernels to fewer resident blocks than their registers allow.
                    func.set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                        100,
                    )
                    .map_err(|e| derr("attention carveout", e))?;
                    func.set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        smem as i32,
                    )
                    .map_err(|e| derr("attention shared memory", e))?;
                }
                Ok(fns)
            };
            flash.push((d, load("", false)?, load("_local", true)?));
        }
        let rmsnorm_bwd = f("rmsnorm_bwd")?;
        rmsnorm_bwd
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                max_smem,
            )
            .map_err(|e| derr("rmsnorm shared memory", e))?;
        let mut rmsnorm_reg = Vec::new();
        for v in RMSNORM_VECTORS {
            rmsnorm_reg.push((v, f(&format!("rmsnorm_fwd_v{v}"))?, f(&format!("rmsnorm_bwd_v{v}"))?));
        }
        let k = Kernels {
            cast_f32_bf16: f("cast_f32_bf16")?,
            reduce_partials: f("reduce_partials")?,
            sum_squares: f("sum_squares")?,
            column_sum_bf16: f("column_sum_bf16")?,
            embed_fwd: f("embed_fwd")?,
            embed_bwd: f("embed_bwd")?,
            rmsnorm_fwd: f("rmsnorm_fwd")?,
            rmsnorm_bwd,
            rmsnorm_reg,
            rope_split: f("rope_split")?,
            rope_merge: f("rope_merge")?,
            swiglu_fwd: f("swiglu_fwd")?,
            swiglu_bwd: f("swiglu_bwd")?,
            gather_rows_bf16: f("gather_rows_bf16")?,
            scatter_rows_bf16: f("scatter_rows_bf16")?,
            cross_entropy: f("cross_entropy")?,
            adamw: f("adamw")?,
            attn_bwd_delta: f("attn_bwd_delta")?,
            flash,
        };
        let stream = ctx.new_stream().map_err(|e| derr("stream", e))?;
        ctx.bind_to_thread().map_err(|e| derr("binding the context", e))?;
        // SAFETY: a plain allocation on our stream, freed in Drop.
        let workspace = unsafe { dr::malloc_async(stream.cu_stream(), blas::WORKSPACE) }
            .map_err(|e| derr("cuBLASLt workspace", e))?;
        let blas = blas::Blas::new(workspace, cache.clone().map(|d| (d, name.as_str())))?;
        let mut ops = CudaOps {
            ctx,
            stream,
            _module: module,
            k,
            blas,
            bufs: Vec::new(),
            scratch: (0, 0),
            sms,
            max_smem: max_smem.max(0) as u32,
            name,
            cc,
            cached,
        };
        ops.bufs.push(Some(workspace));
        Ok(ops)
    }

    fn bind(&self) -> Result<(), TrainError> {
        self.ctx.bind_to_thread().map_err(|e| derr("binding the context", e))
    }

    fn ptr(&self, v: View) -> Result<CUdeviceptr, TrainError> {
        let base = self
            .bufs
            .get(v.buf)
            .copied()
            .flatten()
            .ok_or_else(|| TrainError::Device(format!("use of a freed buffer ({})", v.buf)))?;
        Ok(base + (v.offset * v.dtype.size()) as u64)
    }

    fn p(&self, v: View) -> Result<Arg, TrainError> {
        Ok(Arg::P(self.ptr(v)?))
    }

    fn launch(
        &self,
        f: &CudaFunction,
        grid: (u32, u32, u32),
        block: u32,
        smem: u32,
        args: &[Arg],
    ) -> Result<(), TrainError> {
        let mut slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        // SAFETY: the arguments match the kernel's parameter list (each call site mirrors its
        // signature in kernels.cu); the slots outlive the call, which copies them.
        unsafe {
            dr::launch_kernel(
                f.cu_function(),
                grid,
                (block, 1, 1),
                smem,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| derr("kernel launch", e))
    }

    /// A 1-D grid-stride launch over `n` items.
    fn grid(&self, n: usize, block: u32, per_sm: u32) -> (u32, u32, u32) {
        let blocks = n.div_ceil(block as usize).max(1).min((self.sms * per_sm) as usize);
        (blocks as u32, 1, 1)
    }

    /// Scratch space of at least `bytes` (partial sums, attention's delta).
    fn scratch(&mut self, bytes: usize) -> Result<CUdeviceptr, TrainError> {
        if self.scratch.1 < bytes {
            // SAFETY: stream-ordered free of our own allocation, then a new one.
            unsafe {
                if self.scratch.0 != 0 {
                    dr::free_async(self.scratch.0, self.stream.cu_stream()).map_err(|e| derr("free", e))?;
                }
                self.scratch = (
                    dr::malloc_async(self.stream.cu_stream(), bytes).map_err(|e| derr("scratch allocation", e))?,
                    bytes,
                );
            }
        }
        Ok(self.scratch.0)
    }

    /// `dst (+)= Σ_p partial[p, ·]` over `parts` rows of `cols`.
    fn reduce(
        &self,
        dst: View,
        partial: CUdeviceptr,
        parts: usize,
        cols: usize,
        accumulate: bool,
    ) -> Result<(), TrainError> {
        self.launch(
            &self.k.reduce_partials,
            ((cols as u32).div_ceil(32), 1, 1),
            1024,
            0,
            &[
                self.p(dst)?,
                Arg::P(partial),
                Arg::I(parts as i32),
                Arg::I(cols as i32),
                Arg::I(accumulate as i32),
            ],
        )
    }

    /// The register-resident RMSNorm kernels for hidden size `h`, when instantiated.
    fn reg_norm(&self, h: usize) -> Option<&(usize, CudaFunction, CudaFunction)> {
        if !h.is_multiple_of(128) {
            return None;
        }
        self.k.rmsnorm_reg.iter().find(|(v, _, _)| *v == h / 128)
    }

    fn flash(&self, d: usize, local: bool) -> Result<&[CudaFunction; 3], TrainError> {
        self.k
            .flash
            .iter()
            .find(|(hd, _, _)| *hd == d)
            .map(|(_, plain, with_local)| if local { with_local } else { plain })
            .ok_or_else(|| TrainError::Device(format!("no attention kernels for head_dim {d} (have {HEAD_DIMS:?})")))
    }

    /// `blk, tgt, bias_log2` of the localist attention kernels (unused by the plain ones).
    fn local_args(&self, m: &AttnMask) -> Result<[Arg; 3], TrainError> {
        Ok(match m.local {
            Some(l) => [self.p(l.block)?, self.p(l.target)?, Arg::F(l.bias_log2)],
            None => [Arg::P(0), Arg::P(0), Arg::F(0.0)],
        })
    }

    /// `vis, S, W, full, FW` of the attention kernels.
    fn mask_args(&self, m: &AttnMask) -> Result<[Arg; 5], TrainError> {
        Ok([
            match m.vis {
                Some(v) => self.p(v)?,
                None => Arg::P(0),
            },
            Arg::I(m.segments as i32),
            Arg::I(m.words as i32),
            self.p(m.full)?,
            Arg::I(m.full_words as i32),
        ])
    }
}

impl Drop for CudaOps {
    fn drop(&mut self) {
        let _ = self.bind();
        let _ = self.stream.synchronize();
        // SAFETY: each allocation is freed once, after the stream drained.
        unsafe {
            for p in self.bufs.drain(..).flatten() {
                let _ = dr::free_sync(p);
            }
            if self.scratch.0 != 0 {
                let _ = dr::free_sync(self.scratch.0);
            }
        }
    }
}

fn check_len(v: View, n: usize) -> Result<(), TrainError> {
    if v.len != n {
        return Err(TrainError::Device(format!(
            "upload of {n} values into a view of {}",
            v.len
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
impl Ops for CudaOps {
    fn alloc(&mut self, len: usize, dtype: DType) -> Result<View, TrainError> {
        self.bind()?;
        let bytes = (len * dtype.size()).max(4).div_ceil(256) * 256;
        // SAFETY: stream-ordered allocation and clearing of `bytes` bytes we own.
        let ptr = unsafe {
            let p = dr::malloc_async(self.stream.cu_stream(), bytes)
                .map_err(|e| derr(&format!("allocating {} MiB", bytes >> 20), e))?;
            dr::memset_d8_async(p, 0, bytes, self.stream.cu_stream()).map_err(|e| derr("memset", e))?;
            p
        };
        self.bufs.push(Some(ptr));
        Ok(View {
            buf: self.bufs.len() - 1,
            offset: 0,
            len,
            dtype,
        })
    }

    fn free(&mut self, v: View) -> Result<(), TrainError> {
        if let Some(p) = self.bufs.get_mut(v.buf).and_then(Option::take) {
            // SAFETY: stream-ordered free of our own allocation.
            unsafe { dr::free_async(p, self.stream.cu_stream()) }.map_err(|e| derr("free", e))?;
        }
        Ok(())
    }

    fn upload(&mut self, dst: View, data: Host<'_>) -> Result<(), TrainError> {
        self.bind()?;
        let p = self.ptr(dst)?;
        let s = self.stream.cu_stream();
        // SAFETY: the view holds as many elements as the slice (checked); pageable memory is
        // staged by the driver before the call returns.
        unsafe {
            match (data, dst.dtype) {
                (Host::F32(x), DType::F32) => {
                    check_len(dst, x.len())?;
                    dr::memcpy_htod_async(p, x, s)
                }
                (Host::F32(x), DType::Bf16) => {
                    check_len(dst, x.len())?;
                    let b: Vec<u16> = x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
                    let r = dr::memcpy_htod_async(p, &b, s);
                    // The staging copy of pageable memory is done when the call returns.
                    r
                }
                (Host::I32(x), DType::I32) => {
                    check_len(dst, x.len())?;
                    dr::memcpy_htod_async(p, x, s)
                }
                _ => {
                    return Err(TrainError::Device(format!(
                        "upload into a {:?} view of the wrong type",
                        dst.dtype
                    )));
                }
            }
        }
        .map_err(|e| derr("upload", e))
    }

    fn download(&mut self, src: View) -> Result<Vec<f32>, TrainError> {
        self.bind()?;
        let p = self.ptr(src)?;
        let s = self.stream.cu_stream();
        let out = match src.dtype {
            DType::F32 => {
                let mut v = vec![0f32; src.len];
                // SAFETY: the view holds `len` floats; the stream is synchronized before reading.
                unsafe { dr::memcpy_dtoh_async(&mut v, p, s) }.map_err(|e| derr("download", e))?;
                self.synchronize()?;
                v
            }
            DType::Bf16 => {
                let mut v = vec![0u16; src.len];
                // SAFETY: as above.
                unsafe { dr::memcpy_dtoh_async(&mut v, p, s) }.map_err(|e| derr("download", e))?;
                self.synchronize()?;
                v.into_iter().map(|b| bf16::from_bits(b).to_f32()).collect()
            }
            DType::I32 => return Err(TrainError::Device("float download of an integer view".into())),
        };
        Ok(out)
    }

    fn zero(&mut self, dst: View) -> Result<(), TrainError> {
        // SAFETY: the view lies inside its allocation.
        unsafe { dr::memset_d8_async(self.ptr(dst)?, 0, dst.len * dst.dtype.size(), self.stream.cu_stream()) }
            .map_err(|e| derr("memset", e))
    }

    fn cast_bf16(&mut self, dst: View, src: View) -> Result<(), TrainError> {
        let n = src.len;
        self.launch(
            &self.k.cast_f32_bf16,
            self.grid(n, 256, 16),
            256,
            0,
            &[self.p(dst)?, self.p(src)?, Arg::L(n as i64)],
        )
    }

    fn gemm(&mut self, g: &Gemm) -> Result<(), TrainError> {
        let call = blas::Call {
            out: self.ptr(g.out)?,
            a: self.ptr(g.a)?,
            b: self.ptr(g.b)?,
            c: match g.c {
                Some(c) => self.ptr(c)?,
                None => 0,
            },
            m: g.m,
            n: g.n,
            k: g.k,
            ta: g.ta,
            tb: g.tb,
            out_f32: g.out.dtype == DType::F32,
        };
        let s = self.stream.cu_stream();
        self.blas.matmul(&call, s)
    }

    fn embed(&mut self, out: View, table: View, ids: View, n: usize, h: usize) -> Result<(), TrainError> {
        self.launch(
            &self.k.embed_fwd,
            (n as u32, 1, 1),
            256,
            0,
            &[self.p(out)?, self.p(table)?, self.p(ids)?, Arg::I(h as i32)],
        )
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
        self.launch(
            &self.k.embed_bwd,
            (uniq as u32, 1, 1),
            256,
            0,
            &[
                self.p(dtable)?,
                self.p(dx)?,
                self.p(tok)?,
                self.p(starts)?,
                self.p(pos)?,
                Arg::I(h as i32),
            ],
        )
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
        if let Some((_, f, _)) = self.reg_norm(h) {
            return self.launch(
                f,
                ((n as u32).div_ceil(8), 1, 1),
                256,
                0,
                &[
                    self.p(y)?,
                    self.p(rstd)?,
                    self.p(x)?,
                    self.p(w)?,
                    Arg::I(n as i32),
                    Arg::F(eps),
                ],
            );
        }
        self.launch(
            &self.k.rmsnorm_fwd,
            ((n as u32).div_ceil(8), 1, 1),
            256,
            0,
            &[
                self.p(y)?,
                self.p(rstd)?,
                self.p(x)?,
                self.p(w)?,
                Arg::I(n as i32),
                Arg::I(h as i32),
                Arg::F(eps),
            ],
        )
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
        // Enough warps in flight to keep the memory system busy; one partial row of dw per block.
        let blocks = n.div_ceil(4).clamp(1, 8 * self.sms as usize);
        let partial = self.scratch(blocks * h * 4)?;
        if let Some((_, _, f)) = self.reg_norm(h) {
            self.launch(
                f,
                (blocks as u32, 1, 1),
                128,
                0,
                &[
                    self.p(dres)?,
                    self.p(dres_bf16)?,
                    Arg::P(partial),
                    self.p(dy)?,
                    self.p(x)?,
                    self.p(w)?,
                    self.p(rstd)?,
                    Arg::I(n as i32),
                    Arg::I(accumulate as i32),
                ],
            )?;
            return self.reduce(dw, partial, blocks, h, true);
        }
        self.launch(
            &self.k.rmsnorm_bwd,
            (blocks as u32, 1, 1),
            128,
            (4 * h * 4) as u32,
            &[
                self.p(dres)?,
                self.p(dres_bf16)?,
                Arg::P(partial),
                self.p(dy)?,
                self.p(x)?,
                self.p(w)?,
                self.p(rstd)?,
                Arg::I(n as i32),
                Arg::I(h as i32),
                Arg::I(accumulate as i32),
            ],
        )?;
        self.reduce(dw, partial, blocks, h, true)
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
        self.launch(
            &self.k.rope_split,
            ((s.batch * s.seq) as u32, 1, 1),
            128,
            0,
            &[
                self.p(q)?,
                self.p(k)?,
                self.p(v)?,
                self.p(qkv)?,
                match bias {
                    Some(b) => self.p(b)?,
                    None => Arg::P(0),
                },
                self.p(pos)?,
                self.p(inv_freq)?,
                Arg::I(s.batch as i32),
                Arg::I(s.seq as i32),
                Arg::I(s.heads as i32),
                Arg::I(s.kv_heads as i32),
                Arg::I(s.head_dim as i32),
            ],
        )
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
        self.launch(
            &self.k.rope_merge,
            ((s.batch * s.seq) as u32, 1, 1),
            128,
            0,
            &[
                self.p(dqkv)?,
                self.p(dq)?,
                self.p(dk)?,
                self.p(dv)?,
                self.p(pos)?,
                self.p(inv_freq)?,
                Arg::I(s.batch as i32),
                Arg::I(s.seq as i32),
                Arg::I(s.heads as i32),
                Arg::I(s.kv_heads as i32),
                Arg::I(s.head_dim as i32),
            ],
        )
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
        let local = mask.local.is_some();
        let f = &self.flash(s.head_dim, local)?[0];
        let scale_log2 = std::f32::consts::LOG2_E * s.scale;
        let [vis, segs, words, full, fw] = self.mask_args(mask)?;
        let [blk, tgt, bias] = self.local_args(mask)?;
        let (fid, ent) = match mask.local {
            Some(l) => (self.p(l.fidelity)?, self.p(l.entropy)?),
            None => (Arg::P(0), Arg::P(0)),
        };
        self.launch(
            f,
            ((s.seq / 64) as u32, s.heads as u32, s.batch as u32),
            128,
            flash_smem(s.head_dim, local)[0],
            &[
                self.p(o)?,
                self.p(lse2)?,
                self.p(q)?,
                self.p(k)?,
                self.p(v)?,
                self.p(mask.seg)?,
                self.p(mask.qt_kt0)?,
                vis,
                segs,
                words,
                full,
                fw,
                Arg::I(s.seq as i32),
                Arg::I(s.heads as i32),
                Arg::I(s.kv_heads as i32),
                Arg::F(scale_log2),
                blk,
                tgt,
                bias,
                fid,
                ent,
            ],
        )
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
        let rows = s.batch * s.seq * s.heads;
        let delta = self.scratch(rows * 4)?;
        self.launch(
            &self.k.attn_bwd_delta,
            ((rows as u32).div_ceil(8), 1, 1),
            256,
            0,
            &[
                Arg::P(delta),
                self.p(dout)?,
                self.p(o)?,
                Arg::I(s.batch as i32),
                Arg::I(s.seq as i32),
                Arg::I(s.heads as i32),
                Arg::I(s.head_dim as i32),
                match mask.local {
                    Some(l) => self.p(l.fidelity)?,
                    None => Arg::P(0),
                },
                Arg::F(mask.local.map_or(0.0, |l| l.penalty)),
            ],
        )?;
        let local = mask.local.is_some();
        let fs = self.flash(s.head_dim, local)?;
        let smem = flash_smem(s.head_dim, local);
        let scale = s.scale;
        let scale_log2 = std::f32::consts::LOG2_E * scale;
        let [vis, segs, words, full, fw] = self.mask_args(mask)?;
        let [blk, tgt, bias] = self.local_args(mask)?;
        let tail = [
            vis,
            segs,
            words,
            full,
            fw,
            Arg::I(s.seq as i32),
            Arg::I(s.heads as i32),
            Arg::I(s.kv_heads as i32),
            Arg::F(scale_log2),
            Arg::F(scale),
            blk,
            tgt,
            bias,
            Arg::F(mask.local.map_or(0.0, |l| l.penalty)),
        ];
        let mut a = vec![
            self.p(dk)?,
            self.p(dv)?,
            self.p(q)?,
            self.p(k)?,
            self.p(v)?,
            self.p(dout)?,
            self.p(lse2)?,
            Arg::P(delta),
            self.p(mask.seg)?,
            self.p(mask.kt_qt1)?,
        ];
        a.extend(tail);
        self.launch(
            &fs[1],
            ((s.seq / 64) as u32, s.kv_heads as u32, s.batch as u32),
            128,
            smem[1],
            &a,
        )?;
        let mut a = vec![
            self.p(dq)?,
            self.p(q)?,
            self.p(k)?,
            self.p(v)?,
            self.p(dout)?,
            self.p(lse2)?,
            Arg::P(delta),
            self.p(mask.seg)?,
            self.p(mask.qt_kt0)?,
        ];
        a.extend(tail);
        self.launch(
            &fs[2],
            ((s.seq / 64) as u32, s.heads as u32, s.batch as u32),
            128,
            smem[2],
            &a,
        )
    }

    fn swiglu(&mut self, h: View, gu: View, n: usize, inter: usize) -> Result<(), TrainError> {
        self.launch(
            &self.k.swiglu_fwd,
            self.grid(n * inter / 4, 256, 16),
            256,
            0,
            &[self.p(h)?, self.p(gu)?, Arg::I(n as i32), Arg::I(inter as i32)],
        )
    }

    fn swiglu_backward(&mut self, dgu: View, dh: View, gu: View, n: usize, inter: usize) -> Result<(), TrainError> {
        self.launch(
            &self.k.swiglu_bwd,
            self.grid(n * inter / 4, 256, 16),
            256,
            0,
            &[
                self.p(dgu)?,
                self.p(dh)?,
                self.p(gu)?,
                Arg::I(n as i32),
                Arg::I(inter as i32),
            ],
        )
    }

    fn gather_rows(&mut self, dst: View, src: View, rows: View, count: usize, h: usize) -> Result<(), TrainError> {
        if count == 0 {
            return Ok(());
        }
        self.launch(
            &self.k.gather_rows_bf16,
            (count as u32, 1, 1),
            128,
            0,
            &[self.p(dst)?, self.p(src)?, self.p(rows)?, Arg::I(h as i32)],
        )
    }

    fn scatter_rows(&mut self, dst: View, src: View, rows: View, count: usize, h: usize) -> Result<(), TrainError> {
        if count == 0 {
            return Ok(());
        }
        self.launch(
            &self.k.scatter_rows_bf16,
            (count as u32, 1, 1),
            128,
            0,
            &[self.p(dst)?, self.p(src)?, self.p(rows)?, Arg::I(h as i32)],
        )
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
        let opt = |v: Option<View>| v.map_or(Ok(Arg::P(0)), |v| self.p(v));
        self.launch(
            &self.k.cross_entropy,
            (rows as u32, 1, 1),
            512,
            0,
            &[
                opt(dlogits)?,
                self.p(logp)?,
                opt(entropy)?,
                self.p(logits)?,
                self.p(targets)?,
                self.p(coef)?,
                Arg::I(vocab as i32),
                Arg::F(inv_temp),
            ],
        )
    }

    fn column_sum_add(&mut self, dst: View, x: View, rows: usize, cols: usize) -> Result<(), TrainError> {
        let parts = rows.clamp(1, 64);
        let per = rows.div_ceil(parts);
        let partial = self.scratch(parts * cols * 4)?;
        self.launch(
            &self.k.column_sum_bf16,
            ((cols as u32).div_ceil(256), parts as u32, 1),
            256,
            0,
            &[
                Arg::P(partial),
                self.p(x)?,
                Arg::I(rows as i32),
                Arg::I(cols as i32),
                Arg::I(per as i32),
            ],
        )?;
        self.reduce(dst, partial, parts, cols, true)
    }

    fn sum_squares(&mut self, x: View) -> Result<f64, TrainError> {
        let blocks = (4 * self.sms) as usize;
        let partial = self.scratch(blocks * 4)?;
        self.launch(
            &self.k.sum_squares,
            (blocks as u32, 1, 1),
            256,
            0,
            &[Arg::P(partial), self.p(x)?, Arg::L(x.len as i64)],
        )?;
        let mut v = vec![0f32; blocks];
        // SAFETY: the scratch holds `blocks` floats; synchronized before reading.
        unsafe { dr::memcpy_dtoh_async(&mut v, partial, self.stream.cu_stream()) }.map_err(|e| derr("download", e))?;
        self.synchronize()?;
        Ok(v.iter().map(|&x| x as f64).sum())
    }

    fn adamw(&mut self, a: &AdamWArgs) -> Result<(), TrainError> {
        let n = a.params.len;
        self.launch(
            &self.k.adamw,
            self.grid(n, 256, 16),
            256,
            0,
            &[
                self.p(a.params)?,
                self.p(a.params_bf16)?,
                self.p(a.grads)?,
                self.p(a.m)?,
                self.p(a.v)?,
                Arg::L(n as i64),
                Arg::F(a.lr),
                Arg::F(a.beta1),
                Arg::F(a.beta2),
                Arg::F(a.eps),
                Arg::F(a.weight_decay),
                Arg::F(a.bias_correction1),
                Arg::F(a.bias_correction2),
                Arg::F(a.grad_scale),
            ],
        )
    }

    fn synchronize(&mut self) -> Result<(), TrainError> {
        self.stream.synchronize().map_err(|e| derr("device work failed", e))
    }
}

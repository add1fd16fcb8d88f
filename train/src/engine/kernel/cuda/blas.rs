//! Matmuls through cuBLASLt (loaded at run time by cudarc): bf16 operands, fp32 accumulation,
//! fp32 or bf16 results, and the optional addend `C` (the residual add, and gradient
//! accumulation with `C = D`) in the same call.
//!
//! Our tensors are row-major and cuBLAS is column-major, so a row-major `out = op(a) · op(b)` is
//! computed as the column-major `outᵀ = op(b)ᵀ · op(a)ᵀ`: cuBLAS's A is our `b`, its B our `a`,
//! and its (M, N) our (n, m). One plan per shape is kept for the process: a dozen model shapes,
//! plus three per distinct count of loss rows in the last chunk of the cross-entropy (packed data
//! makes up to a few thousand of these over a long run: host descriptors of a few hundred bytes
//! each and one heuristic query per new count). Autotuning: the heuristic's first eight algorithms
//! for a shape are each timed (median of three, CUDA events, into a scratch output so no real
//! result is touched) and the fastest is kept; the choice is stored in a small file beside the
//! kernel cache, keyed by card and cuBLASLt version, so later processes skip the timing. Shapes
//! that vary from batch to batch share one choice per power-of-two bucket; the choice is a rank in
//! the heuristic's list, which for another shape of the bucket may name another (still valid)
//! algorithm: tuning for those shapes is approximate.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;

use cudarc::cublaslt::sys;
use cudarc::driver::sys::CUdeviceptr;

use crate::error::TrainError;

/// Bytes of cuBLASLt workspace (NVIDIA recommends 32 MiB on Hopper).
pub const WORKSPACE: usize = 32 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    out_f32: bool,
}

struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

/// A cuBLASLt handle with its workspace and plans.
pub struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: CUdeviceptr,
    plans: HashMap<Key, Plan>,
    /// Tuned choices (index into the heuristic's list) by shape, from and for `tune_file`.
    tuned: HashMap<Key, usize>,
    tune_file: Option<PathBuf>,
    /// Scratch output for timing candidates.
    scratch: (CUdeviceptr, usize),
}

/// Candidates the heuristic is asked for.
const CANDIDATES: usize = 8;

/// The dimension a tuned choice is filed under: model dimensions (multiples of 64) as they are;
/// anything else (the count of loss rows, which changes with every packed batch) by its power-of-two
/// bucket, so a run tunes such shapes once per bucket rather than once per step.
fn tune_dim(x: usize) -> usize {
    if x.is_multiple_of(64) {
        x
    } else {
        x.next_power_of_two() + 1
    }
}

impl Key {
    fn tuned(&self) -> Key {
        Key {
            m: tune_dim(self.m),
            n: tune_dim(self.n),
            k: tune_dim(self.k),
            ..*self
        }
    }

    fn line(&self, idx: usize) -> String {
        format!(
            "{} {} {} {} {} {} {idx}",
            self.m, self.n, self.k, self.ta as u8, self.tb as u8, self.out_f32 as u8
        )
    }

    fn parse(line: &str) -> Option<(Key, usize)> {
        let v: Vec<usize> = line.split_whitespace().map(|x| x.parse().ok()).collect::<Option<_>>()?;
        let [m, n, k, ta, tb, f, idx] = v.as_slice().try_into().ok()?;
        Some((
            Key {
                m,
                n,
                k,
                ta: ta == 1,
                tb: tb == 1,
                out_f32: f == 1,
            },
            idx,
        ))
    }
}

fn err(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Device(format!("cuBLASLt {what}: {e:?}"))
}

fn check(what: &str, s: sys::cublasStatus_t) -> Result<(), TrainError> {
    s.result().map_err(|e| err(what, e))
}

/// One matmul, in row-major terms (see `ops::Gemm`), on device pointers.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// Result pointer.
    pub out: CUdeviceptr,
    /// Left operand (bf16).
    pub a: CUdeviceptr,
    /// Right operand (bf16).
    pub b: CUdeviceptr,
    /// Addend (same type and shape as `out`), or 0.
    pub c: CUdeviceptr,
    /// Result rows.
    pub m: usize,
    /// Result columns.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `a` stored transposed.
    pub ta: bool,
    /// `b` stored transposed.
    pub tb: bool,
    /// Result (and addend) in fp32, else bf16.
    pub out_f32: bool,
}

impl Blas {
    /// A handle and a workspace of [`WORKSPACE`] bytes at `workspace`.
    ///
    /// # Errors
    /// When libcublasLt cannot be loaded or initialised.
    pub fn new(workspace: CUdeviceptr, cache: Option<(PathBuf, &str)>) -> Result<Self, TrainError> {
        // SAFETY: probing for the library has no preconditions.
        if !unsafe { sys::is_culib_present() } {
            return Err(TrainError::Device(
                "cuBLASLt (libcublasLt) was not found; it ships with the CUDA toolkit (or pip's nvidia-cublas): add its folder to LD_LIBRARY_PATH".into(),
            ));
        }
        let handle = cudarc::cublaslt::result::create_handle().map_err(|e| err("create", e))?;
        // SAFETY: a plain query.
        let version = unsafe { sys::cublasLtGetVersion() };
        let tune_file = cache.map(|(dir, card)| {
            let card: String = card
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            dir.join(format!("firebrand-cublaslt-{card}-{version}.txt"))
        });
        let tuned = tune_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.lines().filter_map(Key::parse).collect())
            .unwrap_or_default();
        Ok(Blas {
            handle,
            workspace,
            plans: HashMap::new(),
            tuned,
            tune_file,
            scratch: (0, 0),
        })
    }

    fn plan(&mut self, key: Key, call: &Call, stream: cudarc::driver::sys::CUstream) -> Result<&Plan, TrainError> {
        if !self.plans.contains_key(&key) {
            let plan = self.make_plan(key, call, stream)?;
            self.plans.insert(key, plan);
        }
        Ok(&self.plans[&key])
    }

    fn make_plan(&mut self, key: Key, call: &Call, stream: cudarc::driver::sys::CUstream) -> Result<Plan, TrainError> {
        use cudarc::cublaslt::result as r;
        let bf = sys::cudaDataType_t::CUDA_R_16BF;
        let out_t = if key.out_f32 {
            sys::cudaDataType_t::CUDA_R_32F
        } else {
            bf
        };
        let desc = r::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(|e| err("matmul desc", e))?;
        // cublasOperation_t: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 (an int32 attribute).
        let op = |t: bool| -> i32 { i32::from(t) };
        // cuBLAS's A is our b: stored [k, n] row-major = column-major n × k (ld n), or with `tb`
        // stored [n, k] = column-major k × n (ld k), transposed.
        let (op_a, op_b) = (op(key.tb), op(key.ta));
        // SAFETY: `desc` was just created; the values are the documented attribute types.
        unsafe {
            r::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &op_a as *const _ as *const c_void,
                std::mem::size_of_val(&op_a),
            )
            .map_err(|e| err("transa", e))?;
            r::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                &op_b as *const _ as *const c_void,
                std::mem::size_of_val(&op_b),
            )
            .map_err(|e| err("transb", e))?;
        }
        let (m, n, k) = (key.m as u64, key.n as u64, key.k as u64);
        let a = if key.tb {
            r::create_matrix_layout(bf, k, n, k as i64)
        } else {
            r::create_matrix_layout(bf, n, k, n as i64)
        }
        .map_err(|e| err("layout A", e))?;
        let b = if key.ta {
            r::create_matrix_layout(bf, m, k, m as i64)
        } else {
            r::create_matrix_layout(bf, k, m, k as i64)
        }
        .map_err(|e| err("layout B", e))?;
        let c = r::create_matrix_layout(out_t, n, m, n as i64).map_err(|e| err("layout C", e))?;
        let pref = r::create_matmul_pref().map_err(|e| err("preference", e))?;
        let ws = WORKSPACE as u64;
        let mut found = [std::mem::MaybeUninit::<sys::cublasLtMatmulHeuristicResult_t>::zeroed(); CANDIDATES];
        let mut count = 0i32;
        // SAFETY: live descriptors; the results array holds CANDIDATES entries.
        unsafe {
            r::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                std::mem::size_of::<u64>(),
            )
            .map_err(|e| err("workspace preference", e))?;
            let status = sys::cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                desc,
                a,
                b,
                c,
                c,
                pref,
                CANDIDATES as i32,
                found.as_mut_ptr() as *mut sys::cublasLtMatmulHeuristicResult_t,
                &mut count,
            );
            let _ = r::destroy_matmul_pref(pref);
            check("heuristic", status)?;
        }
        // SAFETY: the first `count` entries were written by the heuristic.
        let algos: Vec<sys::cublasLtMatmulAlgo_t> = found[..count.max(0) as usize]
            .iter()
            .map(|h| unsafe { h.assume_init() })
            .filter(|h| h.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
            .map(|h| h.algo)
            .collect();
        if algos.is_empty() {
            return Err(TrainError::Device(format!(
                "cuBLASLt has no algorithm for {}x{}x{} (ta {}, tb {}, fp32 out {})",
                key.m, key.n, key.k, key.ta, key.tb, key.out_f32
            )));
        }
        let mut plan = Plan {
            desc,
            a,
            b,
            c,
            algo: algos[0],
        };
        let bucket = key.tuned();
        let idx = match self.tuned.get(&bucket) {
            Some(&i) if i < algos.len() => i,
            _ => {
                let i = self.tune(&mut plan, &algos, call, stream)?;
                self.tuned.insert(bucket, i);
                if let Some(f) = &self.tune_file {
                    use std::io::Write;
                    if let Some(dir) = f.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    // A cache that cannot be written only costs the next process the timing.
                    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(f) {
                        let _ = writeln!(file, "{}", bucket.line(i));
                    }
                }
                i
            }
        };
        plan.algo = algos[idx];
        Ok(plan)
    }

    /// Times each algorithm on `call`'s operands with a scratch output (and the scratch as the
    /// addend when the call has one) and returns the index of the fastest.
    fn tune(
        &mut self,
        plan: &mut Plan,
        algos: &[sys::cublasLtMatmulAlgo_t],
        call: &Call,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<usize, TrainError> {
        use cudarc::driver::result as dr;
        if algos.len() == 1 {
            return Ok(0);
        }
        let bytes = call.m * call.n * if call.out_f32 { 4 } else { 2 };
        if self.scratch.1 < bytes {
            // SAFETY: stream-ordered free and allocation of our own scratch.
            unsafe {
                if self.scratch.0 != 0 {
                    dr::free_async(self.scratch.0, stream).map_err(|e| err("scratch free", e))?;
                }
                self.scratch = (dr::malloc_async(stream, bytes).map_err(|e| err("scratch", e))?, bytes);
                dr::memset_d8_async(self.scratch.0, 0, bytes, stream).map_err(|e| err("scratch", e))?;
            }
        }
        let trial = Call {
            out: self.scratch.0,
            c: if call.c != 0 { self.scratch.0 } else { 0 },
            ..*call
        };
        let flags = cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        let (start, end) = (
            dr::event::create(flags).map_err(|e| err("event", e))?,
            dr::event::create(flags).map_err(|e| err("event", e))?,
        );
        let mut best = (f32::INFINITY, 0);
        for (i, algo) in algos.iter().enumerate() {
            plan.algo = *algo;
            // A candidate that fails to run is skipped.
            if self.run(plan, &trial, stream).is_err() {
                continue;
            }
            let mut times = Vec::with_capacity(3);
            for _ in 0..3 {
                // SAFETY: events and stream are live; the elapsed time is read after the end event.
                let t = unsafe {
                    dr::event::record(start, stream).map_err(|e| err("event", e))?;
                    self.run(plan, &trial, stream)?;
                    dr::event::record(end, stream).map_err(|e| err("event", e))?;
                    dr::event::synchronize(end).map_err(|e| err("event", e))?;
                    dr::event::elapsed(start, end).map_err(|e| err("event", e))?
                };
                times.push(t);
            }
            times.sort_by(f32::total_cmp);
            if times[1] < best.0 {
                best = (times[1], i);
            }
        }
        // SAFETY: destroyed once, after the last use synchronised.
        unsafe {
            let _ = dr::event::destroy(start);
            let _ = dr::event::destroy(end);
        }
        Ok(best.1)
    }

    fn run(&self, plan: &Plan, call: &Call, stream: cudarc::driver::sys::CUstream) -> Result<(), TrainError> {
        let alpha = 1.0f32;
        let beta = if call.c != 0 { 1.0f32 } else { 0.0f32 };
        let c = if call.c != 0 { call.c } else { call.out };
        // SAFETY: the pointers are device allocations of the sizes the plan describes (the engine's
        // layout guarantees it); the workspace holds WORKSPACE bytes.
        check("matmul", unsafe {
            sys::cublasLtMatmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                call.b as *const c_void,
                plan.a,
                call.a as *const c_void,
                plan.b,
                &beta as *const f32 as *const c_void,
                c as *const c_void,
                plan.c,
                call.out as *mut c_void,
                plan.c,
                &plan.algo,
                self.workspace as *mut c_void,
                WORKSPACE,
                stream as sys::cudaStream_t,
            )
        })
    }

    /// Queues `call` on `stream`.
    ///
    /// # Errors
    /// When cuBLASLt refuses the call.
    pub fn matmul(&mut self, call: &Call, stream: cudarc::driver::sys::CUstream) -> Result<(), TrainError> {
        let key = Key {
            m: call.m,
            n: call.n,
            k: call.k,
            ta: call.ta,
            tb: call.tb,
            out_f32: call.out_f32,
        };
        self.plan(key, call, stream)?;
        self.run(&self.plans[&key], call, stream)
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        use cudarc::cublaslt::result as r;
        // SAFETY: each descriptor and the handle are destroyed once.
        unsafe {
            for (_, p) in self.plans.drain() {
                let _ = r::destroy_matrix_layout(p.a);
                let _ = r::destroy_matrix_layout(p.b);
                let _ = r::destroy_matrix_layout(p.c);
                let _ = r::destroy_matmul_desc(p.desc);
            }
            let _ = r::destroy_handle(self.handle);
            if self.scratch.0 != 0 {
                let _ = cudarc::driver::result::free_sync(self.scratch.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varying_row_counts_share_a_tuning_bucket_and_model_dims_do_not() {
        let key = |m, n, k| Key {
            m,
            n,
            k,
            ta: false,
            tb: true,
            out_f32: true,
        };
        assert_eq!(key(1385, 32000, 768).tuned(), key(1500, 32000, 768).tuned());
        assert_ne!(key(1385, 32000, 768).tuned(), key(2100, 32000, 768).tuned());
        assert_ne!(key(16384, 2304, 768).tuned(), key(16384, 4096, 768).tuned());
        assert_eq!(key(16384, 2304, 768).tuned(), key(16384, 2304, 768));
        // Lines round-trip through the cache file.
        let k = key(1385, 32000, 768).tuned();
        assert_eq!(Key::parse(&k.line(3)), Some((k, 3)));
    }
}

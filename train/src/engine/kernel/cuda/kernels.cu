// firebrand's fast-path kernels: compiled at run time by NVRTC (no headers, no CUDA toolkit at
// build time), cached on disk as a cubin per GPU architecture (see ../cuda/mod.rs).
//
// Every kernel has a reference implementation in `../cpu.rs` that states the same function in plain
// Rust; `firebrand bench kernels` checks each against it on random inputs.
//
// Conventions:
// - `bf16` values travel as raw 16-bit words (`bf16_t`); arithmetic is always in fp32.
// - Activations are row-major `[tokens, features]`; attention's q/k/v are `[batch, heads, seq, d]`
//   and its output is `[batch, seq, heads, d]` (= `[tokens, heads * d]`, the o_proj input).
// - Attention works in the log2 domain: scores are scaled by `scale * log2(e)` and exponentiated
//   with exp2; the saved log-sum-exp (`lse2`) is in that domain too.
// - Reductions whose result is a gradient are deterministic: fixed assignment of rows to blocks,
//   partial sums per block, then a fixed-order sum (`reduce_partials`). No float atomics.

typedef unsigned short bf16_t;

#define NEG_INF (__int_as_float(0xff800000))

__device__ __forceinline__ float bf2f(bf16_t x) { return __uint_as_float(((unsigned)x) << 16); }

__device__ __forceinline__ bf16_t f2bf(float f) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// Two floats into one bf16x2 word: `lo` in the low half (the lower address), `hi` in the high half.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ float lo_bf(unsigned w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi_bf(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

// 2^x in one MUFU instruction (flush-to-zero of denormal results is harmless for softmax weights).
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

// dst[i] = bf16(src[i]).
extern "C" __global__ void cast_f32_bf16(bf16_t* dst, const float* src, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dst[i] = f2bf(src[i]);
}

// dst[j] (+)= sum over p of partial[p * cols + j]. Block (32, 32): thread (x, y) sums the parts
// y, y + 32, ... of column 32 * blockIdx.x + x, then the 32 sums are added in order of y (the same
// order every run).
extern "C" __global__ void reduce_partials(float* dst, const float* partial, int parts, int cols, int accumulate) {
    __shared__ float sums[32][33];
    int x = threadIdx.x & 31, y = threadIdx.x >> 5;
    int j = blockIdx.x * 32 + x;
    float s = 0.f;
    if (j < cols) {
#pragma unroll 8
        for (int p = y; p < parts; p += 32) s += partial[(size_t)p * cols + j];
    }
    sums[y][x] = s;
    __syncthreads();
    if (y == 0 && j < cols) {
        float t = 0.f;
        for (int i = 0; i < 32; i++) t += sums[i][x];
        dst[j] = accumulate ? dst[j] + t : t;
    }
}

// partial[block] = sum of squares of x over the block's grid-stride share (fixed order).
extern "C" __global__ void sum_squares(float* partial, const float* x, long long n) {
    __shared__ float red[32];
    float s = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        s += v * v;
    }
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        float t = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.f;
        t = warp_sum(t);
        if (threadIdx.x == 0) partial[blockIdx.x] = t;
    }
}

// partial[block][j] = sum over the block's rows of bf16 x[row][j] (bias gradients). Rows are
// assigned to blocks in contiguous chunks of `rows_per_block`.
extern "C" __global__ void column_sum_bf16(float* partial, const bf16_t* x, int rows, int cols, int rows_per_block) {
    int r0 = blockIdx.y * rows_per_block;
    int r1 = min(rows, r0 + rows_per_block);
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += gridDim.x * blockDim.x) {
        float s = 0.f;
        for (int r = r0; r < r1; r++) s += bf2f(x[(size_t)r * cols + j]);
        partial[(size_t)blockIdx.y * cols + j] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------------------------

// out[t] = table[ids[t]] (fp32 rows of width h; h % 4 == 0).
extern "C" __global__ void embed_fwd(float* out, const float* table, const int* ids, int h) {
    int t = blockIdx.x;
    const float4* src = (const float4*)(table + (size_t)ids[t] * h);
    float4* dst = (float4*)(out + (size_t)t * h);
    for (int i = threadIdx.x; i < h / 4; i += blockDim.x) dst[i] = src[i];
}

// dtable[tok[u]] += sum of dx[pos[j]] for j in [starts[u], starts[u + 1]): every distinct token of
// the batch once (the host sorts positions by token), so no two blocks write one row.
extern "C" __global__ void embed_bwd(float* dtable, const float* dx, const int* tok, const int* starts, const int* pos, int h) {
    int u = blockIdx.x;
    int s = starts[u], e = starts[u + 1];
    float* row = dtable + (size_t)tok[u] * h;
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
        float acc = 0.f;
        for (int j = s; j < e; j++) acc += dx[(size_t)pos[j] * h + i];
        row[i] += acc;
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps); x fp32, y bf16. One warp per row.
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void rmsnorm_fwd(bf16_t* y, float* rstd, const float* x, const float* w, int n, int h, float eps) {
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= n) return;
    const float4* xr = (const float4*)(x + (size_t)row * h);
    const float4* w4 = (const float4*)w;
    float ss = 0.f;
    for (int i = lane; i < h / 4; i += 32) {
        float4 v = xr[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = warp_sum(ss);
    float r = rsqrtf(ss / (float)h + eps);
    if (lane == 0) rstd[row] = r;
    uint2* out = (uint2*)(y + (size_t)row * h);
    for (int i = lane; i < h / 4; i += 32) {
        float4 v = xr[i], g = w4[i];
        out[i] = make_uint2(pack_bf16x2(v.x * r * g.x, v.y * r * g.y), pack_bf16x2(v.z * r * g.z, v.w * r * g.w));
    }
}

// Backward of rmsnorm_fwd for dy (bf16): dx = r * w * dy - (r^3 / h) * x * sum(w * dy * x).
// dres (fp32) gets dx added (or set, when !accumulate) and dres_bf16 its bf16 copy (the next
// matmul's input); dw's contribution sum(dy * x * r) goes to partial[block][h]. Block = 4 warps,
// dynamic shared memory 4 * h floats; rows are assigned to warps by a fixed grid stride.
extern "C" __global__ void rmsnorm_bwd(float* dres, bf16_t* dres_bf16, float* partial, const bf16_t* dy, const float* x,
                                       const float* w, const float* rstd, int n, int h, int accumulate) {
    extern __shared__ float dw_s[];  // [4][h]
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float* mine = dw_s + warp * h;
    for (int i = lane; i < h; i += 32) mine[i] = 0.f;
    __syncwarp();
    for (int row = blockIdx.x * 4 + warp; row < n; row += gridDim.x * 4) {
        const float4* xr = (const float4*)(x + (size_t)row * h);
        const uint2* dyr = (const uint2*)(dy + (size_t)row * h);
        const float4* w4 = (const float4*)w;
        float r = rstd[row];
        float s = 0.f;
        for (int i = lane; i < h / 4; i += 32) {
            float4 v = xr[i], g = w4[i];
            uint2 d = dyr[i];
            s += g.x * lo_bf(d.x) * v.x + g.y * hi_bf(d.x) * v.y + g.z * lo_bf(d.y) * v.z + g.w * hi_bf(d.y) * v.w;
        }
        s = warp_sum(s);
        float c = s * r * r * r / (float)h;
        float4* dr = (float4*)(dres + (size_t)row * h);
        uint2* db = (uint2*)(dres_bf16 + (size_t)row * h);
        for (int i = lane; i < h / 4; i += 32) {
            float4 v = xr[i], g = w4[i];
            uint2 d = dyr[i];
            float d0 = lo_bf(d.x), d1 = hi_bf(d.x), d2 = lo_bf(d.y), d3 = hi_bf(d.y);
            float4 o;
            o.x = r * g.x * d0 - c * v.x;
            o.y = r * g.y * d1 - c * v.y;
            o.z = r * g.z * d2 - c * v.z;
            o.w = r * g.w * d3 - c * v.w;
            if (accumulate) {
                float4 p = dr[i];
                o.x += p.x; o.y += p.y; o.z += p.z; o.w += p.w;
            }
            dr[i] = o;
            db[i] = make_uint2(pack_bf16x2(o.x, o.y), pack_bf16x2(o.z, o.w));
            mine[4 * i + 0] += d0 * v.x * r;
            mine[4 * i + 1] += d1 * v.y * r;
            mine[4 * i + 2] += d2 * v.z * r;
            mine[4 * i + 3] += d3 * v.w * r;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < h; i += blockDim.x)
        partial[(size_t)blockIdx.x * h + i] = dw_s[i] + dw_s[h + i] + dw_s[2 * h + i] + dw_s[3 * h + i];
}

// The same two kernels with a row held in registers: V float4 per lane (h = 128 V), so x and dy
// are read once, and (backward) each lane accumulates its columns' dw in registers.
template <int V>
__device__ void rmsnorm_fwd_reg(bf16_t* y, float* rstd, const float* x, const float* w, int n, float eps) {
    constexpr int h = 128 * V;
    int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= n) return;
    const float4* xr = (const float4*)(x + (size_t)row * h);
    float4 v[V];
    float ss = 0.f;
    for (int j = 0; j < V; j++) {
        v[j] = xr[lane + 32 * j];
        ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    }
    ss = warp_sum(ss);
    float r = rsqrtf(ss / (float)h + eps);
    if (lane == 0) rstd[row] = r;
    const float4* w4 = (const float4*)w;
    uint2* out = (uint2*)(y + (size_t)row * h);
    for (int j = 0; j < V; j++) {
        float4 g = w4[lane + 32 * j];
        out[lane + 32 * j] = make_uint2(pack_bf16x2(v[j].x * r * g.x, v[j].y * r * g.y),
                                        pack_bf16x2(v[j].z * r * g.z, v[j].w * r * g.w));
    }
}

template <int V>
__device__ void rmsnorm_bwd_reg(float* dres, bf16_t* dres_bf16, float* partial, const bf16_t* dy, const float* x,
                                const float* w, const float* rstd, int n, int accumulate) {
    constexpr int h = 128 * V;
    __shared__ float4 dw_s[4][32 * V];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float4* w4 = (const float4*)w;
    float4 g[V], acc[V];
    for (int j = 0; j < V; j++) {
        g[j] = w4[lane + 32 * j];
        acc[j] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    for (int row = blockIdx.x * 4 + warp; row < n; row += gridDim.x * 4) {
        const float4* xr = (const float4*)(x + (size_t)row * h);
        const uint2* dyr = (const uint2*)(dy + (size_t)row * h);
        float r = rstd[row];
        float4 xv[V], dv[V];
        float s = 0.f;
        for (int j = 0; j < V; j++) {
            xv[j] = xr[lane + 32 * j];
            uint2 d = dyr[lane + 32 * j];
            dv[j] = make_float4(lo_bf(d.x), hi_bf(d.x), lo_bf(d.y), hi_bf(d.y));
            s += g[j].x * dv[j].x * xv[j].x + g[j].y * dv[j].y * xv[j].y + g[j].z * dv[j].z * xv[j].z +
                 g[j].w * dv[j].w * xv[j].w;
        }
        s = warp_sum(s);
        float c = s * r * r * r / (float)h;
        float4* dr = (float4*)(dres + (size_t)row * h);
        uint2* db = (uint2*)(dres_bf16 + (size_t)row * h);
        for (int j = 0; j < V; j++) {
            float4 o;
            o.x = r * g[j].x * dv[j].x - c * xv[j].x;
            o.y = r * g[j].y * dv[j].y - c * xv[j].y;
            o.z = r * g[j].z * dv[j].z - c * xv[j].z;
            o.w = r * g[j].w * dv[j].w - c * xv[j].w;
            if (accumulate) {
                float4 p = dr[lane + 32 * j];
                o.x += p.x; o.y += p.y; o.z += p.z; o.w += p.w;
            }
            dr[lane + 32 * j] = o;
            db[lane + 32 * j] = make_uint2(pack_bf16x2(o.x, o.y), pack_bf16x2(o.z, o.w));
            acc[j].x += dv[j].x * xv[j].x * r;
            acc[j].y += dv[j].y * xv[j].y * r;
            acc[j].z += dv[j].z * xv[j].z * r;
            acc[j].w += dv[j].w * xv[j].w * r;
        }
    }
    for (int j = 0; j < V; j++) dw_s[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    float4* out = (float4*)(partial + (size_t)blockIdx.x * h);
    for (int i = threadIdx.x; i < 32 * V; i += blockDim.x) {
        float4 a = dw_s[0][i], b2 = dw_s[1][i], c2 = dw_s[2][i], d2 = dw_s[3][i];
        out[i] = make_float4(a.x + b2.x + c2.x + d2.x, a.y + b2.y + c2.y + d2.y, a.z + b2.z + c2.z + d2.z,
                             a.w + b2.w + c2.w + d2.w);
    }
}

#define RMSNORM_INSTANCES(V)                                                                                          \
    extern "C" __global__ void rmsnorm_fwd_v##V(bf16_t* y, float* rstd, const float* x, const float* w, int n,        \
                                                float eps) {                                                          \
        rmsnorm_fwd_reg<V>(y, rstd, x, w, n, eps);                                                                    \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(128) rmsnorm_bwd_v##V(                                               \
        float* dres, bf16_t* dres_bf16, float* partial, const bf16_t* dy, const float* x, const float* w,             \
        const float* rstd, int n, int accumulate) {                                                                   \
        rmsnorm_bwd_reg<V>(dres, dres_bf16, partial, dy, x, w, rstd, n, accumulate);                                  \
    }

RMSNORM_INSTANCES(2)
RMSNORM_INSTANCES(4)
RMSNORM_INSTANCES(6)
RMSNORM_INSTANCES(8)

// ---------------------------------------------------------------------------------------------
// RoPE (HF's rotate_half convention: pairs (i, i + d/2)), fused with the split of the fused qkv
// projection into head-major q, k, v and the optional q/k/v bias.
// ---------------------------------------------------------------------------------------------

// qkv: [B*T, (nh + 2 nkv) * d] bf16; bias: (nh + 2 nkv) * d fp32 or null; pos: [B*T];
// inv_freq: [d/2]. One block per token: the token's d/2 angles are computed once (not once per
// head), then every head's pairs (i, i + d/2), two adjacent i per thread (bf16x2 accesses).
extern "C" __global__ void rope_split(bf16_t* q, bf16_t* k, bf16_t* v, const bf16_t* qkv, const float* bias, const int* pos,
                                      const float* inv_freq, int B, int T, int nh, int nkv, int d) {
    __shared__ float cs[128], sn[128];  // d <= 256
    const int tok = blockIdx.x, b = tok / T, t = tok % T, half = d / 2, heads = nh + 2 * nkv;
    for (int i = threadIdx.x; i < half; i += blockDim.x) sincosf((float)pos[tok] * inv_freq[i], &sn[i], &cs[i]);
    __syncthreads();
    const int pairs = half / 2;  // bf16x2 items per head
    for (int idx = threadIdx.x; idx < heads * pairs; idx += blockDim.x) {
        const int hd = idx / pairs, i = (idx % pairs) * 2;
        const bf16_t* src = qkv + (size_t)tok * heads * d + (size_t)hd * d;
        unsigned a = *(const unsigned*)(src + i), c = *(const unsigned*)(src + i + half);
        float x1[2] = {lo_bf(a), hi_bf(a)}, x2[2] = {lo_bf(c), hi_bf(c)};
        if (bias) {
            for (int e = 0; e < 2; e++) {
                x1[e] += bias[hd * d + i + e];
                x2[e] += bias[hd * d + i + e + half];
            }
        }
        bf16_t* out;
        size_t dst;
        if (hd < nh) {
            out = q;
            dst = (((size_t)b * nh + hd) * T + t) * d;
        } else if (hd < nh + nkv) {
            out = k;
            dst = (((size_t)b * nkv + (hd - nh)) * T + t) * d;
        } else {
            out = v;
            dst = (((size_t)b * nkv + (hd - nh - nkv)) * T + t) * d;
            *(unsigned*)(out + dst + i) = pack_bf16x2(x1[0], x1[1]);
            *(unsigned*)(out + dst + i + half) = pack_bf16x2(x2[0], x2[1]);
            continue;
        }
        float y1[2], y2[2];
        for (int e = 0; e < 2; e++) {
            y1[e] = x1[e] * cs[i + e] - x2[e] * sn[i + e];
            y2[e] = x2[e] * cs[i + e] + x1[e] * sn[i + e];
        }
        *(unsigned*)(out + dst + i) = pack_bf16x2(y1[0], y1[1]);
        *(unsigned*)(out + dst + i + half) = pack_bf16x2(y2[0], y2[1]);
    }
}

// The transpose of rope_split: gradients of the rotated q, k and of v back into the fused layout.
extern "C" __global__ void rope_merge(bf16_t* dqkv, const bf16_t* dq, const bf16_t* dk, const bf16_t* dv, const int* pos,
                                      const float* inv_freq, int B, int T, int nh, int nkv, int d) {
    __shared__ float cs[128], sn[128];
    const int tok = blockIdx.x, b = tok / T, t = tok % T, half = d / 2, heads = nh + 2 * nkv;
    for (int i = threadIdx.x; i < half; i += blockDim.x) sincosf((float)pos[tok] * inv_freq[i], &sn[i], &cs[i]);
    __syncthreads();
    const int pairs = half / 2;
    for (int idx = threadIdx.x; idx < heads * pairs; idx += blockDim.x) {
        const int hd = idx / pairs, i = (idx % pairs) * 2;
        bf16_t* dst = dqkv + (size_t)tok * heads * d + (size_t)hd * d;
        const bf16_t* in;
        size_t src;
        if (hd < nh) {
            in = dq;
            src = (((size_t)b * nh + hd) * T + t) * d;
        } else if (hd < nh + nkv) {
            in = dk;
            src = (((size_t)b * nkv + (hd - nh)) * T + t) * d;
        } else {
            src = (((size_t)b * nkv + (hd - nh - nkv)) * T + t) * d;
            *(unsigned*)(dst + i) = *(const unsigned*)(dv + src + i);
            *(unsigned*)(dst + i + half) = *(const unsigned*)(dv + src + i + half);
            continue;
        }
        unsigned a = *(const unsigned*)(in + src + i), c = *(const unsigned*)(in + src + i + half);
        float g1[2] = {lo_bf(a), hi_bf(a)}, g2[2] = {lo_bf(c), hi_bf(c)};
        float y1[2], y2[2];
        for (int e = 0; e < 2; e++) {
            y1[e] = g1[e] * cs[i + e] + g2[e] * sn[i + e];
            y2[e] = g2[e] * cs[i + e] - g1[e] * sn[i + e];
        }
        *(unsigned*)(dst + i) = pack_bf16x2(y1[0], y1[1]);
        *(unsigned*)(dst + i + half) = pack_bf16x2(y2[0], y2[1]);
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU: gu = [gate | up] per row ([n, 2I] bf16), h = silu(gate) * up ([n, I] bf16); I % 4 == 0.
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void swiglu_fwd(bf16_t* hout, const bf16_t* gu, int n, int inter) {
    long long total = (long long)n * inter / 4;  // groups of four (inter % 4 == 0)
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < total; p += (long long)gridDim.x * blockDim.x) {
        long long row = (4 * p) / inter;
        int j = (int)((4 * p) % inter);
        uint2 g = *(const uint2*)(gu + (size_t)row * 2 * inter + j);
        uint2 u = *(const uint2*)(gu + (size_t)row * 2 * inter + inter + j);
        float gs[4] = {lo_bf(g.x), hi_bf(g.x), lo_bf(g.y), hi_bf(g.y)};
        float us[4] = {lo_bf(u.x), hi_bf(u.x), lo_bf(u.y), hi_bf(u.y)};
        float o[4];
        for (int e = 0; e < 4; e++) o[e] = gs[e] / (1.f + __expf(-gs[e])) * us[e];
        *(uint2*)(hout + (size_t)row * inter + j) = make_uint2(pack_bf16x2(o[0], o[1]), pack_bf16x2(o[2], o[3]));
    }
}

extern "C" __global__ void swiglu_bwd(bf16_t* dgu, const bf16_t* dh, const bf16_t* gu, int n, int inter) {
    long long total = (long long)n * inter / 4;
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < total; p += (long long)gridDim.x * blockDim.x) {
        long long row = (4 * p) / inter;
        int j = (int)((4 * p) % inter);
        uint2 g = *(const uint2*)(gu + (size_t)row * 2 * inter + j);
        uint2 u = *(const uint2*)(gu + (size_t)row * 2 * inter + inter + j);
        uint2 d = *(const uint2*)(dh + (size_t)row * inter + j);
        float gs[4] = {lo_bf(g.x), hi_bf(g.x), lo_bf(g.y), hi_bf(g.y)};
        float us[4] = {lo_bf(u.x), hi_bf(u.x), lo_bf(u.y), hi_bf(u.y)};
        float ds[4] = {lo_bf(d.x), hi_bf(d.x), lo_bf(d.y), hi_bf(d.y)};
        float dg[4], du[4];
        for (int e = 0; e < 4; e++) {
            float sig = 1.f / (1.f + __expf(-gs[e]));
            du[e] = ds[e] * gs[e] * sig;
            dg[e] = ds[e] * us[e] * sig * (1.f + gs[e] * (1.f - sig));
        }
        *(uint2*)(dgu + (size_t)row * 2 * inter + j) = make_uint2(pack_bf16x2(dg[0], dg[1]), pack_bf16x2(dg[2], dg[3]));
        *(uint2*)(dgu + (size_t)row * 2 * inter + inter + j) = make_uint2(pack_bf16x2(du[0], du[1]), pack_bf16x2(du[2], du[3]));
    }
}

// ---------------------------------------------------------------------------------------------
// Rows of the loss: gather the counted positions before the vocabulary projection, scatter the
// gradient back (zero elsewhere).
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void gather_rows_bf16(bf16_t* dst, const bf16_t* src, const int* rows, int h) {
    int r = blockIdx.x;
    const unsigned* s = (const unsigned*)(src + (size_t)rows[r] * h);
    unsigned* d = (unsigned*)(dst + (size_t)r * h);
    for (int i = threadIdx.x; i < h / 2; i += blockDim.x) d[i] = s[i];
}

// dst[rows[r]] = src[r] for every r < count; rows not listed were zeroed before.
extern "C" __global__ void scatter_rows_bf16(bf16_t* dst, const bf16_t* src, const int* rows, int h) {
    int r = blockIdx.x;
    const unsigned* s = (const unsigned*)(src + (size_t)r * h);
    unsigned* d = (unsigned*)(dst + (size_t)rows[r] * h);
    for (int i = threadIdx.x; i < h / 2; i += blockDim.x) d[i] = s[i];
}

// ---------------------------------------------------------------------------------------------
// Log-probabilities of fp32 logits rows ([rows, V]) at inverse temperature `inv_temp`, one block
// per row. With z = inv_temp * logits: logp[r] = z[target] - logsumexp(z); entropy[r] (when not
// null) = logsumexp(z) - sum(softmax(z) * z); dlogits[r] (when not null) =
// bf16(coef[r] * inv_temp * (softmax(z) - onehot(target))), the gradient of a loss whose
// derivative by logp[r] is -coef[r] (SFT: coef = 1 / W, W the window's count of targets; DPO and GRPO: the method's).
// ---------------------------------------------------------------------------------------------

// Online (max m, s = sum of exp(z - m), t = sum of exp(z - m) (z - m)) of a stream of z, and the
// merge of two such triples. Entropy is log s - t / s, a sum of non-negative terms (no cancellation
// of two large numbers, as lse - E[z] would have).
__device__ __forceinline__ void lse_merge(float& m, float& s, float& t, float m2, float s2, float t2) {
    float mm = fmaxf(m, m2);
    float x = m == NEG_INF ? 0.f : __expf(m - mm) * (t - (mm - m) * s);
    float y = m2 == NEG_INF ? 0.f : __expf(m2 - mm) * (t2 - (mm - m2) * s2);
    s = (m == NEG_INF ? 0.f : s * __expf(m - mm)) + (m2 == NEG_INF ? 0.f : s2 * __expf(m2 - mm));
    t = x + y;
    m = mm;
}

extern "C" __global__ void cross_entropy(bf16_t* dlogits, float* logp, float* entropy, const float* logits,
                                         const int* targets, const float* coef, int V, float inv_temp) {
    __shared__ float red_m[32], red_s[32], red_t[32];
    int r = blockIdx.x;
    const float* row = logits + (size_t)r * V;
    float m = NEG_INF, s = 0.f, t = 0.f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float z = row[j] * inv_temp;
        if (z > m) {
            float a = m == NEG_INF ? 0.f : __expf(m - z);
            t = m == NEG_INF ? 0.f : a * (t - (z - m) * s);
            s = s * a + 1.f;
            m = z;
        } else {
            float e = __expf(z - m);
            s += e;
            t += e * (z - m);
        }
    }
    // Combine the triples: first within the warp, then across warps.
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o),
              t2 = __shfl_xor_sync(0xffffffffu, t, o);
        lse_merge(m, s, t, m2, s2, t2);
    }
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (lane == 0) {
        red_m[warp] = m;
        red_s[warp] = s;
        red_t[warp] = t;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < nw ? red_m[lane] : NEG_INF;
        s = lane < nw ? red_s[lane] : 0.f;
        t = lane < nw ? red_t[lane] : 0.f;
        for (int o = 16; o > 0; o >>= 1) {
            float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o),
                  t2 = __shfl_xor_sync(0xffffffffu, t, o);
            lse_merge(m, s, t, m2, s2, t2);
        }
        if (lane == 0) {
            red_m[0] = m;
            red_s[0] = s;
            red_t[0] = t;
        }
    }
    __syncthreads();
    float lse = red_m[0] + logf(red_s[0]);
    int tgt = targets[r];
    if (threadIdx.x == 0) {
        logp[r] = row[tgt] * inv_temp - lse;
        if (entropy) entropy[r] = logf(red_s[0]) - red_t[0] / red_s[0];
    }
    if (!dlogits) return;
    float scale = coef[r] * inv_temp;
    bf16_t* drow = dlogits + (size_t)r * V;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float p = __expf(row[j] * inv_temp - lse);
        drow[j] = f2bf(scale * (p - (j == tgt ? 1.f : 0.f)));
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW (torch.optim.AdamW's update) over a flat range, fp32 master weights and moments, with the
// bf16 copy the matmuls read written in the same pass. `gscale` is the clipping factor.
// ---------------------------------------------------------------------------------------------

extern "C" __global__ void adamw(float* p, bf16_t* p_bf16, const float* g, float* m, float* v, long long n, float lr,
                                 float beta1, float beta2, float eps, float decay, float bc1, float bc2, float gscale) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i] * gscale;
        float mi = beta1 * m[i] + (1.f - beta1) * gi;
        float vi = beta2 * v[i] + (1.f - beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float pi = p[i] * (1.f - lr * decay);
        pi -= lr * (mi / bc1) / (sqrtf(vi / bc2) + eps);
        p[i] = pi;
        p_bf16[i] = f2bf(pi);
    }
}

// ---------------------------------------------------------------------------------------------
// Attention (FlashAttention-2 structure, mma.sync m16n8k16 bf16 with fp32 accumulation).
//
// Tiles of 64 queries x 64 keys; 4 warps per block, each warp owns 16 rows of the tile (queries in
// the forward and dQ kernels, keys in the dK/dV kernel). The mask is causal and structured by
// `seg` ([B, T]): key k is visible to query q iff k <= q and vis(seg[q], seg[k]), where vis is
// equality (packing) or, when `vis` is given, bit seg[k] of row seg[q] of the [B, S, W] bitset
// table (Multiverse: a path sees its ancestors, never its siblings). `qt_kt0[b, qt]` is the first
// key tile any query of tile qt sees and `kt_qt1[b, kt]` one past the last query tile that sees
// any key of tile kt: tiles outside those ranges are skipped, the rest are masked per element.
//
// The LOCAL instances add the localist dial (../ops.rs `Local`): `blk` ([B, T]) is each key's
// block and `tgt` ([B, T]) each query's target block; keys off the target get `bias_log2`
// subtracted from their log2-domain scores (in every pass, so the saved lse2 is of the biased
// scores); the forward writes each query's mass on its target (`fid`) and its entropy in bits
// (`ent`), both [B, nh, T]; the backward adds the penalty's gradient: dP gains `penalty` on
// target keys (and `attn_bwd_delta` adds `penalty * fid` to delta), so dS = P (dP - delta) is
// the gradient of the loss plus `-penalty * N * Omega`.
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    unsigned r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_u32(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p)));
}

// c += a (16x16, row) * b (16x8, col).
__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A fragment (16 rows x 16 cols at (r0, c0)) of a row-major shared tile with row stride LD.
template <int LD>
__device__ __forceinline__ void load_a(unsigned* a, const bf16_t* tile, int r0, int c0, int lane) {
    ldsm_x4(a[0], a[1], a[2], a[3], tile + (r0 + (lane & 15)) * LD + c0 + (lane >> 4) * 8);
}

// B fragments of two adjacent n-tiles (16 n x 16 k) from a tile stored [n][k] (k contiguous):
// (b[0], b[1]) for n-tile n0..n0+7, (b[2], b[3]) for n0+8..n0+15.
template <int LD>
__device__ __forceinline__ void load_b_nk(unsigned* b, const bf16_t* tile, int n0, int k0, int lane) {
    ldsm_x4(b[0], b[1], b[2], b[3], tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * LD + k0 + ((lane >> 3) & 1) * 8);
}

// B fragments of two adjacent n-tiles (16 k x 16 n) from a tile stored [k][n] (n contiguous).
template <int LD>
__device__ __forceinline__ void load_b_kn(unsigned* b, const bf16_t* tile, int k0, int n0, int lane) {
    ldsm_x4_t(b[0], b[1], b[2], b[3], tile + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + n0 + (lane >> 4) * 8);
}

__device__ __forceinline__ bool visible(int sq, int sk, const unsigned* vis, int S, int W, int b) {
    if (vis == 0) return sq == sk;
    return (vis[((size_t)b * S + sq) * W + (sk >> 5)] >> (sk & 31)) & 1u;
}

// Whether every query of tile qt sees every key of tile kt (bit kt of the row's bitset).
__device__ __forceinline__ bool tile_full(const unsigned* full, int FW, int b, int nt, int qt, int kt) {
    return (full[((size_t)b * nt + qt) * FW + (kt >> 5)] >> (kt & 31)) & 1u;
}

// Copies a 64 x D tile (rows `stride` elements apart in global memory) into shared rows of LD.
template <int D, int LD>
__device__ __forceinline__ void load_tile_async(bf16_t* dst, const bf16_t* src, size_t stride) {
    for (int c = threadIdx.x; c < 64 * D / 8; c += 128) {
        int r = c / (D / 8), cc = (c % (D / 8)) * 8;
        cp_async16(dst + r * LD + cc, src + (size_t)r * stride + cc);
    }
}

// Forward. grid (T/64, nh, B), block 128, dynamic smem 5 * 64 * LD * 2 + 3 * 64 * 4 bytes.
// o: [B, T, nh, D]; lse2: [B, nh, T] (log2 domain).
template <int D, bool LOCAL>
__device__ void flash_fwd(bf16_t* o, float* lse2, const bf16_t* q, const bf16_t* k, const bf16_t* v, const int* seg,
                          const int* qt_kt0, const unsigned* vis, int S, int W, const unsigned* full, int FW, int T,
                          int nh, int nkv, float scale_log2, const int* blk, const int* tgt, float bias_log2,
                          float* fid, float* ent) {
    constexpr int LD = D + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16_t* Qs = (bf16_t*)smem_raw;
    bf16_t* Ks = Qs + 64 * LD;  // [2][64 * LD]
    bf16_t* Vs = Ks + 2 * 64 * LD;
    int* segq = (int*)(Vs + 2 * 64 * LD);
    int* segk = segq + 64;  // [2][64]
    int* tgtq = segk + 2 * 64;  // LOCAL: [64]
    int* blkk = tgtq + 64;      // LOCAL: [2][64]
    const int nt = T / 64;
    const int qt = nt - 1 - blockIdx.x;  // heaviest tiles first
    const int h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (nh / nkv);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;

    const bf16_t* qg = q + (((size_t)b * nh + h) * T + (size_t)qt * 64) * D;
    const bf16_t* kg = k + ((size_t)b * nkv + kvh) * T * D;
    const bf16_t* vg = v + ((size_t)b * nkv + kvh) * T * D;
    const int* segb = seg + (size_t)b * T;
    const int kt0 = qt_kt0[b * nt + qt];

    load_tile_async<D, LD>(Qs, qg, D);
    load_tile_async<D, LD>(Ks, kg + (size_t)kt0 * 64 * D, D);
    load_tile_async<D, LD>(Vs, vg + (size_t)kt0 * 64 * D, D);
    cp_async_commit();
    if (tid < 64) {
        segq[tid] = segb[qt * 64 + tid];
        segk[tid] = segb[kt0 * 64 + tid];
        if (LOCAL) {
            tgtq[tid] = tgt[(size_t)b * T + qt * 64 + tid];
            blkk[tid] = blk[(size_t)b * T + kt0 * 64 + tid];
        }
    }

    unsigned qf[D / 16][4];
    float acc[D / 8][4];
    for (int i = 0; i < D / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    float mrow[2] = {NEG_INF, NEG_INF}, lrow[2] = {0.f, 0.f};
    // LOCAL: the target mass and the sum of p * (score - mrow), in the frame of mrow like lrow.
    float frow[2] = {0.f, 0.f}, xrow[2] = {0.f, 0.f};
    const int qrow0 = qt * 64 + warp * 16 + g;  // this thread's rows: qrow0 and qrow0 + 8
    int sq[2], tq[2] = {0, 0};

    for (int kt = kt0; kt <= qt; kt++) {
        const int buf = (kt - kt0) & 1;
        if (kt < qt) {  // prefetch the next tile into the other buffer
            load_tile_async<D, LD>(Ks + (buf ^ 1) * 64 * LD, kg + (size_t)(kt + 1) * 64 * D, D);
            load_tile_async<D, LD>(Vs + (buf ^ 1) * 64 * LD, vg + (size_t)(kt + 1) * 64 * D, D);
            cp_async_commit();
            if (tid < 64) {
                segk[(buf ^ 1) * 64 + tid] = segb[(kt + 1) * 64 + tid];
                if (LOCAL) blkk[(buf ^ 1) * 64 + tid] = blk[(size_t)b * T + (kt + 1) * 64 + tid];
            }
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kt == kt0) {
            for (int kk = 0; kk < D / 16; kk++) load_a<LD>(qf[kk], Qs, warp * 16, kk * 16, lane);
            sq[0] = segq[warp * 16 + g];
            sq[1] = segq[warp * 16 + g + 8];
            if (LOCAL) {
                tq[0] = tgtq[warp * 16 + g];
                tq[1] = tgtq[warp * 16 + g + 8];
            }
        }
        const bf16_t* Kb = Ks + buf * 64 * LD;
        const bf16_t* Vb = Vs + buf * 64 * LD;
        const int* sk = segk + buf * 64;
        const int* bk = blkk + buf * 64;

        float s[8][4];
        for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
        for (int kk = 0; kk < D / 16; kk++) {
            for (int np = 0; np < 4; np++) {
                unsigned bfr[4];
                load_b_nk<LD>(bfr, Kb, np * 16, kk * 16, lane);
                mma16816(s[2 * np], qf[kk], bfr[0], bfr[1]);
                mma16816(s[2 * np + 1], qf[kk], bfr[2], bfr[3]);
            }
        }
        // Mask (unless every pair of the tile is visible) and scale; row maxima.
        float mx[2] = {NEG_INF, NEG_INF};
        // LOCAL biases every pair, so it takes the per-element path for full tiles too.
        const bool all = tile_full(full, FW, b, nt, qt, kt);
        if (!LOCAL && all) {
            for (int j = 0; j < 8; j++)
                for (int e = 0; e < 4; e++) {
                    s[j][e] *= scale_log2;
                    mx[e >> 1] = fmaxf(mx[e >> 1], s[j][e]);
                }
        } else {
            #pragma unroll
            for (int j = 0; j < 8; j++) {
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    int r = e >> 1;
                    int key = kt * 64 + j * 8 + 2 * t4 + (e & 1), kl = key - kt * 64;
                    int qi = qrow0 + 8 * r;
                    bool ok = (LOCAL && all) || (key <= qi && visible(sq[r], sk[kl], vis, S, W, b));
                    float x = ok ? s[j][e] * scale_log2 : NEG_INF;
                    if (LOCAL && ok && bk[kl] != tq[r]) x -= bias_log2;
                    s[j][e] = x;
                    mx[r] = fmaxf(mx[r], x);
                }
            }
        }
        float alpha[2];
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            float mnew = fmaxf(mrow[r], mx[r]);
            alpha[r] = mnew == NEG_INF ? 1.f : fast_exp2(mrow[r] - mnew);
            if (LOCAL) {
                // xrow is sum p (x - m): rebased to the new maximum.
                xrow[r] = mrow[r] == NEG_INF ? 0.f : alpha[r] * (xrow[r] - (mnew - mrow[r]) * lrow[r]);
                frow[r] *= alpha[r];
            }
            mrow[r] = mnew;
            lrow[r] *= alpha[r];
        }
        for (int i = 0; i < D / 8; i++) {
            acc[i][0] *= alpha[0];
            acc[i][1] *= alpha[0];
            acc[i][2] *= alpha[1];
            acc[i][3] *= alpha[1];
        }
        for (int j = 0; j < 8; j++) {
            for (int e = 0; e < 4; e++) {
                int r = e >> 1;
                float p = mrow[r] == NEG_INF ? 0.f : fast_exp2(s[j][e] - mrow[r]);
                if (LOCAL && s[j][e] != NEG_INF) {
                    if (bk[j * 8 + 2 * t4 + (e & 1)] == tq[r]) frow[r] += p;
                    xrow[r] += p * (s[j][e] - mrow[r]);
                }
                s[j][e] = p;
                lrow[r] += p;
            }
        }
        // O += P V, P re-packed from the score accumulators as A fragments.
        for (int kk = 0; kk < 4; kk++) {
            unsigned pa[4];
            pa[0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            for (int dp = 0; dp < D / 16; dp++) {
                unsigned bfr[4];
                load_b_kn<LD>(bfr, Vb, kk * 16, dp * 16, lane);
                mma16816(acc[2 * dp], pa, bfr[0], bfr[1]);
                mma16816(acc[2 * dp + 1], pa, bfr[2], bfr[3]);
            }
        }
        __syncthreads();  // the buffer is refilled by the next iteration's prefetch
    }
    for (int r = 0; r < 2; r++) {
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
        lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
        if (LOCAL) {
            frow[r] += __shfl_xor_sync(0xffffffffu, frow[r], 1);
            frow[r] += __shfl_xor_sync(0xffffffffu, frow[r], 2);
            xrow[r] += __shfl_xor_sync(0xffffffffu, xrow[r], 1);
            xrow[r] += __shfl_xor_sync(0xffffffffu, xrow[r], 2);
        }
    }
    for (int r = 0; r < 2; r++) {
        int t = qrow0 + 8 * r;
        float inv = lrow[r] > 0.f ? 1.f / lrow[r] : 0.f;
        bf16_t* orow = o + (((size_t)b * T + t) * nh + h) * D;
        for (int i = 0; i < D / 8; i++)
            *(unsigned*)(orow + i * 8 + 2 * t4) = pack_bf16x2(acc[i][2 * r] * inv, acc[i][2 * r + 1] * inv);
        if (t4 == 0) lse2[((size_t)b * nh + h) * T + t] = lrow[r] > 0.f ? mrow[r] + log2f(lrow[r]) : NEG_INF;
        if (LOCAL && t4 == 0) {
            // Entropy in bits: -sum p log2 p = log2 l - sum(2^(x - m) (x - m)) / l.
            size_t i = ((size_t)b * nh + h) * T + t;
            fid[i] = frow[r] * inv;
            ent[i] = lrow[r] > 0.f ? log2f(lrow[r]) - xrow[r] * inv : 0.f;
        }
    }
}

// delta[b, h, t] = sum over d of dO * O (both [B, T, nh, D]), plus penalty * fid[b, h, t] when
// fid is given (the localist penalty's share, see above). One warp per (b, t, h).
extern "C" __global__ void attn_bwd_delta(float* delta, const bf16_t* dout, const bf16_t* out, int B, int T, int nh, int d,
                                          const float* fid, float penalty) {
    long long row = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (row >= (long long)B * T * nh) return;
    const bf16_t* a = dout + row * d;
    const bf16_t* c = out + row * d;
    float s = 0.f;
    for (int i = lane; i < d; i += 32) s += bf2f(a[i]) * bf2f(c[i]);
    s = warp_sum(s);
    if (lane == 0) {
        int h = (int)(row % nh);
        long long bt = row / nh;
        int t = (int)(bt % T), b = (int)(bt / T);
        size_t i = ((size_t)b * nh + h) * T + t;
        delta[i] = fid ? s + penalty * fid[i] : s;
    }
}

// dK and dV for one 64-key tile of one kv head, over every query head of its group and every
// query tile that sees it. grid (T/64, nkv, B), block 128; each warp owns 16 keys.
// smem: K, V tiles, Q and dO tiles (double-buffered), lse2, delta, segq (x2), segk.
template <int D, bool LOCAL>
__device__ void flash_bwd_dkdv(bf16_t* dk, bf16_t* dv, const bf16_t* q, const bf16_t* k, const bf16_t* v,
                               const bf16_t* dout, const float* lse2, const float* delta, const int* seg,
                               const int* kt_qt1, const unsigned* vis, int S, int W, const unsigned* full, int FW,
                               int T, int nh, int nkv, float scale_log2, float scale, const int* blk, const int* tgt,
                               float bias_log2, float penalty) {
    constexpr int LD = D + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16_t* Ks = (bf16_t*)smem_raw;
    bf16_t* Vs = Ks + 64 * LD;
    bf16_t* Qs = Vs + 64 * LD;        // [2][64 * LD]
    bf16_t* Ds = Qs + 2 * 64 * LD;    // dO, [2][64 * LD]
    float* ls = (float*)(Ds + 2 * 64 * LD);  // [2][64]
    float* dl = ls + 2 * 64;                 // [2][64]
    int* segq = (int*)(dl + 2 * 64);         // [2][64]
    int* segk = segq + 2 * 64;               // [64]
    int* tgtq = segk + 64;                   // LOCAL: [2][64]
    int* blkk = tgtq + 2 * 64;               // LOCAL: [64]
    const int nt = T / 64;
    const int kt = nt - 1 - blockIdx.x;
    const int kvh = blockIdx.y, b = blockIdx.z;
    const int rep = nh / nkv;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int qt1 = kt_qt1[b * nt + kt];
    const int* segb = seg + (size_t)b * T;
    const size_t ostride = (size_t)nh * D;  // dO rows are [B, T, nh, D]

    load_tile_async<D, LD>(Ks, k + (((size_t)b * nkv + kvh) * T + (size_t)kt * 64) * D, D);
    load_tile_async<D, LD>(Vs, v + (((size_t)b * nkv + kvh) * T + (size_t)kt * 64) * D, D);
    if (tid < 64) {
        segk[tid] = segb[kt * 64 + tid];
        if (LOCAL) blkk[tid] = blk[(size_t)b * T + kt * 64 + tid];
    }

    float dka[D / 8][4], dva[D / 8][4];
    for (int i = 0; i < D / 8; i++)
        for (int e = 0; e < 4; e++) dka[i][e] = dva[i][e] = 0.f;
    const int key0 = kt * 64 + warp * 16 + g;  // this thread's keys: key0 and key0 + 8
    int sk[2] = {0, 0}, bkey[2] = {0, 0};

    const int nq = qt1 - kt;           // query tiles per head
    const int total = nq * rep;        // (head, query tile) pairs, in order
    // Issue the first Q / dO tile.
    auto issue = [&](int it, int buf) {
        int hh = kvh * rep + it / nq, qt = kt + it % nq;
        load_tile_async<D, LD>(Qs + buf * 64 * LD, q + (((size_t)b * nh + hh) * T + (size_t)qt * 64) * D, D);
        load_tile_async<D, LD>(Ds + buf * 64 * LD, dout + ((size_t)b * T + (size_t)qt * 64) * ostride + (size_t)hh * D, ostride);
        if (tid < 64) {
            ls[buf * 64 + tid] = lse2[((size_t)b * nh + hh) * T + qt * 64 + tid];
            dl[buf * 64 + tid] = delta[((size_t)b * nh + hh) * T + qt * 64 + tid];
            segq[buf * 64 + tid] = segb[qt * 64 + tid];
            if (LOCAL) tgtq[buf * 64 + tid] = tgt[(size_t)b * T + qt * 64 + tid];
        }
    };
    issue(0, 0);
    cp_async_commit();

    for (int it = 0; it < total; it++) {
        const int buf = it & 1;
        const int qt = kt + it % nq;
        if (it + 1 < total) {
            issue(it + 1, buf ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (it == 0) {
            sk[0] = segk[warp * 16 + g];
            sk[1] = segk[warp * 16 + g + 8];
            if (LOCAL) {
                bkey[0] = blkk[warp * 16 + g];
                bkey[1] = blkk[warp * 16 + g + 8];
            }
        }
        const bf16_t* Qb = Qs + buf * 64 * LD;
        const bf16_t* Db = Ds + buf * 64 * LD;
        const float* lb = ls + buf * 64;
        const float* db = dl + buf * 64;
        const int* sq = segq + buf * 64;
        const int* tqb = tgtq + buf * 64;

        // S^T = K Q^T (16 keys x 64 queries per warp).
        float st[8][4];
        for (int j = 0; j < 8; j++) st[j][0] = st[j][1] = st[j][2] = st[j][3] = 0.f;
        for (int kk = 0; kk < D / 16; kk++) {
            unsigned kf[4];
            load_a<LD>(kf, Ks, warp * 16, kk * 16, lane);
            for (int np = 0; np < 4; np++) {
                unsigned bfr[4];
                load_b_nk<LD>(bfr, Qb, np * 16, kk * 16, lane);
                mma16816(st[2 * np], kf, bfr[0], bfr[1]);
                mma16816(st[2 * np + 1], kf, bfr[2], bfr[3]);
            }
        }
        // P^T = exp2(S^T * scale_log2 - bias - lse2[query]), zero where masked.
        // LOCAL biases every pair, so it takes the per-element path for full tiles too.
        const bool all = tile_full(full, FW, b, nt, qt, kt);
        if (!LOCAL && all) {
            for (int j = 0; j < 8; j++)
                for (int e = 0; e < 4; e++) st[j][e] = fast_exp2(fmaf(st[j][e], scale_log2, -lb[j * 8 + 2 * t4 + (e & 1)]));
        } else {
            #pragma unroll
            for (int j = 0; j < 8; j++) {
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    int r = e >> 1;
                    int ql = j * 8 + 2 * t4 + (e & 1);
                    int qi = qt * 64 + ql;
                    int key = key0 + 8 * r;
                    bool ok = (LOCAL && all) || (key <= qi && visible(sq[ql], sk[r], vis, S, W, b));
                    if (LOCAL) {
                        float off = bkey[r] != tqb[ql] ? bias_log2 : 0.f;
                        st[j][e] = ok ? fast_exp2(fmaf(st[j][e], scale_log2, -lb[ql] - off)) : 0.f;
                    } else {
                        st[j][e] = ok ? fast_exp2(fmaf(st[j][e], scale_log2, -lb[ql])) : 0.f;
                    }
                }
            }
        }
        // dV += P^T dO.
        unsigned pa[4][4];
        for (int kk = 0; kk < 4; kk++) {
            pa[kk][0] = pack_bf16x2(st[2 * kk][0], st[2 * kk][1]);
            pa[kk][1] = pack_bf16x2(st[2 * kk][2], st[2 * kk][3]);
            pa[kk][2] = pack_bf16x2(st[2 * kk + 1][0], st[2 * kk + 1][1]);
            pa[kk][3] = pack_bf16x2(st[2 * kk + 1][2], st[2 * kk + 1][3]);
            for (int dp = 0; dp < D / 16; dp++) {
                unsigned bfr[4];
                load_b_kn<LD>(bfr, Db, kk * 16, dp * 16, lane);
                mma16816(dva[2 * dp], pa[kk], bfr[0], bfr[1]);
                mma16816(dva[2 * dp + 1], pa[kk], bfr[2], bfr[3]);
            }
        }
        // dP^T = V dO^T.
        float dpt[8][4];
        for (int j = 0; j < 8; j++) dpt[j][0] = dpt[j][1] = dpt[j][2] = dpt[j][3] = 0.f;
        for (int kk = 0; kk < D / 16; kk++) {
            unsigned vf[4];
            load_a<LD>(vf, Vs, warp * 16, kk * 16, lane);
            for (int np = 0; np < 4; np++) {
                unsigned bfr[4];
                load_b_nk<LD>(bfr, Db, np * 16, kk * 16, lane);
                mma16816(dpt[2 * np], vf, bfr[0], bfr[1]);
                mma16816(dpt[2 * np + 1], vf, bfr[2], bfr[3]);
            }
        }
        // dS^T = P^T * (dP^T - delta[query]); dK += dS^T Q.
        for (int kk = 0; kk < 4; kk++) {
            unsigned da[4];
            float x[4][2];
#pragma unroll
            for (int half = 0; half < 2; half++) {
                int j = 2 * kk + half;
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int ql = j * 8 + 2 * t4 + (e & 1);
                    float ds = LOCAL ? st[j][e] * (dpt[j][e] + (bkey[e >> 1] == tqb[ql] ? penalty : 0.f) - db[ql])
                                     : st[j][e] * (dpt[j][e] - db[ql]);
                    x[half * 2 + (e >> 1)][e & 1] = ds;
                }
            }
            // x[0] = (row g, n-tile 2kk), x[1] = (row g+8, 2kk), x[2] = (row g, 2kk+1), x[3] = (row g+8, 2kk+1)
            da[0] = pack_bf16x2(x[0][0], x[0][1]);
            da[1] = pack_bf16x2(x[1][0], x[1][1]);
            da[2] = pack_bf16x2(x[2][0], x[2][1]);
            da[3] = pack_bf16x2(x[3][0], x[3][1]);
            for (int dp = 0; dp < D / 16; dp++) {
                unsigned bfr[4];
                load_b_kn<LD>(bfr, Qb, kk * 16, dp * 16, lane);
                mma16816(dka[2 * dp], da, bfr[0], bfr[1]);
                mma16816(dka[2 * dp + 1], da, bfr[2], bfr[3]);
            }
        }
        __syncthreads();
    }
    for (int r = 0; r < 2; r++) {
        int key = key0 + 8 * r;
        size_t row = (((size_t)b * nkv + kvh) * T + key) * D;
        for (int i = 0; i < D / 8; i++) {
            *(unsigned*)(dk + row + i * 8 + 2 * t4) = pack_bf16x2(dka[i][2 * r] * scale, dka[i][2 * r + 1] * scale);
            *(unsigned*)(dv + row + i * 8 + 2 * t4) = pack_bf16x2(dva[i][2 * r], dva[i][2 * r + 1]);
        }
    }
}

// dQ for one 64-query tile of one head. grid (T/64, nh, B), block 128; each warp owns 16 queries.
// smem: Q and dO tiles, K and V tiles (double-buffered), segq, segk (x2).
template <int D, bool LOCAL>
__device__ void flash_bwd_dq(bf16_t* dq, const bf16_t* q, const bf16_t* k, const bf16_t* v, const bf16_t* dout,
                             const float* lse2, const float* delta, const int* seg, const int* qt_kt0,
                             const unsigned* vis, int S, int W, const unsigned* full, int FW, int T, int nh, int nkv,
                             float scale_log2, float scale, const int* blk, const int* tgt, float bias_log2,
                             float penalty) {
    constexpr int LD = D + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16_t* Qs = (bf16_t*)smem_raw;
    bf16_t* Ds = Qs + 64 * LD;
    bf16_t* Ks = Ds + 64 * LD;       // [2][64 * LD]
    bf16_t* Vs = Ks + 2 * 64 * LD;   // [2][64 * LD]
    int* segq = (int*)(Vs + 2 * 64 * LD);
    int* segk = segq + 64;  // [2][64]
    int* tgtq = segk + 2 * 64;  // LOCAL: [64]
    int* blkk = tgtq + 64;      // LOCAL: [2][64]
    const int nt = T / 64;
    const int qt = nt - 1 - blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z;
    const int kvh = h / (nh / nkv);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int* segb = seg + (size_t)b * T;
    const int kt0 = qt_kt0[b * nt + qt];
    const size_t ostride = (size_t)nh * D;
    const bf16_t* kg = k + ((size_t)b * nkv + kvh) * T * D;
    const bf16_t* vg = v + ((size_t)b * nkv + kvh) * T * D;

    load_tile_async<D, LD>(Qs, q + (((size_t)b * nh + h) * T + (size_t)qt * 64) * D, D);
    load_tile_async<D, LD>(Ds, dout + ((size_t)b * T + (size_t)qt * 64) * ostride + (size_t)h * D, ostride);
    load_tile_async<D, LD>(Ks, kg + (size_t)kt0 * 64 * D, D);
    load_tile_async<D, LD>(Vs, vg + (size_t)kt0 * 64 * D, D);
    cp_async_commit();
    if (tid < 64) {
        segq[tid] = segb[qt * 64 + tid];
        segk[tid] = segb[kt0 * 64 + tid];
        if (LOCAL) {
            tgtq[tid] = tgt[(size_t)b * T + qt * 64 + tid];
            blkk[tid] = blk[(size_t)b * T + kt0 * 64 + tid];
        }
    }
    const int qrow0 = qt * 64 + warp * 16 + g;
    float lrow[2], drow[2];
    for (int r = 0; r < 2; r++) {
        lrow[r] = lse2[((size_t)b * nh + h) * T + qrow0 + 8 * r];
        drow[r] = delta[((size_t)b * nh + h) * T + qrow0 + 8 * r];
    }
    float dqa[D / 8][4];
    for (int i = 0; i < D / 8; i++) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.f;
    unsigned qf[D / 16][4], df[D / 16][4];
    int sq[2], tq[2] = {0, 0};

    for (int kt = kt0; kt <= qt; kt++) {
        const int buf = (kt - kt0) & 1;
        if (kt < qt) {
            load_tile_async<D, LD>(Ks + (buf ^ 1) * 64 * LD, kg + (size_t)(kt + 1) * 64 * D, D);
            load_tile_async<D, LD>(Vs + (buf ^ 1) * 64 * LD, vg + (size_t)(kt + 1) * 64 * D, D);
            cp_async_commit();
            if (tid < 64) {
                segk[(buf ^ 1) * 64 + tid] = segb[(kt + 1) * 64 + tid];
                if (LOCAL) blkk[(buf ^ 1) * 64 + tid] = blk[(size_t)b * T + (kt + 1) * 64 + tid];
            }
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kt == kt0) {
            for (int kk = 0; kk < D / 16; kk++) {
                load_a<LD>(qf[kk], Qs, warp * 16, kk * 16, lane);
                load_a<LD>(df[kk], Ds, warp * 16, kk * 16, lane);
            }
            sq[0] = segq[warp * 16 + g];
            sq[1] = segq[warp * 16 + g + 8];
            if (LOCAL) {
                tq[0] = tgtq[warp * 16 + g];
                tq[1] = tgtq[warp * 16 + g + 8];
            }
        }
        const bf16_t* Kb = Ks + buf * 64 * LD;
        const bf16_t* Vb = Vs + buf * 64 * LD;
        const int* sk = segk + buf * 64;
        const int* bk = blkk + buf * 64;

        float s[8][4], dp[8][4];
        for (int j = 0; j < 8; j++)
            for (int e = 0; e < 4; e++) s[j][e] = dp[j][e] = 0.f;
        for (int kk = 0; kk < D / 16; kk++) {
            for (int np = 0; np < 4; np++) {
                unsigned bfr[4];
                load_b_nk<LD>(bfr, Kb, np * 16, kk * 16, lane);
                mma16816(s[2 * np], qf[kk], bfr[0], bfr[1]);
                mma16816(s[2 * np + 1], qf[kk], bfr[2], bfr[3]);
                load_b_nk<LD>(bfr, Vb, np * 16, kk * 16, lane);
                mma16816(dp[2 * np], df[kk], bfr[0], bfr[1]);
                mma16816(dp[2 * np + 1], df[kk], bfr[2], bfr[3]);
            }
        }
        // dS = P * (dP - delta), P from the saved log-sum-exp (of the biased scores, LOCAL).
        // LOCAL biases every pair, so it takes the per-element path for full tiles too.
        const bool all = tile_full(full, FW, b, nt, qt, kt);
        if (!LOCAL && all) {
            for (int j = 0; j < 8; j++)
                for (int e = 0; e < 4; e++) {
                    int r = e >> 1;
                    s[j][e] = fast_exp2(fmaf(s[j][e], scale_log2, -lrow[r])) * (dp[j][e] - drow[r]);
                }
        } else {
            #pragma unroll
            for (int j = 0; j < 8; j++) {
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    int r = e >> 1;
                    int key = kt * 64 + j * 8 + 2 * t4 + (e & 1), kl = key - kt * 64;
                    int qi = qrow0 + 8 * r;
                    bool ok = (LOCAL && all) || (key <= qi && visible(sq[r], sk[kl], vis, S, W, b));
                    if (LOCAL) {
                        bool on = bk[kl] == tq[r];
                        float p = ok ? fast_exp2(fmaf(s[j][e], scale_log2, -lrow[r] - (on ? 0.f : bias_log2))) : 0.f;
                        s[j][e] = p * (dp[j][e] + (on ? penalty : 0.f) - drow[r]);
                    } else {
                        float p = ok ? fast_exp2(fmaf(s[j][e], scale_log2, -lrow[r])) : 0.f;
                        s[j][e] = p * (dp[j][e] - drow[r]);
                    }
                }
            }
        }
        // dQ += dS K.
        for (int kk = 0; kk < 4; kk++) {
            unsigned da[4];
            da[0] = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
            da[1] = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
            da[2] = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            da[3] = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            for (int dd = 0; dd < D / 16; dd++) {
                unsigned bfr[4];
                load_b_kn<LD>(bfr, Kb, kk * 16, dd * 16, lane);
                mma16816(dqa[2 * dd], da, bfr[0], bfr[1]);
                mma16816(dqa[2 * dd + 1], da, bfr[2], bfr[3]);
            }
        }
        __syncthreads();
    }
    for (int r = 0; r < 2; r++) {
        size_t row = (((size_t)b * nh + h) * T + qrow0 + 8 * r) * D;
        for (int i = 0; i < D / 8; i++)
            *(unsigned*)(dq + row + i * 8 + 2 * t4) = pack_bf16x2(dqa[i][2 * r] * scale, dqa[i][2 * r + 1] * scale);
    }
}

// Blocks per multiprocessor each kernel is compiled for (registers capped to fit): the kernels are
// latency-bound, so occupancy pays (Nsight Compute on an H200: 8-12 warps per SM at 37-52% issue
// utilisation before). d = 128 keeps the default, where the cap would spill.
#define FLASH_INSTANCES(D, FWD, DKDV, DQ, LOCAL, SUFFIX)                                                            \
    extern "C" __global__ void __launch_bounds__(128, FWD) flash_fwd##SUFFIX##_d##D(                                   \
        bf16_t* o, float* lse2, const bf16_t* q, const bf16_t* k, const bf16_t* v, const int* seg, const int* qt_kt0, \
        const unsigned* vis, int S, int W, const unsigned* full, int FW, int T, int nh, int nkv, float scale_log2,     \
        const int* blk, const int* tgt, float bias_log2, float* fid, float* ent) {                                    \
        flash_fwd<D, LOCAL>(o, lse2, q, k, v, seg, qt_kt0, vis, S, W, full, FW, T, nh, nkv, scale_log2, blk, tgt,      \
                            bias_log2, fid, ent);                                                                     \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(128, DKDV) flash_bwd_dkdv##SUFFIX##_d##D(                             \
        bf16_t* dk, bf16_t* dv, const bf16_t* q, const bf16_t* k, const bf16_t* v, const bf16_t* dout,                \
        const float* lse2, const float* delta, const int* seg, const int* kt_qt1, const unsigned* vis, int S, int W,  \
        const unsigned* full, int FW, int T, int nh, int nkv, float scale_log2, float scale, const int* blk,          \
        const int* tgt, float bias_log2, float penalty) {                                                             \
        flash_bwd_dkdv<D, LOCAL>(dk, dv, q, k, v, dout, lse2, delta, seg, kt_qt1, vis, S, W, full, FW, T, nh, nkv,    \
                                 scale_log2, scale, blk, tgt, bias_log2, penalty);                                    \
    }                                                                                                                 \
    extern "C" __global__ void __launch_bounds__(128, DQ) flash_bwd_dq##SUFFIX##_d##D(                                 \
        bf16_t* dq, const bf16_t* q, const bf16_t* k, const bf16_t* v, const bf16_t* dout, const float* lse2,         \
        const float* delta, const int* seg, const int* qt_kt0, const unsigned* vis, int S, int W,                     \
        const unsigned* full, int FW, int T, int nh, int nkv, float scale_log2, float scale, const int* blk,          \
        const int* tgt, float bias_log2, float penalty) {                                                             \
        flash_bwd_dq<D, LOCAL>(dq, q, k, v, dout, lse2, delta, seg, qt_kt0, vis, S, W, full, FW, T, nh, nkv,          \
                               scale_log2, scale, blk, tgt, bias_log2, penalty);                                      \
    }

// The plain kernels, then the localist ones (192 ints more shared memory). The localist d = 64
// forward and dK/dV kernels target one block per SM fewer, where their registers fit without
// spilling (96 and 224 bytes spilled at the plain kernels' caps; scripts/nvrtc_check.py); not yet
// timed against the alternative on a GPU.
FLASH_INSTANCES(64, 4, 3, 3, false, )
FLASH_INSTANCES(128, 1, 1, 1, false, )
FLASH_INSTANCES(64, 3, 2, 3, true, _local)
FLASH_INSTANCES(128, 1, 1, 1, true, _local)

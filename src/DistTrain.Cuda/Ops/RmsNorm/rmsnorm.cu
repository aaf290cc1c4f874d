// RMSNorm over rows of D elements, forward and backward, fp32 inside; optionally fused with the
// residual add before it (AddRmsNorm): forward reads x and res, writes their sum (rounded once to T,
// as a plain add rounds it) and the norm of that sum; backward adds dres (the sum's own gradient) to dx.
// Compiled by NVRTC with no headers: bf16 is an unsigned short (the high half of an fp32), and
// every kernel is extern "C" so the host finds it by its plain name.
//
// Layout: block (TPR, RPB): TPR threads per row (a multiple of 32, at most 1024), RPB rows per
// block, TPR * RPB <= 1024. A thread owns MAXC columns of its row, so D <= TPR * MAXC (the host
// checks): with `vec` (the host sets it when D is a multiple of 16 bytes' worth and every pointer
// is 16-byte aligned) the vectors threadIdx.x + g * TPR of W = 16 / sizeof(T) columns each, read
// and written 16 bytes at a time; else the columns threadIdx.x + k * TPR one by one (2-byte
// accesses: about 2.5x slower on an H200). Blocks walk the rows grid-stride; indices are 64-bit.
// __launch_bounds__(1024): without it backward took more registers than a 1024-thread block may
// have (D = 8192: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES on an H200).

#ifndef MAXC   // columns a thread owns (docs/benchmarks/kernel-bench times other values)
#define MAXC 8
#endif
#ifndef RMS_BOUNDS
#define RMS_BOUNDS 1024
#endif

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(unsigned short v) { return __uint_as_float(((unsigned int)v) << 16); }

// fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN, as torch does
__device__ __forceinline__ unsigned short to_bf16(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

// v as T holds it: a sum rounded once, as torch's add rounds it (fp32 math, one rounding to T)
__device__ __forceinline__ float rounded(float v, float*) { return v; }
__device__ __forceinline__ float rounded(float v, unsigned short*) { return to_float(to_bf16(v)); }

__device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store(unsigned short* p, long long i, float v) { p[i] = to_bf16(v); }

// 16 bytes as 4 words: 4 fp32, or 8 bf16 (element 2j in the low half of word j: little-endian)
struct alignas(16) Words { unsigned int w[4]; };
__device__ __forceinline__ float unpack(const Words& r, int j, float*) { return __uint_as_float(r.w[j]); }
__device__ __forceinline__ float unpack(const Words& r, int j, unsigned short*) {
  const unsigned int w = r.w[j >> 1];
  return __uint_as_float((j & 1) ? (w & 0xffff0000u) : (w << 16));
}
__device__ __forceinline__ void pack(Words& r, int j, float v, float*) { r.w[j] = __float_as_uint(v); }
__device__ __forceinline__ void pack(Words& r, int j, float v, unsigned short*) {
  const unsigned int h = to_bf16(v);
  r.w[j >> 1] = (j & 1) ? ((r.w[j >> 1] & 0xffffu) | (h << 16)) : ((r.w[j >> 1] & 0xffff0000u) | h);
}

// The column of this thread's k-th element (k < MAXC) under either layout.
template <typename T>
__device__ __forceinline__ int column(int k, int tpr, int vec) {
  const int w = 16 / sizeof(T);
  return vec ? (threadIdx.x + (k / w) * tpr) * w + (k % w) : threadIdx.x + k * tpr;
}

// v[k] = p[column(k)] (0 past d); with vec whole vectors of 16 bytes
template <typename T>
__device__ __forceinline__ void gather(const T* p, float* v, int d, int tpr, int vec, bool valid) {
  const int w = 16 / sizeof(T);
  if (vec) {
#pragma unroll
    for (int g = 0; g < MAXC / w; ++g) {
      const int c = column<T>(g * w, tpr, 1);
      Words r = {};
      if (valid && c < d) r = *(const Words*)(p + c);
#pragma unroll
      for (int j = 0; j < w; ++j) v[g * w + j] = unpack(r, j, (T*)0);
    }
  } else {
#pragma unroll
    for (int k = 0; k < MAXC; ++k) {
      const int c = threadIdx.x + k * tpr;
      v[k] = (valid && c < d) ? to_float(p[c]) : 0.f;
    }
  }
}

// p[column(k)] = v[k] for the columns below d
template <typename T>
__device__ __forceinline__ void scatter(T* p, const float* v, int d, int tpr, int vec) {
  const int w = 16 / sizeof(T);
  if (vec) {
#pragma unroll
    for (int g = 0; g < MAXC / w; ++g) {
      const int c = column<T>(g * w, tpr, 1);
      if (c >= d) continue;
      Words r;
#pragma unroll
      for (int j = 0; j < w; ++j) pack(r, j, v[g * w + j], (T*)0);
      *(Words*)(p + c) = r;
    }
  } else {
#pragma unroll
    for (int k = 0; k < MAXC; ++k) {
      const int c = threadIdx.x + k * tpr;
      if (c < d) store(p, c, v[k]);
    }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The sum of v over the TPR threads of this thread's row, in a fixed order. Every thread of the
// block calls it (it has barriers); red holds one float per warp of the block (at most 32).
__device__ __forceinline__ float row_sum(float v, float* red) {
  v = warp_sum(v);
  if (blockDim.x == 32) return v;   // one warp per row: done (uniform over the block)
  const int warps = blockDim.x >> 5;
  const int first = threadIdx.y * warps;
  if ((threadIdx.x & 31) == 0) red[first + (threadIdx.x >> 5)] = v;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < warps; ++w) s += red[first + w];
  __syncthreads();   // red is reused by the next call
  return s;
}

// y = x * rsqrt(mean(x^2) + eps) [* w], rstd[row] = rsqrt(mean(x^2) + eps) (null: not kept).
// With res (null: none) the row normed is x + res rounded to T, and it is written to sum.
template <typename T>
__device__ void forward(const T* x, const T* res, T* sum, const T* w, T* y, float* rstd, long long rows, int d, float eps, int vec) {
  __shared__ float red[32];
  const int tpr = blockDim.x;
  float wv[MAXC];
  if (w != 0) gather(w, wv, d, tpr, vec, true);
  for (long long base = (long long)blockIdx.x * blockDim.y; base < rows; base += (long long)gridDim.x * blockDim.y) {
    const long long row = base + threadIdx.y;
    const bool valid = row < rows;
    const long long offset = (valid ? row : 0) * d;
    float v[MAXC];
    gather(x + offset, v, d, tpr, vec, valid);
    if (res != 0) {
      float u[MAXC];
      gather(res + offset, u, d, tpr, vec, valid);
#pragma unroll
      for (int k = 0; k < MAXC; ++k) v[k] = rounded(v[k] + u[k], (T*)0);
      if (valid) scatter(sum + offset, v, d, tpr, vec);
    }
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < MAXC; ++k) ss += v[k] * v[k];
    const float total = row_sum(ss, red);
    const float r = rsqrtf(total / (float)d + eps);
    if (valid) {
      if (rstd != 0 && threadIdx.x == 0) rstd[row] = r;
#pragma unroll
      for (int k = 0; k < MAXC; ++k) {
        v[k] *= r;
        if (w != 0) v[k] *= wv[k];
      }
      scatter(y + offset, v, d, tpr, vec);
    }
  }
}

// With xhat = x * r and g = dy * w (dy without a scale):
//   dx = r * (g - xhat * mean(g * xhat))
//   dw partial (one row of D floats per (block, threadIdx.y)) = sum over its rows of dy * xhat
// With dres (null: none), the gradient that x (the fused add's sum) receives directly, dx = dres + that.
template <typename T>
__device__ void backward(const T* x, const T* w, const T* dy, const T* dres, const float* rstd, T* dx, float* dw_partial, long long rows, int d, int vec) {
  __shared__ float red[32];
  const int tpr = blockDim.x;
  float acc[MAXC], wv[MAXC];
#pragma unroll
  for (int k = 0; k < MAXC; ++k) acc[k] = 0.f;
  if (w != 0) gather(w, wv, d, tpr, vec, true);
  for (long long base = (long long)blockIdx.x * blockDim.y; base < rows; base += (long long)gridDim.x * blockDim.y) {
    const long long row = base + threadIdx.y;
    const bool valid = row < rows;
    const long long offset = (valid ? row : 0) * d;
    const float r = valid ? rstd[row] : 0.f;
    float xh[MAXC], g[MAXC];
    gather(x + offset, xh, d, tpr, vec, valid);
    gather(dy + offset, g, d, tpr, vec, valid);   // dy, 0 past d and for an invalid row
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < MAXC; ++k) {
      xh[k] *= r;
      acc[k] += g[k] * xh[k];
      if (w != 0) g[k] *= wv[k];
      dot += g[k] * xh[k];
    }
    const float mean_dot = row_sum(dot, red) / (float)d;
    if (valid) {
#pragma unroll
      for (int k = 0; k < MAXC; ++k) g[k] = r * (g[k] - xh[k] * mean_dot);
      if (dres != 0) {
        gather(dres + offset, xh, d, tpr, vec, true);   // into xh, spent by now: no more registers
#pragma unroll
        for (int k = 0; k < MAXC; ++k) g[k] += xh[k];
      }
      scatter(dx + offset, g, d, tpr, vec);
    }
  }
  if (dw_partial != 0) {
    const long long part = (long long)blockIdx.x * blockDim.y + threadIdx.y;
#pragma unroll
    for (int k = 0; k < MAXC; ++k) {
      const int c = column<T>(k, tpr, vec);
      if (c < d) dw_partial[part * d + c] = acc[k];
    }
  }
}

// dw[c] = sum over parts of partial[p * d + c] (accumulate: dw[c] += that sum, into an existing .grad,
// which saves autograd's separate add). Block (32, 32): 32 columns, 32 threads down the parts.
template <typename T>
__device__ void dw_reduce(const float* partial, T* dw, long long parts, int d, int accumulate) {
  __shared__ float tile[32][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (c < d)
    for (long long p = threadIdx.y; p < parts; p += 32) s += partial[p * d + c];
  tile[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < d) {
    float t = 0.f;
    for (int i = 0; i < 32; ++i) t += tile[i][threadIdx.x];
    store(dw, c, accumulate ? t + to_float(dw[c]) : t);   // accumulate: into the weight's .grad
  }
}

// Rows of bf16 with D a multiple of 256 up to 1024 (the model widths: 768, 1024): one warp per row, no
// barrier inside a row. Lane l owns the 16-byte vectors l, l + 32, ... (vpl = D / 256 of them, 8 columns
// each), all loaded before the row's one warp reduction: up to 128 bytes a thread in flight where the
// block-per-row kernels above have 32 between two barriers (kernel-bench: 2.2 TB/s there).
// Blocks of ROWS_WARPS warps walk the rows warp-stride. Backward's dw partials: one row of D floats per block,
// summed over its warps' rows (each warp adds into its own shared slots, then the block adds the warps' slots).
#define ROWS_MAXV 4
#define ROWS_WARPS 8

__device__ __forceinline__ float bf(const Words& r, int j) { return unpack(r, j, (unsigned short*)0); }

// y = x · r [· w] (and sum = x + res rounded to bf16, which is what is normed), r = rsqrt(mean(x²) + eps)
__device__ void rows_forward(const unsigned short* x, const unsigned short* res, unsigned short* sum,
    const unsigned short* w, unsigned short* y, float* rstd, long long rows, int d, float eps) {
  const int lane = threadIdx.x & 31, vpl = d >> 8;
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  for (long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
    const long long offset = row * d;
    Words v[ROWS_MAXV];
#pragma unroll
    for (int i = 0; i < ROWS_MAXV; ++i)
      if (i < vpl) v[i] = *(const Words*)(x + offset + (i * 32 + lane) * 8);
    if (res != 0) {
#pragma unroll
      for (int i = 0; i < ROWS_MAXV; ++i) {
        if (i >= vpl) continue;
        const Words u = *(const Words*)(res + offset + (i * 32 + lane) * 8);
#pragma unroll
        for (int j = 0; j < 8; ++j) pack(v[i], j, bf(v[i], j) + bf(u, j), (unsigned short*)0);   // the sum as bf16 stores it
        *(Words*)(sum + offset + (i * 32 + lane) * 8) = v[i];
      }
    }
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < ROWS_MAXV; ++i)
      if (i < vpl) {
#pragma unroll
        for (int j = 0; j < 8; ++j) ss += bf(v[i], j) * bf(v[i], j);
      }
    const float r = rsqrtf(warp_sum(ss) / (float)d + eps);
    if (rstd != 0 && lane == 0) rstd[row] = r;
#pragma unroll
    for (int i = 0; i < ROWS_MAXV; ++i) {
      if (i >= vpl) continue;
      Words g = {}, out;
      if (w != 0) g = *(const Words*)(w + (i * 32 + lane) * 8);
#pragma unroll
      for (int j = 0; j < 8; ++j) pack(out, j, w != 0 ? bf(v[i], j) * r * bf(g, j) : bf(v[i], j) * r, (unsigned short*)0);
      *(Words*)(y + offset + (i * 32 + lane) * 8) = out;
    }
  }
}

// dx = r · (g − x̂ · mean(g · x̂)) [+ dres], x̂ = x · r, g = dy [· w]; dw_partial[block] = Σ over its rows of dy · x̂
__device__ void rows_backward(const unsigned short* x, const unsigned short* w, const unsigned short* dy,
    const unsigned short* dres, const float* rstd, unsigned short* dx, float* dw_partial, long long rows, int d) {
  // slot (warp, i * 8 + j, lane): column (i * 32 + lane) * 8 + j; lanes on consecutive words (no bank conflicts)
  __shared__ float acc[ROWS_WARPS][ROWS_MAXV * 8][32];
  __shared__ float ws[ROWS_MAXV * 8][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, vpl = d >> 8;
  for (int s = 0; s < vpl * 8; ++s) {
    acc[warp][s][lane] = 0.f;
    if (warp == 0) ws[s][lane] = w != 0 ? to_float(w[((s >> 3) * 32 + lane) * 8 + (s & 7)]) : 1.f;
  }
  __syncthreads();
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  for (long long row = (long long)blockIdx.x * (blockDim.x >> 5) + warp; row < rows; row += warps) {
    const long long offset = row * d;
    const float r = rstd[row];
    Words xv[ROWS_MAXV], gv[ROWS_MAXV];
#pragma unroll
    for (int i = 0; i < ROWS_MAXV; ++i)
      if (i < vpl) {
        xv[i] = *(const Words*)(x + offset + (i * 32 + lane) * 8);
        gv[i] = *(const Words*)(dy + offset + (i * 32 + lane) * 8);
      }
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < ROWS_MAXV; ++i)
      if (i < vpl) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float xh = bf(xv[i], j) * r, g = bf(gv[i], j);
          acc[warp][i * 8 + j][lane] += g * xh;
          dot += g * ws[i * 8 + j][lane] * xh;
        }
      }
    const float mean_dot = warp_sum(dot) / (float)d;
#pragma unroll
    for (int i = 0; i < ROWS_MAXV; ++i) {
      if (i >= vpl) continue;
      Words e = {}, out;
      if (dres != 0) e = *(const Words*)(dres + offset + (i * 32 + lane) * 8);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float xh = bf(xv[i], j) * r, g = bf(gv[i], j) * ws[i * 8 + j][lane];
        float v = r * (g - xh * mean_dot);
        if (dres != 0) v += bf(e, j);
        pack(out, j, v, (unsigned short*)0);
      }
      *(Words*)(dx + offset + (i * 32 + lane) * 8) = out;
    }
  }
  if (dw_partial != 0) {
    __syncthreads();
    for (int t = threadIdx.x; t < vpl * 8 * 32; t += blockDim.x) {
      const int s = t >> 5, l = t & 31;
      float sum = 0.f;
      for (int k = 0; k < ROWS_WARPS; ++k) sum += acc[k][s][l];
      dw_partial[(long long)blockIdx.x * d + ((s >> 3) * 32 + l) * 8 + (s & 7)] = sum;
    }
  }
}

extern "C" __global__ void __launch_bounds__(ROWS_WARPS * 32) rmsnorm_forward_rows_bf16(const unsigned short* x, const unsigned short* res, unsigned short* sum,
    const unsigned short* w, unsigned short* y, float* rstd, long long rows, int d, float eps) {
  rows_forward(x, res, sum, w, y, rstd, rows, d, eps);
}
extern "C" __global__ void __launch_bounds__(ROWS_WARPS * 32) rmsnorm_backward_rows_bf16(const unsigned short* x, const unsigned short* w, const unsigned short* dy,
    const unsigned short* dres, const float* rstd, unsigned short* dx, float* dw_partial, long long rows, int d) {
  rows_backward(x, w, dy, dres, rstd, dx, dw_partial, rows, d);
}

// Up to NORM_SETS norms of one shape in one launch, one a blockIdx.y (MUDDFormer's sepln norms of the Q, K and V streams:
// three launches each way and three reduces became one; each launch costs the GPU about 2 us between kernels besides its tail).
// Set s's dw partial rows are partial[s · gridDim.x + block]; the reduce sums each set's `parts` rows into its dw.
#define NORM_SETS 3
struct NormSets {
  const unsigned short* x[NORM_SETS];
  const unsigned short* w[NORM_SETS];
  const unsigned short* dy[NORM_SETS];   // backward
  unsigned short* out[NORM_SETS];        // forward: y; backward: dx
  float* rstd[NORM_SETS];
  unsigned short* dw[NORM_SETS];         // reduce: the weights' gradients
};
// the set of this block (constant indices: a run-time index into a kernel parameter would copy it to local memory)
template <typename P> __device__ __forceinline__ P pick(P const (&a)[NORM_SETS]) { return blockIdx.y == 0 ? a[0] : blockIdx.y == 1 ? a[1] : a[2]; }

extern "C" __global__ void __launch_bounds__(ROWS_WARPS * 32) rmsnorm_forward_rows_sets_bf16(const NormSets s, long long rows, int d, float eps) {
  rows_forward(pick(s.x), 0, 0, pick(s.w), pick(s.out), pick(s.rstd), rows, d, eps);
}
extern "C" __global__ void __launch_bounds__(ROWS_WARPS * 32) rmsnorm_backward_rows_sets_bf16(const NormSets s, float* dw_partial, long long rows, int d) {
  rows_backward(pick(s.x), pick(s.w), pick(s.dy), 0, pick(s.rstd), pick(s.out), dw_partial == 0 ? 0 : dw_partial + (long long)blockIdx.y * gridDim.x * d, rows, d);
}
// accumulate: bit s set where set s's dw is added into (an existing .grad)
extern "C" __global__ void __launch_bounds__(RMS_BOUNDS) rmsnorm_dw_reduce_sets_bf16(const NormSets s, const float* partial, long long parts, int d, int accumulate) {
  dw_reduce<unsigned short>(partial + (long long)blockIdx.y * parts * d, pick(s.dw), parts, d, (accumulate >> blockIdx.y) & 1);
}

extern "C" __global__ void __launch_bounds__(RMS_BOUNDS) rmsnorm_forward_f32(const float* x, const float* res, float* sum, const float* w, float* y, float* rstd, long long rows, int d, float eps, int vec) {
  forward<float>(x, res, sum, w, y, rstd, rows, d, eps, vec);
}
extern "C" __global__ void __launch_bounds__(RMS_BOUNDS) rmsnorm_forward_bf16(const unsigned short* x, const unsigned short* res, unsigned short* sum, const unsigned short* w, unsigned short* y, float* rstd, long long rows, int d, float eps, int vec) {
  forward<unsigned short>(x, res, sum, w, y, rstd, rows, d, eps, vec);
}
extern "C" __global__ void __launch_bounds__(RMS_BOUNDS) rmsnorm_backward_f32(const float* x, const float* w, const float* dy, const float* dres, const float* rstd, float* dx, float* dw_partial, long long rows, int d, int vec) {
  backward<float>(x, w, dy, dres, rstd, dx, dw_partial, rows, d, vec);
}
extern "C" __global__ void __launch_bounds__(RMS_BOUNDS) rmsnorm_backward_bf16(const unsigned short* x, const unsigned short* w, const unsigned short* dy, const unsigned short* dres, const float* rstd, unsigned short* dx, float* dw_partial, long long rows, int d, int vec) {
  backward<unsigned short>(x, w, dy, dres, rstd, dx, dw_partial, rows, d, vec);
}
extern "C" __global__ void __launch_bounds__(RMS_BOUNDS) rmsnorm_dw_reduce_f32(const float* partial, float* dw, long long parts, int d, int accumulate) {
  dw_reduce<float>(partial, dw, parts, d, accumulate);
}
extern "C" __global__ void __launch_bounds__(RMS_BOUNDS) rmsnorm_dw_reduce_bf16(const float* partial, unsigned short* dw, long long parts, int d, int accumulate) {
  dw_reduce<unsigned short>(partial, dw, parts, d, accumulate);
}

// Softmax cross-entropy of the rows of one chunk of the output projection's logits x (rows, V):
//   loss[r] = logsumexp(x_r) - x_r[t_r]                                  (fp32)
//   when mean_over > 0, x_r is overwritten in place with the gradient of sum(loss) / mean_over:
//   g_rj = (exp(x_rj - lse_r) - [j == t_r]) / mean_over                  (in x's dtype)
// One block per row, grid-stride over rows. Pass 1 reads the row once, keeping a running maximum
// and the sum of exponentials rescaled to it (online softmax: rescaled only when a vector raises the
// maximum), merged across the block in a fixed order; pass 2 reads the row again (a row is V·2 bytes: it is still in L2) and writes the
// gradient over it. Against the reference (upcast to fp32, logsumexp, gather, sub, exp,
// scatter_add, div, cast back: about ten full passes over an fp32 copy) this moves 3 bytes per
// bf16 logit instead of about 40. A target outside [0, V) gives a NaN loss (the trainer's
// non-finite guard stops on it) and no onehot. bf16 is an unsigned short (no NVRTC headers).
// x rows are contiguous; `vec` (set by the host when V and x allow) reads 16 bytes at a time.
// Block: 512 threads (CE_BLOCK). exp(a - b) is computed as exp2f(a·log2(e) − b·log2(e)) (one FMA and the
// hardware's exp2) and the division by mean_over as one multiply: with precise expf and a division the kernel
// was bound by arithmetic (about 35 instructions a logit), not by its 3 bytes a logit.

#define CE_BLOCK 512

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(unsigned short v) { return __uint_as_float(((unsigned int)v) << 16); }

// fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN, as torch does
__device__ __forceinline__ unsigned short to_bf16(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

__device__ __forceinline__ void store(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store(unsigned short* p, long long i, float v) { p[i] = to_bf16(v); }

// 16 bytes as 4 words: 4 fp32, or 8 bf16 (element 2j in the low half of word j: little-endian)
struct alignas(16) Words { unsigned int w[4]; };
__device__ __forceinline__ Words load16(const void* p) { return *(const Words*)p; }
__device__ __forceinline__ void store16(void* p, const Words& r) { *(Words*)p = r; }
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

__device__ __forceinline__ float neg_inf() { return __uint_as_float(0xff800000u); }
#define CE_LOG2E 1.4426950408889634f

// (m, s) <- the softmax state of both parts: m the larger maximum, s both sums rescaled to it
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float top = fmaxf(m, m2);
  if (top == neg_inf()) return;   // both parts empty (or all -inf)
  s = s * expf(m - top) + s2 * expf(m2 - top);
  m = top;
}

// Every thread gets the state of the whole block, merged in the same fixed order.
__device__ __forceinline__ void block_merge(float& m, float& s, float* wm, float* ws) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, offset), s2 = __shfl_xor_sync(0xffffffffu, s, offset);
    merge(m, s, m2, s2);
  }
  if ((threadIdx.x & 31) == 0) { wm[threadIdx.x >> 5] = m; ws[threadIdx.x >> 5] = s; }
  __syncthreads();
  m = wm[0]; s = ws[0];
  for (int w = 1; w < (int)(blockDim.x >> 5); ++w) merge(m, s, wm[w], ws[w]);
}

template <typename T>
__device__ void rows(T* x, const long long* targets, float* loss, long long n_rows, long long v, float mean_over, int vec) {
  __shared__ float wm[CE_BLOCK / 32], ws[CE_BLOCK / 32];
  const int per = 16 / sizeof(T);
  const long long nv = vec ? v / per : 0;   // whole vectors; the rest element by element
  for (long long r = blockIdx.x; r < n_rows; r += gridDim.x) {
    T* row = x + r * v;
    float m = neg_inf(), s = 0.f;
    for (long long i = threadIdx.x; i < nv; i += blockDim.x) {
      const Words w = load16(row + i * per);
      float top = neg_inf();
#pragma unroll
      for (int j = 0; j < 16 / (int)sizeof(T); ++j) top = fmaxf(top, unpack(w, j, (T*)0));
      if (top > m) {   // a new maximum: the sum so far rescaled to it (0 while m is -inf)
        s *= exp2f((m - top) * CE_LOG2E);
        m = top;
      }
      if (m == neg_inf()) continue;   // every value so far is -inf: nothing to add
      const float mb = m * CE_LOG2E;
#pragma unroll
      for (int j = 0; j < 16 / (int)sizeof(T); ++j) s += exp2f(fmaf(unpack(w, j, (T*)0), CE_LOG2E, -mb));
    }
    for (long long i = nv * per + threadIdx.x; i < v; i += blockDim.x) merge(m, s, to_float(row[i]), 1.f);
    block_merge(m, s, wm, ws);
    const float lse = m + logf(s);
    const long long t = targets[r];
    const bool valid = t >= 0 && t < v;
    if (threadIdx.x == 0) loss[r] = valid ? lse - to_float(row[t]) : __uint_as_float(0x7fc00000u);
    __syncthreads();   // x[t] is read, and wm/ws free for the next row, before anything is overwritten
    if (mean_over <= 0.f) continue;
    const float lb = lse * CE_LOG2E, inv = 1.f / mean_over;
    for (long long i = threadIdx.x; i < nv; i += blockDim.x) {
      Words w = load16(row + i * per);
#pragma unroll
      for (int j = 0; j < 16 / (int)sizeof(T); ++j) {
        const long long col = i * per + j;
        float g = exp2f(fmaf(unpack(w, j, (T*)0), CE_LOG2E, -lb));
        if (col == t) g -= 1.f;
        pack(w, j, g * inv, (T*)0);
      }
      store16(row + i * per, w);
    }
    for (long long i = nv * per + threadIdx.x; i < v; i += blockDim.x) {
      float g = exp2f(fmaf(to_float(row[i]), CE_LOG2E, -lb));
      if (i == t) g -= 1.f;
      store(row, i, g * inv);
    }
  }
}

extern "C" __global__ void __launch_bounds__(CE_BLOCK) cross_entropy_rows_f32(float* x, const long long* targets, float* loss, long long n_rows, long long v, float mean_over, int vec) {
  rows<float>(x, targets, loss, n_rows, v, mean_over, vec);
}
extern "C" __global__ void __launch_bounds__(CE_BLOCK) cross_entropy_rows_bf16(unsigned short* x, const long long* targets, float* loss, long long n_rows, long long v, float mean_over, int vec) {
  rows<unsigned short>(x, targets, loss, n_rows, v, mean_over, vec);
}

// The loss's saved gradients times the gradient the loss receives in backward (a one-element fp32 tensor,
// read here on the device: no host sync): y = s·x, or y += s·x with `accumulate` (the output weight's .grad).
// n elements, fp32 math rounded once; y may be x. Grid-stride over 16-byte vectors when `vec` (every pointer
// 16-byte aligned), the rest element by element. torch's multiply by a 0-dim CUDA tensor takes its strided,
// unvectorized path (1.1 TB/s on the 405M output weight's gradient) and autograd's add is a second pass.
template <typename T>
__device__ void scale(const T* x, T* y, const float* s, long long n, int accumulate, int vec) {
  const float k = *s;
  const long long stride = (long long)gridDim.x * blockDim.x, first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const int per = 16 / sizeof(T);
  const long long nv = vec ? n / per : 0;
  for (long long i = first; i < nv; i += stride) {
    const Words a = load16(x + i * per);
    Words b = accumulate ? load16(y + i * per) : Words{};
#pragma unroll
    for (int j = 0; j < 16 / (int)sizeof(T); ++j) pack(b, j, fmaf(k, unpack(a, j, (T*)0), accumulate ? unpack(b, j, (T*)0) : 0.f), (T*)0);
    store16(y + i * per, b);
  }
  for (long long i = nv * per + first; i < n; i += stride) store(y, i, fmaf(k, to_float(x[i]), accumulate ? to_float(y[i]) : 0.f));
}

extern "C" __global__ void __launch_bounds__(256) cross_entropy_scale_f32(const float* x, float* y, const float* s, long long n, int accumulate, int vec) {
  scale<float>(x, y, s, n, accumulate, vec);
}
extern "C" __global__ void __launch_bounds__(256) cross_entropy_scale_bf16(const unsigned short* x, unsigned short* y, const float* s, long long n, int accumulate, int vec) {
  scale<unsigned short>(x, y, s, n, accumulate, vec);
}

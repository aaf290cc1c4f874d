// RMSNorm over rows of D elements, forward and backward, fp32 inside.
// Compiled by NVRTC with no headers: bf16 is an unsigned short (the high half of an fp32), and
// every kernel is extern "C" so the host finds it by its plain name.
//
// Layout: block (TPR, RPB): TPR threads per row (a multiple of 32, at most 1024), RPB rows per
// block, TPR * RPB <= 1024. A thread owns columns threadIdx.x + k * TPR for k < MAXC, so D <= TPR * MAXC
// (the host checks). Blocks walk the rows grid-stride; indices are 64-bit (rows * D may pass 2^31).
// __launch_bounds__(1024): without it backward took more registers than a 1024-thread block may
// have (D = 8192: CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES on an H200).

#define MAXC 8

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

// y = x * rsqrt(mean(x^2) + eps) [* w], rstd[row] = rsqrt(mean(x^2) + eps) (null: not kept)
template <typename T>
__device__ void forward(const T* x, const T* w, T* y, float* rstd, long long rows, int d, float eps) {
  __shared__ float red[32];
  const int tpr = blockDim.x;
  for (long long base = (long long)blockIdx.x * blockDim.y; base < rows; base += (long long)gridDim.x * blockDim.y) {
    const long long row = base + threadIdx.y;
    const bool valid = row < rows;
    const T* xr = x + (valid ? row : 0) * d;
    float v[MAXC];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < MAXC; ++k) {
      const int c = threadIdx.x + k * tpr;
      v[k] = (valid && c < d) ? to_float(xr[c]) : 0.f;
      ss += v[k] * v[k];
    }
    const float total = row_sum(ss, red);
    const float r = rsqrtf(total / (float)d + eps);
    if (valid) {
      if (rstd != 0 && threadIdx.x == 0) rstd[row] = r;
      T* yr = y + row * d;
#pragma unroll
      for (int k = 0; k < MAXC; ++k) {
        const int c = threadIdx.x + k * tpr;
        if (c < d) {
          float o = v[k] * r;
          if (w != 0) o *= to_float(w[c]);
          store(yr, c, o);
        }
      }
    }
  }
}

// With xhat = x * r and g = dy * w (dy without a scale):
//   dx = r * (g - xhat * mean(g * xhat))
//   dw partial (one row of D floats per (block, threadIdx.y)) = sum over its rows of dy * xhat
template <typename T>
__device__ void backward(const T* x, const T* w, const T* dy, const float* rstd, T* dx, float* dw_partial, long long rows, int d) {
  __shared__ float red[32];
  const int tpr = blockDim.x;
  float acc[MAXC];
#pragma unroll
  for (int k = 0; k < MAXC; ++k) acc[k] = 0.f;
  for (long long base = (long long)blockIdx.x * blockDim.y; base < rows; base += (long long)gridDim.x * blockDim.y) {
    const long long row = base + threadIdx.y;
    const bool valid = row < rows;
    const long long offset = (valid ? row : 0) * d;
    const float r = valid ? rstd[row] : 0.f;
    float xh[MAXC], g[MAXC];
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < MAXC; ++k) {
      const int c = threadIdx.x + k * tpr;
      if (valid && c < d) {
        const float dyv = to_float(dy[offset + c]);
        xh[k] = to_float(x[offset + c]) * r;
        g[k] = w != 0 ? dyv * to_float(w[c]) : dyv;
        acc[k] += dyv * xh[k];
        dot += g[k] * xh[k];
      } else {
        xh[k] = 0.f;
        g[k] = 0.f;
      }
    }
    const float mean_dot = row_sum(dot, red) / (float)d;
    if (valid) {
#pragma unroll
      for (int k = 0; k < MAXC; ++k) {
        const int c = threadIdx.x + k * tpr;
        if (c < d) store(dx, offset + c, r * (g[k] - xh[k] * mean_dot));
      }
    }
  }
  if (dw_partial != 0) {
    const long long part = (long long)blockIdx.x * blockDim.y + threadIdx.y;
#pragma unroll
    for (int k = 0; k < MAXC; ++k) {
      const int c = threadIdx.x + k * tpr;
      if (c < d) dw_partial[part * d + c] = acc[k];
    }
  }
}

// dw[c] = sum over parts of partial[p * d + c]. Block (32, 32): 32 columns, 32 threads down the parts.
template <typename T>
__device__ void dw_reduce(const float* partial, T* dw, long long parts, int d) {
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
    store(dw, c, t);
  }
}

extern "C" __global__ void __launch_bounds__(1024) rmsnorm_forward_f32(const float* x, const float* w, float* y, float* rstd, long long rows, int d, float eps) {
  forward<float>(x, w, y, rstd, rows, d, eps);
}
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_forward_bf16(const unsigned short* x, const unsigned short* w, unsigned short* y, float* rstd, long long rows, int d, float eps) {
  forward<unsigned short>(x, w, y, rstd, rows, d, eps);
}
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_backward_f32(const float* x, const float* w, const float* dy, const float* rstd, float* dx, float* dw_partial, long long rows, int d) {
  backward<float>(x, w, dy, rstd, dx, dw_partial, rows, d);
}
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_backward_bf16(const unsigned short* x, const unsigned short* w, const unsigned short* dy, const float* rstd, unsigned short* dx, float* dw_partial, long long rows, int d) {
  backward<unsigned short>(x, w, dy, rstd, dx, dw_partial, rows, d);
}
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_dw_reduce_f32(const float* partial, float* dw, long long parts, int d) {
  dw_reduce<float>(partial, dw, parts, d);
}
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_dw_reduce_bf16(const float* partial, unsigned short* dw, long long parts, int d) {
  dw_reduce<unsigned short>(partial, dw, parts, d);
}

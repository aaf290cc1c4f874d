// QK-norm and rotary in one pass over q or k (B, T, H, d), fp32 inside:
//   n = x * rsqrt(mean(x^2) + eps) * w        (w null: n = x, no norm: use_qk_norm off)
//   y[2i] = n[i] c - n[i + d/2] s,  y[2i + 1] = n[i + d/2] c + n[i] s     (i < d/2; c, s = cos, sin[t, i])
// the official MUDDFormer 'half' rotary (Rotary.Apply): the pair (i, i + d/2) rotated, written interleaved.
// Backward, with dn the inverse rotation of dy (dn[i] = dy[2i] c + dy[2i+1] s, dn[i + d/2] = dy[2i+1] c - dy[2i] s),
// xhat = x r and g = dn w:  dx = r (g - xhat mean(g xhat));  dw partial (one row of d floats per warp slot) = sum dn xhat.
// Without w: dx = dn. rstd is recomputed in backward from x (one warp sum): nothing is saved but x.
//
// Layout: one warp per row (b, t, h), block (32, ROWS); lane owns the pairs i = lane + 32k, k < MAXP,
// so d <= 64 * MAXP (the host checks; d even). x and dy are strided views (sb, st, sh; unit stride
// over d: e.g. q, k selected out of the wqkv output, or a transposed gradient); y, dx contiguous.
// cos, sin: (T', d/2) fp32 contiguous, T' >= T. Blocks walk the rows grid-stride; indices are 64-bit.

#define MAXP 4

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

// y[i], y[i + 1] (i even, y contiguous with d even: 4- or 8-byte aligned) in one store
// (our own aligned pair rather than float2: the sources rely on no NVRTC built-in header)
struct alignas(8) Pair { float x, y; };
__device__ __forceinline__ void store_pair(float* p, long long i, float v0, float v1) {
  Pair v; v.x = v0; v.y = v1;
  *(Pair*)(p + i) = v;
}
__device__ __forceinline__ void store_pair(unsigned short* p, long long i, float v0, float v1) {
  *(unsigned int*)(p + i) = (unsigned int)to_bf16(v0) | ((unsigned int)to_bf16(v1) << 16);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// the row's start in a (B, T, H, d) view with strides (sb, st, sh, 1), and its position t
__device__ __forceinline__ long long row_offset(long long row, int t_len, int heads, long long sb, long long st, long long sh, int& t) {
  const long long bt = row / heads;
  const int h = (int)(row - bt * heads);
  const long long b = bt / t_len;
  t = (int)(bt - b * t_len);
  return b * sb + (long long)t * st + (long long)h * sh;
}

template <typename T>
__device__ void forward(const T* x, const T* w, const float* cos_t, const float* sin_t, T* y,
                        long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, float eps) {
  const int half = d >> 1, lane = threadIdx.x;
  for (long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y; row < rows; row += (long long)gridDim.x * blockDim.y) {
    int t;
    const T* xr = x + row_offset(row, t_len, heads, sb, st, sh, t);
    float x0[MAXP], x1[MAXP];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < MAXP; ++k) {
      const int i = lane + 32 * k;
      x0[k] = i < half ? to_float(xr[i]) : 0.f;
      x1[k] = i < half ? to_float(xr[i + half]) : 0.f;
      ss += x0[k] * x0[k] + x1[k] * x1[k];
    }
    float r = 1.f;
    if (w != 0) r = rsqrtf(warp_sum(ss) / (float)d + eps);   // uniform over the warp (a row is one warp)
    T* yr = y + row * d;
    const float* cr = cos_t + (long long)t * half;
    const float* sr = sin_t + (long long)t * half;
#pragma unroll
    for (int k = 0; k < MAXP; ++k) {
      const int i = lane + 32 * k;
      if (i < half) {
        float n0 = x0[k], n1 = x1[k];
        if (w != 0) { n0 *= r * to_float(w[i]); n1 *= r * to_float(w[i + half]); }
        const float c = cr[i], s = sr[i];
        store_pair(yr, 2 * i, n0 * c - n1 * s, n1 * c + n0 * s);
      }
    }
  }
}

template <typename T>
__device__ void backward(const T* x, const T* w, const float* cos_t, const float* sin_t, const T* dy, T* dx, float* dw_partial,
                         long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh,
                         long long gb, long long gt, long long gh, float eps) {
  const int half = d >> 1, lane = threadIdx.x;
  float acc0[MAXP], acc1[MAXP];
#pragma unroll
  for (int k = 0; k < MAXP; ++k) acc0[k] = acc1[k] = 0.f;
  for (long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y; row < rows; row += (long long)gridDim.x * blockDim.y) {
    int t;
    const T* xr = x + row_offset(row, t_len, heads, sb, st, sh, t);
    const T* gr = dy + row_offset(row, t_len, heads, gb, gt, gh, t);
    const float* cr = cos_t + (long long)t * half;
    const float* sr = sin_t + (long long)t * half;
    T* dxr = dx + row * d;
    float n0[MAXP], n1[MAXP];   // dn
#pragma unroll
    for (int k = 0; k < MAXP; ++k) {
      const int i = lane + 32 * k;
      if (i < half) {
        const float g0 = to_float(gr[2 * i]), g1 = to_float(gr[2 * i + 1]), c = cr[i], s = sr[i];
        n0[k] = g0 * c + g1 * s;
        n1[k] = g1 * c - g0 * s;
      } else {
        n0[k] = n1[k] = 0.f;
      }
    }
    if (w == 0) {
#pragma unroll
      for (int k = 0; k < MAXP; ++k) {
        const int i = lane + 32 * k;
        if (i < half) { store(dxr, i, n0[k]); store(dxr, i + half, n1[k]); }
      }
      continue;
    }
    float x0[MAXP], x1[MAXP];
    float ss = 0.f;
#pragma unroll
    for (int k = 0; k < MAXP; ++k) {
      const int i = lane + 32 * k;
      x0[k] = i < half ? to_float(xr[i]) : 0.f;
      x1[k] = i < half ? to_float(xr[i + half]) : 0.f;
      ss += x0[k] * x0[k] + x1[k] * x1[k];
    }
    const float r = rsqrtf(warp_sum(ss) / (float)d + eps);   // as forward computed it
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < MAXP; ++k) {
      const int i = lane + 32 * k;
      if (i < half) {
        x0[k] *= r; x1[k] *= r;   // xhat
        acc0[k] += n0[k] * x0[k];
        acc1[k] += n1[k] * x1[k];
        n0[k] *= to_float(w[i]); n1[k] *= to_float(w[i + half]);   // g
        dot += n0[k] * x0[k] + n1[k] * x1[k];
      }
    }
    const float mean_dot = warp_sum(dot) / (float)d;
#pragma unroll
    for (int k = 0; k < MAXP; ++k) {
      const int i = lane + 32 * k;
      if (i < half) {
        store(dxr, i, r * (n0[k] - x0[k] * mean_dot));
        store(dxr, i + half, r * (n1[k] - x1[k] * mean_dot));
      }
    }
  }
  if (dw_partial != 0) {
    float* pr = dw_partial + ((long long)blockIdx.x * blockDim.y + threadIdx.y) * d;
#pragma unroll
    for (int k = 0; k < MAXP; ++k) {
      const int i = lane + 32 * k;
      if (i < half) { pr[i] = acc0[k]; pr[i + half] = acc1[k]; }
    }
  }
}

extern "C" __global__ void __launch_bounds__(256) qkrotary_forward_f32(const float* x, const float* w, const float* cos_t, const float* sin_t, float* y,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, float eps) {
  forward<float>(x, w, cos_t, sin_t, y, rows, t_len, heads, d, sb, st, sh, eps);
}
extern "C" __global__ void __launch_bounds__(256) qkrotary_forward_bf16(const unsigned short* x, const unsigned short* w, const float* cos_t, const float* sin_t, unsigned short* y,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, float eps) {
  forward<unsigned short>(x, w, cos_t, sin_t, y, rows, t_len, heads, d, sb, st, sh, eps);
}
extern "C" __global__ void __launch_bounds__(256) qkrotary_backward_f32(const float* x, const float* w, const float* cos_t, const float* sin_t, const float* dy, float* dx, float* dw_partial,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, long long gb, long long gt, long long gh, float eps) {
  backward<float>(x, w, cos_t, sin_t, dy, dx, dw_partial, rows, t_len, heads, d, sb, st, sh, gb, gt, gh, eps);
}
extern "C" __global__ void __launch_bounds__(256) qkrotary_backward_bf16(const unsigned short* x, const unsigned short* w, const float* cos_t, const float* sin_t, const unsigned short* dy, unsigned short* dx, float* dw_partial,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, long long gb, long long gt, long long gh, float eps) {
  backward<unsigned short>(x, w, cos_t, sin_t, dy, dx, dw_partial, rows, t_len, heads, d, sb, st, sh, gb, gt, gh, eps);
}

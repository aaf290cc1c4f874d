// QK-norm and rotary in one pass over q or k (B, T, H, d), fp32 inside:
//   n = x * rsqrt(mean(x^2) + eps) * w        (w null: n = x, no norm: use_qk_norm off)
//   y[2i] = n[i] c - n[i + d/2] s,  y[2i + 1] = n[i + d/2] c + n[i] s     (i < d/2; c, s = cos, sin[t, i])
// the official MUDDFormer 'half' rotary (Rotary.Apply): the pair (i, i + d/2) rotated, written interleaved.
// Backward, with dn the inverse rotation of dy (dn[i] = dy[2i] c + dy[2i+1] s, dn[i + d/2] = dy[2i+1] c - dy[2i] s),
// xhat = x r and g = dn w:  dx = r (g - xhat mean(g xhat));  dw partial = sum dn xhat (one row of d floats
// per warp slot; the _v kernels: per block).
// Without w: dx = dn. rstd is recomputed in backward from x (one warp sum): nothing is saved but x.
//
// Layout: one warp per row (b, t, h), block (32, ROWS); lane owns the pairs i = lane + 32k, k < MAXP,
// so d <= 64 * MAXP (the host checks; d even). x and dy are strided views (sb, st, sh; unit stride
// over d: e.g. q, k selected out of the wqkv output, or a transposed gradient); y, dx contiguous.
// cos, sin: (T', d/2) fp32 contiguous, T' >= T. Blocks walk the rows grid-stride; indices are 64-bit.
//
// The _v kernels (the host picks them when d/2 is 4 times a power of two up to 32, every row of x
// and dy starts on 4 elements and rows < 2^31): a group of G = d/8 lanes per row, a lane owns the
// pairs i0..i0+3 (i0 = 4 * its place in the group), so it reads 4 elements at once from each half
// and from the tables and writes 8 (16 bytes of bf16); a warp holds 32/G rows (4 at d = 64). The
// one-warp-per-row kernels above read 2 bytes per access and ran at about a fifth of the H200's bandwidth.

#define MAXP 4
#define QKR_WARPS 8     // the _v backward's block: (32, QKR_WARPS), as FusedQkRotary launches it
#define QKR_MAX_D 256   // the _v kernels' largest d (32 lanes of a group, 8 elements each)

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

// 4 elements from a 4-element-aligned address; 4 elements to one
struct alignas(16) F4 { float v[4]; };
struct alignas(8) H4 { unsigned int w[2]; };
__device__ __forceinline__ void load4(const float* p, float* out) {
  const F4 r = *(const F4*)p;
  for (int j = 0; j < 4; ++j) out[j] = r.v[j];
}
__device__ __forceinline__ void load4(const unsigned short* p, float* out) {
  const H4 r = *(const H4*)p;
  for (int j = 0; j < 4; ++j) out[j] = __uint_as_float((j & 1) ? (r.w[j >> 1] & 0xffff0000u) : (r.w[j >> 1] << 16));
}
__device__ __forceinline__ void store4(float* p, const float* in) {
  F4 r;
  for (int j = 0; j < 4; ++j) r.v[j] = in[j];
  *(F4*)p = r;
}
__device__ __forceinline__ void store4(unsigned short* p, const float* in) {
  H4 r;
  for (int j = 0; j < 2; ++j) r.w[j] = (unsigned int)to_bf16(in[2 * j]) | ((unsigned int)to_bf16(in[2 * j + 1]) << 16);
  *(H4*)p = r;
}

// the sum over the g lanes of this lane's row (g a power of two: the group is g aligned lanes)
__device__ __forceinline__ float group_sum(float v, int g) {
  for (int offset = g >> 1; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// row_offset in 32-bit arithmetic (rows < 2^31: the host checks), which a lane group repeats for every row
__device__ __forceinline__ long long row_offset32(unsigned int row, unsigned int t_len, unsigned int heads, long long sb, long long st, long long sh, int& t) {
  const unsigned int bt = row / heads, h = row - bt * heads, b = bt / t_len;
  t = (int)(bt - b * t_len);
  return (long long)b * sb + (long long)t * st + (long long)h * sh;
}

template <typename T>
__device__ void forward_v(const T* x, const T* w, const float* cos_t, const float* sin_t, T* y,
                          long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, float eps) {
  const int half = d >> 1, g = half >> 2, per_warp = 32 / g;
  const int slot = threadIdx.x / g, i0 = (threadIdx.x % g) * 4;
  float w0[4], w1[4];
  if (w != 0) { load4(w + i0, w0); load4(w + half + i0, w1); }
  const long long step = (long long)gridDim.x * blockDim.y * per_warp;
  // base is the same for the whole warp: every lane takes every shuffle
  for (long long base = ((long long)blockIdx.x * blockDim.y + threadIdx.y) * per_warp; base < rows; base += step) {
    const long long row = base + slot;
    const bool valid = row < rows;
    int t = 0;
    float x0[4] = {0.f, 0.f, 0.f, 0.f}, x1[4] = {0.f, 0.f, 0.f, 0.f};
    if (valid) {
      const T* xr = x + row_offset32((unsigned int)row, t_len, heads, sb, st, sh, t);
      load4(xr + i0, x0);
      load4(xr + half + i0, x1);
    }
    float r = 1.f;
    if (w != 0) {
      float ss = 0.f;
      for (int j = 0; j < 4; ++j) ss += x0[j] * x0[j] + x1[j] * x1[j];
      r = rsqrtf(group_sum(ss, g) / (float)d + eps);
    }
    if (!valid) continue;
    float c[4], s[4], out[8];
    load4(cos_t + (long long)t * half + i0, c);
    load4(sin_t + (long long)t * half + i0, s);
    for (int j = 0; j < 4; ++j) {
      float n0 = x0[j], n1 = x1[j];
      if (w != 0) { n0 *= r * w0[j]; n1 *= r * w1[j]; }
      out[2 * j] = n0 * c[j] - n1 * s[j];
      out[2 * j + 1] = n1 * c[j] + n0 * s[j];
    }
    T* yr = y + row * d + 2 * i0;
    store4(yr, out);
    store4(yr + 4, out + 4);
  }
}

template <typename T>
__device__ void backward_v(const T* x, const T* w, const float* cos_t, const float* sin_t, const T* dy, T* dx, float* dw_partial,
                           long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh,
                           long long gb, long long gt, long long gh, float eps) {
  const int half = d >> 1, g = half >> 2, per_warp = 32 / g;
  const int slot = threadIdx.x / g, i0 = (threadIdx.x % g) * 4;
  float w0[4], w1[4], acc0[4] = {0.f, 0.f, 0.f, 0.f}, acc1[4] = {0.f, 0.f, 0.f, 0.f};
  if (w != 0) { load4(w + i0, w0); load4(w + half + i0, w1); }
  const long long step = (long long)gridDim.x * blockDim.y * per_warp;
  for (long long base = ((long long)blockIdx.x * blockDim.y + threadIdx.y) * per_warp; base < rows; base += step) {
    const long long row = base + slot;
    const bool valid = row < rows;
    int t = 0;
    float n0[4] = {0.f, 0.f, 0.f, 0.f}, n1[4] = {0.f, 0.f, 0.f, 0.f};   // dn: dy rotated back
    float x0[4] = {0.f, 0.f, 0.f, 0.f}, x1[4] = {0.f, 0.f, 0.f, 0.f};
    if (valid) {
      const T* xr = x + row_offset32((unsigned int)row, t_len, heads, sb, st, sh, t);
      const T* gr = dy + row_offset32((unsigned int)row, t_len, heads, gb, gt, gh, t) + 2 * i0;
      float gv[8], c[4], s[4];
      load4(gr, gv);
      load4(gr + 4, gv + 4);
      load4(cos_t + (long long)t * half + i0, c);
      load4(sin_t + (long long)t * half + i0, s);
      for (int j = 0; j < 4; ++j) {
        n0[j] = gv[2 * j] * c[j] + gv[2 * j + 1] * s[j];
        n1[j] = gv[2 * j + 1] * c[j] - gv[2 * j] * s[j];
      }
      if (w != 0) { load4(xr + i0, x0); load4(xr + half + i0, x1); }
    }
    T* dxr = dx + row * d + i0;
    if (w == 0) {
      if (valid) { store4(dxr, n0); store4(dxr + half, n1); }
      continue;
    }
    float ss = 0.f;
    for (int j = 0; j < 4; ++j) ss += x0[j] * x0[j] + x1[j] * x1[j];
    const float r = rsqrtf(group_sum(ss, g) / (float)d + eps);   // as forward computed it
    float dot = 0.f;
    for (int j = 0; j < 4; ++j) {
      x0[j] *= r; x1[j] *= r;   // xhat
      acc0[j] += n0[j] * x0[j];
      acc1[j] += n1[j] * x1[j];
      n0[j] *= w0[j]; n1[j] *= w1[j];   // g
      dot += n0[j] * x0[j] + n1[j] * x1[j];
    }
    const float mean_dot = group_sum(dot, g) / (float)d;
    if (!valid) continue;
    float o0[4], o1[4];
    for (int j = 0; j < 4; ++j) { o0[j] = r * (n0[j] - x0[j] * mean_dot); o1[j] = r * (n1[j] - x1[j] * mean_dot); }
    store4(dxr, o0);
    store4(dxr + half, o1);
  }
  if (dw_partial != 0) {
    // the warp's groups hold the same columns: add them (fixed order), the first group writes the warp slot's row
    for (int offset = g; offset < 32; offset <<= 1)
      for (int j = 0; j < 4; ++j) {
        acc0[j] += __shfl_xor_sync(0xffffffffu, acc0[j], offset);
        acc1[j] += __shfl_xor_sync(0xffffffffu, acc1[j], offset);
      }
    // then the block's warps (fixed order): one partial row a block. With a row a warp, the reduce after this kernel
    // had 8 times the rows, in only d/32 blocks at d = 64: 14 us a launch, 0.7 ms a 405M step.
    __shared__ float rows_dw[QKR_WARPS][QKR_MAX_D];
    if (slot == 0)
      for (int j = 0; j < 4; ++j) { rows_dw[threadIdx.y][i0 + j] = acc0[j]; rows_dw[threadIdx.y][half + i0 + j] = acc1[j]; }
    __syncthreads();
    for (int c = threadIdx.y * blockDim.x + threadIdx.x; c < d; c += blockDim.x * blockDim.y) {
      float sum = 0.f;
      for (int r = 0; r < (int)blockDim.y; ++r) sum += rows_dw[r][c];
      dw_partial[(long long)blockIdx.x * d + c] = sum;
    }
  }
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
extern "C" __global__ void __launch_bounds__(256) qkrotary_forward_f32_v(const float* x, const float* w, const float* cos_t, const float* sin_t, float* y,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, float eps) {
  forward_v<float>(x, w, cos_t, sin_t, y, rows, t_len, heads, d, sb, st, sh, eps);
}
extern "C" __global__ void __launch_bounds__(256) qkrotary_forward_bf16_v(const unsigned short* x, const unsigned short* w, const float* cos_t, const float* sin_t, unsigned short* y,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, float eps) {
  forward_v<unsigned short>(x, w, cos_t, sin_t, y, rows, t_len, heads, d, sb, st, sh, eps);
}
extern "C" __global__ void __launch_bounds__(256) qkrotary_backward_f32_v(const float* x, const float* w, const float* cos_t, const float* sin_t, const float* dy, float* dx, float* dw_partial,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, long long gb, long long gt, long long gh, float eps) {
  backward_v<float>(x, w, cos_t, sin_t, dy, dx, dw_partial, rows, t_len, heads, d, sb, st, sh, gb, gt, gh, eps);
}
extern "C" __global__ void __launch_bounds__(256) qkrotary_backward_bf16_v(const unsigned short* x, const unsigned short* w, const float* cos_t, const float* sin_t, const unsigned short* dy, unsigned short* dx, float* dw_partial,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, long long gb, long long gt, long long gh, float eps) {
  backward_v<unsigned short>(x, w, cos_t, sin_t, dy, dx, dw_partial, rows, t_len, heads, d, sb, st, sh, gb, gt, gh, eps);
}

// q and k of one layer in one launch, one a blockIdx.y (the _v kernels, bf16): two launches each way became one.
// Both views share their strides (and dy theirs); set s's dw partial rows are dw_partial[s · gridDim.x + block],
// summed by rmsnorm.cu's rmsnorm_dw_reduce_sets_bf16.
struct QkPair {
  const unsigned short* x[2];
  const unsigned short* w[2];
  const unsigned short* dy[2];   // backward
  unsigned short* out[2];        // forward: y; backward: dx
};
template <typename P> __device__ __forceinline__ P pick2(P const (&a)[2]) { return blockIdx.y == 0 ? a[0] : a[1]; }

extern "C" __global__ void __launch_bounds__(256) qkrotary_forward_pair_bf16_v(const QkPair p, const float* cos_t, const float* sin_t,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, float eps) {
  forward_v<unsigned short>(pick2(p.x), pick2(p.w), cos_t, sin_t, pick2(p.out), rows, t_len, heads, d, sb, st, sh, eps);
}
extern "C" __global__ void __launch_bounds__(256) qkrotary_backward_pair_bf16_v(const QkPair p, const float* cos_t, const float* sin_t, float* dw_partial,
    long long rows, int t_len, int heads, int d, long long sb, long long st, long long sh, long long gb, long long gt, long long gh, float eps) {
  backward_v<unsigned short>(pick2(p.x), pick2(p.w), cos_t, sin_t, pick2(p.dy), pick2(p.out),
      dw_partial == 0 ? 0 : dw_partial + (long long)blockIdx.y * gridDim.x * d, rows, t_len, heads, d, sb, st, sh, gb, gt, gh, eps);
}

// AdamW over the flat buffers in two launches and no host sync (the semantics of FlatAdamW):
//   adamw_norm:   per-block partial sums of g^2 (fp32); the last block to finish reduces them in a
//                 fixed order and writes the step's scalars: pre-clip norm, clip scale, finite flag,
//                 bias corrections; it counts the step (only when finite) and records the first
//                 non-finite step.
//   adamw_update: reads those scalars; a non-finite step returns at once (moments frozen, no
//                 update); else moments, decoupled weight decay on [0, decay_count), fp32 master
//                 update, and the bf16 parameter copy (round to nearest even).
// Compiled by NVRTC with no headers: bf16 is an unsigned short. Indices are 64-bit, loops grid-stride.
// With `vec` (the host sets it when every buffer starts on 16 bytes) both kernels move 16 bytes per
// access (4 fp32 of master and moments, 4 or 8 gradients), then finish the last elements one by one:
// the update moves 28 bytes per bf16-trained parameter, so it runs at the memory's speed only so.
// Block size: 256 threads (BLOCK) for both; adamw_norm's grid is at most MAX_PARTS blocks.

#define BLOCK 256
#define MAX_PARTS 1024

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(unsigned short v) { return __uint_as_float(((unsigned int)v) << 16); }

__device__ __forceinline__ unsigned short to_bf16(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

__device__ __forceinline__ bool finite(float v) { return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u; }

// 16 bytes: 4 fp32, or 8 bf16 (element 2j in the low half of word j: little-endian); 8 bytes: 4 bf16
struct alignas(16) F4 { float x[4]; };
struct alignas(8) H4 { unsigned int w[2]; };
__device__ __forceinline__ float bf16_at(unsigned int w, int high) { return __uint_as_float(high ? (w & 0xffff0000u) : (w << 16)); }
// 4 gradients starting at element i (a multiple of 4)
__device__ __forceinline__ void load4(const float* g, long long i, float out[4]) {
  const F4 r = *(const F4*)(g + i);
  for (int j = 0; j < 4; ++j) out[j] = r.x[j];
}
__device__ __forceinline__ void load4(const unsigned short* g, long long i, float out[4]) {
  const H4 r = *(const H4*)(g + i);
  for (int j = 0; j < 4; ++j) out[j] = bf16_at(r.w[j >> 1], j & 1);
}
// the sum of squares of the 16 bytes at vector q (4 fp32 or 8 bf16 gradients)
__device__ __forceinline__ float squares16(const float* g, long long q) {
  const F4 r = *(const F4*)(g + q * 4);
  return r.x[0] * r.x[0] + r.x[1] * r.x[1] + r.x[2] * r.x[2] + r.x[3] * r.x[3];
}
__device__ __forceinline__ float squares16(const unsigned short* g, long long q) {
  const F4 r = *(const F4*)(g + q * 8);
  float s = 0.f;
  for (int j = 0; j < 8; ++j) {
    const float x = bf16_at(__float_as_uint(r.x[j >> 1]), j & 1);
    s += x * x;
  }
  return s;
}

// The sum over the block in a fixed order; every thread gets it. red: BLOCK / 32 floats.
__device__ __forceinline__ float block_sum(float v, float* red) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < (int)(blockDim.x >> 5); ++w) s += red[w];
  __syncthreads();
  return s;
}

// scalars: [0] clip scale, [1] 1 when finite else 0, [2] 1 - beta1^t, [3] 1 - beta2^t (t = finite steps so far, at least 1)
template <typename G>
__device__ void norm(const G* grads, long long n, float* partials, unsigned int* counter, float* norm_out, float* scalars,
                     double* steps, long long* first_bad, long long step_index, float clip, double beta1, double beta2, int vec) {
  __shared__ float red[BLOCK / 32];
  __shared__ bool last;
  float s = 0.f;   // a non-finite g makes the sum, so the norm, non-finite
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long per = 16 / sizeof(G), nv = vec ? n / per : 0;
  for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < nv; q += stride) s += squares16(grads, q);
  for (long long i = nv * per + (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = to_float(grads[i]);
    s += g * g;
  }
  s = block_sum(s, red);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = s;
    __threadfence();   // the partial is visible before the count says so
    last = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  float t = 0.f;
  for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) t += ((volatile float*)partials)[b];
  t = block_sum(t, red);
  if (threadIdx.x == 0) {
    const float norm2 = sqrtf(t);
    const bool ok = finite(norm2);
    // as FlatAdamW: scale = min(1, clip / (norm + 1e-6)) when clipping, 0 when not finite
    float scale = clip > 0.f ? fminf(1.f, clip / (norm2 + 1e-6f)) : 1.f;
    if (!ok) scale = 0.f;
    const double count = *steps + (ok ? 1.0 : 0.0);
    *steps = count;
    if (!ok && *first_bad < 0) *first_bad = step_index;
    const double tt = count < 1.0 ? 1.0 : count;
    *norm_out = norm2;
    scalars[0] = scale;
    scalars[1] = ok ? 1.f : 0.f;
    scalars[2] = 1.f - (float)pow(beta1, tt);
    scalars[3] = 1.f - (float)pow(beta2, tt);
    *counter = 0u;   // ready for the next step (kernels on one stream never overlap)
  }
}

// one parameter: moments, decoupled decay, master update; g already scaled by the clip
__device__ __forceinline__ void adam(float g, float& m, float& v, float& p, bool decay, float beta1, float beta2, float eps,
                                     float decay_factor, float bc2, float step_size) {
  m = m * beta1 + g * (1.f - beta1);
  v = v * beta2 + g * (g * (1.f - beta2));
  if (decay) p *= decay_factor;
  const float denom = sqrtf(v / bc2) + eps;
  p -= (m / denom) * step_size;
}

template <typename G>
__device__ void update(const G* grads, float* master, float* m, float* v, unsigned short* params, long long n, long long decay_count,
                       const float* scalars, float lr, float beta1, float beta2, float eps, float decay_factor, int vec) {
  if (scalars[1] == 0.f) return;   // not finite: nothing changes
  const float scale = scalars[0], bc1 = scalars[2], bc2 = scalars[3];
  const float step_size = lr / bc1;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const long long nv = vec ? n / 4 : 0;
  for (long long q = (long long)blockIdx.x * blockDim.x + threadIdx.x; q < nv; q += stride) {
    const long long i = q * 4;
    float g[4];
    load4(grads, i, g);
    F4 mi = *(const F4*)(m + i), vi = *(const F4*)(v + i), pi = *(const F4*)(master + i);
    for (int j = 0; j < 4; ++j)
      adam(g[j] * scale, mi.x[j], vi.x[j], pi.x[j], i + j < decay_count, beta1, beta2, eps, decay_factor, bc2, step_size);
    *(F4*)(m + i) = mi;
    *(F4*)(v + i) = vi;
    *(F4*)(master + i) = pi;
    if (params != 0) {
      H4 h;
      for (int j = 0; j < 2; ++j) h.w[j] = (unsigned int)to_bf16(pi.x[2 * j]) | ((unsigned int)to_bf16(pi.x[2 * j + 1]) << 16);
      *(H4*)(params + i) = h;
    }
  }
  for (long long i = nv * 4 + (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    float mi = m[i], vi = v[i], p = master[i];
    adam(to_float(grads[i]) * scale, mi, vi, p, i < decay_count, beta1, beta2, eps, decay_factor, bc2, step_size);
    m[i] = mi;
    v[i] = vi;
    master[i] = p;
    if (params != 0) params[i] = to_bf16(p);
  }
}

extern "C" __global__ void adamw_norm_f32(const float* grads, long long n, float* partials, unsigned int* counter, float* norm_out, float* scalars,
                                          double* steps, long long* first_bad, long long step_index, float clip, double beta1, double beta2, int vec) {
  norm<float>(grads, n, partials, counter, norm_out, scalars, steps, first_bad, step_index, clip, beta1, beta2, vec);
}
extern "C" __global__ void adamw_norm_bf16(const unsigned short* grads, long long n, float* partials, unsigned int* counter, float* norm_out, float* scalars,
                                           double* steps, long long* first_bad, long long step_index, float clip, double beta1, double beta2, int vec) {
  norm<unsigned short>(grads, n, partials, counter, norm_out, scalars, steps, first_bad, step_index, clip, beta1, beta2, vec);
}
extern "C" __global__ void adamw_update_f32(const float* grads, float* master, float* m, float* v, unsigned short* params, long long n, long long decay_count,
                                            const float* scalars, float lr, float beta1, float beta2, float eps, float decay_factor, int vec) {
  update<float>(grads, master, m, v, params, n, decay_count, scalars, lr, beta1, beta2, eps, decay_factor, vec);
}
extern "C" __global__ void adamw_update_bf16(const unsigned short* grads, float* master, float* m, float* v, unsigned short* params, long long n, long long decay_count,
                                             const float* scalars, float lr, float beta1, float beta2, float eps, float decay_factor, int vec) {
  update<unsigned short>(grads, master, m, v, params, n, decay_count, scalars, lr, beta1, beta2, eps, decay_factor, vec);
}

// AdamW over the flat buffers in two launches and no host sync (the semantics of FlatAdamW):
//   adamw_norm:   per-block partial sums of g^2 (fp32); the last block to finish reduces them in a
//                 fixed order and writes the step's scalars: pre-clip norm, clip scale, finite flag,
//                 bias corrections; it counts the step (only when finite) and records the first
//                 non-finite step.
//   adamw_update: reads those scalars; a non-finite step returns at once (moments frozen, no
//                 update); else moments, decoupled weight decay on [0, decay_count), fp32 master
//                 update, and the bf16 parameter copy (round to nearest even).
// Compiled by NVRTC with no headers: bf16 is an unsigned short. Indices are 64-bit, loops grid-stride.
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
                     double* steps, long long* first_bad, long long step_index, float clip, double beta1, double beta2) {
  __shared__ float red[BLOCK / 32];
  __shared__ bool last;
  float s = 0.f;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float g = to_float(grads[i]);
    s += g * g;   // a non-finite g makes the sum, so the norm, non-finite
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

template <typename G>
__device__ void update(const G* grads, float* master, float* m, float* v, unsigned short* params, long long n, long long decay_count,
                       const float* scalars, float lr, float beta1, float beta2, float eps, float decay_factor) {
  if (scalars[1] == 0.f) return;   // not finite: nothing changes
  const float scale = scalars[0], bc1 = scalars[2], bc2 = scalars[3];
  const float step_size = lr / bc1;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float g = to_float(grads[i]) * scale;
    const float mi = m[i] * beta1 + g * (1.f - beta1);
    const float vi = v[i] * beta2 + g * (g * (1.f - beta2));
    float p = master[i];
    if (i < decay_count) p *= decay_factor;
    const float denom = sqrtf(vi / bc2) + eps;
    p -= (mi / denom) * step_size;
    m[i] = mi;
    v[i] = vi;
    master[i] = p;
    if (params != 0) params[i] = to_bf16(p);
  }
}

extern "C" __global__ void adamw_norm_f32(const float* grads, long long n, float* partials, unsigned int* counter, float* norm_out, float* scalars,
                                          double* steps, long long* first_bad, long long step_index, float clip, double beta1, double beta2) {
  norm<float>(grads, n, partials, counter, norm_out, scalars, steps, first_bad, step_index, clip, beta1, beta2);
}
extern "C" __global__ void adamw_norm_bf16(const unsigned short* grads, long long n, float* partials, unsigned int* counter, float* norm_out, float* scalars,
                                           double* steps, long long* first_bad, long long step_index, float clip, double beta1, double beta2) {
  norm<unsigned short>(grads, n, partials, counter, norm_out, scalars, steps, first_bad, step_index, clip, beta1, beta2);
}
extern "C" __global__ void adamw_update_f32(const float* grads, float* master, float* m, float* v, unsigned short* params, long long n, long long decay_count,
                                            const float* scalars, float lr, float beta1, float beta2, float eps, float decay_factor) {
  update<float>(grads, master, m, v, params, n, decay_count, scalars, lr, beta1, beta2, eps, decay_factor);
}
extern "C" __global__ void adamw_update_bf16(const unsigned short* grads, float* master, float* m, float* v, unsigned short* params, long long n, long long decay_count,
                                             const float* scalars, float lr, float beta1, float beta2, float eps, float decay_factor) {
  update<unsigned short>(grads, master, m, v, params, n, decay_count, scalars, lr, beta1, beta2, eps, decay_factor);
}

// The MUDD multiway mixing, forward and backward, fp32 inside.
// Compiled by NVRTC with no headers: bf16 is an unsigned short (the high half of an fp32), and
// every kernel is extern "C" so the host finds it by its plain name.
//
//   forward:  out_c[t, :] = Σ_j w[c, t, j] · h_j[t, :]                     c < C, j < L
//             with a bias b (C, L) (MUDDFormer's dense_bs, DenseFormer's α): w[c, t, j] = dw[c, t, j] + b[c, j],
//             rounded to T as the separate add was; dw may be null (the bias alone: DenseFormer)
//   backward: gh_j[t, :] (+)= Σ_c w[c, t, j] · g_c[t, :]                    (+= where bit j of addmask)
//                           [+ Σ_c w2[c, t, j] · g2_c[t, :]]                (the _p kernels: a deferred mix)
//                           only where bit j of writemask is set (the rest is left as it is)
//             gw[c, t, j]   = Σ_d g_c[t, d] · h_j[t, d]                     every j
// A mix whose gradients for its first hiddens are deferred (writemask without those bits) hands its
// stream gradients g2 and weights w2 (C2, tokens, L2) to the next mix in backward, which adds them with
// its own in the same pass over gh_j: each gh_j is read and written once for two mixes.
// t runs over the tokens (B·T); h_j, out_c, g_c, gh_j are separate (tokens, D) tensors whose
// addresses come by value in a MixTable (no stack of the hiddens); w and gw are (C, tokens, L), gw in fp32
// (a per-token sum over D: DenseFormer's weights sum it again over the tokens, and one rounding to bf16 per
// token before that sum cost up to 1% of dalpha where the tokens cancel).
//
// Layout: block (TPR, RPB): TPR threads per token (a multiple of 32), RPB tokens per block. A thread
// owns one chunk of V consecutive columns, col = threadIdx.x * V, so D <= TPR * V (the host checks).
// V = 16 bytes of T (8 bf16 or 4 fp32: one vector load) when D % V == 0, every row is 16-byte aligned
// and TPR <= 256 (the _v kernels: __launch_bounds__(256) leaves registers for the C x V fp32 stream
// gradients a thread holds in backward; D <= 2048 in bf16); else V = 1 with TPR <= 1024 (D <= 1024).
// Blocks walk the tokens grid-stride; indices are 64-bit.
// Dynamic shared memory: the token's C·L weights as fp32 (RPB · C · L floats), and in backward one
// partial of each gw[c, t, j] per warp (RPB · TPR/32 · C · L floats), then for the _p kernels the deferred
// weights (RPB · C2 · L2 floats); static: the MixTable (1184 bytes).
// mix_bias_grad_*: the bias's gradient Σ_t gw[c, t, j] (per-block partials, summed by the last block in block order:
// deterministic) and gw in T for the dynamic weights' own gradient, in one pass over gw.

#define MIX_MAX_INPUTS 64
#ifndef MIX_UNROLL   // hiddens in flight per thread (docs/benchmarks/kernel-bench times other values)
#define MIX_UNROLL 2
#endif
constexpr int kMixUnroll = MIX_UNROLL;   // #pragma unroll takes a constant, not a macro
#define MIX_MAX_STREAMS 4

#ifndef MIX_DYNAMIC_SHARED
#define MIX_DYNAMIC_SHARED(name) extern __shared__ float name[]
#endif

// Kernel parameter, by value (1.1 KB of the 4 KB CUDA allows): unused slots are null. Staged into
// shared memory (stage_table) before use.
template <typename T>
struct MixTable {
  const T* h[MIX_MAX_INPUTS];    // hiddens h_0..h_{L-1}
  T* gh[MIX_MAX_INPUTS];         // backward: the hiddens' gradients
  const T* g[MIX_MAX_STREAMS];   // backward: the streams' gradients
  T* out[MIX_MAX_STREAMS];       // forward: the streams
  const T* g2[MIX_MAX_STREAMS];  // backward (_p kernels): the deferred mix's streams' gradients
  // Strides in elements over (stream, token) of w, of the deferred w2 and of gw; 0: contiguous (C, tokens, L), i.e. tokens·L
  // and L. MUDDFormer's weights arrive as a (C, B, T, L) view of the dynamic-dense output (B, T, C·L): read in place, and
  // gw written in that layout, neither needs a copy (a strided 4.6 us kernel each way a layer).
  long long ws[2], w2s[2], gws[2];
  const T* b;    // the bias (C, L) contiguous, or null
  const T* b2;   // the deferred mix's bias (C2, L2), or null
};

// The kernels index the table with a run-time j. A dynamically indexed kernel parameter is copied
// to local memory by each thread (1 KB a thread); one thread of each block copies it with constant
// indices into shared memory instead, and the loops read the pointers from there.
template <typename T>
__device__ __forceinline__ void stage_table(const MixTable<T>& tab, MixTable<T>& st) {
  if (threadIdx.x == 0 && threadIdx.y == 0) {
#pragma unroll
    for (int i = 0; i < MIX_MAX_INPUTS; ++i) { st.h[i] = tab.h[i]; st.gh[i] = tab.gh[i]; }
#pragma unroll
    for (int i = 0; i < MIX_MAX_STREAMS; ++i) { st.g[i] = tab.g[i]; st.out[i] = tab.out[i]; st.g2[i] = tab.g2[i]; }
#pragma unroll
    for (int i = 0; i < 2; ++i) { st.ws[i] = tab.ws[i]; st.w2s[i] = tab.w2s[i]; st.gws[i] = tab.gws[i]; }
    st.b = tab.b;
    st.b2 = tab.b2;
  }
  __syncthreads();
}

struct alignas(16) Raw16 { unsigned int u[4]; };

__device__ __forceinline__ float mix_to_float(float v) { return v; }
__device__ __forceinline__ float mix_to_float(unsigned short v) { return __uint_as_float(((unsigned int)v) << 16); }

// fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN, as torch does
__device__ __forceinline__ unsigned short mix_to_bf16(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

// v rounded to what T holds: dw + b as the separate add in T rounded it
__device__ __forceinline__ float mix_round(float v, const float*) { return v; }
__device__ __forceinline__ float mix_round(float v, const unsigned short*) { return mix_to_float(mix_to_bf16(v)); }

__device__ __forceinline__ void mix_store1(float* p, float v) { *p = v; }
__device__ __forceinline__ void mix_store1(unsigned short* p, float v) { *p = mix_to_bf16(v); }

// V columns at p into fp32: one 16-byte load when V fills 16 bytes, else V scalar loads
template <int V> __device__ __forceinline__ void load_chunk(const float* p, float (&v)[V]) {
  if (V * 4 == 16) {
    const Raw16 r = *reinterpret_cast<const Raw16*>(p);
#pragma unroll
    for (int k = 0; k < 4 && k < V; ++k) v[k] = __uint_as_float(r.u[k]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = p[k];
  }
}
template <int V> __device__ __forceinline__ void load_chunk(const unsigned short* p, float (&v)[V]) {
  if (V * 2 == 16) {
    const Raw16 r = *reinterpret_cast<const Raw16*>(p);
#pragma unroll
    for (int k = 0; k < 4 && 2 * k + 1 < V; ++k) {
      v[2 * k] = __uint_as_float(r.u[k] << 16);               // little-endian: the lower column is the low half
      v[2 * k + 1] = __uint_as_float(r.u[k] & 0xffff0000u);
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = mix_to_float(p[k]);
  }
}
template <int V> __device__ __forceinline__ void store_chunk(float* p, const float (&v)[V]) {
  if (V * 4 == 16) {
    Raw16 r;
#pragma unroll
    for (int k = 0; k < 4 && k < V; ++k) r.u[k] = __float_as_uint(v[k]);
    *reinterpret_cast<Raw16*>(p) = r;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[k] = v[k];
  }
}
// Two fp32 -> a bf16 pair (lo in the low half), round to nearest even: one cvt on sm_80 and later (its NaN is 0x7fff, not
// torch's 0x7fc0: a NaN either way), two software roundings elsewhere (the CPU emulation)
__device__ __forceinline__ unsigned int mix_pack2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  unsigned int r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return (unsigned int)mix_to_bf16(lo) | ((unsigned int)mix_to_bf16(hi) << 16);
#endif
}

template <int V> __device__ __forceinline__ void store_chunk(unsigned short* p, const float (&v)[V]) {
  if (V * 2 == 16) {
    Raw16 r;
#pragma unroll
    for (int k = 0; k < 4 && 2 * k + 1 < V; ++k) r.u[k] = mix_pack2(v[2 * k], v[2 * k + 1]);
    *reinterpret_cast<Raw16*>(p) = r;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) mix_store1(p + k, v[k]);
  }
}

__device__ __forceinline__ float mix_warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The warp sums of N values at once, transposed: each step a lane keeps half of what it holds and sends
// the other half to its partner, so N = 4 takes 6 shuffles (20 as four mix_warp_sum). The backward's
// per-token dot products were bound by shuffles (kernel-bench: N = 8, two hiddens at once, gained
// nothing more). Lane i ends with the sum of v[(i >> (5 - log2 N)) & (N - 1)].
template <int N, int Offset = 16>
__device__ __forceinline__ float mix_warp_sums(const float (&v)[N], int lane) {
  if constexpr (N == 1) {
    float k = v[0];
#pragma unroll
    for (int o = Offset; o > 0; o >>= 1) k += __shfl_xor_sync(0xffffffffu, k, o);
    return k;
  } else {
    constexpr int half = N / 2;
    const bool hi = lane & Offset;
    float keep[half];
#pragma unroll
    for (int i = 0; i < half; ++i) keep[i] = (hi ? v[i + half] : v[i]) + __shfl_xor_sync(0xffffffffu, hi ? v[i] : v[i + half], Offset);
    return mix_warp_sums<half, Offset / 2>(keep, lane);
  }
}

// V elements of T as stored (16 bytes: one vector load in the _v kernels), unpacked to fp32 where used
template <typename T, int V> struct alignas(V * sizeof(T) == 16 ? 16 : sizeof(T)) RawChunk { T v[V]; };
template <typename T, int V> __device__ __forceinline__ void load_raw(const T* p, RawChunk<T, V>& r) {
  if constexpr (V * sizeof(T) == 16) *reinterpret_cast<Raw16*>(r.v) = *reinterpret_cast<const Raw16*>(p);
  else {
#pragma unroll
    for (int k = 0; k < V; ++k) r.v[k] = p[k];
  }
}
template <typename T, int V> __device__ __forceinline__ void unpack(const RawChunk<T, V>& r, float (&f)[V]) {
#pragma unroll
  for (int k = 0; k < V; ++k) f[k] = mix_to_float(r.v[k]);
}

// Element (c, row, j) of a (C, tokens, L) tensor with strides s over (stream, token) (0: contiguous) and unit stride over j.
__device__ __forceinline__ long long at(const long long (&s)[2], int c, long long row, int j, long long tokens, int l) {
  return (long long)c * (s[0] ? s[0] : tokens * l) + row * (s[1] ? s[1] : l) + j;
}

// The token's weights w[c, row, j] (+ b[c, j]) into sw[c * l + j] as fp32 (the token's TPR threads share the copy).
template <typename T>
__device__ __forceinline__ void load_weights(const T* w, const long long (&s)[2], const T* b, float* sw, long long row, long long tokens, int nc, int l) {
  for (int i = threadIdx.x; i < nc * l; i += blockDim.x) {
    const int c = i / l, j = i - c * l;
    const float v = w ? mix_to_float(w[at(s, c, row, j, tokens, l)]) : 0.f;
    sw[i] = !b ? v : w ? mix_round(v + mix_to_float(b[i]), b) : mix_to_float(b[i]);
  }
}

template <typename T, int V>
__device__ void mix_forward(const MixTable<T>& tab, const T* w, long long tokens, int nc, int l, int d) {
  MIX_DYNAMIC_SHARED(smem);
  const int cl = nc * l;
  float* sw = smem + threadIdx.y * cl;
  const int col = threadIdx.x * V;
  for (long long base = (long long)blockIdx.x * blockDim.y; base < tokens; base += (long long)gridDim.x * blockDim.y) {
    const long long row = base + threadIdx.y;
    const bool valid = row < tokens;
    if (valid) load_weights(w, tab.ws, tab.b, sw, row, tokens, nc, l);
    __syncthreads();
    if (valid && col < d) {
      const long long offset = row * d + col;
      float acc[MIX_MAX_STREAMS][V];
#pragma unroll
      for (int c = 0; c < MIX_MAX_STREAMS; ++c)
#pragma unroll
        for (int k = 0; k < V; ++k) acc[c][k] = 0.f;
#pragma unroll kMixUnroll
      for (int j = 0; j < l; ++j) {
        float h[V];
        load_chunk<V>(tab.h[j] + offset, h);
#pragma unroll
        for (int c = 0; c < MIX_MAX_STREAMS; ++c) {
          if (c < nc) {
            const float wcj = sw[c * l + j];
#pragma unroll
            for (int k = 0; k < V; ++k) acc[c][k] += wcj * h[k];
          }
        }
      }
#pragma unroll
      for (int c = 0; c < MIX_MAX_STREAMS; ++c)
        if (c < nc) store_chunk<V>(tab.out[c] + offset, acc[c]);
    }
    __syncthreads();   // sw is rewritten for the next token
  }
}

static_assert(MIX_MAX_STREAMS == 4, "the backward's transposed sums take four streams");

// Pending: a deferred mix's gradients g2 (nc2 streams) and weights w2 (nc2, tokens, l2) are added too.
template <typename T, int V, bool Pending>
__device__ void mix_backward(const MixTable<T>& tab, const T* w, float* gw, long long tokens, int nc, int l, int d, unsigned long long addmask,
                             unsigned long long writemask, const T* w2, int nc2, int l2) {
  MIX_DYNAMIC_SHARED(smem);
  const int cl = nc * l, cl2 = Pending ? nc2 * l2 : 0;
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* sw = smem + threadIdx.y * cl;
  float* red = smem + blockDim.y * cl + threadIdx.y * warps * cl;   // red[warp * cl + c * l + j]
  float* sw2 = smem + blockDim.y * (cl + warps * cl) + threadIdx.y * cl2;
  const int col = threadIdx.x * V;
  for (long long base = (long long)blockIdx.x * blockDim.y; base < tokens; base += (long long)gridDim.x * blockDim.y) {
    const long long row = base + threadIdx.y;
    const bool valid = row < tokens;
    const bool mine = valid && col < d;   // this thread has columns (the others add zeros to the sums)
    const long long offset = (valid ? row : 0) * d + col;
    if (valid) load_weights(w, tab.ws, tab.b, sw, row, tokens, nc, l);
    if (Pending && valid) load_weights(w2, tab.w2s, tab.b2, sw2, row, tokens, nc2, l2);   // Pending: (nc2, tokens, l2)
    __syncthreads();
    // The stream gradients stay as stored (bf16: half the registers of fp32) for the whole token: the
    // registers they leave free keep more warps resident, and each use unpacks them (kernel-bench: held in fp32, 74
    // registers instead of 56, the deferring kernel ran 17% slower). Two chunks of 8 columns a thread (64 threads a token, half
    // the warp sums) ran slower too: the deferring kernel by 4-32%, the pending one by 49-58%.
    RawChunk<T, V> g[MIX_MAX_STREAMS], g2[Pending ? MIX_MAX_STREAMS : 1];
#pragma unroll
    for (int c = 0; c < MIX_MAX_STREAMS; ++c) {
      if (mine && c < nc) load_raw(tab.g[c] + offset, g[c]);
      else g[c] = RawChunk<T, V>{};
      if constexpr (Pending) {
        if (mine && c < nc2) load_raw(tab.g2[c] + offset, g2[c]);
        else g2[c] = RawChunk<T, V>{};
      }
    }
    // h_{j+1} and the old gh_{j+1} are loaded before gh_j is stored: the compiler cannot know that gh_j
    // aliases neither (separate tensors), so only this order keeps two hiddens' loads in flight.
    RawChunk<T, V> hn{}, on{};
    if (mine && l > 0) {
      load_raw(tab.h[0] + offset, hn);
      if ((writemask & addmask) & 1ull) load_raw(tab.gh[0] + offset, on);
    }
    // Without a deferred mix, h_{j+2} is in flight as well (kernel-bench: 4-5% faster); the pending kernel has no
    // registers to spare for it (106 -> 112, 3% slower).
    constexpr bool ahead2 = !Pending;
    RawChunk<T, V> hn2{};
    if (ahead2 && mine && l > 1) load_raw(tab.h[1] + offset, hn2);
    for (int j = 0; j < l; ++j) {
      const RawChunk<T, V> hr = hn, orr = on;
      if constexpr (ahead2) {
        hn = hn2;
        if (mine && j + 2 < l) load_raw(tab.h[j + 2] + offset, hn2);
      } else if (mine && j + 1 < l) {
        load_raw(tab.h[j + 1] + offset, hn);
      }
      if (mine && j + 1 < l && (((writemask & addmask) >> (j + 1)) & 1ull)) load_raw(tab.gh[j + 1] + offset, on);
      float h[V];
      unpack(hr, h);
      float dot[MIX_MAX_STREAMS];
      // uniform over the warp in the pending kernel (its threads without columns compute zeros and store nothing)
      const bool write = (Pending || mine) && ((writemask >> j) & 1ull);
      if (write) {
        float gh[V];
        if ((addmask >> j) & 1ull) unpack(orr, gh);
        else {
#pragma unroll
          for (int k = 0; k < V; ++k) gh[k] = 0.f;
        }
#pragma unroll
        for (int c = 0; c < MIX_MAX_STREAMS; ++c) {
          float gc[V];
          unpack(g[c], gc);
          // the pending kernel unpacks each stream gradient once for its part of gh_j and its dot product with h_j (kernel-bench:
          // 6-7% faster); in the other the dots' registers here would cost it a block an SM (55 -> 69 registers, 17% slower)
          if constexpr (Pending) {
            dot[c] = 0.f;
#pragma unroll
            for (int k = 0; k < V; ++k) dot[c] += gc[k] * h[k];
          }
          if (c < nc) {
            const float wcj = sw[c * l + j];
#pragma unroll
            for (int k = 0; k < V; ++k) gh[k] += wcj * gc[k];
          }
        }
        if constexpr (Pending) {
          if (j < l2) {
#pragma unroll
            for (int c = 0; c < MIX_MAX_STREAMS; ++c) {
              if (c < nc2) {
                const float wcj = sw2[c * l2 + j];
                float gc[V];
                unpack(g2[c], gc);
#pragma unroll
                for (int k = 0; k < V; ++k) gh[k] += wcj * gc[k];
              }
            }
          }
        }
        if (mine) store_chunk<V>(tab.gh[j] + offset, gh);
      }
      if (!Pending || !write) {
        // uniform: every lane of the warp sums (h and g are zero where a thread has no columns, and in the streams past nc)
#pragma unroll
        for (int c = 0; c < MIX_MAX_STREAMS; ++c) {
          float gc[V];
          unpack(g[c], gc);
          dot[c] = 0.f;
#pragma unroll
          for (int k = 0; k < V; ++k) dot[c] += gc[k] * h[k];
        }
      }
      if (nc == 1) {
        const float s = mix_warp_sum(dot[0]);
        if (lane == 0) red[warp * cl + j] = s;
      } else {
        const float s = mix_warp_sums<4>(dot, lane);
        const int c = lane >> 3;
        if ((lane & 7) == 0 && c < nc) red[warp * cl + c * l + j] = s;
      }
    }
    __syncthreads();
    if (valid) {
      for (int i = threadIdx.x; i < cl; i += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < warps; ++k) s += red[k * cl + i];
        const int c = i / l, j = i - c * l;
        mix_store1(gw + at(tab.gws, c, row, j, tokens, l), s);
      }
    }
    __syncthreads();   // sw and red are rewritten for the next token
  }
}

extern "C" __global__ void __launch_bounds__(1024) mix_forward_f32(const MixTable<float> tab, const float* w, long long tokens, int nc, int l, int d) {
  __shared__ MixTable<float> st;
  stage_table(tab, st);
  mix_forward<float, 1>(st, w, tokens, nc, l, d);
}
extern "C" __global__ void __launch_bounds__(256) mix_forward_f32_v(const MixTable<float> tab, const float* w, long long tokens, int nc, int l, int d) {
  __shared__ MixTable<float> st;
  stage_table(tab, st);
  mix_forward<float, 4>(st, w, tokens, nc, l, d);
}
extern "C" __global__ void __launch_bounds__(1024) mix_forward_bf16(const MixTable<unsigned short> tab, const unsigned short* w, long long tokens, int nc, int l, int d) {
  __shared__ MixTable<unsigned short> st;
  stage_table(tab, st);
  mix_forward<unsigned short, 1>(st, w, tokens, nc, l, d);
}
extern "C" __global__ void __launch_bounds__(256) mix_forward_bf16_v(const MixTable<unsigned short> tab, const unsigned short* w, long long tokens, int nc, int l, int d) {
  __shared__ MixTable<unsigned short> st;
  stage_table(tab, st);
  mix_forward<unsigned short, 8>(st, w, tokens, nc, l, d);
}
extern "C" __global__ void __launch_bounds__(1024) mix_backward_f32(const MixTable<float> tab, const float* w, float* gw, long long tokens, int nc, int l, int d,
    unsigned long long addmask, unsigned long long writemask, const float* w2, int nc2, int l2) {
  __shared__ MixTable<float> st;
  stage_table(tab, st);
  mix_backward<float, 1, false>(st, w, gw, tokens, nc, l, d, addmask, writemask, w2, nc2, l2);
}
extern "C" __global__ void __launch_bounds__(1024) mix_backward_p_f32(const MixTable<float> tab, const float* w, float* gw, long long tokens, int nc, int l, int d,
    unsigned long long addmask, unsigned long long writemask, const float* w2, int nc2, int l2) {
  __shared__ MixTable<float> st;
  stage_table(tab, st);
  mix_backward<float, 1, true>(st, w, gw, tokens, nc, l, d, addmask, writemask, w2, nc2, l2);
}
extern "C" __global__ void __launch_bounds__(256) mix_backward_f32_v(const MixTable<float> tab, const float* w, float* gw, long long tokens, int nc, int l, int d,
    unsigned long long addmask, unsigned long long writemask, const float* w2, int nc2, int l2) {
  __shared__ MixTable<float> st;
  stage_table(tab, st);
  mix_backward<float, 4, false>(st, w, gw, tokens, nc, l, d, addmask, writemask, w2, nc2, l2);
}
extern "C" __global__ void __launch_bounds__(256) mix_backward_p_f32_v(const MixTable<float> tab, const float* w, float* gw, long long tokens, int nc, int l, int d,
    unsigned long long addmask, unsigned long long writemask, const float* w2, int nc2, int l2) {
  __shared__ MixTable<float> st;
  stage_table(tab, st);
  mix_backward<float, 4, true>(st, w, gw, tokens, nc, l, d, addmask, writemask, w2, nc2, l2);
}
extern "C" __global__ void __launch_bounds__(1024) mix_backward_bf16(const MixTable<unsigned short> tab, const unsigned short* w, float* gw, long long tokens, int nc, int l, int d,
    unsigned long long addmask, unsigned long long writemask, const unsigned short* w2, int nc2, int l2) {
  __shared__ MixTable<unsigned short> st;
  stage_table(tab, st);
  mix_backward<unsigned short, 1, false>(st, w, gw, tokens, nc, l, d, addmask, writemask, w2, nc2, l2);
}
extern "C" __global__ void __launch_bounds__(1024) mix_backward_p_bf16(const MixTable<unsigned short> tab, const unsigned short* w, float* gw, long long tokens, int nc, int l, int d,
    unsigned long long addmask, unsigned long long writemask, const unsigned short* w2, int nc2, int l2) {
  __shared__ MixTable<unsigned short> st;
  stage_table(tab, st);
  mix_backward<unsigned short, 1, true>(st, w, gw, tokens, nc, l, d, addmask, writemask, w2, nc2, l2);
}
extern "C" __global__ void __launch_bounds__(256) mix_backward_bf16_v(const MixTable<unsigned short> tab, const unsigned short* w, float* gw, long long tokens, int nc, int l, int d,
    unsigned long long addmask, unsigned long long writemask, const unsigned short* w2, int nc2, int l2) {
  __shared__ MixTable<unsigned short> st;
  stage_table(tab, st);
  mix_backward<unsigned short, 8, false>(st, w, gw, tokens, nc, l, d, addmask, writemask, w2, nc2, l2);
}
// ptxas allocates differently with the minimum of one block an SM stated: 109 registers instead of 106 for this kernel,
// 2.6% faster (kernel-bench); the same for the kernel above took 69 instead of 54 registers and ran 7% slower. Three blocks
// an SM (72 registers, no spills) ran no faster: -0.8% at L 14, +2.5% at L 25.
extern "C" __global__ void __launch_bounds__(256, 1) mix_backward_p_bf16_v(const MixTable<unsigned short> tab, const unsigned short* w, float* gw, long long tokens, int nc, int l, int d,
    unsigned long long addmask, unsigned long long writemask, const unsigned short* w2, int nc2, int l2) {
  __shared__ MixTable<unsigned short> st;
  stage_table(tab, st);
  mix_backward<unsigned short, 8, true>(st, w, gw, tokens, nc, l, d, addmask, writemask, w2, nc2, l2);
}

// The bias's gradient and gw in T: dbias[i] (+)= Σ_t gw[t, i] and, where gw_out is given, gw_out[t, i] = gw[t, i] in T, for gw
// (tokens, n) fp32 with n = C·L ≤ 256 (the (B, T, C, L) layout mix_backward writes gw in, and the bias's (C, L) order).
// Each block sums a contiguous range of tokens: blockDim.x / n groups of n threads take every groups-th token, a thread one
// column (coalesced rows), MIX_BIAS_BATCH tokens' loads in flight before any store (gw_out might alias gw for all the
// compiler knows: a store between two loads serialises them); the groups add up in shared memory in group order, and the
// last block to finish sums the blocks' partials the same way. The order never depends on timing: deterministic sums.
#define MIX_BIAS_BLOCK 1024   // threads a block of mix_bias_grad_*: at least 4 groups for n ≤ 256
#define MIX_BIAS_BATCH 8
template <typename T>
__device__ void mix_bias_grad(const float* gw, T* gw_out, long long tokens, int n, float* partials, unsigned int* counter, T* dbias, int accumulate) {
  __shared__ float part[MIX_BIAS_BLOCK];
  __shared__ bool last;
  const int groups = blockDim.x / n, g = threadIdx.x / n, i = threadIdx.x - g * n;
  const long long per = (tokens + gridDim.x - 1) / gridDim.x, r0 = (long long)blockIdx.x * per;
  const long long r1 = r0 + per < tokens ? r0 + per : tokens;
  float s = 0.f;
  if (g < groups) {
    for (long long t0 = r0 + g; t0 < r1; t0 += (long long)groups * MIX_BIAS_BATCH) {
      float v[MIX_BIAS_BATCH];
#pragma unroll
      for (int u = 0; u < MIX_BIAS_BATCH; ++u) {
        const long long t = t0 + (long long)u * groups;
        v[u] = t < r1 ? gw[t * n + i] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < MIX_BIAS_BATCH; ++u) {
        const long long t = t0 + (long long)u * groups;
        s += v[u];
        if (gw_out && t < r1) mix_store1(gw_out + t * n + i, v[u]);
      }
    }
  }
  part[threadIdx.x] = s;
  __syncthreads();
  if ((int)threadIdx.x < n) {
    float p = 0.f;
    for (int k = 0; k < groups; ++k) p += part[k * n + threadIdx.x];
    partials[(long long)blockIdx.x * n + threadIdx.x] = p;
    __threadfence();   // the partial is visible before the count says so
  }
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  // the last block: group g sums blocks g, g + groups, ... (volatile: written by other blocks), then the groups in order
  s = 0.f;
  if (g < groups) {
    for (int k0 = g; k0 < (int)gridDim.x; k0 += groups * MIX_BIAS_BATCH) {
      float v[MIX_BIAS_BATCH];
#pragma unroll
      for (int u = 0; u < MIX_BIAS_BATCH; ++u) {
        const int k = k0 + u * groups;
        v[u] = k < (int)gridDim.x ? ((volatile float*)partials)[(long long)k * n + i] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < MIX_BIAS_BATCH; ++u) s += v[u];
    }
  }
  __syncthreads();   // part is rewritten
  part[threadIdx.x] = s;
  __syncthreads();
  if ((int)threadIdx.x < n) {
    float t = 0.f;
    for (int k = 0; k < groups; ++k) t += part[k * n + threadIdx.x];
    if (accumulate) t += mix_to_float(dbias[threadIdx.x]);
    mix_store1(dbias + threadIdx.x, t);
  }
  if (threadIdx.x == 0) *counter = 0u;   // ready for the next call (kernels on one stream never overlap)
}

extern "C" __global__ void __launch_bounds__(MIX_BIAS_BLOCK) mix_bias_grad_f32(const float* gw, float* gw_out, long long tokens, int n, float* partials,
    unsigned int* counter, float* dbias, int accumulate) {
  mix_bias_grad<float>(gw, gw_out, tokens, n, partials, counter, dbias, accumulate);
}
extern "C" __global__ void __launch_bounds__(MIX_BIAS_BLOCK) mix_bias_grad_bf16(const float* gw, unsigned short* gw_out, long long tokens, int n, float* partials,
    unsigned int* counter, unsigned short* dbias, int accumulate) {
  mix_bias_grad<unsigned short>(gw, gw_out, tokens, n, partials, counter, dbias, accumulate);
}

// SwiGLU's elementwise part, forward and backward, fp32 inside:
//   forward:  y = silu(a) * b                     with silu(a) = a * sigmoid(a)
//   backward: da = dy * b * sigmoid(a) * (1 + a * (1 - sigmoid(a))),  db = dy * silu(a)
// a = w1(x), b = w3(x): n elements each, contiguous, one dtype (fp32 or bf16 as an unsigned short).
// Grid-stride over vectors of 16 bytes (8 bf16 or 4 fp32) when every pointer is 16-byte aligned
// (the host checks and passes `vec`), else over single elements. Indices are 64-bit.
// Block: 256 threads.

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
// (our own 16-byte-aligned type rather than uint4: the sources rely on no NVRTC built-in header)
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

__device__ __forceinline__ float sigmoid(float a) { return 1.f / (1.f + expf(-a)); }

__device__ __forceinline__ float fwd(float a, float b) { return a * sigmoid(a) * b; }

__device__ __forceinline__ void bwd(float a, float b, float dy, float& da, float& db) {
  const float s = sigmoid(a);
  db = dy * a * s;
  da = dy * b * s * (1.f + a * (1.f - s));
}

template <typename T>
__device__ void forward(const T* a, const T* b, T* y, long long n, int vec) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long start = 0;
  if (vec) {
    const int per = 16 / sizeof(T);
    const long long nv = n / per;
    for (long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x; v < nv; v += stride) {
      const Words ra = load16(a + v * per), rb = load16(b + v * per);
      Words ry = {};
#pragma unroll
      for (int j = 0; j < 16 / (int)sizeof(T); ++j) pack(ry, j, fwd(unpack(ra, j, (T*)0), unpack(rb, j, (T*)0)), (T*)0);
      store16(y + v * per, ry);
    }
    start = nv * per;
  }
  for (long long i = start + (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    store(y, i, fwd(to_float(a[i]), to_float(b[i])));
}

template <typename T>
__device__ void backward(const T* a, const T* b, const T* dy, T* da, T* db, long long n, int vec) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  long long start = 0;
  if (vec) {
    const int per = 16 / sizeof(T);
    const long long nv = n / per;
    for (long long v = (long long)blockIdx.x * blockDim.x + threadIdx.x; v < nv; v += stride) {
      const Words ra = load16(a + v * per), rb = load16(b + v * per), rdy = load16(dy + v * per);
      Words rda = {}, rdb = {};
#pragma unroll
      for (int j = 0; j < 16 / (int)sizeof(T); ++j) {
        float ga, gb;
        bwd(unpack(ra, j, (T*)0), unpack(rb, j, (T*)0), unpack(rdy, j, (T*)0), ga, gb);
        pack(rda, j, ga, (T*)0);
        pack(rdb, j, gb, (T*)0);
      }
      store16(da + v * per, rda);
      store16(db + v * per, rdb);
    }
    start = nv * per;
  }
  for (long long i = start + (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    float ga, gb;
    bwd(to_float(a[i]), to_float(b[i]), to_float(dy[i]), ga, gb);
    store(da, i, ga);
    store(db, i, gb);
  }
}

extern "C" __global__ void __launch_bounds__(256) swiglu_forward_f32(const float* a, const float* b, float* y, long long n, int vec) {
  forward<float>(a, b, y, n, vec);
}
extern "C" __global__ void __launch_bounds__(256) swiglu_forward_bf16(const unsigned short* a, const unsigned short* b, unsigned short* y, long long n, int vec) {
  forward<unsigned short>(a, b, y, n, vec);
}
extern "C" __global__ void __launch_bounds__(256) swiglu_backward_f32(const float* a, const float* b, const float* dy, float* da, float* db, long long n, int vec) {
  backward<float>(a, b, dy, da, db, n, vec);
}
extern "C" __global__ void __launch_bounds__(256) swiglu_backward_bf16(const unsigned short* a, const unsigned short* b, const unsigned short* dy, unsigned short* da, unsigned short* db, long long n, int vec) {
  backward<unsigned short>(a, b, dy, da, db, n, vec);
}

// Runs DistTrain's CUDA kernel sources on the CPU for a correctness check without a GPU: one
// std::thread per CUDA thread, blocks one after another, __syncthreads as a block barrier and warp
// shuffles through a per-warp exchange. Slow and only for small shapes; it checks indexing,
// reductions and formulas, not timing, memory ordering between blocks or NVRTC itself.
#pragma once
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3 { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
// dynamic shared memory (extern __shared__ in a kernel): one buffer, as blocks run one after another
inline std::vector<float> dynamic_shared;
#define MIX_DYNAMIC_SHARED(name) float* name = dynamic_shared.data()

inline std::barrier<>* block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<float> warp_exchange;

inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned linear_thread() { return threadIdx.y * blockDim.x + threadIdx.x; }
inline float __shfl_xor_sync(unsigned, float v, int offset) {
  unsigned t = linear_thread(), warp = t / 32, lane = t % 32;
  auto& b = *warp_barriers[warp];
  warp_exchange[t] = v;
  b.arrive_and_wait();
  float other = warp_exchange[warp * 32 + (lane ^ offset)];
  b.arrive_and_wait();
  return other;
}
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
#include <math.h>   // sqrtf, fminf, pow as NVRTC has them
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }

// kernel(args...) over grid x block (grid.x, grid.y); blocks in order, every thread of a block concurrently
template <typename F>
void launch(dim3 grid, dim3 block, F kernel) {
  gridDim = grid; blockDim = block;
  unsigned n = block.x * block.y;
  std::barrier<> bar(n);
  block_barrier = &bar;
  warp_barriers.clear();
  for (unsigned w = 0; w < (n + 31) / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(n - w * 32 < 32 ? n - w * 32 : 32));
  warp_exchange.assign(n, 0.f);
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::vector<std::thread> threads;
      for (unsigned ty = 0; ty < block.y; ++ty)
        for (unsigned tx = 0; tx < block.x; ++tx)
          threads.emplace_back([=] { blockIdx = {bx, by, 0}; threadIdx = {tx, ty, 0}; kernel(); });
      for (auto& t : threads) t.join();
    }
}

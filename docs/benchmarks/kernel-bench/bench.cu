// Times DistTrain's memory-bound kernels on the 405M shapes (8 x 2048 tokens, D = 1024, bf16) with
// CUDA events, outside .NET: the same sources NVRTC compiles, built by nvcc with -D overrides of
// their tuning constants, so that variants can be compared in one run (run.sh builds one binary per
// variant). Prints microseconds per launch and the bandwidth of the bytes each kernel must move.
// In the style of llm.c's dev/cuda: a number per variant, nothing asserted here (kernel-test checks values).
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

namespace rms {
#include "../../../src/DistTrain.Cuda/Ops/RmsNorm/rmsnorm.cu"
}
namespace qkr {
#include "../../../src/DistTrain.Cuda/Ops/QkRotary/qkrotary.cu"
}
#ifndef MIX_SOURCE   // another version of mix.cu to compare: -DMIX_SOURCE='"/path/mix.cu"'
#define MIX_SOURCE "../../../src/DistTrain.Cuda/Ops/Mix/mix.cu"
#endif
namespace mixk {
#include MIX_SOURCE
}
namespace cek {
#include "../../../src/DistTrain.Cuda/Ops/CrossEntropy/crossentropy.cu"
}

#ifndef RMS_BWD_BLOCKS_PER_SM   // FusedRmsNorm's backward grid: this many blocks per SM
#define RMS_BWD_BLOCKS_PER_SM 4
#endif

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { std::printf("%s: %s\n", #x, cudaGetErrorString(e)); std::exit(1); } } while (0)

__global__ void fill(unsigned short* p, long long n, unsigned seed) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    unsigned h = (unsigned)i * 2654435761u ^ seed;
    h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
    float v = ((h & 0xffff) / 65536.f - 0.5f) * 4.f;
    p[i] = (unsigned short)(__float_as_uint(v) >> 16);
  }
}

static unsigned short* bf16(long long n, unsigned seed) {
  unsigned short* p;
  CHECK(cudaMalloc(&p, n * 2));
  fill<<<1024, 256>>>(p, n, seed);
  return p;
}

template <typename F>
static void bench(const char* name, double bytes, F launch) {
  cudaEvent_t a, b;
  cudaEventCreate(&a); cudaEventCreate(&b);
  for (int i = 0; i < 3; ++i) launch();
  CHECK(cudaDeviceSynchronize());
  const int n = 20;
  cudaEventRecord(a);
  for (int i = 0; i < n; ++i) launch();
  cudaEventRecord(b);
  CHECK(cudaEventSynchronize(b));
  float ms;
  cudaEventElapsedTime(&ms, a, b);
  const double us = ms * 1e3 / n;
  std::printf("%-48s %9.1f us %7.2f TB/s\n", name, us, bytes / us / 1e6);
}

int main() {
  int sms;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const long long tokens = 8 * 2048, d = 1024, n = tokens * d, mb = n * 2;
  auto x = bf16(n, 1), dy = bf16(n, 2), y = bf16(n, 3), dx = bf16(n, 4), w = bf16(d, 5);
  float *rstd, *partial;
  CHECK(cudaMalloc(&rstd, tokens * 4));
  CHECK(cudaMalloc(&partial, (long long)sms * 128 * d * 4));   // the largest grid x rows a block below
  char name[128];

  // RMSNorm: TPR threads a row (MAXC columns each), RPB rows a block, grids as FusedRmsNorm
  {
    unsigned tpr = 32;
    while (tpr * MAXC < d) tpr *= 2;
    unsigned rpb = 256 / tpr ? 256 / tpr : 1;
    unsigned fgrid = (unsigned)std::min<long long>((tokens + rpb - 1) / rpb, (long long)sms * 16);
    unsigned bgrid = (unsigned)std::min<long long>((tokens + rpb - 1) / rpb, (long long)sms * RMS_BWD_BLOCKS_PER_SM);
    std::snprintf(name, sizeof name, "rmsnorm fwd MAXC %d (%u x %u) grid %u", MAXC, tpr, rpb, fgrid);
    bench(name, 2.0 * mb, [&] { rms::rmsnorm_forward_bf16<<<fgrid, dim3(tpr, rpb)>>>(x, nullptr, nullptr, w, y, rstd, tokens, (int)d, 1e-5f, 1); });
    std::snprintf(name, sizeof name, "rmsnorm bwd MAXC %d (%u x %u) grid %u", MAXC, tpr, rpb, bgrid);
    bench(name, 3.0 * mb, [&] { rms::rmsnorm_backward_bf16<<<bgrid, dim3(tpr, rpb)>>>(x, w, dy, nullptr, rstd, dx, partial, tokens, (int)d, 1); });
    // fused with the residual add before it: forward reads a, b and writes the sum and y; backward adds the sum's own gradient
    std::snprintf(name, sizeof name, "add_rmsnorm fwd MAXC %d (%u x %u) grid %u", MAXC, tpr, rpb, fgrid);
    bench(name, 4.0 * mb, [&] { rms::rmsnorm_forward_bf16<<<fgrid, dim3(tpr, rpb)>>>(x, dy, dx, w, y, rstd, tokens, (int)d, 1e-5f, 1); });
    std::snprintf(name, sizeof name, "add_rmsnorm bwd MAXC %d (%u x %u) grid %u", MAXC, tpr, rpb, bgrid);
    bench(name, 4.0 * mb, [&] { rms::rmsnorm_backward_bf16<<<bgrid, dim3(tpr, rpb)>>>(x, w, dy, y, rstd, dx, partial, tokens, (int)d, 1); });
    // one warp a row (D = 1024: 4 vectors a lane), grids as FusedRmsNorm: 8 and 4 blocks of 8 warps an SM
    const unsigned rfgrid = (unsigned)std::min<long long>((tokens + 7) / 8, (long long)sms * 8), rbgrid = (unsigned)std::min<long long>((tokens + 7) / 8, (long long)sms * 4);
    bench("rmsnorm fwd rows (a warp a row)", 2.0 * mb, [&] { rms::rmsnorm_forward_rows_bf16<<<rfgrid, 256>>>(x, nullptr, nullptr, w, y, rstd, tokens, (int)d, 1e-5f); });
    bench("rmsnorm bwd rows", 3.0 * mb, [&] { rms::rmsnorm_backward_rows_bf16<<<rbgrid, 256>>>(x, w, dy, nullptr, rstd, dx, partial, tokens, (int)d); });
    bench("add_rmsnorm fwd rows", 4.0 * mb, [&] { rms::rmsnorm_forward_rows_bf16<<<rfgrid, 256>>>(x, dy, dx, w, y, rstd, tokens, (int)d, 1e-5f); });
    bench("add_rmsnorm bwd rows", 4.0 * mb, [&] { rms::rmsnorm_backward_rows_bf16<<<rbgrid, 256>>>(x, w, dy, y, rstd, dx, partial, tokens, (int)d); });
  }
  // QK-norm rotary on q (B, T, H, d) = (8, 2048, 16, 64) contiguous, dy transposed as SDPA returns it
  {
    float *cs, *sn;
    CHECK(cudaMalloc(&cs, 2048 * 32 * 4)); CHECK(cudaMalloc(&sn, 2048 * 32 * 4));
    CHECK(cudaMemset(cs, 0, 2048 * 32 * 4)); CHECK(cudaMemset(sn, 0, 2048 * 32 * 4));
    const long long rows = tokens * 16;
    unsigned fgrid = (unsigned)std::min<long long>((rows + 31) / 32, (long long)sms * 16);
    unsigned bgrid = (unsigned)std::min<long long>((rows + 31) / 32, (long long)sms * 8);
    bench("qkrotary fwd _v", 2.0 * mb, [&] { qkr::qkrotary_forward_bf16_v<<<fgrid, dim3(32, 8)>>>(x, w, cs, sn, y, rows, 2048, 16, 64, 2048LL * 1024, 1024, 64, 1e-5f); });
    bench("qkrotary bwd _v", 3.0 * mb, [&] { qkr::qkrotary_backward_bf16_v<<<bgrid, dim3(32, 8)>>>(x, w, cs, sn, dy, dx, partial, rows, 2048, 16, 64,
                                                                                                 2048LL * 1024, 1024, 64, 16LL * 2048 * 64, 64, 2048 * 64, 1e-5f); });
  }
  // MUDD mixing: C = 4 streams from L hiddens, as FusedMix launches it (vectors of 8, 128 threads a token, 2 tokens a block)
  for (int l : {2, 14, 25}) {
    const int c = 4;
    mixk::MixTable<unsigned short> tab = {};
    std::vector<unsigned short*> hs;
    for (int j = 0; j < l; ++j) { hs.push_back(bf16(n, 10 + j)); tab.h[j] = hs.back(); tab.gh[j] = bf16(n, 50 + j); }
    for (int i = 0; i < c; ++i) { tab.out[i] = bf16(n, 90 + i); tab.g[i] = bf16(n, 95 + i); }
    auto wts = bf16((long long)c * tokens * l, 7);
    float* gw;
    CHECK(cudaMalloc(&gw, (long long)c * tokens * l * 4));
    const unsigned tpt = 128, tpb = 2, grid = (unsigned)std::min<long long>(tokens / tpb, (long long)sms * 16);
    const unsigned fshared = tpb * c * l * 4, bshared = (tpb + tpb * (tpt / 32)) * c * l * 4;
    std::snprintf(name, sizeof name, "mix fwd L %d unroll %d", l, MIX_UNROLL);
    bench(name, (double)(l + c) * mb, [&] { mixk::mix_forward_bf16_v<<<grid, dim3(tpt, tpb), fshared>>>(tab, wts, tokens, c, l, (int)d); });
    std::snprintf(name, sizeof name, "mix bwd L %d (gh read-modify-write)", l);
    bench(name, (double)(3 * l + c) * mb, [&] { mixk::mix_backward_bf16_v<<<grid, dim3(tpt, tpb), bshared>>>(tab, wts, gw, tokens, c, l, (int)d, ~0ull, ~0ull, nullptr, 0, 0); });
    // deferral: the mix over l + 1 hiddens writes only its last hidden's gradient; the mix over l adds its parts and the deferred ones
    if (l > 2) {
      const unsigned dshared = bshared + tpb * c * (l + 1) * 4;
      auto wts2 = bf16((long long)c * tokens * (l + 1), 9);
      for (int i = 0; i < c; ++i) tab.g2[i] = bf16(n, 99 + i);
      std::snprintf(name, sizeof name, "mix bwd L %d deferring (writes one gh)", l);
      bench(name, (double)(l + c + 2) * mb, [&] { mixk::mix_backward_bf16_v<<<grid, dim3(tpt, tpb), bshared>>>(tab, wts, gw, tokens, c, l, (int)d, ~0ull, 1ull << (l - 1), nullptr, 0, 0); });
      std::snprintf(name, sizeof name, "mix bwd L %d + a deferred mix over %d", l, l + 1);
      bench(name, (double)(3 * l + 2 * c) * mb, [&] { mixk::mix_backward_p_bf16_v<<<grid, dim3(tpt, tpb), dshared>>>(tab, wts, gw, tokens, c, l, (int)d, ~0ull, ~0ull, wts2, c, l + 1); });
      for (int i = 0; i < c; ++i) { cudaFree((void*)tab.g2[i]); tab.g2[i] = nullptr; }
      cudaFree(wts2);
    }
    // the bias's gradient from gw (tokens, C·L) fp32, with gw in bf16 for the dynamic weights (read 4, write 2 bytes a value)
    {
      unsigned short *copy, *dbias;
      float* parts;
      unsigned* counter;
      CHECK(cudaMalloc(&copy, (long long)c * tokens * l * 2)); CHECK(cudaMalloc(&dbias, c * l * 2));
      CHECK(cudaMalloc(&parts, (long long)sms * c * l * 4)); CHECK(cudaMalloc(&counter, 4)); CHECK(cudaMemset(counter, 0, 4));
      const unsigned bgrid = (unsigned)std::min<long long>((tokens + 63) / 64, (long long)sms);
      std::snprintf(name, sizeof name, "mix bias grad C %d L %d", c, l);
      bench(name, (double)c * tokens * l * 6, [&] { mixk::mix_bias_grad_bf16<<<bgrid, MIX_BIAS_BLOCK>>>(gw, copy, tokens, c * l, parts, counter, dbias, 1); });
      cudaFree(copy); cudaFree(dbias); cudaFree(parts); cudaFree(counter);
    }
    for (int j = 0; j < l; ++j) { cudaFree(hs[j]); cudaFree(tab.gh[j]); }
    for (int i = 0; i < c; ++i) { cudaFree(tab.out[i]); cudaFree((void*)tab.g[i]); }
    cudaFree(wts); cudaFree(gw);
  }
  // the loss: one chunk of 4096 rows of the 405M vocabulary (50432) in bf16, loss and gradient in place (read twice, written once)
  {
    const long long rows = 4096, v = 50432;
    auto logits = bf16(rows * v, 200);
    long long* tg;
    float* ls;
    CHECK(cudaMalloc(&tg, rows * 8)); CHECK(cudaMalloc(&ls, rows * 4));
    CHECK(cudaMemset(tg, 0, rows * 8));
    bench("cross-entropy rows 4096 x 50432 (bytes: read + write)", 2.0 * rows * v * 2, [&] { cek::cross_entropy_rows_bf16<<<(unsigned)rows, CE_BLOCK>>>(logits, tg, ls, rows, v, 16384.f, 1); });
    cudaFree(logits); cudaFree(tg); cudaFree(ls);
  }
  // the bandwidth the elementwise ops reach: a device-to-device copy of the same 32 MiB
  bench("cudaMemcpy D2D 32 MiB (read + write)", 2.0 * mb, [&] { cudaMemcpyAsync(y, x, mb, cudaMemcpyDeviceToDevice); });
  CHECK(cudaDeviceSynchronize());
  return 0;
}

// How long the GPU sits idle between two dependent kernels of one stream, launched back to back from the host
// with the queue full (as a training step's ~1,700 kernels are): each launch records, from %globaltimer, the
// time its first block started and its last block ended; the gap is the next launch's start minus this one's end.
// ncu's per-kernel durations leave these gaps out. Kernels: a spin of a fixed time on 1 block and on a full grid,
// and a 32 MiB copy (a memory-bound kernel of the step's size).
// Build and run: nvcc -O3 -arch=sm_90 -o /tmp/gap launch-gap.cu && /tmp/gap
#include <cstdio>
#include <vector>
#include <algorithm>

__device__ __forceinline__ unsigned long long now() { unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }

__device__ void mark_start(unsigned long long* start) { if (threadIdx.x == 0) atomicMin(start, now()); }
__device__ void mark_end(unsigned long long* end) { __syncthreads(); if (threadIdx.x == 0) atomicMax(end, now()); }

__global__ void spin(unsigned long long ns, unsigned long long* start, unsigned long long* end) {
  mark_start(start);
  const unsigned long long t0 = now();
  while (now() - t0 < ns) {}
  mark_end(end);
}

__global__ void copy(const float4* in, float4* out, long long n, unsigned long long* start, unsigned long long* end) {
  mark_start(start);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) out[i] = in[i];
  mark_end(end);
}

int main() {
  const int n = 2000;
  unsigned long long *start, *end;
  cudaMalloc(&start, n * 8); cudaMalloc(&end, n * 8);
  const long long elems = (32ll << 20) / 16;
  float4 *a, *b;
  cudaMalloc(&a, elems * 16); cudaMalloc(&b, elems * 16);
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  for (int kind = 0; kind < 4; ++kind) {
    cudaMemset(start, 0xff, n * 8); cudaMemset(end, 0, n * 8);
    cudaDeviceSynchronize();
    for (int i = 0; i < n; ++i) {
      if (kind == 0) spin<<<1, 32>>>(5000, start + i, end + i);
      if (kind == 1) spin<<<sms * 8, 256>>>(5000, start + i, end + i);
      if (kind == 2) spin<<<sms * 8, 256>>>(20000, start + i, end + i);
      if (kind == 3) copy<<<sms * 16, 256>>>(a, b, elems, start + i, end + i);
    }
    cudaDeviceSynchronize();
    std::vector<unsigned long long> s(n), e(n);
    cudaMemcpy(s.data(), start, n * 8, cudaMemcpyDeviceToHost); cudaMemcpy(e.data(), end, n * 8, cudaMemcpyDeviceToHost);
    std::vector<double> gap, dur;
    for (int i = 100; i < n - 1; ++i) { gap.push_back((double)(s[i + 1] - e[i]) / 1e3); dur.push_back((double)(e[i] - s[i]) / 1e3); }
    std::sort(gap.begin(), gap.end()); std::sort(dur.begin(), dur.end());
    const char* names[] = {"spin 5 us, 1 block", "spin 5 us, 8 blocks an SM", "spin 20 us, 8 blocks an SM", "copy 32 MiB, 16 blocks an SM"};
    std::printf("%-30s kernel %7.2f us (median), gap to the next: median %5.2f us, p10 %5.2f, p90 %5.2f, mean %5.2f (%s)\n", names[kind],
                dur[dur.size() / 2], gap[gap.size() / 2], gap[gap.size() / 10], gap[gap.size() * 9 / 10],
                [&] { double m = 0; for (double g : gap) m += g; return m / gap.size(); }(), cudaGetErrorString(cudaGetLastError()));
  }
  return 0;
}

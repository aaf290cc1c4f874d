// The chunked loss's cross-entropy kernel (crossentropy.cu) against plain loops in double; included by check.cpp.
namespace ce {
#include "../../src/DistTrain.Cuda/Ops/CrossEntropy/crossentropy.cu"
}

// rows x v logits (bf16-representable values, so fp32 and bf16 see the same inputs); targets in range
// except one row's out of range (a NaN loss, no onehot); grid below rows walks rows grid-stride.
template <typename T>
static void check_ce(long long rows, long long v, unsigned grid, int vec, bool gradient) {
  const bool bf = sizeof(T) == 2;
  vec = vec && v % (16 / sizeof(T)) == 0;   // as FusedCrossEntropy: every row must start on 16 bytes
  std::mt19937 rng(rows * 7919 + v * 31 + vec);
  std::normal_distribution<float> n01;
  std::vector<float> x(rows * v);
  for (auto& e : x) e = __uint_as_float((unsigned)rms::to_bf16(4.f * n01(rng)) << 16);
  std::vector<long long> t(rows);
  for (long long r = 0; r < rows; ++r) t[r] = (long long)(rng() % v);
  const long long bad = rows > 2 ? 1 : -1;
  if (bad >= 0) t[bad] = v;   // out of range
  std::vector<T> buf(rows * v);
  for (long long i = 0; i < rows * v; ++i) buf[i] = bf ? (T)rms::to_bf16(x[i]) : (T)x[i];
  std::vector<float> loss(rows, -1.f);
  const long long mean_over = 3 * rows;
  launch({grid}, {512}, [&] {
    if constexpr (sizeof(T) == 2) ce::cross_entropy_rows_bf16((unsigned short*)buf.data(), t.data(), loss.data(), rows, v, gradient ? (float)mean_over : 0.f, vec);
    else ce::cross_entropy_rows_f32((float*)buf.data(), t.data(), loss.data(), rows, v, gradient ? (float)mean_over : 0.f, vec);
  });
  double el = 0, eg = 0, mg = 0;
  bool nan_ok = true, untouched = true;
  for (long long r = 0; r < rows; ++r) {
    double mx = -INFINITY, s = 0;
    for (long long j = 0; j < v; ++j) mx = std::max(mx, (double)x[r * v + j]);
    for (long long j = 0; j < v; ++j) s += std::exp(x[r * v + j] - mx);
    double lse = mx + std::log(s);
    if (r == bad) nan_ok = nan_ok && std::isnan(loss[r]);
    else el = std::max(el, std::abs(loss[r] - (lse - x[r * v + t[r]])) / std::max(1.0, lse - x[r * v + t[r]]));
    for (long long j = 0; j < v; ++j) {
      const float got = rms::to_float(buf[r * v + j]);
      if (!gradient) { untouched = untouched && got == x[r * v + j]; continue; }
      double g = (std::exp(x[r * v + j] - lse) - (j == t[r] ? 1.0 : 0.0)) / mean_over;
      eg = std::max(eg, std::abs(got - g));
      mg = std::max(mg, std::abs(g));
    }
  }
  // fp32: within float rounding; bf16: the gradient within one bf16 rounding (2^-8 relative to the largest)
  const double gtol = bf ? 1.0 / 256 : 1e-6;
  char what[160];
  std::snprintf(what, sizeof what, "cross-entropy %s %lldx%lld grid %u vec %d%s: losses, NaN for a bad target%s",
                bf ? "bf16" : "fp32", rows, v, grid, vec, gradient ? ", gradient" : "", gradient ? "" : ", logits untouched");
  expect(el < 1e-6 && nan_ok && untouched && (!gradient || (mg > 0 ? eg / mg <= gtol : eg == 0)), what, std::max(el, mg > 0 ? eg / mg : 0.0));
}

// The backward's y = s·x (+ y) (cross_entropy_scale_*): n elements, in place when `inplace` (y is x), vectors with a
// tail of single elements when vec; in double, one rounding to T allowed.
template <typename T>
static void check_ce_scale(long long n, unsigned grid, int vec, bool accumulate, bool inplace) {
  const bool bf = sizeof(T) == 2;
  std::mt19937 rng(n * 131 + vec * 7 + accumulate * 3 + inplace);
  std::normal_distribution<float> n01;
  auto cv = [&](float f) { return bf ? (T)rms::to_bf16(f) : (T)f; };
  std::vector<T> x(n), y(n);
  for (auto& e : x) e = cv(n01(rng));
  for (auto& e : y) e = cv(n01(rng));
  const std::vector<T> y0 = inplace ? x : y;
  const float s = 0.37f;
  T* out = inplace ? x.data() : y.data();
  const std::vector<T> x0 = x;
  launch({grid}, {256}, [&] {
    if constexpr (sizeof(T) == 2) ce::cross_entropy_scale_bf16((const unsigned short*)x.data(), (unsigned short*)out, &s, n, accumulate, vec);
    else ce::cross_entropy_scale_f32((const float*)x.data(), (float*)out, &s, n, accumulate, vec);
  });
  double err = 0;
  for (long long i = 0; i < n; ++i) {
    const double want = (double)s * rms::to_float(x0[i]) + (accumulate ? (double)rms::to_float(y0[i]) : 0.0);
    err = std::max(err, std::abs(rms::to_float(out[i]) - want) / std::max(1e-3, std::abs(want)));
  }
  char what[160];
  std::snprintf(what, sizeof what, "cross-entropy gradient scale %s n %lld grid %u vec %d%s%s", bf ? "bf16" : "fp32", n, grid, vec,
                accumulate ? " accumulate" : "", inplace ? " in place" : "");
  expect(err <= (bf ? 1.0 / 256 : 1e-6), what, err);
}

static void check_ce_all() {
  for (int vec : {1, 0})
    for (bool accumulate : {false, true})
      for (bool inplace : {false, true}) {
        check_ce_scale<float>(1, 1, vec, accumulate, inplace);
        check_ce_scale<float>(1031, 2, vec, accumulate, inplace);           // 257 vectors of 4 and a tail of 3, grid-stride
        check_ce_scale<unsigned short>(1031, 1, vec, accumulate, inplace);  // 128 vectors of 8 and a tail of 7
      }
  for (int vec : {1, 0}) {
    check_ce<float>(1, 1, 1, vec, true);         // one logit: loss 0, gradient 0
    check_ce<float>(3, 13, 2, vec, true);        // fewer threads' worth than a block; grid-stride rows
    check_ce<float>(4, 2052, 4, vec, true);      // vectors of 4 and no tail (2052 = 4·513), one block a row
    check_ce<unsigned short>(5, 1003, 2, vec, true);   // V not a multiple of 8: element by element
    check_ce<unsigned short>(5, 1000, 2, vec, true);   // 125 vectors of 8, fewer than the block's threads
    check_ce<unsigned short>(2, 4104, 2, vec, true);   // 8 vectors per thread and more
    check_ce<unsigned short>(3, 264, 1, vec, false);   // the loss alone (evaluation)
  }
}

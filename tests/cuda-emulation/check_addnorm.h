// The residual add fused with RMSNorm (rmsnorm.cu with res/sum in forward, dres in backward) against
// plain loops in double; included by check.cpp after check_rmsnorm and check_ops.h (bf16_round).
// The sum must be bit for bit a + b in fp32 rounded once to T (what torch's add writes); the norm,
// dx = dres + the norm's gradient and dw are checked in double from that sum.
template <typename T>
static void check_add_rmsnorm(long long rows, int d, unsigned grid, bool scaled, bool with_dres, int vec) {
  const bool bf = sizeof(T) == 2;
  vec = vec && d % (16 / (int)sizeof(T)) == 0;   // as FusedRmsNorm.Vectors (std::vector storage starts on 16 bytes)
  std::mt19937 rng(rows * 7 + d * 3 + scaled + 2 * with_dres);
  std::normal_distribution<float> n01;
  auto cv = [](float v) { if constexpr (sizeof(T) == 2) return (T)rms::to_bf16(v); else return v; };
  auto fv = [](T v) { return (double)rms::to_float(v); };
  std::vector<T> a(rows * d), b(rows * d), w(d), dy(rows * d), dres(rows * d), sum(rows * d), y(rows * d), dx(rows * d), dw(d);
  for (auto* v : {&a, &b, &dy, &dres}) for (auto& x : *v) x = cv(n01(rng));
  for (auto& x : w) x = cv(1.f + 0.1f * n01(rng));
  unsigned tpr, rpb; layout(d, tpr, rpb);
  const float eps = 1e-5f;
  const T* wp = scaled ? w.data() : nullptr;
  const T* dp = with_dres ? dres.data() : nullptr;
  long long parts = (long long)grid * rpb;
  std::vector<float> rstd(rows, -1.f), partial(parts * d, -1.f);
  launch({grid}, {tpr, rpb}, [&] {
    if constexpr (sizeof(T) == 2) rms::rmsnorm_forward_bf16(a.data(), b.data(), sum.data(), wp, y.data(), rstd.data(), rows, d, eps, vec);
    else rms::rmsnorm_forward_f32(a.data(), b.data(), sum.data(), wp, y.data(), rstd.data(), rows, d, eps, vec);
  });
  // backward reads the sum as x, as AddRmsNormFunction saves it
  launch({grid}, {tpr, rpb}, [&] {
    if constexpr (sizeof(T) == 2) rms::rmsnorm_backward_bf16(sum.data(), wp, dy.data(), dp, rstd.data(), dx.data(), scaled ? partial.data() : nullptr, rows, d, vec);
    else rms::rmsnorm_backward_f32(sum.data(), wp, dy.data(), dp, rstd.data(), dx.data(), scaled ? partial.data() : nullptr, rows, d, vec);
  });
  auto reduce = [&](int accumulate) {
    launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] {
      if constexpr (sizeof(T) == 2) rms::rmsnorm_dw_reduce_bf16(partial.data(), dw.data(), parts, d, accumulate);
      else rms::rmsnorm_dw_reduce_f32(partial.data(), dw.data(), parts, d, accumulate);
    });
  };
  if (scaled) reduce(0);
  bool sum_exact = true;
  double ey = 0, my = 0, edx = 0, mdx = 0, er = 0, edw = 0, mdw = 0;
  std::vector<double> dwr(d, 0.0);
  for (long long r = 0; r < rows; ++r) {
    const long long o = r * d;
    for (int c = 0; c < d; ++c) {   // the plain add: fp32 math, one rounding to T
      const float s = (float)fv(a[o + c]) + (float)fv(b[o + c]);
      sum_exact = sum_exact && fv(sum[o + c]) == (bf ? (double)bf16_round(s) : (double)s);
    }
    double ss = 0; for (int c = 0; c < d; ++c) ss += fv(sum[o + c]) * fv(sum[o + c]);
    const double rs = 1.0 / std::sqrt(ss / d + eps);
    er = std::max(er, std::abs(rstd[r] - rs) / rs);
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += fv(dy[o + c]) * (scaled ? fv(w[c]) : 1.0) * fv(sum[o + c]) * rs;
    for (int c = 0; c < d; ++c) {
      const double xh = fv(sum[o + c]) * rs, g = fv(dy[o + c]) * (scaled ? fv(w[c]) : 1.0);
      const double yr = xh * (scaled ? fv(w[c]) : 1.0), dxr = rs * (g - xh * dot / d) + (with_dres ? fv(dres[o + c]) : 0.0);
      dwr[c] += fv(dy[o + c]) * xh;
      ey = std::max(ey, std::abs(fv(y[o + c]) - yr)); my = std::max(my, std::abs(yr));
      edx = std::max(edx, std::abs(fv(dx[o + c]) - dxr)); mdx = std::max(mdx, std::abs(dxr));
    }
  }
  if (scaled) {
    for (int c = 0; c < d; ++c) { edw = std::max(edw, std::abs(fv(dw[c]) - dwr[c])); mdw = std::max(mdw, std::abs(dwr[c])); }
    if (!bf) {   // accumulate: reducing the same partials again into dw doubles it
      reduce(1);
      for (int c = 0; c < d; ++c) edw = std::max(edw, std::abs(fv(dw[c]) - 2 * dwr[c]) / 2);
    }
  }
  double rel = std::max({ey / my, edx / mdx, er});
  if (scaled) rel = std::max(rel, edw / mdw);
  char what[160];
  std::snprintf(what, sizeof what, "add_rmsnorm%s %s %lldx%d grid %u vec %d%s: sum exact, y/rstd/dx%s", scaled ? "" : "_noscale", bf ? "bf16" : "fp32", rows, d, grid, vec,
                with_dres ? " +dres" : "", scaled ? "/dw" : "");
  expect(sum_exact && rel < (bf ? 1.0 / 128 : 1e-4), what, sum_exact ? rel : 1.0);
}

static void check_add_rmsnorm_all() {
  for (bool scaled : {true, false})
    for (bool with_dres : {true, false}) {
      for (int vec : {1, 0}) {
        check_add_rmsnorm<float>(3, 8, 1, scaled, with_dres, vec);       // 8 rows a block, one block
        check_add_rmsnorm<float>(5, 1000, 2, scaled, with_dres, vec);    // 128 threads a row, 2 rows a block, a partial last group
        check_add_rmsnorm<unsigned short>(3, 16, 1, scaled, with_dres, vec);
        check_add_rmsnorm<unsigned short>(5, 1000, 2, scaled, with_dres, vec);
      }
      check_add_rmsnorm<float>(37, 7, 2, scaled, with_dres, 0);          // odd D: element by element, grid-stride over row groups
      check_add_rmsnorm<unsigned short>(37, 12, 2, scaled, with_dres, 0);
      check_add_rmsnorm<float>(2, 4096, 1, scaled, with_dres, 1);        // 512 threads, one row a block, rows walked grid-stride
      check_add_rmsnorm<unsigned short>(3, 1024, 2, scaled, with_dres, 1);   // the 405M width
    }
}

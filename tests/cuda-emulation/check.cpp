// g++ -std=c++20 -O1 -pthread check.cpp: the RMSNorm (alone and fused with the residual add before it), AdamW, SwiGLU, QK-norm-rotary, MUDD mixing and cross-entropy kernels against plain loops in double.
#include "emulate.h"
#include <cstdio>
#include <random>
namespace rms {
#include "../../src/DistTrain.Cuda/Ops/RmsNorm/rmsnorm.cu"
}
namespace adam {
#include "../../src/DistTrain.Cuda/Ops/AdamW/adamw.cu"
}

static int failures = 0;
static void expect(bool ok, const char* what, double err) {
  std::printf("%-60s %s (err %.3g)\n", what, ok ? "ok" : "FAIL", err);
  if (!ok) ++failures;
}

// FusedRmsNorm.Layout
static void layout(int d, unsigned& tpr, unsigned& rpb) { tpr = 32; while (tpr * 8 < (unsigned)d) tpr *= 2; rpb = 256 / tpr ? 256 / tpr : 1; }

static void check_rmsnorm(long long rows, int d, unsigned grid, bool scaled, int vec = 0) {
  vec = vec && d % 4 == 0;   // as FusedRmsNorm.Vectors (std::vector storage starts on 16 bytes)
  std::mt19937 rng(rows * 131 + d);
  std::normal_distribution<float> n01;
  std::vector<float> x(rows * d), w(d), dy(rows * d), y(rows * d), rstd(rows), dx(rows * d), dw(d);
  for (auto& v : x) v = n01(rng);
  for (auto& v : w) v = 1.f + 0.1f * n01(rng);
  for (auto& v : dy) v = n01(rng);
  unsigned tpr, rpb; layout(d, tpr, rpb);
  const float eps = 1e-5f;
  const float* wp = scaled ? w.data() : nullptr;
  launch({grid}, {tpr, rpb}, [&] { rms::rmsnorm_forward_f32(x.data(), nullptr, nullptr, wp, y.data(), rstd.data(), rows, d, eps, vec); });
  long long parts = (long long)grid * rpb;
  std::vector<float> partial(parts * d, -1.f);
  launch({grid}, {tpr, rpb}, [&] { rms::rmsnorm_backward_f32(x.data(), wp, dy.data(), nullptr, rstd.data(), dx.data(), scaled ? partial.data() : nullptr, rows, d, vec); });
  if (scaled) launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_f32(partial.data(), dw.data(), parts, d, 0); });
  double ey = 0, edx = 0, edw = 0, my = 0, mdx = 0, mdw = 0;
  std::vector<double> dwr(d, 0.0);
  for (long long r = 0; r < rows; ++r) {
    double ss = 0; for (int c = 0; c < d; ++c) ss += (double)x[r * d + c] * x[r * d + c];
    double rs = 1.0 / std::sqrt(ss / d + eps), dot = 0;
    for (int c = 0; c < d; ++c) { double g = dy[r * d + c] * (scaled ? w[c] : 1.0); dot += g * x[r * d + c] * rs; }
    for (int c = 0; c < d; ++c) {
      double xh = x[r * d + c] * rs, g = dy[r * d + c] * (scaled ? w[c] : 1.0);
      double yr = xh * (scaled ? w[c] : 1.0), dxr = rs * (g - xh * dot / d);
      dwr[c] += dy[r * d + c] * xh;
      ey = std::max(ey, std::abs(y[r * d + c] - yr)); my = std::max(my, std::abs(yr));
      edx = std::max(edx, std::abs(dx[r * d + c] - dxr)); mdx = std::max(mdx, std::abs(dxr));
    }
  }
  for (int c = 0; c < d; ++c) { edw = std::max(edw, std::abs(dw[c] - dwr[c])); mdw = std::max(mdw, std::abs(dwr[c])); }
  if (scaled) {   // accumulate: reducing the same partials again into dw doubles it
    launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_f32(partial.data(), dw.data(), parts, d, 1); });
    for (int c = 0; c < d; ++c) edw = std::max(edw, std::abs(dw[c] - 2 * dwr[c]) / 2);
  }
  char what[128];
  std::snprintf(what, sizeof what, "rmsnorm%s %lldx%d grid %u (tpr %u, rpb %u, vec %d) y/dx%s", scaled ? "" : "_noscale", rows, d, grid, tpr, rpb, vec, scaled ? "/dw" : "");
  double rel = std::max(ey / my, mdx > 0 ? edx / mdx : edx);
  if (scaled) rel = std::max(rel, edw / mdw);
  expect(rel < 1e-4 || (d == 1 && ey / my < 1e-5), what, rel);
}

#include "check_ops.h"
#include "check_addnorm.h"

// bf16 rows read and written 16 bytes at a time (vec) and one element at a time give the same result
// within one bf16 rounding of each other (their row sums add the same terms in another order)
static void check_rmsnorm_bf16(long long rows, int d, unsigned grid, bool scaled) {
  std::mt19937 rng(rows * 17 + d);
  std::normal_distribution<float> n01;
  std::vector<unsigned short> x(rows * d), w(d), dy(rows * d), y[2], dx[2], dw[2];
  for (auto& v : x) v = rms::to_bf16(n01(rng));
  for (auto& v : w) v = rms::to_bf16(1.f + 0.1f * n01(rng));
  for (auto& v : dy) v = rms::to_bf16(n01(rng));
  unsigned tpr, rpb; layout(d, tpr, rpb);
  for (int vec : {0, 1}) {
    y[vec].resize(rows * d); dx[vec].resize(rows * d); dw[vec].resize(d);
    std::vector<float> rstd(rows), partial((long long)grid * rpb * d);
    const unsigned short* wp = scaled ? w.data() : nullptr;
    launch({grid}, {tpr, rpb}, [&] { rms::rmsnorm_forward_bf16(x.data(), nullptr, nullptr, wp, y[vec].data(), rstd.data(), rows, d, 1e-5f, vec); });
    launch({grid}, {tpr, rpb}, [&] { rms::rmsnorm_backward_bf16(x.data(), wp, dy.data(), nullptr, rstd.data(), dx[vec].data(), scaled ? partial.data() : nullptr, rows, d, vec); });
    if (scaled) launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_bf16(partial.data(), dw[vec].data(), (long long)grid * rpb, d, 0); });
  }
  auto f = [](unsigned short h) { return (double)__uint_as_float((unsigned)h << 16); };
  double e = 0, m = 0;
  auto cmp = [&](const std::vector<unsigned short>& a, const std::vector<unsigned short>& b) {
    for (size_t i = 0; i < a.size(); ++i) { e = std::max(e, std::abs(f(a[i]) - f(b[i]))); m = std::max(m, std::abs(f(b[i]))); }
  };
  cmp(y[1], y[0]); cmp(dx[1], dx[0]);
  if (scaled) cmp(dw[1], dw[0]);
  char what[128];
  std::snprintf(what, sizeof what, "rmsnorm%s bf16 %lldx%d: 16-byte vectors = element by element", scaled ? "" : "_noscale", rows, d);
  expect(e / m <= 1.0 / 128, what, e / m);
}

// The warp-a-row bf16 kernels (rows_bf16) against the block-a-row ones on the same rows, with the fused residual add or
// without: y, the sum (bit for bit), rstd, dx and dw within one bf16 rounding (their sums add the same terms in another order)
// Several norms in one launch (rmsnorm_*_rows_sets_bf16, one a blockIdx.y) against each run alone through
// rmsnorm_*_rows_bf16: the same device code, so y, rstd, dx and dw must be equal bit for bit; the sets whose bit
// is in `accumulate` add dw into a preset gradient.
static void check_rmsnorm_sets(long long rows, int d, unsigned grid, int sets, int accumulate) {
  std::mt19937 rng(rows * 31 + d + sets);
  std::normal_distribution<float> n01;
  auto draw = [&](long long n) { std::vector<unsigned short> v(n); for (auto& e : v) e = rms::to_bf16(n01(rng)); return v; };
  std::vector<std::vector<unsigned short>> x, w, dy, g0, y(2 * sets), dx(2 * sets), dw(2 * sets);
  std::vector<std::vector<float>> rstd(2 * sets);
  for (int s = 0; s < sets; ++s) {
    x.push_back(draw(rows * d)); dy.push_back(draw(rows * d)); g0.push_back(draw(d)); w.push_back(draw(d));
    for (auto& v : w.back()) v = rms::to_bf16(1.f + 0.1f * __uint_as_float((unsigned)v << 16));
  }
  for (int k = 0; k < 2 * sets; ++k) { y[k].resize(rows * d); dx[k].resize(rows * d); rstd[k].resize(rows); dw[k] = g0[k % sets]; }
  std::vector<float> partial((long long)sets * grid * d, -1.f);
  rms::NormSets ns{};
  for (int s = 0; s < sets; ++s) {   // slots 0..sets-1: together
    ns.x[s] = x[s].data(); ns.w[s] = w[s].data(); ns.out[s] = y[s].data(); ns.rstd[s] = rstd[s].data();
  }
  launch({grid, (unsigned)sets}, {256}, [&] { rms::rmsnorm_forward_rows_sets_bf16(ns, rows, d, 1e-5f); });
  for (int s = 0; s < sets; ++s) { ns.dy[s] = dy[s].data(); ns.out[s] = dx[s].data(); ns.dw[s] = dw[s].data(); }
  launch({grid, (unsigned)sets}, {256}, [&] { rms::rmsnorm_backward_rows_sets_bf16(ns, partial.data(), rows, d); });
  launch({(unsigned)(d + 31) / 32, (unsigned)sets}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_sets_bf16(ns, partial.data(), grid, d, accumulate); });
  for (int s = 0; s < sets; ++s) {   // slots sets..2·sets-1: each alone
    const int k = sets + s;
    std::vector<float> part((long long)grid * d, -1.f);
    launch({grid}, {256}, [&] { rms::rmsnorm_forward_rows_bf16(x[s].data(), nullptr, nullptr, w[s].data(), y[k].data(), rstd[k].data(), rows, d, 1e-5f); });
    launch({grid}, {256}, [&] { rms::rmsnorm_backward_rows_bf16(x[s].data(), w[s].data(), dy[s].data(), nullptr, rstd[k].data(), dx[k].data(), part.data(), rows, d); });
    launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_bf16(part.data(), dw[k].data(), grid, d, (accumulate >> s) & 1); });
  }
  bool same = true;
  for (int s = 0; s < sets; ++s)
    same = same && y[s] == y[sets + s] && rstd[s] == rstd[sets + s] && dx[s] == dx[sets + s] && dw[s] == dw[sets + s] && y[s] != dx[s];
  char what[128];
  std::snprintf(what, sizeof what, "rmsnorm rows_sets_bf16 %d sets of %lldx%d grid %u accumulate 0x%x = each alone, bit for bit", sets, rows, d, grid, accumulate);
  expect(same, what, same ? 0.0 : 1.0);
}

static void check_rmsnorm_rows(long long rows, int d, unsigned grid, bool scaled, bool add) {
  std::mt19937 rng(rows * 29 + d + add);
  std::normal_distribution<float> n01;
  auto draw = [&](long long n) { std::vector<unsigned short> v(n); for (auto& e : v) e = rms::to_bf16(n01(rng)); return v; };
  auto x = draw(rows * d), res = draw(rows * d), dy = draw(rows * d), dres = draw(rows * d), w = draw(d);
  for (auto& v : w) v = rms::to_bf16(1.f + 0.1f * __uint_as_float((unsigned)v << 16));
  const unsigned short* wp = scaled ? w.data() : nullptr;
  const unsigned short *rp = add ? res.data() : nullptr, *drp = add ? dres.data() : nullptr;
  std::vector<unsigned short> y[2], sum[2], dx[2], dw[2];
  std::vector<float> rstd[2];
  unsigned tpr, rpb; layout(d, tpr, rpb);
  for (int k : {0, 1}) {   // 0: block a row, 1: warp a row
    y[k].resize(rows * d); sum[k].resize(rows * d); dx[k].resize(rows * d); dw[k].resize(d); rstd[k].resize(rows);
    unsigned short* sp = add ? sum[k].data() : nullptr;
    const long long parts = k ? grid : (long long)grid * rpb;
    std::vector<float> partial(parts * d, -1.f);
    if (k == 0) {
      launch({grid}, {tpr, rpb}, [&] { rms::rmsnorm_forward_bf16(x.data(), rp, sp, wp, y[k].data(), rstd[k].data(), rows, d, 1e-5f, 1); });
      const unsigned short* xin = add ? sum[k].data() : x.data();
      launch({grid}, {tpr, rpb}, [&] { rms::rmsnorm_backward_bf16(xin, wp, dy.data(), drp, rstd[k].data(), dx[k].data(), scaled ? partial.data() : nullptr, rows, d, 1); });
    } else {
      launch({grid}, {256}, [&] { rms::rmsnorm_forward_rows_bf16(x.data(), rp, sp, wp, y[k].data(), rstd[k].data(), rows, d, 1e-5f); });
      const unsigned short* xin = add ? sum[k].data() : x.data();
      launch({grid}, {256}, [&] { rms::rmsnorm_backward_rows_bf16(xin, wp, dy.data(), drp, rstd[k].data(), dx[k].data(), scaled ? partial.data() : nullptr, rows, d); });
    }
    if (scaled) launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_bf16(partial.data(), dw[k].data(), parts, d, 0); });
  }
  auto f = [](unsigned short h) { return (double)__uint_as_float((unsigned)h << 16); };
  double e = 0, m = 0, er = 0;
  auto cmp = [&](const std::vector<unsigned short>& a, const std::vector<unsigned short>& b) {
    for (size_t i = 0; i < a.size(); ++i) { e = std::max(e, std::abs(f(a[i]) - f(b[i]))); m = std::max(m, std::abs(f(b[i]))); }
  };
  cmp(y[1], y[0]); cmp(dx[1], dx[0]);
  if (scaled) cmp(dw[1], dw[0]);
  for (long long r = 0; r < rows; ++r) er = std::max(er, (double)std::abs(rstd[1][r] - rstd[0][r]) / rstd[0][r]);
  const bool same_sum = !add || sum[0] == sum[1];
  char what[128];
  std::snprintf(what, sizeof what, "rmsnorm%s%s rows_bf16 %lldx%d grid %u = block-a-row kernels", add ? " +add" : "", scaled ? "" : "_noscale", rows, d, grid);
  expect(e / m <= 1.0 / 128 && er < 1e-5 && same_sum, what, std::max(e / m, er));
}

// bf16 gradients (as trained): the same values rounded to bf16 first, read through the bf16 kernels
static void check_adamw(long long n, long long decay, unsigned grid, bool inject_nan, int vec, bool bf16_grads = false) {
  std::mt19937 rng(n);
  std::normal_distribution<float> n01;
  std::vector<float> master(n), g(n), m(n, 0.f), v(n, 0.f), partials(1024), scalars(4), norm(1);
  std::vector<unsigned short> params(n);
  for (auto& p : master) p = n01(rng);
  for (auto& x : g) x = n01(rng);
  if (inject_nan) g[n / 2] = NAN;
  std::vector<unsigned short> gh(n);
  for (long long i = 0; i < n; ++i) if (bf16_grads) { gh[i] = rms::to_bf16(g[i]); g[i] = __uint_as_float((unsigned)gh[i] << 16); }
  std::vector<double> rm(n, 0.0), rv(n, 0.0), rp(master.begin(), master.end());
  unsigned counter = 0; double steps = 0; long long first_bad = -1;
  const double lr = 1e-3, wd = 0.1, b1 = 0.9, b2 = 0.95, eps = 1e-8, clip = 1.0;
  const float decay_factor = 1.f - (float)lr * (float)wd;
  launch({grid}, {256}, [&] {
    if (bf16_grads) adam::adamw_norm_bf16(gh.data(), n, partials.data(), &counter, norm.data(), scalars.data(), &steps, &first_bad, 5, (float)clip, b1, b2, vec);
    else adam::adamw_norm_f32(g.data(), n, partials.data(), &counter, norm.data(), scalars.data(), &steps, &first_bad, 5, (float)clip, b1, b2, vec);
  });
  launch({grid}, {256}, [&] {
    if (bf16_grads) adam::adamw_update_bf16(gh.data(), master.data(), m.data(), v.data(), params.data(), n, decay, scalars.data(), (float)lr, (float)b1, (float)b2, (float)eps, decay_factor, vec);
    else adam::adamw_update_f32(g.data(), master.data(), m.data(), v.data(), params.data(), n, decay, scalars.data(), (float)lr, (float)b1, (float)b2, (float)eps, decay_factor, vec);
  });
  double ss = 0; for (auto x : g) ss += (double)x * x;
  double nrm = std::sqrt(ss);
  char what[128];
  if (inject_nan) {
    bool ok = counter == 0 && steps == 0 && first_bad == 5 && std::isnan(norm[0]) && scalars[1] == 0.f && m[0] == 0.f && master[0] == (float)rp[0];
    std::snprintf(what, sizeof what, "adamw %s %lld grid %u vec %d: a NaN gradient changes nothing, records step 5", bf16_grads ? "bf16" : "fp32", n, grid, vec);
    expect(ok, what, 0);
    return;
  }
  double scale = std::min(1.0, clip / (nrm + 1e-6)), err = std::abs(norm[0] - nrm) / nrm, perr = 0;
  double bc1 = 1 - b1, bc2 = 1 - b2;
  for (long long i = 0; i < n; ++i) {
    double gi = g[i] * scale, mi = (1 - b1) * gi, vi = (1 - b2) * gi * gi, p = rp[i];
    if (i < decay) p *= 1 - lr * wd;
    p -= lr / bc1 * mi / (std::sqrt(vi / bc2) + eps);
    err = std::max({err, std::abs(m[i] - mi) / (std::abs(mi) + 1e-30), std::abs(v[i] - vi) / (std::abs(vi) + 1e-30), std::abs(master[i] - p) / std::abs(p)});
    float pb = __uint_as_float((unsigned)params[i] << 16);
    perr = std::max(perr, std::abs(pb - p) / std::abs(p));
  }
  bool ok = counter == 0 && steps == 1 && first_bad == -1 && err < 1e-5 && perr <= 1.0 / 256;
  std::snprintf(what, sizeof what, "adamw %s %lld (decay %lld) grid %u vec %d: norm, moments, master, bf16 params", bf16_grads ? "bf16" : "fp32", n, decay, grid, vec);
  expect(ok, what, std::max(err, perr));
}

#include "check_mix.h"
#include "check_ce.h"

static void check_bf16() {
  using rms::to_bf16;
  bool ok = to_bf16(1.0f) == 0x3f80 && to_bf16(__uint_as_float(0x3f808000u)) == 0x3f80   // tie -> even
         && to_bf16(__uint_as_float(0x3f818000u)) == 0x3f82 && to_bf16(__uint_as_float(0x3f808001u)) == 0x3f81
         && to_bf16(NAN) == 0x7fc0 && to_bf16(INFINITY) == 0x7f80 && to_bf16(-2.0f) == 0xc000
         && to_bf16(__uint_as_float(0x7f7fffffu)) == 0x7f80;   // FLT_MAX rounds to inf, as torch does
  expect(ok, "bf16: round to nearest even, NaN, inf, overflow", 0);
}

int main() {
  check_bf16();
  for (bool scaled : {true, false}) {
    for (int vec : {1, 0}) {   // 16-byte vectors where D allows
      check_rmsnorm(3, 8, 1, scaled, vec);
      check_rmsnorm(37, 12, 2, scaled, vec);
      check_rmsnorm(5, 1000, 2, scaled, vec);
      check_rmsnorm(2, 4096, 1, scaled, vec);
    }
    check_rmsnorm_bf16(5, 1024, 2, scaled);
    check_rmsnorm(1, 1, 1, scaled);
    check_rmsnorm(3, 7, 1, scaled);        // 8 rows a block, one block
    check_rmsnorm(37, 7, 2, scaled);       // grid-stride over row groups
    check_rmsnorm(5, 1000, 2, scaled);     // 128 threads a row, 2 rows a block, a partial last group
    check_rmsnorm(3, 1024, 2, scaled);
    check_rmsnorm(2, 4096, 1, scaled);     // 512 threads, one row a block, rows walked grid-stride
  }
  for (bool add : {false, true}) {
    check_rmsnorm_rows(3, 256, 1, true, add);      // fewer rows than warps
    check_rmsnorm_rows(37, 768, 2, true, add);     // warp-stride over the rows, 3 vectors a lane
    check_rmsnorm_rows(19, 1024, 2, false, add);   // 4 vectors a lane, no scale
  }
  check_rmsnorm_sets(3, 256, 1, 3, 0);       // fewer rows than warps
  check_rmsnorm_sets(37, 768, 2, 3, 0x5);    // warp-stride rows; sets 0 and 2 add into a preset dw
  check_rmsnorm_sets(19, 1024, 2, 2, 0x2);
  check_ops();
  check_add_rmsnorm_all();
  for (int vec : {1, 0}) {   // 1007 = 4·251 + 3: vectors then a tail; decay ends inside a vector at 642
    check_adamw(1, 0, 1, false, vec);
    check_adamw(1007, 642, 3, false, vec);
    check_adamw(5000, 3200, 2, false, vec);
    check_adamw(1007, 640, 3, true, vec);
    check_adamw(1007, 642, 3, false, vec, true);   // bf16 gradients: 8 a vector in the norm, 4 in the update
    check_adamw(1007, 640, 3, true, vec, true);
  }
  check_mix_all();
  check_ce_all();
  std::printf(failures == 0 ? "all ok\n" : "%d FAILED\n", failures);
  return failures == 0 ? 0 : 1;
}

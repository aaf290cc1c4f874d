// SwiGLU and QK-norm with rotary (swiglu.cu, qkrotary.cu) against plain loops in double; included by check.cpp.
namespace swi {
#include "../../src/DistTrain.Cuda/Ops/SwiGlu/swiglu.cu"
}
namespace qkr {
#include "../../src/DistTrain.Cuda/Ops/QkRotary/qkrotary.cu"
}

static float bf16_round(float v) { return __uint_as_float((unsigned)rms::to_bf16(v) << 16); }

// fp32 and bf16, 16-byte vectors and single elements (the two paths must agree bit for bit in bf16)
static void check_swiglu(long long n, unsigned grid) {
  std::mt19937 rng(n);
  std::normal_distribution<float> n01;
  std::vector<float> a(n), b(n), dy(n);
  for (auto* v : {&a, &b, &dy}) for (auto& x : *v) x = bf16_round(3.f * n01(rng));
  double e = 0, m = 0, e16 = 0;
  std::vector<float> y(n), da(n), db(n);
  for (int vec : {1, 0}) {
    launch({grid}, {256}, [&] { swi::swiglu_forward_f32(a.data(), b.data(), y.data(), n, vec); });
    launch({grid}, {256}, [&] { swi::swiglu_backward_f32(a.data(), b.data(), dy.data(), da.data(), db.data(), n, vec); });
    for (long long i = 0; i < n; ++i) {
      double s = 1 / (1 + std::exp(-(double)a[i])), yr = a[i] * s * b[i];
      double dbr = dy[i] * a[i] * s, dar = dy[i] * b[i] * s * (1 + a[i] * (1 - s));
      e = std::max({e, std::abs(y[i] - yr), std::abs(da[i] - dar), std::abs(db[i] - dbr)});
      m = std::max({m, std::abs(yr), std::abs(dar), std::abs(dbr)});
    }
  }
  std::vector<unsigned short> ah(n), bh(n), dyh(n), yh[2], dah[2], dbh[2];
  for (long long i = 0; i < n; ++i) { ah[i] = rms::to_bf16(a[i]); bh[i] = rms::to_bf16(b[i]); dyh[i] = rms::to_bf16(dy[i]); }
  for (int vec : {1, 0}) {
    yh[vec].resize(n); dah[vec].resize(n); dbh[vec].resize(n);
    launch({grid}, {256}, [&] { swi::swiglu_forward_bf16(ah.data(), bh.data(), yh[vec].data(), n, vec); });
    launch({grid}, {256}, [&] { swi::swiglu_backward_bf16(ah.data(), bh.data(), dyh.data(), dah[vec].data(), dbh[vec].data(), n, vec); });
  }
  bool same = yh[0] == yh[1] && dah[0] == dah[1] && dbh[0] == dbh[1];
  for (long long i = 0; i < n; ++i) {   // bf16: within half a step of the fp32 result
    auto f = [](unsigned short h) { return __uint_as_float((unsigned)h << 16); };
    e16 = std::max({e16, std::abs(f(yh[1][i]) - y[i]) / (std::abs(y[i]) + 1e-30), std::abs(f(dah[1][i]) - da[i]) / (std::abs(da[i]) + 1e-30),
                    std::abs(f(dbh[1][i]) - db[i]) / (std::abs(db[i]) + 1e-30)});
  }
  char what[128];
  std::snprintf(what, sizeof what, "swiglu %lld grid %u: y/da/db fp32, bf16 (vector = scalar)", n, grid);
  expect(e / m < 1e-6 && same && e16 <= 1.0 / 256, what, std::max(e / m, e16));
}

// x: a (B, T, H, d) view of a packed (B, T, 3, H, d) buffer (slot 1, as k of wqkv) when packed; dy transposed from (B, H, T, d)
// grouped: the _v kernels (d/8 lanes a row, 4 pairs a lane), as FusedQkRotary.Grouped picks them for d = 8 · 2^k ≤ 256
template <typename T>
static void check_qkrotary(int B, int Tn, int H, int d, bool normed, bool packed, unsigned grid, bool grouped = false) {
  const bool bf = sizeof(T) == 2;
  std::mt19937 rng(B * 1000 + Tn * 100 + H * 10 + d + normed);
  std::normal_distribution<float> n01;
  const int half = d / 2, Tt = Tn + 2;   // a table longer than T, as the model's
  const long long rows = (long long)B * Tn * H;
  auto cv = [](float v) { return T(0) == T(0) && sizeof(T) == 2 ? (T)rms::to_bf16(v) : (T)v; };
  auto fv = [](T v) { return rms::to_float(v); };
  std::vector<T> xbuf(rows * d * (packed ? 3 : 1)), w(d), dybuf(rows * d), y(rows * d), dx(rows * d), dw(d);
  for (auto& v : xbuf) v = cv(2.f * n01(rng));
  for (auto& v : w) v = cv(1.f + 0.1f * n01(rng));
  for (auto& v : dybuf) v = cv(n01(rng));
  std::vector<float> cs(Tt * half), sn(Tt * half);
  for (int t = 0; t < Tt; ++t) for (int i = 0; i < half; ++i) {
    double ang = t / std::pow(10000.0, 2.0 * i / d);
    cs[t * half + i] = bf16_round((float)std::cos(ang)); sn[t * half + i] = bf16_round((float)std::sin(ang));
  }
  // strides
  long long sh = d, st = (long long)H * d * (packed ? 3 : 1), sb = st * Tn, off = packed ? (long long)H * d : 0;
  long long gh = (long long)Tn * d, gt = d, gb = (long long)H * Tn * d;   // dy: (B, H, T, d) contiguous, seen as (B, T, H, d)
  const T* x = xbuf.data() + off;
  const T* wp = normed ? w.data() : nullptr;
  const float eps = 1e-5f;
  long long parts = grouped ? grid : (long long)grid * 8;   // the _v kernels write a partial row a block, the others one a warp
  std::vector<float> partial((long long)grid * 8 * d, -1.f);
  if (grouped) {
    if constexpr (sizeof(T) == 2) {
      launch({grid}, {32, 8}, [&] { qkr::qkrotary_forward_bf16_v(x, wp, cs.data(), sn.data(), y.data(), rows, Tn, H, d, sb, st, sh, eps); });
      launch({grid}, {32, 8}, [&] { qkr::qkrotary_backward_bf16_v(x, wp, cs.data(), sn.data(), dybuf.data(), dx.data(), normed ? partial.data() : nullptr,
                                                                  rows, Tn, H, d, sb, st, sh, gb, gt, gh, eps); });
      if (normed) launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_bf16(partial.data(), dw.data(), parts, d, 0); });
    } else {
      launch({grid}, {32, 8}, [&] { qkr::qkrotary_forward_f32_v(x, wp, cs.data(), sn.data(), y.data(), rows, Tn, H, d, sb, st, sh, eps); });
      launch({grid}, {32, 8}, [&] { qkr::qkrotary_backward_f32_v(x, wp, cs.data(), sn.data(), dybuf.data(), dx.data(), normed ? partial.data() : nullptr,
                                                                 rows, Tn, H, d, sb, st, sh, gb, gt, gh, eps); });
      if (normed) launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_f32(partial.data(), dw.data(), parts, d, 0); });
    }
  } else if constexpr (sizeof(T) == 2) {
    launch({grid}, {32, 8}, [&] { qkr::qkrotary_forward_bf16(x, wp, cs.data(), sn.data(), y.data(), rows, Tn, H, d, sb, st, sh, eps); });
    launch({grid}, {32, 8}, [&] { qkr::qkrotary_backward_bf16(x, wp, cs.data(), sn.data(), dybuf.data(), dx.data(), normed ? partial.data() : nullptr,
                                                              rows, Tn, H, d, sb, st, sh, gb, gt, gh, eps); });
    if (normed) launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_bf16(partial.data(), dw.data(), parts, d, 0); });
  } else {
    launch({grid}, {32, 8}, [&] { qkr::qkrotary_forward_f32(x, wp, cs.data(), sn.data(), y.data(), rows, Tn, H, d, sb, st, sh, eps); });
    launch({grid}, {32, 8}, [&] { qkr::qkrotary_backward_f32(x, wp, cs.data(), sn.data(), dybuf.data(), dx.data(), normed ? partial.data() : nullptr,
                                                             rows, Tn, H, d, sb, st, sh, gb, gt, gh, eps); });
    if (normed) launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] { rms::rmsnorm_dw_reduce_f32(partial.data(), dw.data(), parts, d, 0); });
  }
  double ey = 0, my = 0, edx = 0, mdx = 0, edw = 0, mdw = 0;
  std::vector<double> dwr(d, 0.0), xh(d), n(d), g(d), dn(d);
  for (int b = 0; b < B; ++b) for (int t = 0; t < Tn; ++t) for (int h = 0; h < H; ++h) {
    const long long row = ((long long)b * Tn + t) * H + h;
    const T* xr = x + b * sb + t * st + h * sh;
    const T* gr = dybuf.data() + b * gb + t * gt + h * gh;
    double ss = 0; for (int c = 0; c < d; ++c) ss += (double)fv(xr[c]) * fv(xr[c]);
    double r = normed ? 1 / std::sqrt(ss / d + eps) : 1.0;
    for (int c = 0; c < d; ++c) { xh[c] = fv(xr[c]) * r; n[c] = xh[c] * (normed ? fv(w[c]) : 1.0); }
    for (int i = 0; i < half; ++i) {
      double c = cs[t * half + i], s = sn[t * half + i];
      double y0 = n[i] * c - n[i + half] * s, y1 = n[i + half] * c + n[i] * s;
      ey = std::max({ey, std::abs(fv(y[row * d + 2 * i]) - y0), std::abs(fv(y[row * d + 2 * i + 1]) - y1)});
      my = std::max({my, std::abs(y0), std::abs(y1)});
      double g0 = fv(gr[2 * i]), g1 = fv(gr[2 * i + 1]);
      dn[i] = g0 * c + g1 * s; dn[i + half] = g1 * c - g0 * s;   // the transpose of the rotation
    }
    double dot = 0;
    for (int c = 0; c < d; ++c) { g[c] = dn[c] * (normed ? fv(w[c]) : 1.0); dot += g[c] * xh[c]; dwr[c] += dn[c] * xh[c]; }
    for (int c = 0; c < d; ++c) {
      double dxr = normed ? r * (g[c] - xh[c] * dot / d) : dn[c];
      edx = std::max(edx, std::abs(fv(dx[row * d + c]) - dxr)); mdx = std::max(mdx, std::abs(dxr));
    }
  }
  if (normed) for (int c = 0; c < d; ++c) { edw = std::max(edw, std::abs(fv(dw[c]) - dwr[c])); mdw = std::max(mdw, std::abs(dwr[c])); }
  double rel = std::max(ey / my, edx / mdx);
  if (normed) rel = std::max(rel, edw / mdw);
  char what[160];
  std::snprintf(what, sizeof what, "qk%s%s %s %dx%dx%dx%d%s grid %u y/dx%s", normed ? "norm_rotary" : "_rotary", grouped ? "_v" : "", bf ? "bf16" : "fp32", B, Tn, H, d,
                packed ? " packed view" : "", grid, normed ? "/dw" : "");
  expect(rel < (bf ? 1.0 / 128 : 1e-5), what, rel);
}

// q and k in one launch (qkrotary_*_pair_bf16_v, one a blockIdx.y) against each alone through the _v kernels: the same
// device code, so y, dx and the dw partial rows must be equal bit for bit. Contiguous (B, T, H, d) views.
static void check_qk_pair(int B, int Tn, int H, int d, bool normed, unsigned grid) {
  std::mt19937 rng(B * 7 + Tn * 5 + H * 3 + d + normed);
  std::normal_distribution<float> n01;
  const int half = d / 2, Tt = Tn + 1;
  const long long rows = (long long)B * Tn * H, n = rows * d;
  auto draw = [&](long long m, float scale, float shift) { std::vector<unsigned short> v(m); for (auto& e : v) e = rms::to_bf16(shift + scale * n01(rng)); return v; };
  std::vector<unsigned short> x[2] = {draw(n, 2.f, 0.f), draw(n, 2.f, 0.f)}, w[2] = {draw(d, 0.1f, 1.f), draw(d, 0.1f, 1.f)},
                              dy[2] = {draw(n, 1.f, 0.f), draw(n, 1.f, 0.f)}, y[4], dx[4];
  for (int i = 0; i < 4; ++i) { y[i].resize(n); dx[i].resize(n); }
  std::vector<float> cs(Tt * half), sn(Tt * half), pair(2 * grid * d, -1.f), alone(2 * grid * d, -1.f);
  for (int i = 0; i < Tt * half; ++i) { cs[i] = std::cos(0.01f * i); sn[i] = std::sin(0.01f * i); }
  const long long sh = d, st = (long long)H * d, sb = st * Tn;
  qkr::QkPair p{};
  for (int s = 0; s < 2; ++s) { p.x[s] = x[s].data(); p.w[s] = normed ? w[s].data() : nullptr; p.out[s] = y[s].data(); p.dy[s] = dy[s].data(); }
  launch({grid, 2}, {32, 8}, [&] { qkr::qkrotary_forward_pair_bf16_v(p, cs.data(), sn.data(), rows, Tn, H, d, sb, st, sh, 1e-5f); });
  for (int s = 0; s < 2; ++s) p.out[s] = dx[s].data();
  launch({grid, 2}, {32, 8}, [&] { qkr::qkrotary_backward_pair_bf16_v(p, cs.data(), sn.data(), normed ? pair.data() : nullptr, rows, Tn, H, d, sb, st, sh, sb, st, sh, 1e-5f); });
  for (int s = 0; s < 2; ++s) {
    launch({grid}, {32, 8}, [&] { qkr::qkrotary_forward_bf16_v(x[s].data(), normed ? w[s].data() : nullptr, cs.data(), sn.data(), y[2 + s].data(), rows, Tn, H, d, sb, st, sh, 1e-5f); });
    launch({grid}, {32, 8}, [&] { qkr::qkrotary_backward_bf16_v(x[s].data(), normed ? w[s].data() : nullptr, cs.data(), sn.data(), dy[s].data(), dx[2 + s].data(),
                                                                   normed ? alone.data() + (long long)s * grid * d : nullptr, rows, Tn, H, d, sb, st, sh, sb, st, sh, 1e-5f); });
  }
  const bool same = y[0] == y[2] && y[1] == y[3] && dx[0] == dx[2] && dx[1] == dx[3] && pair == alone && y[0] != y[1];
  char what[128];
  std::snprintf(what, sizeof what, "qkrotary pair_bf16_v %dx%dx%dx%d%s grid %u = q and k alone, bit for bit", B, Tn, H, d, normed ? "" : " (no norm)", grid);
  expect(same, what, same ? 0.0 : 1.0);
}

static void check_ops() {
  for (bool normed : {true, false}) {
    check_qk_pair(2, 4, 16, 64, normed, 3);   // the 405M head, 8 rows a warp, grid-stride
    check_qk_pair(3, 5, 7, 32, normed, 2);
  }
  check_swiglu(1, 1);
  check_swiglu(7, 1);          // fewer than one vector: the scalar tail only
  check_swiglu(8, 1);          // one bf16 vector, two fp32
  check_swiglu(1001, 2);       // a tail of 1 (bf16) / 1 (fp32), grid-stride
  check_swiglu(4099, 1);
  for (bool normed : {true, false}) {
    check_qkrotary<float>(1, 1, 1, 2, normed, false, 1);
    check_qkrotary<float>(2, 3, 5, 6, normed, true, 2);     // 30 rows, 16 a pass: grid-stride, a partial last pass
    check_qkrotary<float>(1, 7, 3, 130, normed, false, 1);  // 65 pairs: 3 a lane, the last lane-partial
    check_qkrotary<float>(2, 2, 2, 256, normed, true, 1);   // MAXP = 4 pairs a lane, all full
    check_qkrotary<float>(2, 4, 16, 64, normed, true, 3);   // the 405M head (d = 64)
    check_qkrotary<unsigned short>(2, 3, 5, 6, normed, true, 2);
    check_qkrotary<unsigned short>(2, 4, 16, 64, normed, true, 3);
    // the _v kernels: d = 8 (1 lane a row, 32 rows a warp), 64 (8 lanes: the 405M head), 256 (32 lanes: one row a warp)
    check_qkrotary<float>(2, 3, 5, 8, normed, true, 2, true);        // 30 rows in one warp's 32, a partial warp
    check_qkrotary<float>(2, 4, 16, 64, normed, true, 3, true);
    check_qkrotary<float>(1, 3, 3, 256, normed, false, 1, true);
    check_qkrotary<unsigned short>(2, 4, 16, 64, normed, true, 3, true);
    check_qkrotary<unsigned short>(3, 5, 7, 32, normed, false, 2, true);   // 105 rows, 8 a warp, grid-stride
    check_qkrotary<unsigned short>(4, 16, 16, 64, normed, true, 1, true);  // 1024 rows: 16 passes of QKR_ROWS rows a lane
  }
}

// The MUDD mixing kernels (mix.cu) against loops in double; included by check.cpp after expect().
#pragma once
namespace mixk {
#include "../../src/DistTrain.Cuda/Ops/Mix/mix.cu"
}

// FusedMix.Layout
static void mix_layout(int d, int v, unsigned& tpt, unsigned& tpb) {
  unsigned chunks = (d + v - 1) / v;
  tpt = (chunks + 31) / 32 * 32;
  tpb = 256 / tpt ? 256 / tpt : 1;
}

// T: float or unsigned short (bf16). Values are drawn, stored in T, and the reference uses the stored values.
// writemask: the hiddens whose gradient backward writes; nc2 > 0: a deferred mix over l2 hiddens (nc2 streams) is added too.
template <typename T>
static void check_mix(long long tokens, int d, int nc, int l, unsigned grid, bool vec, unsigned long long addmask,
                      unsigned long long writemask = ~0ull, int nc2 = 0, int l2 = 0) {
  const bool bf16 = sizeof(T) == 2;
  const int v = vec ? (bf16 ? 8 : 4) : 1;
  std::mt19937 rng(tokens * 7919 + d * 31 + nc * 7 + l);
  std::normal_distribution<float> n01;
  auto draw = [&](std::vector<T>& x) { for (auto& e : x) { float f = n01(rng); if constexpr (sizeof(T) == 2) e = mixk::mix_to_bf16(f); else e = f; } };
  auto val = [](T e) { return mixk::mix_to_float(e); };
  const size_t n = (size_t)tokens * d;
  std::vector<std::vector<T>> h(l, std::vector<T>(n)), gh(l, std::vector<T>(n)), out(nc, std::vector<T>(n)), g(nc, std::vector<T>(n));
  std::vector<T> w((size_t)nc * tokens * l);
  std::vector<float> gw((size_t)nc * tokens * l);   // fp32 whatever T
  std::vector<std::vector<T>> g2(nc2, std::vector<T>(n));
  std::vector<T> w2((size_t)nc2 * tokens * l2);
  for (auto& x : h) draw(x);
  for (auto& x : g) draw(x);
  for (auto& x : g2) draw(x);
  draw(w2);
  for (auto& x : gh) draw(x);   // the old buffer contents: added to where addmask says, overwritten elsewhere
  draw(w);
  std::vector<std::vector<T>> old = gh;
  mixk::MixTable<T> tab{};
  for (int j = 0; j < l; ++j) { tab.h[j] = h[j].data(); tab.gh[j] = gh[j].data(); }
  for (int c = 0; c < nc; ++c) { tab.g[c] = g[c].data(); tab.out[c] = out[c].data(); }
  for (int c = 0; c < nc2; ++c) tab.g2[c] = g2[c].data();
  const T* pw2 = nc2 ? w2.data() : nullptr;
  unsigned tpt, tpb; mix_layout(d, v, tpt, tpb);
  dynamic_shared.assign((size_t)tpb * nc * l, -1.f);
  launch({grid}, {tpt, tpb}, [&] {
    if (bf16) { if (vec) mixk::mix_forward_bf16_v((const mixk::MixTable<unsigned short>&)tab, (const unsigned short*)w.data(), tokens, nc, l, d);
                else mixk::mix_forward_bf16((const mixk::MixTable<unsigned short>&)tab, (const unsigned short*)w.data(), tokens, nc, l, d); }
    else { if (vec) mixk::mix_forward_f32_v((const mixk::MixTable<float>&)tab, (const float*)w.data(), tokens, nc, l, d);
           else mixk::mix_forward_f32((const mixk::MixTable<float>&)tab, (const float*)w.data(), tokens, nc, l, d); }
  });
  dynamic_shared.assign((size_t)(tpb + tpb * (tpt / 32)) * nc * l + (size_t)tpb * nc2 * l2, -1.f);
  using U = unsigned short;
  const auto& tabu = (const mixk::MixTable<U>&)tab;
  const auto& tabf = (const mixk::MixTable<float>&)tab;
  launch({grid}, {tpt, tpb}, [&] {
    if (bf16) {
      auto wu = (const U*)w.data(); auto gwu = gw.data(); auto w2u = (const U*)pw2;
      if (nc2) { if (vec) mixk::mix_backward_p_bf16_v(tabu, wu, gwu, tokens, nc, l, d, addmask, writemask, w2u, nc2, l2);
                 else mixk::mix_backward_p_bf16(tabu, wu, gwu, tokens, nc, l, d, addmask, writemask, w2u, nc2, l2); }
      else { if (vec) mixk::mix_backward_bf16_v(tabu, wu, gwu, tokens, nc, l, d, addmask, writemask, nullptr, 0, 0);
             else mixk::mix_backward_bf16(tabu, wu, gwu, tokens, nc, l, d, addmask, writemask, nullptr, 0, 0); }
    } else {
      auto wf = (const float*)w.data(); auto gwf = gw.data(); auto w2f = (const float*)pw2;
      if (nc2) { if (vec) mixk::mix_backward_p_f32_v(tabf, wf, gwf, tokens, nc, l, d, addmask, writemask, w2f, nc2, l2);
                 else mixk::mix_backward_p_f32(tabf, wf, gwf, tokens, nc, l, d, addmask, writemask, w2f, nc2, l2); }
      else { if (vec) mixk::mix_backward_f32_v(tabf, wf, gwf, tokens, nc, l, d, addmask, writemask, nullptr, 0, 0);
             else mixk::mix_backward_f32(tabf, wf, gwf, tokens, nc, l, d, addmask, writemask, nullptr, 0, 0); }
    }
  });
  // error relative to the largest reference magnitude of each output
  double eo = 0, mo = 0, eh = 0, mh = 0, ew = 0, mw = 0;
  auto W = [&](int c, long long t, int j) { return (double)val(w[((size_t)c * tokens + t) * l + j]); };
  for (long long t = 0; t < tokens; ++t) {
    for (int col = 0; col < d; ++col) {
      const size_t i = (size_t)t * d + col;
      for (int c = 0; c < nc; ++c) {
        double r = 0; for (int j = 0; j < l; ++j) r += W(c, t, j) * val(h[j][i]);
        eo = std::max(eo, std::abs(val(out[c][i]) - r)); mo = std::max(mo, std::abs(r));
      }
      for (int j = 0; j < l; ++j) {
        if (!((writemask >> j) & 1)) {   // not written: exactly as it was
          if (std::memcmp(&gh[j][i], &old[j][i], sizeof(T)) != 0) eh = std::max(eh, 1e30);
          continue;
        }
        double r = (addmask >> j) & 1 ? (double)val(old[j][i]) : 0.0;
        for (int c = 0; c < nc; ++c) r += W(c, t, j) * val(g[c][i]);
        if (j < l2)
          for (int c = 0; c < nc2; ++c) r += (double)val(w2[((size_t)c * tokens + t) * l2 + j]) * val(g2[c][i]);
        eh = std::max(eh, std::abs(val(gh[j][i]) - r)); mh = std::max(mh, std::abs(r));
      }
    }
    for (int c = 0; c < nc; ++c)
      for (int j = 0; j < l; ++j) {
        double r = 0; for (int col = 0; col < d; ++col) r += (double)val(g[c][(size_t)t * d + col]) * val(h[j][(size_t)t * d + col]);
        const double got = gw[((size_t)c * tokens + t) * l + j];   // fp32 whatever T
        ew = std::max(ew, std::abs(got - r)); mw = std::max(mw, std::abs(r));
      }
  }
  const double rel = std::max({eo / mo, eh / mh, ew / mw});
  const double tol = bf16 ? 1.0 / 128 : 1e-5;   // bf16: one rounding of the output (2^-8 relative) plus fp32 sums
  char what[160];
  std::snprintf(what, sizeof what, "mix %s%s %lldx%d C=%d L=%d grid %u (tpt %u, tpb %u) add 0x%llx write 0x%llx deferred C=%d L=%d out/gh/gw",
                bf16 ? "bf16" : "fp32", vec ? " vec" : "", tokens, d, nc, l, grid, tpt, tpb, addmask, writemask, nc2, l2);
  expect(rel < tol, what, rel);
}

static void check_mix_all() {
  check_mix<float>(1, 1, 1, 2, 1, false, 0x1);
  check_mix<float>(3, 7, 4, 3, 1, false, 0x5);          // 8 tokens a block, a partial warp of columns
  check_mix<float>(17, 7, 4, 3, 2, false, 0x2);         // grid-stride over token groups
  check_mix<float>(5, 1000, 4, 26, 2, true, 0x2aaaaaa);  // vectors of 4, 256 threads a token
  check_mix<unsigned short>(5, 1000, 4, 26, 2, true, 0x3ffffff);   // vectors of 8, 128 threads a token, 2 tokens a block
  check_mix<unsigned short>(3, 1001, 1, 3, 2, false, 0x0);   // scalar, 1024 threads a token
  check_mix<unsigned short>(9, 16, 1, 2, 1, true, 0x1);      // two vectors a token, 8 tokens a block
  check_mix<unsigned short>(4, 1024, 4, 64, 1, true, 0x8000000000000001ull);   // the most inputs, the top mask bit
  check_mix<float>(3, 24, 2, 5, 3, true, 0x10);          // more blocks than token groups
  // deferral: a mix that writes only its last hidden, and the next one adding a deferred mix's parts
  check_mix<float>(5, 7, 4, 6, 2, false, 0x25, 0x20);                               // writes h_5 only (the rest untouched)
  check_mix<unsigned short>(5, 1000, 4, 26, 2, true, 0x2aaaaaa, 1ull << 25);
  check_mix<float>(17, 7, 4, 5, 2, false, 0x5, 0x1f, 4, 6);                         // + a deferred mix over 6 hiddens
  check_mix<float>(5, 1000, 3, 25, 2, true, 0x1ffffff, 0x1ffffff, 1, 26);           // vectors of 4, a one-stream deferred mix
  check_mix<unsigned short>(5, 1000, 4, 25, 2, true, 0x0aaaaaa, 0x1ffffff, 4, 26);  // vectors of 8
  check_mix<unsigned short>(3, 1001, 4, 3, 2, false, 0x7, 0x7, 4, 4);               // scalar, 1024 threads a token
  check_mix<unsigned short>(4, 1024, 4, 63, 1, true, ~0ull >> 1, ~0ull >> 1, 1, 64);   // the most inputs
}

// The _n kernels: the mix with sepln's RMSNorm of the first nn streams fused in (forward: raw streams, normed
// streams, rstd; backward: the normed streams' gradients turned into the streams' own, then the mixing's
// backward, the norm weights' gradients through rmsnorm.cu's dw reduce). The reference in double: the mix,
// then the norm of the raw stream as stored (the reference norm reads the rounded stream); backward from
// the forward's stored raw streams. write_gs: the pre-norm stream gradients are written out (a deferring mix).
template <typename T>
static void check_mix_norm(long long tokens, int d, int nc, int nn, int l, unsigned grid, bool vec, unsigned long long addmask,
                           unsigned long long writemask = ~0ull, int nc2 = 0, int l2 = 0, bool write_gs = false) {
  const bool bf16 = sizeof(T) == 2;
  const int v = vec ? (bf16 ? 8 : 4) : 1;
  const float eps = 1e-5f;
  std::mt19937 rng(tokens * 7927 + d * 37 + nc * 11 + l * 3 + nn);
  std::normal_distribution<float> n01;
  auto store = [](float f) { T e; if constexpr (sizeof(T) == 2) e = mixk::mix_to_bf16(f); else e = f; return e; };
  auto draw = [&](std::vector<T>& x, float scale = 1.f, float shift = 0.f) { for (auto& e : x) e = store(shift + scale * n01(rng)); };
  auto val = [](T e) { return (double)mixk::mix_to_float(e); };
  const size_t n = (size_t)tokens * d;
  std::vector<std::vector<T>> h(l, std::vector<T>(n)), gh(l, std::vector<T>(n)), out(nc, std::vector<T>(n)), normed(nn, std::vector<T>(n)),
      g(nc, std::vector<T>(n)), gs(nn, std::vector<T>(n)), nw(nn, std::vector<T>(d)), g2(nc2, std::vector<T>(n));
  std::vector<T> w((size_t)nc * tokens * l), w2((size_t)nc2 * tokens * l2);
  std::vector<float> gw((size_t)nc * tokens * l), rstd((size_t)nn * tokens, -1.f);
  for (auto& x : h) draw(x);
  for (auto& x : g) draw(x);
  for (auto& x : g2) draw(x);
  for (auto& x : nw) draw(x, 0.1f, 1.f);
  for (auto& x : gh) draw(x);
  for (auto& x : gs) draw(x);   // untouched unless write_gs
  draw(w2);
  draw(w, 1.f / l);
  const std::vector<std::vector<T>> old = gh, old_gs = gs;
  mixk::MixTable<T> tab{};
  for (int j = 0; j < l; ++j) { tab.h[j] = h[j].data(); tab.gh[j] = gh[j].data(); }
  for (int c = 0; c < nc; ++c) { tab.g[c] = g[c].data(); tab.out[c] = out[c].data(); }
  for (int c = 0; c < nn; ++c) { tab.normed[c] = normed[c].data(); tab.nw[c] = nw[c].data(); if (write_gs) tab.gs[c] = gs[c].data(); }
  for (int c = 0; c < nc2; ++c) tab.g2[c] = g2[c].data();
  const T* pw2 = nc2 ? w2.data() : nullptr;
  unsigned tpt, tpb; mix_layout(d, v, tpt, tpb);
  const unsigned warps = tpt / 32;
  using U = unsigned short;
  const auto& tabu = (const mixk::MixTable<U>&)tab;
  const auto& tabf = (const mixk::MixTable<float>&)tab;
  dynamic_shared.assign((size_t)tpb * nc * l + (size_t)tpb * warps * 4, -1.f);   // FusedMix.ForwardNormed
  launch({grid}, {tpt, tpb}, [&] {
    if (bf16) { if (vec) mixk::mix_forward_n_bf16_v(tabu, (const U*)w.data(), tokens, nc, l, d, nn, eps, rstd.data());
                else mixk::mix_forward_n_bf16(tabu, (const U*)w.data(), tokens, nc, l, d, nn, eps, rstd.data()); }
    else { if (vec) mixk::mix_forward_n_f32_v(tabf, (const float*)w.data(), tokens, nc, l, d, nn, eps, rstd.data());
           else mixk::mix_forward_n_f32(tabf, (const float*)w.data(), tokens, nc, l, d, nn, eps, rstd.data()); }
  });
  const long long parts = (long long)grid * tpb;
  std::vector<float> partial((size_t)nn * parts * d, NAN);
  std::vector<T> dnw((size_t)nn * d);
  dynamic_shared.assign((size_t)(tpb + tpb * warps) * nc * l + (size_t)tpb * nc2 * l2 + (size_t)tpb * warps * 4, -1.f);
  launch({grid}, {tpt, tpb}, [&] {
    if (bf16) {
      auto wu = (const U*)w.data(); auto w2u = (const U*)pw2;
      if (nc2) { if (vec) mixk::mix_backward_np_bf16_v(tabu, wu, gw.data(), tokens, nc, l, d, addmask, writemask, w2u, nc2, l2, nn, rstd.data(), partial.data());
                 else mixk::mix_backward_np_bf16(tabu, wu, gw.data(), tokens, nc, l, d, addmask, writemask, w2u, nc2, l2, nn, rstd.data(), partial.data()); }
      else { if (vec) mixk::mix_backward_n_bf16_v(tabu, wu, gw.data(), tokens, nc, l, d, addmask, writemask, nullptr, 0, 0, nn, rstd.data(), partial.data());
             else mixk::mix_backward_n_bf16(tabu, wu, gw.data(), tokens, nc, l, d, addmask, writemask, nullptr, 0, 0, nn, rstd.data(), partial.data()); }
    } else {
      auto wf = (const float*)w.data(); auto w2f = (const float*)pw2;
      if (nc2) { if (vec) mixk::mix_backward_np_f32_v(tabf, wf, gw.data(), tokens, nc, l, d, addmask, writemask, w2f, nc2, l2, nn, rstd.data(), partial.data());
                 else mixk::mix_backward_np_f32(tabf, wf, gw.data(), tokens, nc, l, d, addmask, writemask, w2f, nc2, l2, nn, rstd.data(), partial.data()); }
      else { if (vec) mixk::mix_backward_n_f32_v(tabf, wf, gw.data(), tokens, nc, l, d, addmask, writemask, nullptr, 0, 0, nn, rstd.data(), partial.data());
             else mixk::mix_backward_n_f32(tabf, wf, gw.data(), tokens, nc, l, d, addmask, writemask, nullptr, 0, 0, nn, rstd.data(), partial.data()); }
    }
  });
  // each normed stream's dw: one reduce over its parts (FusedRmsNorm.ReduceDw), the third into a preset .grad
  std::vector<T> preset(nn > 2 ? d : 0);
  if (nn > 2) { draw(preset); std::copy(preset.begin(), preset.end(), dnw.begin() + 2 * d); }
  for (int c = 0; c < nn; ++c)
    launch({(unsigned)(d + 31) / 32}, {32, 32}, [&] {
      if constexpr (sizeof(T) == 2) rms::rmsnorm_dw_reduce_bf16(partial.data() + (size_t)c * parts * d, dnw.data() + (size_t)c * d, parts, d, c == 2);
      else rms::rmsnorm_dw_reduce_f32(partial.data() + (size_t)c * parts * d, dnw.data() + (size_t)c * d, parts, d, c == 2);
    });
  // errors relative to the largest reference magnitude of each output
  double e[8] = {}, m[8] = {};   // out, normed, rstd, gh, gw, gs, dnw; [7]: a value not as it must be bit for bit (untouched, or normed's roundings)
  auto note = [&](int k, double got, double ref) { e[k] = std::max(e[k], std::abs(got - ref)); m[k] = std::max(m[k], std::abs(ref)); };
  auto W = [&](int c, long long t, int j) { return val(w[((size_t)c * tokens + t) * l + j]); };
  std::vector<double> dnwr((size_t)nn * d, 0.0);
  for (long long t = 0; t < tokens; ++t) {
    const size_t o = (size_t)t * d;
    std::vector<std::vector<double>> ds(nc, std::vector<double>(d));   // the streams' own gradients (reference)
    for (int c = 0; c < nc; ++c) {
      for (int col = 0; col < d; ++col) {
        double r = 0; for (int j = 0; j < l; ++j) r += W(c, t, j) * val(h[j][o + col]);
        note(0, val(out[c][o + col]), r);
        ds[c][col] = val(g[c][o + col]);
      }
      if (c >= nn) continue;
      double ss = 0; for (int col = 0; col < d; ++col) ss += val(out[c][o + col]) * val(out[c][o + col]);
      const double rs = 1.0 / std::sqrt(ss / d + eps);
      note(2, rstd[(size_t)c * tokens + t], rs);
      double dot = 0;
      for (int col = 0; col < d; ++col) dot += val(g[c][o + col]) * val(nw[c][col]) * val(out[c][o + col]) * rs;
      for (int col = 0; col < d; ++col) {
        const double xh = val(out[c][o + col]) * rs, dy = val(g[c][o + col]);
        note(1, val(normed[c][o + col]), xh * val(nw[c][col]));
        // bit for bit the reference's roundings, given the kernel's rstd: T(T(x · r) · w) of the stored x
        const float xr = (float)val(out[c][o + col]) * rstd[(size_t)c * tokens + t];
        const T exact = store(mixk::mix_rounded(xr, (const T*)0) * (float)val(nw[c][col]));
        if (std::memcmp(&exact, &normed[c][o + col], sizeof(T)) != 0) note(7, 1, 0);
        ds[c][col] = rs * (dy * val(nw[c][col]) - xh * dot / d);
        dnwr[(size_t)c * d + col] += dy * xh;
        if (write_gs) note(5, val(gs[c][o + col]), ds[c][col]);
        else if (std::memcmp(&gs[c][o + col], &old_gs[c][o + col], sizeof(T)) != 0) note(7, 1, 0);
      }
    }
    for (int col = 0; col < d; ++col)
      for (int j = 0; j < l; ++j) {
        if (!((writemask >> j) & 1)) {
          if (std::memcmp(&gh[j][o + col], &old[j][o + col], sizeof(T)) != 0) note(7, 1, 0);
          continue;
        }
        double r = (addmask >> j) & 1 ? val(old[j][o + col]) : 0.0;
        for (int c = 0; c < nc; ++c) r += W(c, t, j) * ds[c][col];
        if (j < l2)
          for (int c = 0; c < nc2; ++c) r += val(w2[((size_t)c * tokens + t) * l2 + j]) * val(g2[c][o + col]);
        note(3, val(gh[j][o + col]), r);
      }
    for (int c = 0; c < nc; ++c)
      for (int j = 0; j < l; ++j) {
        double r = 0; for (int col = 0; col < d; ++col) r += ds[c][col] * val(h[j][o + col]);
        note(4, gw[((size_t)c * tokens + t) * l + j], r);
      }
  }
  for (int c = 0; c < nn; ++c)
    for (int col = 0; col < d; ++col)
      note(6, val(dnw[(size_t)c * d + col]), dnwr[(size_t)c * d + col] + (c == 2 ? val(preset[col]) : 0.0));
  double rel = e[7] > 0 ? 1e30 : 0;
  for (int k = 0; k < 7; ++k) if (m[k] > 0) rel = std::max(rel, e[k] / m[k]);
  const double tol = bf16 ? 1.0 / 128 : 1e-5;
  char what[200];
  std::snprintf(what, sizeof what, "mix+norm %s%s %lldx%d C=%d N=%d L=%d grid %u (tpt %u, tpb %u) add 0x%llx write 0x%llx deferred C=%d L=%d%s",
                bf16 ? "bf16" : "fp32", vec ? " vec" : "", tokens, d, nc, nn, l, grid, tpt, tpb, addmask, writemask, nc2, l2, write_gs ? " gs" : "");
  expect(rel < tol, what, rel);
}

static void check_mix_norm_all() {
  check_mix_norm<float>(2, 2, 4, 3, 2, 1, false, 0x1);                                // the narrowest rows (D = 1 is a cancellation, as for RMSNorm)
  check_mix_norm<float>(3, 7, 4, 3, 3, 1, false, 0x5);                                // 8 tokens a block, a partial warp of columns
  check_mix_norm<float>(17, 7, 4, 3, 3, 2, false, 0x2);                               // grid-stride over token groups
  check_mix_norm<float>(5, 1000, 4, 3, 26, 2, true, 0x2aaaaaa);                       // vectors of 4, 256 threads (8 warps) a token
  check_mix_norm<unsigned short>(5, 1000, 4, 3, 26, 2, true, 0x3ffffff);              // vectors of 8, 128 threads a token, 2 tokens a block
  check_mix_norm<unsigned short>(3, 1001, 4, 3, 3, 2, false, 0x0);                    // scalar, 1024 threads (32 warps) a token
  check_mix_norm<unsigned short>(9, 16, 4, 3, 2, 1, true, 0x1);                       // two vectors a token, 8 tokens a block
  check_mix_norm<float>(3, 24, 2, 1, 5, 3, true, 0x10);                               // one normed stream of two, more blocks than token groups
  check_mix_norm<unsigned short>(4, 1024, 4, 3, 25, 1, true, 0x1ffffff);              // 405M's width and deepest normed mix
  // deferral: a normed mix that writes only its last hidden and hands its pre-norm gradients on (gs) ...
  check_mix_norm<float>(5, 7, 4, 3, 6, 2, false, 0x25, 0x20, 0, 0, true);
  check_mix_norm<unsigned short>(5, 1000, 4, 3, 26, 2, true, 0x2aaaaaa, 1ull << 25, 0, 0, true);
  // ... and a normed mix adding a deferred mix's parts (plain pre-norm gradients: normed or not, the same)
  check_mix_norm<float>(17, 7, 4, 3, 5, 2, false, 0x5, 0x1f, 4, 6);
  check_mix_norm<float>(5, 1000, 4, 3, 25, 2, true, 0x1ffffff, 0x1ffffff, 1, 26);     // the last mix's one stream deferred
  check_mix_norm<unsigned short>(5, 1000, 4, 3, 25, 2, true, 0x0aaaaaa, 0x1ffffff, 4, 26);
  check_mix_norm<unsigned short>(3, 1001, 4, 3, 3, 2, false, 0x7, 0x7, 4, 4);         // scalar, 1024 threads a token
}

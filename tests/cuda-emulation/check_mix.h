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
// token_major: w, w2 and gw laid out (tokens, C, L) and read through the table's strides (MUDDFormer's view of the
// dynamic-dense output), else (C, tokens, L) with the strides left 0. bias: b (C, L) and b2 (C2, L2) added to w and w2
// (rounded to T as a separate add); bias_only: no w at all, the weights are b (DenseFormer's α).
template <typename T>
static void check_mix(long long tokens, int d, int nc, int l, unsigned grid, bool vec, unsigned long long addmask,
                      unsigned long long writemask = ~0ull, int nc2 = 0, int l2 = 0, bool token_major = false, bool bias = false, bool bias_only = false) {
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
  std::vector<T> b((size_t)nc * l), b2((size_t)nc2 * l2);
  draw(b); draw(b2);
  std::vector<std::vector<T>> old = gh;
  mixk::MixTable<T> tab{};
  // element (c, t, j) of a (C, tokens, L) tensor in the chosen layout
  auto ix = [&](int c, long long t, int j, int cs, int ls) { return token_major ? ((size_t)t * cs + c) * ls + j : ((size_t)c * tokens + t) * ls + j; };
  if (token_major) {
    tab.ws[0] = l; tab.ws[1] = (long long)nc * l; tab.gws[0] = l; tab.gws[1] = (long long)nc * l;
    tab.w2s[0] = l2; tab.w2s[1] = (long long)nc2 * l2;
  }
  for (int j = 0; j < l; ++j) { tab.h[j] = h[j].data(); tab.gh[j] = gh[j].data(); }
  for (int c = 0; c < nc; ++c) { tab.g[c] = g[c].data(); tab.out[c] = out[c].data(); }
  for (int c = 0; c < nc2; ++c) tab.g2[c] = g2[c].data();
  const T* pw2 = nc2 ? w2.data() : nullptr;
  if (bias || bias_only) { tab.b = b.data(); tab.b2 = nc2 ? b2.data() : nullptr; }
  const T* pw = bias_only ? nullptr : w.data();
  unsigned tpt, tpb; mix_layout(d, v, tpt, tpb);
  dynamic_shared.assign((size_t)tpb * nc * l, -1.f);
  launch({grid}, {tpt, tpb}, [&] {
    if (bf16) { if (vec) mixk::mix_forward_bf16_v((const mixk::MixTable<unsigned short>&)tab, (const unsigned short*)pw, tokens, nc, l, d);
                else mixk::mix_forward_bf16((const mixk::MixTable<unsigned short>&)tab, (const unsigned short*)pw, tokens, nc, l, d); }
    else { if (vec) mixk::mix_forward_f32_v((const mixk::MixTable<float>&)tab, (const float*)pw, tokens, nc, l, d);
           else mixk::mix_forward_f32((const mixk::MixTable<float>&)tab, (const float*)pw, tokens, nc, l, d); }
  });
  dynamic_shared.assign((size_t)(tpb + tpb * (tpt / 32)) * nc * l + (size_t)tpb * nc2 * l2, -1.f);
  using U = unsigned short;
  const auto& tabu = (const mixk::MixTable<U>&)tab;
  const auto& tabf = (const mixk::MixTable<float>&)tab;
  launch({grid}, {tpt, tpb}, [&] {
    if (bf16) {
      auto wu = (const U*)pw; auto gwu = gw.data(); auto w2u = (const U*)pw2;
      if (nc2) { if (vec) mixk::mix_backward_p_bf16_v(tabu, wu, gwu, tokens, nc, l, d, addmask, writemask, w2u, nc2, l2);
                 else mixk::mix_backward_p_bf16(tabu, wu, gwu, tokens, nc, l, d, addmask, writemask, w2u, nc2, l2); }
      else { if (vec) mixk::mix_backward_bf16_v(tabu, wu, gwu, tokens, nc, l, d, addmask, writemask, nullptr, 0, 0);
             else mixk::mix_backward_bf16(tabu, wu, gwu, tokens, nc, l, d, addmask, writemask, nullptr, 0, 0); }
    } else {
      auto wf = (const float*)pw; auto gwf = gw.data(); auto w2f = (const float*)pw2;
      if (nc2) { if (vec) mixk::mix_backward_p_f32_v(tabf, wf, gwf, tokens, nc, l, d, addmask, writemask, w2f, nc2, l2);
                 else mixk::mix_backward_p_f32(tabf, wf, gwf, tokens, nc, l, d, addmask, writemask, w2f, nc2, l2); }
      else { if (vec) mixk::mix_backward_f32_v(tabf, wf, gwf, tokens, nc, l, d, addmask, writemask, nullptr, 0, 0);
             else mixk::mix_backward_f32(tabf, wf, gwf, tokens, nc, l, d, addmask, writemask, nullptr, 0, 0); }
    }
  });
  // error relative to the largest reference magnitude of each output
  double eo = 0, mo = 0, eh = 0, mh = 0, ew = 0, mw = 0;
  // the weights as the kernels must see them: w + b rounded to T (a separate add in T), b alone, or w alone
  auto rounded = [](float f) { if constexpr (sizeof(T) == 2) return mixk::mix_to_float(mixk::mix_to_bf16(f)); else return f; };
  auto W = [&](int c, long long t, int j) -> double {
    if (bias_only) return val(b[(size_t)c * l + j]);
    const float v = val(w[ix(c, t, j, nc, l)]);
    return bias ? rounded(v + val(b[(size_t)c * l + j])) : v;
  };
  auto W2 = [&](int c, long long t, int j) -> double {
    const float v = val(w2[ix(c, t, j, nc2, l2)]);
    return bias ? rounded(v + val(b2[(size_t)c * l2 + j])) : v;
  };
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
          for (int c = 0; c < nc2; ++c) r += W2(c, t, j) * val(g2[c][i]);
        eh = std::max(eh, std::abs(val(gh[j][i]) - r)); mh = std::max(mh, std::abs(r));
      }
    }
    for (int c = 0; c < nc; ++c)
      for (int j = 0; j < l; ++j) {
        double r = 0; for (int col = 0; col < d; ++col) r += (double)val(g[c][(size_t)t * d + col]) * val(h[j][(size_t)t * d + col]);
        const double got = gw[ix(c, t, j, nc, l)];   // fp32 whatever T
        ew = std::max(ew, std::abs(got - r)); mw = std::max(mw, std::abs(r));
      }
  }
  const double rel = std::max({eo / mo, eh / mh, ew / mw});
  const double tol = bf16 ? 1.0 / 128 : 1e-5;   // bf16: one rounding of the output (2^-8 relative) plus fp32 sums
  char what[200];
  std::snprintf(what, sizeof what, "mix %s%s %lldx%d C=%d L=%d grid %u (tpt %u, tpb %u) add 0x%llx write 0x%llx deferred C=%d L=%d%s%s out/gh/gw",
                bf16 ? "bf16" : "fp32", vec ? " vec" : "", tokens, d, nc, l, grid, tpt, tpb, addmask, writemask, nc2, l2, token_major ? " token-major" : "",
                bias_only ? " bias only" : bias ? " bias" : "");
  expect(rel < tol, what, rel);
}

// mix_bias_grad: dbias (+)= Σ_t gw[t, :] and gw in T, against double; run twice (the block counter must be back at 0).
template <typename T>
static void check_bias_grad(long long tokens, int n, unsigned grid, bool accumulate, bool copy) {
  std::mt19937 rng(tokens * 31 + n);
  std::normal_distribution<float> n01;
  std::vector<float> gw((size_t)tokens * n), partials((size_t)grid * n, -1.f);
  for (auto& e : gw) e = n01(rng);
  std::vector<T> dbias(n), start(n), out(copy ? (size_t)tokens * n : 0);
  for (auto& e : start) { float f = n01(rng); if constexpr (sizeof(T) == 2) e = mixk::mix_to_bf16(f); else e = f; }
  unsigned counter = 0;
  double err = 0, big = 0;
  bool exact_copy = true;
  for (int run = 0; run < 2; ++run) {
    dbias = start;
    launch({grid}, {MIX_BIAS_BLOCK}, [&] {
      if constexpr (sizeof(T) == 2) mixk::mix_bias_grad_bf16(gw.data(), copy ? out.data() : nullptr, tokens, n, partials.data(), &counter, dbias.data(), accumulate);
      else mixk::mix_bias_grad_f32(gw.data(), copy ? out.data() : nullptr, tokens, n, partials.data(), &counter, dbias.data(), accumulate);
    });
    for (int i = 0; i < n; ++i) {
      double r = accumulate ? (double)mixk::mix_to_float(start[i]) : 0.0;
      for (long long t = 0; t < tokens; ++t) r += gw[(size_t)t * n + i];
      err = std::max(err, std::abs(mixk::mix_to_float(dbias[i]) - r)); big = std::max(big, std::abs(r));
    }
    for (size_t k = 0; k < out.size(); ++k) {
      T want;
      if constexpr (sizeof(T) == 2) want = mixk::mix_to_bf16(gw[k]); else want = gw[k];
      exact_copy = exact_copy && std::memcmp(&want, &out[k], sizeof(T)) == 0;
    }
    exact_copy = exact_copy && counter == 0;
  }
  const double rel = err / big;
  char what[160];
  std::snprintf(what, sizeof what, "mix_bias_grad %s %lldx%d grid %u%s%s (and gw in T, counter 0)", sizeof(T) == 2 ? "bf16" : "fp32", tokens, n, grid,
                accumulate ? " +=" : "", copy ? " copy" : "");
  expect(rel < (sizeof(T) == 2 ? 1.0 / 128 : 1e-5) && exact_copy, what, exact_copy ? rel : 1e30);
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
  // MUDDFormer's weights read in place from the dynamic-dense output's (tokens, C, L) layout, gw written in it
  check_mix<float>(17, 7, 4, 5, 2, false, 0x5, 0x1f, 4, 6, true);
  check_mix<unsigned short>(5, 1000, 4, 26, 2, true, 0x2aaaaaa, 0x3ffffff, 4, 27, true);
  check_mix<unsigned short>(3, 1000, 4, 26, 2, true, 0x3ffffff, 1ull << 25, 0, 0, true);
  check_mix<float>(5, 1000, 3, 25, 2, true, 0x1ffffff, 0x1ffffff, 1, 26);           // vectors of 4, a one-stream deferred mix
  check_mix<unsigned short>(5, 1000, 4, 25, 2, true, 0x0aaaaaa, 0x1ffffff, 4, 26);  // vectors of 8
  check_mix<unsigned short>(3, 1001, 4, 3, 2, false, 0x7, 0x7, 4, 4);               // scalar, 1024 threads a token
  check_mix<unsigned short>(4, 1024, 4, 63, 1, true, ~0ull >> 1, ~0ull >> 1, 1, 64);   // the most inputs
  // MUDDFormer's dense_bs added as the weights are read (and the deferred mix's), and DenseFormer's α as the only weights
  check_mix<float>(17, 7, 4, 5, 2, false, 0x5, 0x1f, 4, 6, true, true);
  check_mix<unsigned short>(5, 1000, 4, 26, 2, true, 0x2aaaaaa, 0x3ffffff, 4, 27, true, true);
  check_mix<unsigned short>(3, 1000, 4, 26, 2, true, 0x3ffffff, 1ull << 25, 0, 0, true, true);
  check_mix<unsigned short>(3, 1001, 1, 5, 2, false, 0x1f, 0x1f, 0, 0, false, false, true);
  check_mix<float>(5, 1000, 1, 7, 2, true, 0x0, 0x7f, 0, 0, false, false, true);
  // the bias's gradient: odd token counts and widths, more blocks than tokens, a group of threads per column
  check_bias_grad<float>(1, 1, 1, false, false);
  check_bias_grad<float>(37, 7, 3, true, false);
  check_bias_grad<unsigned short>(300, 100, 4, true, true);     // 10 groups of 100 threads
  check_bias_grad<unsigned short>(5, 256, 8, false, true);      // n = 256: 4 groups; blocks without tokens
  check_bias_grad<unsigned short>(3000, 26, 3, false, true);    // 39 groups, several batches of tokens a thread
  check_bias_grad<float>(700, 256, 40, true, false);            // the last block: 40 partials in 4 groups, two batches
}

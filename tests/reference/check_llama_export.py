#!/usr/bin/env python3
"""Checks a `disttrain export --format llama` folder against `disttrain score`.

    check_llama_export.py --model DIR --scores SCORES.jsonl [--tol 1e-4] [--require-transformers]

SCORES.jsonl is what `disttrain score` wrote: one {"tokens": [...], "logprobs": [...]} per line, logprobs[i] =
log p(tokens[i+1] | tokens[..i]). The model in DIR (config.json + model.safetensors) is loaded with
transformers' AutoModelForCausalLM.from_pretrained(DIR, dtype float32) and scores the same tokens on the CPU in
fp32; the script prints max |delta log-prob| over every token and PASS when it is at most --tol, else FAIL
(exit 1).

Without transformers (as in CI and on a developer machine with Debian's python3-torch), it falls back to
an independent Llama / Qwen3 forward written below from the transformers formulas (rotate_half rotary with
fp32 tables, RMSNorm in fp32, SwiGLU, explicit causal softmax). Its lines say LOCAL FALLBACK: that checks the
weight mapping and the config, not that transformers loads the folder. --require-transformers turns the
fallback into a failure (exit 2), for the GPU-host run whose result is recorded.

--ours SCORES2.jsonl compares two score files instead (no model): max |delta| and PASS when at most --tol
(--tol 0: identical), for the import round trip.
"""
import argparse
import json
import os
import struct
import sys

import torch


def read_scores(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                if "tokens" not in row or "logprobs" not in row:
                    sys.exit(f"{path}:{n}: no tokens/logprobs (write it with disttrain score)")
                rows.append(row)
    return rows


# ---- local fallback: safetensors without the safetensors package, and a plain Llama forward ----

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        raw = bytearray(data[begin:end])
        if e["dtype"] == "F32":
            t = torch.frombuffer(raw, dtype=torch.float32)
        elif e["dtype"] == "F16":
            t = torch.frombuffer(raw, dtype=torch.float16).float()
        elif e["dtype"] == "BF16":
            t = torch.frombuffer(raw, dtype=torch.bfloat16).float()
        else:
            sys.exit(f"{path}: {name}: dtype {e['dtype']} not handled by the local fallback")
        out[name] = t.reshape(e["shape"]).clone()
    return out


def load_weights(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    index = json.load(open(os.path.join(model_dir, "model.safetensors.index.json")))
    weights = {}
    for shard in sorted(set(index["weight_map"].values())):
        weights.update(read_safetensors(os.path.join(model_dir, shard)))
    return weights


def rms_norm(x, weight, eps):
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LocalLlama:
    """LlamaForCausalLM / Qwen3ForCausalLM forward (no cache, batch 1), written from the transformers formulas."""

    def __init__(self, model_dir):
        self.c = json.load(open(os.path.join(model_dir, "config.json")))
        self.w = load_weights(model_dir)
        arch = self.c.get("architectures", ["?"])[0]
        if arch not in ("LlamaForCausalLM", "Qwen3ForCausalLM"):
            sys.exit(f"{model_dir}/config.json: architectures {arch}: the local fallback knows Llama and Qwen3 only")
        self.qk_norm = arch == "Qwen3ForCausalLM"
        self.name = arch
        if self.c.get("rope_scaling"):
            sys.exit("rope_scaling: the local fallback computes plain rotary only")
        if self.c.get("tie_word_embeddings"):
            self.w.setdefault("lm_head.weight", self.w["model.embed_tokens.weight"])

    def logits(self, ids):
        c, w = self.c, self.w
        heads, dim = c["num_attention_heads"], c["hidden_size"]
        kv_heads = c.get("num_key_value_heads", heads)
        hd = c.get("head_dim") or dim // heads
        eps = c["rms_norm_eps"]
        theta = c.get("rope_theta") or (c.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        t = ids.shape[0]
        # LlamaRotaryEmbedding: inv_freq in fp32, cos/sin of cat(freqs, freqs) in fp32
        inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        freqs = torch.outer(torch.arange(t).float(), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]   # (T, 1, hd)
        mask = torch.full((t, t), float("-inf")).triu(1)
        x = w["model.embed_tokens.weight"][ids]                     # (T, D)
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(t, heads, hd)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(t, kv_heads, hd)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(t, kv_heads, hd)
            if self.qk_norm:
                q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
                k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            rep = heads // kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            scores = torch.einsum("qhd,khd->hqk", q, k) / hd ** 0.5 + mask
            attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(t, heads * hd)
            x = x + attn @ w[p + "self_attn.o_proj.weight"].T
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
            gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
            x = x + (gate * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        x = rms_norm(x, w["model.norm.weight"], eps)
        return x @ w["lm_head.weight"].T                            # (T, V)


def transformers_model(model_dir):
    import transformers
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    except TypeError:   # transformers before 4.56 names it torch_dtype
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.eval()
    attn = getattr(model.config, "_attn_implementation", "?")
    dtype = next(model.parameters()).dtype
    name = f"transformers {transformers.__version__} {type(model).__name__} (attn {attn}, {dtype})"

    def logits(ids):
        return model(ids[None]).logits[0].float()
    return name, logits


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="the export folder (config.json + model.safetensors)")
    ap.add_argument("--scores", required=True, help="disttrain score's output for the tokens to check")
    ap.add_argument("--ours", help="compare --scores with this second score file instead of a model")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--require-transformers", action="store_true", help="fail (exit 2) when transformers is not installed")
    ap.add_argument("--label", default="", help="a name for the PASS/FAIL line")
    args = ap.parse_args()
    label = f"[{args.label}] " if args.label else ""
    rows = read_scores(args.scores)

    if args.ours:
        other = read_scores(args.ours)
        if [r["tokens"] for r in rows] != [r["tokens"] for r in other]:
            sys.exit(f"{args.scores} and {args.ours} score different tokens")
        delta = max(abs(a - b) for r, o in zip(rows, other) for a, b in zip(r["logprobs"], o["logprobs"]))
        n = sum(len(r["logprobs"]) for r in rows)
        verdict = "PASS" if delta <= args.tol else "FAIL"
        print(f"{label}{verdict}: max |delta log-prob| {delta:.3e} over {n} tokens ({args.scores} vs {args.ours}, tolerance {args.tol:g})")
        return 0 if verdict == "PASS" else 1

    torch.manual_seed(0)
    try:
        name, logits = transformers_model(args.model)
    except ImportError:
        if args.require_transformers:
            print(f"{label}FAIL: transformers is not installed (--require-transformers)")
            return 2
        local = LocalLlama(args.model)
        name, logits = f"LOCAL FALLBACK: an independent {local.name} forward in this script, transformers not installed", local.logits
    print(f"{label}reference: {name}; torch {torch.__version__}")
    worst, n = 0.0, 0
    with torch.no_grad():
        for i, row in enumerate(rows):
            ids = torch.tensor(row["tokens"], dtype=torch.long)
            logp = torch.log_softmax(logits(ids[:-1]).double(), -1)
            ref = logp.gather(-1, ids[1:, None]).squeeze(-1)
            ours = torch.tensor(row["logprobs"], dtype=torch.float64)
            d = (ref - ours).abs().max().item()
            print(f"{label}  line {i + 1}: {len(row['logprobs'])} tokens, max |delta log-prob| {d:.3e}, mean log-prob {ours.mean().item():.4f}")
            worst, n = max(worst, d), n + len(row["logprobs"])
    verdict = "PASS" if worst <= args.tol else "FAIL"
    fallback = " (LOCAL FALLBACK, not transformers)" if name.startswith("LOCAL") else ""
    print(f"{label}{verdict}: max |delta log-prob| {worst:.3e} over {n} tokens, tolerance {args.tol:g}{fallback}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())

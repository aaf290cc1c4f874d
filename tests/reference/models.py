"""PyTorch reference models for DistTrain's benchmarks: Transformer++, DenseFormer and MUDDFormer
with the same shapes as src/DistTrain.Model (sizes, FFN widths scaled with depth for MUDDFormer,
dynamic-dense widths, QK norm, sepln), bf16, SDPA attention. Written for side-by-side speed and
memory comparisons on one GPU, not for loading checkpoints."""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

SIZES = {  # vocab, dim, layers, heads (the paper's Table 2 sizes; ModelSizes.cs)
    "405m": (50432, 1024, 24, 16),
    "834m": (50432, 1536, 24, 24),
    "1.4b": (50432, 2048, 24, 32),
}


def find_multiple(n, k):
    return n if n % k == 0 else n + k - n % k


class Config:
    def __init__(self, size, arch):
        self.vocab, self.dim, self.n_layer, self.n_head = SIZES[size]
        self.arch = arch
        self.head_dim = self.dim // self.n_head
        self.base_ffn = find_multiple(2 * 4 * self.dim // 3, 256)
        self.mudd = arch == "muddformer"

    def ffn_width(self, i):
        if not self.mudd:
            return self.base_ffn
        return round(self.base_ffn * (i / (self.n_layer - 1) + 0.5) / 128) * 128

    def streams(self, i):
        return 1 if i == self.n_layer - 1 else 4

    def dd_hidden(self, i):
        h = self.streams(i) * (i + 2)
        if i == self.n_layer - 1:
            h *= 4
        return (h // 64 + 1) * 64


def rms(x, eps=1e-6):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms(x) * self.weight


def rotary_tables(seq, head_dim, base=10000.0):
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    ang = torch.outer(torch.arange(seq).float(), inv)
    return ang.cos().bfloat16(), ang.sin().bfloat16()


def rotate(x, cos, sin):  # x (B, T, H, d), half layout
    x1, x2 = x.chunk(2, dim=-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg, i):
        super().__init__()
        self.cfg, self.sep = cfg, cfg.mudd and i > 0
        inner = cfg.n_head * cfg.head_dim
        if cfg.mudd:
            self.wq, self.wk, self.wv = (nn.Linear(cfg.dim, inner, bias=False) for _ in range(3))
            self.q_norm, self.k_norm = RMSNorm(cfg.head_dim), RMSNorm(cfg.head_dim)
        else:
            self.wqkv = nn.Linear(cfg.dim, 3 * inner, bias=False)
        self.wo = nn.Linear(inner, cfg.dim, bias=False)
        self.norms = nn.ModuleList(RMSNorm(cfg.dim) for _ in range(3 if self.sep else 1))
        self.ffn_norm = RMSNorm(cfg.dim)
        w = cfg.ffn_width(i)
        self.w1, self.w3 = nn.Linear(cfg.dim, w, bias=False), nn.Linear(cfg.dim, w, bias=False)
        self.w2 = nn.Linear(w, cfg.dim, bias=False)

    def forward(self, q, k, v, r, cos, sin):
        cfg = self.cfg
        B, T, _ = q.shape
        if self.sep:
            q, k, v = self.norms[0](q), self.norms[1](k), self.norms[2](v)
        else:
            q = k = v = self.norms[0](q)
        if cfg.mudd:
            q = self.q_norm(self.wq(q).view(B, T, cfg.n_head, cfg.head_dim))
            k = self.k_norm(self.wk(k).view(B, T, cfg.n_head, cfg.head_dim))
            v = self.wv(v).view(B, T, cfg.n_head, cfg.head_dim)
        else:
            q, k, v = self.wqkv(q).view(B, T, 3, cfg.n_head, cfg.head_dim).unbind(2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        h = r + self.wo(y.transpose(1, 2).reshape(B, T, -1))
        x = self.ffn_norm(h)
        return h + self.w2(F.silu(self.w1(x)) * self.w3(x))


class DynamicDense(nn.Module):
    def __init__(self, cfg, i):
        super().__init__()
        self.C, self.L = cfg.streams(i), i + 2
        self.w1 = nn.Linear(cfg.dim, cfg.dd_hidden(i), bias=False)
        self.w2 = nn.Linear(cfg.dd_hidden(i), self.C * self.L, bias=False)
        self.bias = nn.Parameter(torch.zeros(self.C, self.L))

    def forward(self, hiddens):  # the official formulation: a loop of multiply-adds
        B, T, _ = hiddens[-1].shape
        dw = self.w2(F.gelu(self.w1(rms(hiddens[-1])))).view(B, T, self.C, self.L).permute(2, 0, 1, 3) + self.bias[:, None, None, :]
        return [sum(dw[c, :, :, j, None] * hiddens[j] for j in range(self.L)) for c in range(self.C)]


class LanguageModel(nn.Module):
    def __init__(self, cfg, ac="none"):
        super().__init__()
        self.cfg, self.ac = cfg, ac
        self.tok_embeddings = nn.Embedding(cfg.vocab, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim)
        self.output = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        if cfg.mudd:
            self.dynamic_dense = nn.ModuleList(DynamicDense(cfg, i) for i in range(cfg.n_layer))
        if cfg.arch == "denseformer":
            self.dwa = nn.ParameterList(nn.Parameter(F.one_hot(torch.tensor(i + 1), i + 2).float()) for i in range(cfg.n_layer))
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)
        self.cos, self.sin = None, None

    def block(self, i, *streams):
        if self.ac == "block":
            return checkpoint(self.layers[i], *streams, self.cos, self.sin, use_reentrant=False)
        return self.layers[i](*streams, self.cos, self.sin)

    def forward(self, tokens):
        T = tokens.shape[1]
        if self.cos is None or self.cos.shape[0] != T:
            self.cos, self.sin = (t.to(tokens.device) for t in rotary_tables(T, self.cfg.head_dim))
        x = self.tok_embeddings(tokens)
        hiddens = [x]
        for i in range(self.cfg.n_layer):
            if self.cfg.mudd:
                q, k, v, r = (x, x, x, x) if i == 0 else streams
                hiddens.append(self.block(i, q, k, v, r))
                streams = self.dynamic_dense[i](hiddens)
                x = streams[0]
            elif self.cfg.arch == "denseformer":
                hiddens.append(self.block(i, x, x, x, x))
                x = sum(w * h for w, h in zip(self.dwa[i].to(x.dtype), hiddens))
            else:
                x = self.block(i, x, x, x, x)
        return self.output(self.norm(x))


def param_count(model):
    return sum(p.numel() for p in model.parameters())

"""Side-by-side reference for `disttrain bench`: trains the PyTorch reference model (models.py) on
random tokens and prints tokens/s, MFU and peak memory as JSON lines. Whole model in bf16 with
fused AdamW (DistTrain keeps fp32 master weights besides: more optimizer work and memory).
Usage: python3 bench.py --size 405m --arch muddformer [--compile] [--ac none|block] [--micro-batch 8]"""
import argparse, json, time
import torch
import torch.nn.functional as F
from models import Config, LanguageModel, param_count

p = argparse.ArgumentParser()
p.add_argument("--size", default="405m")
p.add_argument("--arch", default="muddformer", choices=["transformerpp", "denseformer", "muddformer"])
p.add_argument("--compile", action="store_true")
p.add_argument("--ac", default="none", choices=["none", "block"])
p.add_argument("--micro-batch", type=int, default=8)
p.add_argument("--seq", type=int, default=2048)
p.add_argument("--warmup", type=int, default=3)
p.add_argument("--steps", type=int, default=10)
a = p.parse_args()

torch.manual_seed(0)
cfg = Config(a.size, a.arch)
model = LanguageModel(cfg, a.ac).cuda().bfloat16()
n = param_count(model)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
step_fn = model
if a.compile:
    step_fn = torch.compile(model)
tokens = torch.randint(cfg.vocab, (a.micro_batch, a.seq + 1), device="cuda")
x, y = tokens[:, :-1], tokens[:, 1:]


def step():
    loss = F.cross_entropy(step_fn(x).float().view(-1, cfg.vocab), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


for _ in range(a.warmup):
    step()
torch.cuda.synchronize()
torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
for _ in range(a.steps):
    step()
torch.cuda.synchronize()
dt = (time.perf_counter() - t0) / a.steps
tok = a.micro_batch * a.seq / dt
flops = 6 * (n - cfg.vocab * cfg.dim) + 12 * cfg.n_layer * cfg.dim * a.seq  # the formula disttrain bench states
print(json.dumps({
    "reference": "pytorch", "torch": torch.__version__, "device": torch.cuda.get_device_name(), "size": a.size, "arch": a.arch,
    "compile": a.compile, "ac": a.ac, "micro_batch": a.micro_batch, "seq": a.seq, "params": n,
    "tokens_per_s": round(tok), "mfu": round(tok * flops / 989.4e12, 4),
    "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
}), flush=True)

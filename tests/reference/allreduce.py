"""NCCL all-reduce bus bandwidth through PyTorch on this host's GPUs, for comparison with the
all-reduce DistTrain measures inside a run.  torchrun --nproc_per_node=N allreduce.py BYTES..."""
import os, sys, time
import torch
import torch.distributed as dist

dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
for size in [int(s) for s in sys.argv[1:]]:
    x = torch.ones(size // 2, dtype=torch.bfloat16, device="cuda")
    for _ in range(5):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    iterations = 20
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / iterations
    if rank == 0:
        bus = 2 * (world - 1) / world * size / seconds / 1e9
        print(f"torch all_reduce bf16 {size / 1e6:.1f} MB on {world} GPUs: {seconds * 1e3:.3f} ms, bus bandwidth {bus:.1f} GB/s", flush=True)
dist.destroy_process_group()

"""The training loop of docs/distributed.md, small enough for a test (run by torchrun).

Each rank trains a 2-layer MLP under FSDP2 on its own half of the data, clips
with ZClip through ``ClippedOptimizer`` and, on rank 0, prints one JSON line
per step with the global norm; every rank checks that all ranks saw the same.
"""

import gc
import json
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import gradclip


def main() -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = "cuda" if backend == "nccl" else "cpu"
    torch.set_num_threads(1)
    mesh = init_device_mesh(device, (dist.get_world_size(),))
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)]
    model = torch.nn.Sequential(*layers).to(device)
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = gradclip.ClippedOptimizer(
        torch.optim.AdamW(model.parameters(), lr=1e-2), gradclip.make_clipper("zclip", warmup=2)
    )
    g = torch.Generator().manual_seed(1)
    data = torch.randn(5, 8, 6, generator=g)
    rank, world = dist.get_rank(), dist.get_world_size()
    for step, batch in enumerate(data):
        x = batch[rank::world].to(device)  # each rank reads its own part of the data
        loss = x.sum(dim=1, keepdim=True).sub(model(x)).square().mean()
        opt.zero_grad()
        loss.backward()
        stats = opt.step()
        norms = [torch.zeros(()) for _ in range(world)]
        dist.all_gather_object(norms, float(stats.norm))
        assert len(set(norms)) == 1, norms  # the same global norm on every rank
        if rank == 0:
            print(json.dumps({"step": step, "norm": float(stats.norm)}), flush=True)
    # No rank tears its gloo connections down while the other still uses them (an early
    # teardown can abort the other rank with "terminate called without an active exception").
    dist.barrier()
    del model, opt
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

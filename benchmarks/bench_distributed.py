"""Time gradclip's clip against torch's ``clip_grad_norm_`` under FSDP2 (2 gloo ranks, CPU).

Usage: python benchmarks/bench_distributed.py [--world-size 2] [--repeats 30]
                                              [--config small|medium]
       torchrun --nproc-per-node 2 benchmarks/bench_distributed.py   (same, launched by torchrun)

The gradients have the shapes of the TF PTB tutorial's model (embedding,
2 × nn.LSTM with two biases, softmax) and FSDP2's layout: each a DTensor
sharded along dim 0 (``Shard(0)``) over a 1-D mesh of all ranks, as
``fully_shard`` leaves them after the backward. Every candidate runs once per
round, in rotating order; before each call the gradients are restored from a
copy (untimed) and the ranks meet at a barrier; a call's time is the slowest
rank's. The table gives medians in milliseconds.

Candidates:

* ``torch clip_grad_norm_``: ``torch.nn.utils.clip_grad_norm_(params, c, foreach=True)``
  on the DTensor gradients (torch's own reduction, one all-reduce per mesh dim);
* ``torch + full_tensor``: the same, then ``total_norm.full_tensor()`` so that
  the norm can be logged (torchtitan's recipe);
* ``gradclip <name>``: ``make_clipper(name).clip(params)``: one packed
  all-reduce, a plain replicated norm and stats;
* ``local floor``: ``clip_grad_norm_``'s computation (``get_total_norm`` and a
  foreach multiply) on each rank's plain local shards alone: no communication,
  not a correct global clip, the least a clip costs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

import gradclip

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_clippers import CONFIGS, lstm_lm_shapes  # the same gradient shapes

CLIPPERS = ("norm", "tensor-norm", "zclip", "agc")


def _candidates(params: list[nn.Parameter], max_norm: float) -> dict[str, Callable[[], object]]:
    def torch_clip() -> object:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)

    def torch_full() -> object:
        return torch_clip().full_tensor()  # type: ignore[attr-defined]

    local_grads = [p.grad.to_local() for p in params]  # type: ignore[union-attr]

    def local_floor() -> object:  # torch's clip_grad_norm_ body on plain local tensors
        total = torch.nn.utils.get_total_norm(local_grads, foreach=True)
        torch._foreach_mul_(local_grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total

    fns: dict[str, Callable[[], object]] = {
        "torch clip_grad_norm_": torch_clip,
        "torch + full_tensor": torch_full,
    }
    for name in CLIPPERS:
        options = {"max_norm": max_norm} if name == "norm" else {}
        clipper = gradclip.make_clipper(name, **options)
        fns[f"gradclip {name}"] = lambda c=clipper: c.clip(params)
    fns["local floor"] = local_floor
    return fns


def run(rank: int, world: int, init: str, repeats: int, config: str) -> None:
    """One rank's benchmark; rank 0 prints the table."""
    torch.set_num_threads(1)
    if not dist.is_initialized():
        dist.init_process_group(
            "gloo", init_method=init, rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=120),
        )  # fmt: skip
    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    params, saved = [], []
    for shape in lstm_lm_shapes(*CONFIGS[config]):
        p = nn.Parameter(distribute_tensor(torch.randn(shape) * 0.1, mesh, [Shard(0)]))
        p.grad = distribute_tensor(torch.randn(shape) * 0.01, mesh, [Shard(0)])
        params.append(p)
        saved.append(p.grad.to_local().clone())
    norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]).full_tensor())  # type: ignore[attr-defined]
    fns = _candidates(params, norm / 2)  # a threshold that clips
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    elapsed = torch.zeros(1, dtype=torch.float64)
    for r in range(repeats + 2):  # two warm-up rounds
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            for p, g in zip(params, saved, strict=True):
                p.grad.to_local().copy_(g)  # type: ignore[union-attr]
            dist.barrier()
            t0 = time.perf_counter()
            fns[name]()
            elapsed[0] = time.perf_counter() - t0
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            if r >= 2:
                times[name].append(float(elapsed[0]) * 1e3)
    if rank == 0:
        numel = sum(p.numel() for p in params)
        print(f"# {world} gloo ranks, CPU, 1 thread each, FSDP2 Shard(0) DTensor grads")
        print(f"# config {config}: {len(params)} tensors, {numel / 1e6:.2f} M elements")
        print(f"# torch {torch.__version__}, python {platform.python_version()}, "
              f"{repeats} rounds, medians (ms)")  # fmt: skip
        base = statistics.median(times["torch clip_grad_norm_"])
        print(f"| {'candidate':<24} | median ms | vs torch |")
        print(f"|{'-' * 26}|-----------|----------|")
        for name in names:
            m = statistics.median(times[name])
            print(f"| {name:<24} | {m:9.2f} | {m / base:7.2f}x |")
        sys.stdout.flush()
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--config", choices=["small", "medium"], default="small")
    args = parser.parse_args()
    if "RANK" in os.environ:  # launched by torchrun
        dist.init_process_group("gloo")
        run(dist.get_rank(), dist.get_world_size(), "env://", args.repeats, args.config)
        return
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        mp.spawn(run, args=(args.world_size, init, args.repeats, args.config),
                 nprocs=args.world_size)  # fmt: skip


if __name__ == "__main__":
    main()

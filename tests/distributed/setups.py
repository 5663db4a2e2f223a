"""Distributed setups for the tests, each with its single-process reference.

Every setup builds, on each of 2 gloo ranks, the same global parameters and
gradients (seeded), lays them out across the ranks its own way, and returns a
:class:`Setup`: what a rank passes to a clipper, and plain full copies of the
parameters and gradients for a single-process reference clip. After a clip,
:meth:`Setup.full_grads` gathers the clipped gradients back into full tensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_tensor


@dataclasses.dataclass
class Setup:
    params: list[tuple[str, nn.Parameter]]  # what a rank clips (named)
    ref_params: list[tuple[str, nn.Parameter]]  # full plain copies, for one process
    group: dist.ProcessGroup | None = None  # given to the clipper (pipeline)
    owner: list[int] | None = None  # pipeline: which rank holds each reference tensor

    def full_grads(self) -> list[Tensor]:
        """The clipped gradients as full tensors, in reference order (collective)."""
        if self.owner is None:
            out = []
            for _, p in self.params:
                g = p.grad
                assert g is not None
                out.append(g.full_tensor() if isinstance(g, DTensor) else g.clone())
            return out
        mine = [p.grad.clone() for _, p in self.params if p.grad is not None]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        iters = [iter(g) for g in gathered]
        return [next(iters[r]) for r in self.owner]


def _tensor(*shape: int, scale: float = 1.0) -> Tensor:
    return torch.randn(*shape) * scale


def _param(value: Tensor, grad: Tensor) -> nn.Parameter:
    p = nn.Parameter(value)
    p.grad = grad
    return p


def _reference(named: list[tuple[str, Tensor, Tensor]]) -> list[tuple[str, nn.Parameter]]:
    return [(n, _param(w.clone(), g.clone())) for n, w, g in named]


def _placed(
    specs: list[tuple[str, tuple[int, ...], Any, tuple[Placement, ...]]], grad_scale: float
) -> Setup:
    """Parameters with given shapes, meshes and placements (``distribute_tensor``)."""
    full = [(n, _tensor(*shape), _tensor(*shape, scale=grad_scale)) for n, shape, _, _ in specs]
    params = []
    for (name, w, g), (_, _, mesh, placements) in zip(full, specs, strict=True):
        p = nn.Parameter(distribute_tensor(w, mesh, list(placements)))
        p.grad = distribute_tensor(g, mesh, list(placements))
        params.append((name, p))
    return Setup(params, _reference(full))


def fsdp(grad_scale: float) -> Setup:
    """FSDP2: ``fully_shard`` per layer and at the root; grads from a real backward
    (rows split unevenly: 5 rows over 2 ranks)."""
    mesh = init_device_mesh("cpu", (2,))
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    ref = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    ref.load_state_dict(model.state_dict())
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    x = torch.randn(6, 4)
    (model(x).sum() * grad_scale).backward()
    (ref(x).sum() * grad_scale).backward()
    return Setup(list(model.named_parameters()), list(ref.named_parameters()))


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.head = nn.Linear(4, 6)
        self.head.weight = self.emb.weight

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.emb(tokens))


def fsdp_tied(grad_scale: float) -> Setup:
    """FSDP2 with a weight shared by two layers (a tied embedding): counted once."""
    mesh = init_device_mesh("cpu", (2,))

    model, ref = _Tied(), _Tied()
    ref.load_state_dict(model.state_dict())
    fully_shard(model, mesh=mesh)
    tokens = torch.tensor([[0, 3, 5, 1]])
    for m in (model, ref):
        (m(tokens).square().sum() * grad_scale).backward()
    return Setup(list(model.named_parameters()), list(ref.named_parameters()))


def mixed_placements(grad_scale: float) -> Setup:
    """One mesh; rows sharded, columns sharded (AGC units split), replicated, and a
    sharded bias (one AGC unit split over ranks)."""
    mesh = init_device_mesh("cpu", (2,))
    return _placed(
        [
            ("rows.weight", (5, 3), mesh, (Shard(0),)),
            ("cols.weight", (4, 6), mesh, (Shard(1),)),
            ("rep.weight", (3, 2), mesh, (Replicate(),)),
            ("bias", (7,), mesh, (Shard(0),)),
        ],
        grad_scale,
    )


def mesh_2d(grad_scale: float) -> Setup:
    """2-D meshes over 2 ranks: HSDP (replicate × shard) as (2, 1) and (1, 2), and
    FSDP × TP placements (Shard(0), Shard(1))."""
    hsdp = init_device_mesh("cpu", (2, 1), mesh_dim_names=("replicate", "shard"))
    tp = init_device_mesh("cpu", (1, 2), mesh_dim_names=("dp", "tp"))
    return _placed(
        [
            ("hsdp.weight", (5, 3), hsdp, (Replicate(), Shard(0))),
            ("tp.weight", (4, 6), tp, (Shard(0), Shard(1))),
            ("tp.rep", (3, 3), tp, (Replicate(), Replicate())),
            ("tp.bias", (5,), tp, (Replicate(), Shard(0))),
        ],
        grad_scale,
    )


def two_meshes(grad_scale: float) -> Setup:
    """Parameters on two different meshes (dense on one, 'experts' on another,
    pytorch#180346), sharded and replicated."""
    dense = init_device_mesh("cpu", (2,), mesh_dim_names=("dp",))
    experts = init_device_mesh("cpu", (2, 1), mesh_dim_names=("ep", "etp"))
    return _placed(
        [
            ("dense.weight", (6, 3), dense, (Shard(0),)),
            ("dense.bias", (6,), dense, (Replicate(),)),
            ("experts.weight", (2, 3, 4), experts, (Shard(0), Replicate())),
            ("experts.rep", (2, 2), experts, (Replicate(), Replicate())),
        ],
        grad_scale,
    )


def pipeline(grad_scale: float) -> Setup:
    """Stages: rank 0 holds layers 0-1, rank 1 layer 2, as plain tensors; the
    clipper is given the world group."""
    shapes = [("0.weight", (4, 3)), ("0.bias", (4,)), ("1.weight", (2, 4)), ("2.weight", (3, 2))]
    owner = [0, 0, 0, 1]
    full = [(n, _tensor(*s), _tensor(*s, scale=grad_scale)) for n, s in shapes]
    rank = dist.get_rank()
    held = [x for x, o in zip(full, owner, strict=True) if o == rank]
    mine = [(n, _param(w.clone(), g.clone())) for n, w, g in held]
    return Setup(mine, _reference(full), group=dist.group.WORLD, owner=owner)


def ddp(grad_scale: float) -> Setup:
    """DDP: every rank holds identical full plain gradients (no communication)."""
    shapes = [("w", (4, 3)), ("b", (4,))]
    full = [(n, _tensor(*s), _tensor(*s, scale=grad_scale)) for n, s in shapes]
    return Setup(_reference(full), _reference(full))


def mesh_2x2(grad_scale: float) -> Setup:
    """4 ranks: HSDP (Replicate, Shard(0)) and FSDP x TP (Shard(0), Shard(1)) on a real
    2 x 2 mesh, so a tensor is replicated and sharded, or sharded twice, at once."""
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    return _placed(
        [
            ("hsdp.weight", (5, 3), mesh, (Replicate(), Shard(0))),
            ("fsdp_tp.weight", (5, 6), mesh, (Shard(0), Shard(1))),
            ("tp_bias", (6,), mesh, (Replicate(), Shard(0))),
            ("rep", (2, 2), mesh, (Replicate(), Replicate())),
        ],
        grad_scale,
    )


SETUPS: dict[str, Callable[[float], Setup]] = {
    f.__name__: f for f in (ddp, fsdp, fsdp_tied, mixed_placements, mesh_2d, two_meshes, pipeline)
}
#: Setups that need 4 ranks.
SETUPS_4: dict[str, Callable[[float], Setup]] = {"mesh_2x2": mesh_2x2}


def build(name: str, seed: int = 0, grad_scale: float = 1.0) -> Setup:
    """The setup ``name``, with the same global tensors on every rank."""
    torch.manual_seed(seed)
    return {**SETUPS, **SETUPS_4}[name](grad_scale)

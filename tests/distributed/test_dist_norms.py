"""Global norms from one packed all-reduce equal the float64 norms of the full gradient."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
from setups import SETUPS, build

from gradclip.distributed import NormPacket, layout
from gradclip.ops import tensor_norms

NORM_TYPES = (2.0, 1.0, 3.0, math.inf)


def global_norms_case(setup_name: str) -> list[tuple[float, list[float], float]]:
    """Per p: (p, per-tensor norms this rank got, total)."""
    s = build(setup_name)
    grads = [p.grad for _, p in s.params]
    lay = layout(grads, s.group)
    out = []
    for p in NORM_TYPES:
        ref = [torch.linalg.vector_norm(q.grad.double(), p) for _, q in s.ref_params]
        ref_total = torch.linalg.vector_norm(torch.stack(ref), p)
        if lay is None:
            assert setup_name == "ddp"
            norms = tensor_norms(grads, p)
            total = torch.linalg.vector_norm(norms, p)
        else:
            norms, total = lay.norms_and_total([tensor_norms(lay.local, p)], p)[0]
        rank = dist.get_rank()
        owner = s.owner or [rank] * len(ref)
        mine = [r for r, o in zip(ref, owner, strict=True) if o == rank]
        torch.testing.assert_close(norms.double(), torch.stack(mine), rtol=1e-6, atol=0)
        torch.testing.assert_close(total.double(), ref_total, rtol=1e-6, atol=0)
        out.append((p, norms.tolist(), float(total)))
    return out


@pytest.mark.parametrize("setup_name", list(SETUPS))
def test_global_norms_match_the_full_gradient(cluster, setup_name):
    r0, r1 = cluster.run(global_norms_case, setup_name)
    for a, b in zip(r0, r1, strict=True):
        assert a[2] == b[2]  # the total is bitwise the same on both ranks


def nonfinite_on_one_rank_case(where: str, p: float) -> float:
    """A NaN or inf in one rank's shard reaches every rank's result."""
    s = build("fsdp")
    grads = [q.grad for _, q in s.params]
    lay = layout(grads)
    assert lay is not None
    if dist.get_rank() == 1:
        lay.local[0].view(-1)[0] = math.nan if where == "nan" else math.inf
    return float(lay.norms_and_total([tensor_norms(lay.local, p)], p)[0][1])


@pytest.mark.parametrize("p", [2.0, math.inf])
@pytest.mark.parametrize("where", ["nan", "inf"])
def test_nonfinite_on_one_rank_reaches_every_rank(cluster, where, p):
    totals = cluster.run(nonfinite_on_one_rank_case, where, p)
    expected = math.inf if where == "inf" else math.nan
    for t in totals:
        assert (math.isnan(t) and math.isnan(expected)) or t == expected


def replica_nan_case() -> list[float]:
    """A NaN seen only by a replica that is not counted still poisons every rank."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    g = [distribute_tensor(torch.ones(4, 2), mesh, [Shard(0)]),
         distribute_tensor(torch.ones(3), mesh, [Replicate()])]  # fmt: skip
    lay = layout(g)
    assert lay is not None and [s.counted for s in lay.shards] == [True, dist.get_rank() == 0]
    if dist.get_rank() == 1:
        lay.local[1][0] = math.nan
    norms, total = lay.norms_and_total([tensor_norms(lay.local, 2.0)], 2.0)[0]
    return [float(total), *norms.tolist()]


def test_replica_nan_poisons_every_rank(cluster):
    for values in cluster.run(replica_nan_case):
        assert math.isnan(values[0])


def test_packet_rejects_large_p():
    with pytest.raises(ValueError, match="p <= 8"):
        NormPacket(9.0, torch.device("cpu"))


def submesh_case() -> str:
    """A DTensor on a mesh of this rank alone, reduced over the world: refused on every rank."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, distribute_tensor

    sub = init_device_mesh("cpu", (2, 1), mesh_dim_names=("dp", "tp"))["tp"]
    g = distribute_tensor(torch.ones(3), sub, [Replicate()])
    with pytest.raises(ValueError, match="pass group=") as info:
        layout([g])
    dist.barrier()
    return str(info.value)


def test_a_mesh_smaller_than_the_group_is_refused(cluster):
    for message in cluster.run(submesh_case):
        assert "ranks [0, 1]" in message

r"""Which rank counts which part of a tensor: DTensor placements to local views.

A gradient that lives on several ranks is one of

* a plain tensor: either a replica (DDP: counted on rank 0 only) or, when
  the caller says plain tensors differ between ranks (pipeline stages, which
  hold different weights), this rank's own: counted here;
* a :class:`~torch.distributed.tensor.DTensor` on a device mesh, whose
  placements say, per mesh dimension, ``Shard(d)`` (the ranks along that
  dimension hold disjoint slices: summed) or ``Replicate()`` (they hold copies:
  counted **once**, on the rank whose coordinate along that dimension is 0).

So a rank's local shard is *counted* when its mesh coordinate is 0 on every
``Replicate`` dimension. Summing the counted local partial sums over all ranks
gives each tensor's exact global ``Σ|g|^p``: replicas count once, with no
division by a replication factor (which would be inexact and wrong for
non-uniform replication), and shards count once each. ``Partial`` placements
(unreduced sums) have no per-rank norm and are refused.

AGC clips *units* (rows along dim 0). A unit is split across ranks when some
mesh dimension shards the tensor along a dim ``d ≥ 1`` (tensor parallelism);
its norm then needs a sum over ranks, which :class:`LocalShard` prepares by
giving the local rows' position in the global tensor.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import Placement

__all__ = ["LocalShard", "is_dtensor", "local_shards"]


def is_dtensor(t: Tensor) -> bool:
    """True when ``t`` is a :class:`~torch.distributed.tensor.DTensor`."""
    if type(t) in (torch.Tensor, torch.nn.Parameter) or not dist.is_available():
        return False  # the single-process hot path pays one type check
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


@dataclasses.dataclass(frozen=True)
class LocalShard:
    """One tensor as this rank sees it.

    Attributes:
        local: the plain local tensor (shares storage: writing it writes the tensor).
        counted: this rank's copy enters global sums (see the module docstring).
        sharded: the tensor is split across ranks (some ``Shard`` on a mesh
            dimension of size > 1), so its own norm needs a sum over ranks.
        units_split: AGC's units (rows along dim 0) are split across ranks.
        global_rows: the number of rows (units) of the global tensor.
        row_offset: the global index of this rank's first local row (-1 when the
            local rows are strided, as FSDP × TP on dim 0 lays them out).
    """

    local: Tensor
    counted: bool
    sharded: bool
    units_split: bool
    global_rows: int
    row_offset: int


def _rows(shape: Sequence[int]) -> int:
    return int(shape[0]) if len(shape) > 1 else 1


def _local_shard(t: Tensor, plain_distinct: bool) -> LocalShard:
    if not is_dtensor(t):
        counted = plain_distinct or not dist.is_initialized() or dist.get_rank() == 0
        return LocalShard(t, counted, False, False, _rows(t.shape), 0)
    from torch.distributed.tensor import DTensor

    assert isinstance(t, DTensor)
    how = _how(t.device_mesh, tuple(t.placements), tuple(t.shape))
    return LocalShard(t.to_local(), *how)


@functools.lru_cache(maxsize=4096)
def _how(
    mesh: DeviceMesh, placements: tuple[Placement, ...], shape: tuple[int, ...]
) -> tuple[bool, bool, bool, int, int]:
    """``(counted, sharded, units_split, global_rows, row_offset)`` of a DTensor
    spec on this rank (cached: FSDP2 hands out new gradient objects each step,
    with the same few specs)."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    coord = mesh.get_coordinate()
    if coord is None:  # this rank holds nothing of it
        return False, True, False, _rows(shape), 0
    counted, sharded, units_split = True, False, False
    for dim, placement in enumerate(placements):
        if placement.is_partial():
            raise ValueError(
                f"a gradient has a Partial placement on mesh dim {dim} ({placements}); its "
                "norm needs the reduced value: redistribute it to Shard or Replicate first"
            )
        if placement.is_replicate():
            counted = counted and coord[dim] == 0
        elif placement.is_shard() and mesh.size(dim) > 1:
            sharded = True
            shard_dim = placement.dim  # type: ignore[attr-defined]
            units_split = units_split or len(shape) <= 1 or shard_dim % len(shape) != 0
    row_offset = 0
    if units_split and len(shape) > 1:  # only split units need their global rows
        if any(type(pl).__name__ == "_StridedShard" for pl in placements):
            row_offset = -1  # the local rows are not contiguous in the global tensor
        else:
            _, offset = compute_local_shape_and_global_offset(shape, mesh, placements)
            row_offset = int(offset[0])
    return counted, sharded, units_split, _rows(shape), row_offset


def local_shards(tensors: Sequence[Tensor], plain_distinct: bool = False) -> list[LocalShard]:
    """Each tensor's local view and how it counts, in input order.

    Args:
        tensors: plain tensors and DTensors (no ``None``).
        plain_distinct: plain tensors differ between ranks (pipeline stages)
            and each rank counts its own; False: they are replicas (DDP),
            counted on rank 0 only.

    Returns:
        One :class:`LocalShard` per tensor.

    Raises:
        ValueError: a DTensor with a ``Partial`` placement.

    Example:
        >>> import torch
        >>> s = local_shards([torch.ones(2, 3)])[0]
        >>> s.counted, s.sharded, s.units_split, s.global_rows
        (True, False, False, 2)
    """
    return [_local_shard(t, plain_distinct) for t in tensors]

r"""A clip's gradients across ranks: local views, who counts what, one packet.

:func:`layout` looks at a clip's gradients once. When none is a DTensor and
no process group is given (one process, or DDP, whose gradients are identical
on every rank) it returns None and the clippers take their single-process
path unchanged, with no communication. Otherwise it returns a
:class:`Layout`: the plain local views that the clippers read and write in
place, which of them this rank counts (replicas once), and which are sharded.

Global norms (:meth:`Layout.norms_and_total`) come from one
:class:`~gradclip.distributed.reduce.NormPacket`:

* a *sharded* tensor's norm is an entry of the packet (summed over ranks);
* the tensors a rank holds whole (plain tensors of a pipeline stage,
  replicated DTensors) are complete locally; only their combined norm is
  summed over ranks, as one number, so ranks holding different tensors still
  pack the same layout;
* the total ``N = ‖(N_sharded, N_whole)‖_p`` then meets every other norm in
  :func:`~gradclip.ops.reduce.combine_partial_norms`.

The per-tensor norms returned are global for every tensor this rank holds,
so observers (the monitor) log the global numbers, never a shard's.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

from gradclip.distributed.placement import LocalShard, is_dtensor, local_shards
from gradclip.distributed.reduce import NormPacket
from gradclip.ops.reduce import combine_partial_norms

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

__all__ = ["Layout", "layout"]


@dataclasses.dataclass
class Layout:
    """The gradients of one clip as this rank holds them.

    Attributes:
        shards: one :class:`~gradclip.distributed.placement.LocalShard` per gradient.
        group: the process group of the all-reduce (None: the default group).
        communicate: whether the packet is all-reduced (False when every
            tensor is whole on every rank and no group was given).
    """

    shards: list[LocalShard]
    group: dist.ProcessGroup | None = None
    communicate: bool = True

    @property
    def local(self) -> list[Tensor]:
        """The plain local tensors, in input order (writing them writes the gradients)."""
        return [s.local for s in self.shards]

    def counted(self, index: int) -> bool:
        """Whether this rank's copy of gradient ``index`` enters the global sums
        (always, when nothing is communicated)."""
        return self.shards[index].counted or not self.communicate

    def packet(self, norm_type: float) -> NormPacket:
        """A new :class:`~gradclip.distributed.reduce.NormPacket` on the gradients' device."""
        device = self.shards[0].local.device if self.shards else torch.device("cpu")
        return NormPacket(norm_type, device, self.group, communicate=self.communicate)

    def add_tensor_norms(
        self,
        packet: NormPacket,
        local_norms: Tensor,
        post: Callable[[Tensor], Tensor] | None = None,
    ) -> _Pending:
        """Put the parts of per-tensor norms into ``packet`` (see the module docstring).

        Args:
            packet: the step's packet (not reduced yet).
            local_norms: 1-d norms of the local views, in input order.
            post: optional element-wise map from a tensor's norm to its norm after
                clipping (``tensor-norm``: ``min(n, c)``); its total rides along.

        Returns:
            A :class:`_Pending` whose results are read after ``packet.reduce()``.
        """
        dev = local_norms.device
        n = len(self.shards)
        idx = _on_device(tuple(i for i in range(n) if self.shards[i].sharded), torch.int64, dev)
        whole = _on_device(
            tuple(i for i in range(n) if not self.shards[i].sharded), torch.int64, dev
        )
        counted = _on_device(tuple(self.counted(i) for i in range(n)), torch.bool, dev)
        n_sharded, n_whole = local_norms.index_select(0, idx), local_norms.index_select(0, whole)
        h_sharded = packet.entries(n_sharded, counted.index_select(0, idx))
        h_whole = packet.total(n_whole, counted.index_select(0, whole))
        h_post = h_lowered = None
        if post is not None:  # a whole tensor's norm is exact here, so its post-clip norm is too
            h_post = packet.total(post(n_whole), counted.index_select(0, whole))
            h_lowered = packet.any(post(n_whole) < n_whole)
        return _Pending(packet, local_norms, idx, h_sharded, h_whole, post, h_post, h_lowered)

    def add_units(self, packet: NormPacket, index: int, local_units: Tensor) -> int:
        """Put one tensor's local AGC unit norms (one per local row) at their global
        rows, for a tensor whose units are split across ranks.

        Args:
            packet: the step's packet.
            index: the tensor's position in the input.
            local_units: 1-d norms of the local rows (a 1-d tensor is one unit).

        Returns:
            A handle: after the reduce, ``packet.get(handle)`` holds every unit's
            global norm (all rows, the same on every rank).
        """
        shard = self.shards[index]
        if shard.row_offset < 0:
            raise NotImplementedError(
                "agc: a parameter whose units are split across ranks has strided rows "
                "(_StridedShard); its unit norms cannot be placed"
            )
        rows = torch.zeros(shard.global_rows, dtype=local_units.dtype, device=local_units.device)
        rows[shard.row_offset : shard.row_offset + local_units.numel()] = local_units.reshape(-1)
        return packet.entries(rows, self.counted(index))

    def local_rows(self, index: int, global_units: Tensor) -> Tensor:
        """The entries of ``global_units`` (one per global row) that this rank holds."""
        shard = self.shards[index]
        n = shard.local.shape[0] if shard.local.dim() > 1 else 1
        return global_units[shard.row_offset : shard.row_offset + n]

    def norms_and_total(
        self, local_norms: Sequence[Tensor], norm_type: float
    ) -> list[tuple[Tensor, Tensor]]:
        """Global per-tensor norms and total norm for each vector of local norms, in ONE all-reduce.

        Args:
            local_norms: one or more 1-d vectors of per-tensor norms of the local
                views (e.g. before and after a clamp), each in input order.
            norm_type: ``p``.

        Returns:
            ``[(norms, total), ...]`` matching ``local_norms``: global per-tensor
            norms (1-d) and the global norm (0-d), identical on every rank.
        """
        packet = self.packet(norm_type)
        pending = [self.add_tensor_norms(packet, n) for n in local_norms]
        packet.reduce()
        return [p.result() for p in pending]


@dataclasses.dataclass
class _Pending:
    """Per-tensor norms waiting for their packet's all-reduce."""

    packet: NormPacket
    local_norms: Tensor
    sharded_index: Tensor
    h_sharded: int
    h_whole: int
    post: Callable[[Tensor], Tensor] | None = None
    h_post: int | None = None
    h_lowered: int | None = None

    def result(self) -> tuple[Tensor, Tensor]:
        """``(global per-tensor norms, global total)``, after ``packet.reduce()``."""
        sharded = self.packet.get(self.h_sharded).to(self.local_norms)
        whole = self.packet.get(self.h_whole).to(self.local_norms)
        norms = self.local_norms.index_copy(0, self.sharded_index, sharded)
        return norms, combine_partial_norms(torch.cat([sharded, whole]), self.packet.p)

    def post_total(self) -> tuple[Tensor, Tensor]:
        """``(‖(post(N_i))_i‖_p, any_i post(N_i) < N_i)`` over every rank's tensors:
        the global norm after clipping and whether any tensor was lowered (needs ``post``)."""
        assert self.post is not None and self.h_post is not None and self.h_lowered is not None
        n_sharded = self.packet.get(self.h_sharded).to(self.local_norms)
        sharded = self.post(n_sharded)
        whole = self.packet.get(self.h_post).to(self.local_norms)
        lowered = (sharded < n_sharded).any() | (self.packet.get(self.h_lowered)[0] > 0)
        return combine_partial_norms(torch.cat([sharded, whole]), self.packet.p), lowered


def layout(tensors: Sequence[Tensor], group: dist.ProcessGroup | None = None) -> Layout | None:
    """How a clip's gradients lie across ranks, or None when nothing needs communication.

    None when no tensor is a DTensor and ``group`` is None (one process, or
    DDP's replicated gradients). When every DTensor is fully replicated and no
    ``group`` is given, the layout does not communicate: each rank computes
    the exact global numbers alone. Pass ``group`` when ranks hold *different
    plain tensors* (pipeline stages): their norms are then summed over ``group``.

    Every DTensor's mesh must span exactly the ranks of ``group`` (the world
    when None): a mesh on fewer ranks (tensor parallelism inside data-parallel
    replicas, FSDP inside pipeline stages) would be summed with other ranks'
    unrelated or replicated copies, so it is refused rather than miscounted.

    Args:
        tensors: the gradients (plain tensors and DTensors).
        group: the process group over which plain tensors differ, or None.

    Returns:
        A :class:`Layout`, or None.

    Raises:
        ValueError: a DTensor on a mesh that does not span ``group``'s ranks.

    Example:
        >>> import torch
        >>> layout([torch.ones(3)]) is None
        True
    """
    if group is None and not any(is_dtensor(t) for t in tensors):
        return None
    ranks = _group_ranks(group)
    for t in tensors:
        if is_dtensor(t):
            mesh = t.device_mesh  # type: ignore[attr-defined]
            if _mesh_ranks(mesh) != ranks:
                raise ValueError(
                    f"a gradient lives on {mesh} (ranks {sorted(_mesh_ranks(mesh))}), but the "
                    f"clip reduces over ranks {sorted(ranks)}: pass group= the process group "
                    "its mesh spans (e.g. the tensor-parallel group when data-parallel "
                    "replicas hold copies); sharding inside pipeline stages is not supported"
                )
    shards = local_shards(tensors, plain_distinct=group is not None)
    return Layout(shards, group, communicate=group is not None or any(s.sharded for s in shards))


def _group_ranks(group: dist.ProcessGroup | None) -> frozenset[int]:
    if group is None:
        return frozenset(range(dist.get_world_size()))
    return frozenset(dist.get_process_group_ranks(group))


@functools.lru_cache(maxsize=256)
def _mesh_ranks(mesh: DeviceMesh) -> frozenset[int]:
    return frozenset(int(r) for r in mesh.mesh.flatten().tolist())


@functools.lru_cache(maxsize=256)
def _on_device(values: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small constant tensor, copied to ``device`` once (the layout repeats every
    step; a fresh host-to-device copy, or ``nonzero``, would sync an accelerator)."""
    return torch.tensor(values, dtype=dtype, device=device)

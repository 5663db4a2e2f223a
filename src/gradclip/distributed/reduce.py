r"""The one collective of a clip: local partial norms packed into ONE all-reduce.

Every number a clipper or the monitor needs across ranks is a p-norm whose
``p``-th power is a sum over ranks: a tensor's norm (``Σ_r ‖g^{(r)}‖_p^p``
over its shards), the norm of all the tensors a rank holds alone (pipeline
stages), an AGC unit's norm when its row is split. :class:`NormPacket`
collects the local parts of one step, each rank packs them into one flat
float64 vector in the same layout, and :meth:`NormPacket.reduce` all-reduces
it once over the process group:

.. math:: x_j = \sum_{r \in \text{counted}} \big(n_j^{(r)}\big)^p
          \quad\Rightarrow\quad N_j = x_j^{1/p}
          \qquad (p = \infty:\ N_j = \max_r n_j^{(r)})

with ``SUM`` for finite ``p`` and ``MAX`` for ``p = ∞``. Float64 powers of
float32 norms can neither overflow nor underflow for ``p ≤ 8``
(``(3.4·10^{38})^8 < 1.8·10^{308}``). Replicas are masked out by the caller
(:mod:`~gradclip.distributed.placement`), never divided out.

Non-finite values: NaN and inf propagate through a SUM of non-negative
powers, so every rank sees the same non-finite result. One extra slot counts
the non-finite local norms of *all* ranks, replicas included; when it is
non-zero but every result came out finite (a NaN that only an uncounted
replica saw), every result becomes NaN, so every rank takes the same
decision. Under ``MAX`` (which may drop NaN) NaN is sent as ``+inf`` and a
second slot, counting NaN, restores it.

The all-reduce is skipped when no process group is given and nothing is
sharded: replicated gradients (DDP) give the same norms on every rank alone.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["NormPacket"]

#: The largest ``p`` for which float64 powers of float32 norms cannot overflow.
MAX_EXACT_P = 8.0


@dataclasses.dataclass(frozen=True)
class _Slot:
    start: int
    stop: int
    summed: bool  # True: one slot holding the sum over entries and ranks


class NormPacket:
    r"""Local partial p-norms of one step, all-reduced together in one call.

    Add parts with :meth:`entries` (one global norm per entry, e.g. per
    tensor) and :meth:`total` (one global norm of all entries of all ranks,
    e.g. the tensors only this rank holds); call :meth:`reduce` once on every
    rank of ``group`` in the same order with the same lengths; read the
    results with :meth:`get`.

    Args:
        norm_type: ``p > 0`` or ``inf``.
        device: where the packed vector lives (the gradients' device).
        group: the process group, or None for the default (world) group.
        communicate: False makes :meth:`reduce` local (nothing to sum over ranks).

    Example:
        >>> import torch
        >>> packet = NormPacket(2.0, torch.device("cpu"), communicate=False)
        >>> h = packet.entries(torch.tensor([3.0, 4.0]))
        >>> t = packet.total(torch.tensor([3.0, 4.0]))
        >>> packet.reduce()
        >>> packet.get(h), packet.get(t)
        (tensor([3., 4.]), tensor([5.]))
    """

    def __init__(
        self,
        norm_type: float,
        device: torch.device,
        group: dist.ProcessGroup | None = None,
        *,
        communicate: bool = True,
    ) -> None:
        if not 0 < norm_type <= MAX_EXACT_P and norm_type != math.inf:
            raise ValueError(
                f"distributed norms support 0 < p <= {MAX_EXACT_P} or p = inf, got {norm_type}"
            )
        self.p = norm_type
        self.device = device
        self.group = group
        self.communicate = communicate
        self._parts: list[Tensor] = []
        self._slots: list[_Slot] = []
        self._dtypes: list[torch.dtype] = []
        self._size = 0
        self._nonfinite: list[Tensor] = []  # per part: (non-finite, NaN) local counts
        self._result: Tensor | None = None

    @property
    def _max(self) -> bool:
        return self.p == math.inf

    def _encode(self, norms: Tensor, counted: Tensor | bool) -> Tensor:
        n = norms.detach().to(self.device, torch.float64).reshape(-1)
        if self._max:
            x = torch.where(torch.isnan(n), math.inf, n)
        else:
            x = n if self.p == 1 else n.pow(self.p)
        if counted is True:
            return x
        if counted is False:
            return torch.zeros_like(x)
        return torch.where(counted.to(self.device), x, 0.0)

    def _add(self, encoded: Tensor, norms: Tensor, summed: bool) -> int:
        if self._result is not None:
            raise RuntimeError("NormPacket.reduce() was already called")
        self._parts.append(encoded)
        self._slots.append(_Slot(self._size, self._size + encoded.numel(), summed))
        self._dtypes.append(torch.promote_types(norms.dtype, torch.float32))
        self._size += encoded.numel()
        n = norms.detach().reshape(-1).to(self.device)
        self._nonfinite.append(torch.stack([(~torch.isfinite(n)).sum(), torch.isnan(n).sum()]))
        return len(self._slots) - 1

    def entries(self, norms: Tensor, counted: Tensor | bool = True) -> int:
        """Add local partial norms whose global norms are wanted one by one.

        Args:
            norms: 1-d local partial norms (e.g. of each tensor's local shard).
            counted: which entries this rank counts (bool, or a bool tensor
                like ``norms``); uncounted entries send 0.

        Returns:
            A handle for :meth:`get`.
        """
        return self._add(self._encode(norms, counted), norms, summed=False)

    def total(self, norms: Tensor, counted: Tensor | bool = True) -> int:
        """Add local norms whose one combined norm over all entries and ranks is wanted.

        Args:
            norms: 1-d local norms (e.g. of the tensors this rank alone holds).
            counted: as in :meth:`entries`.

        Returns:
            A handle for :meth:`get` (a 1-element result).
        """
        x = self._encode(norms, counted)
        one = x.amax().reshape(1) if self._max and x.numel() else x.sum().reshape(1)
        return self._add(one, norms, summed=True)

    def any(self, flags: Tensor) -> int:
        """Add booleans whose OR over all entries and ranks is wanted.

        Args:
            flags: a bool tensor (any shape).

        Returns:
            A handle; ``packet.get(handle)[0] > 0`` is the OR (a count of 1s
            under ``SUM``, the largest under ``MAX``, either way positive iff any).
        """
        return self.total(flags.reshape(-1).to(torch.float32))

    def reduce(self) -> None:
        """The one all-reduce (``SUM``, or ``MAX`` for ``p = ∞``) of every part, in place."""
        zeros = torch.zeros(2, dtype=torch.int64, device=self.device)
        counts = torch.stack(self._nonfinite).sum(0) if self._nonfinite else zeros
        flat = torch.cat([*self._parts, counts.to(torch.float64)])
        if self.communicate:
            op = dist.ReduceOp.MAX if self._max else dist.ReduceOp.SUM
            dist.all_reduce(flat, op=op, group=self.group)
        values, nonfinite, nan = flat[:-2], flat[-2] > 0, flat[-1] > 0
        if not self._max and self.p != 1:
            values = values.pow(1.0 / self.p)
        # MAX may drop NaN: it was sent as inf and the NaN count brings it back.
        # Every result finite while some rank (an uncounted replica) saw a
        # non-finite norm: all NaN, so that every rank skips alike.
        hidden = nonfinite & torch.isfinite(values).all()
        bad = (torch.isinf(values) & nan) | hidden
        self._result = torch.where(bad, math.nan, values)

    def get(self, handle: int) -> Tensor:
        """The global norms of the part ``handle`` (its input's dtype, at least float32)."""
        if self._result is None:
            raise RuntimeError("call NormPacket.reduce() first")
        slot = self._slots[handle]
        return self._result[slot.start : slot.stop].to(self._dtypes[handle])

    @property
    def nbytes(self) -> int:
        """Bytes this rank sends into the all-reduce (0 when it does not communicate)."""
        return 8 * (self._size + 2) if self.communicate else 0

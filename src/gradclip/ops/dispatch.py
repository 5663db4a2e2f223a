"""The one tensor-dispatch helper: group by device and dtype, pick a kernel path.

Every op in :mod:`gradclip.ops` and every clipper that touches many tensors
goes through :func:`group_tensors`, which

* groups the tensors by ``(device, dtype)`` and keeps each tensor's position
  in the input (so results come back in input order, duplicates included);
* decides once per group whether the dense (strided) members take one fused
  ``torch._foreach_*`` call or a Python loop, with torch's ``foreach`` rule
  (``None``: fused where supported, ``True``: demand it, ``False``: loop);
* leaves sparse members (outside :attr:`TensorGroup.dense`) to the caller.

:func:`mul_`, :func:`mul` and :func:`clamp_` are the element-wise kernels the
ops share. This is an internal API of the core (``gradclip.ops``,
``gradclip.clippers``); the application uses the public ops instead.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

__all__ = [
    "TensorGroup",
    "clamp_",
    "dense_view",
    "foreach_supported",
    "group_tensors",
    "mul",
    "mul_",
]

T = TypeVar("T")
Factor = Tensor | float

PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)


@dataclasses.dataclass
class TensorGroup:
    """Tensors that share a device and a dtype, with their input positions."""

    device: torch.device
    dtype: torch.dtype
    indices: list[int]
    tensors: list[Tensor]
    #: The caller's ``foreach`` argument (torch's rule, see :func:`group_tensors`).
    requested: bool | None = None

    @functools.cached_property
    def foreach(self) -> bool:
        """True when the dense members go through one ``torch._foreach_*`` call
        (decided on first use, so that a path nobody asks for costs nothing)."""
        ok = foreach_supported(self.dense, self.device)
        if self.requested and not ok:
            raise RuntimeError(
                f"foreach=True was passed, but can't use the foreach API on "
                f"{self.device.type} tensors"
            )
        return ok if self.requested is None else self.requested

    @property
    def dense(self) -> list[Tensor]:
        """The strided members (the ones foreach kernels take)."""
        return [t for t in self.tensors if t.layout == torch.strided]


def foreach_supported(tensors: Sequence[Tensor], device: torch.device) -> bool:
    """Whether torch's foreach kernels take ``tensors``.

    Args:
        tensors: the tensors of one group.
        device: their device.

    Returns:
        True for dense, plain tensors on a device with foreach kernels.
    """
    return device.type in (
        "cuda",
        "xpu",
        "mtia",
        "cpu",
        torch._C._get_privateuse1_backend_name(),
    ) and all(t.layout == torch.strided and type(t) in PLAIN_TENSOR_TYPES for t in tensors)


def group_tensors(tensors: Sequence[Tensor], foreach: bool | None = None) -> list[TensorGroup]:
    """Group ``tensors`` by ``(device, dtype)``, in first-seen order, and pick each path.

    Args:
        tensors: the tensors (no ``None``).
        foreach: torch's rule: ``None`` fuses where supported, ``True`` demands it
            (``RuntimeError`` where it cannot), ``False`` loops.

    Returns:
        One :class:`TensorGroup` per device and dtype.

    Example:
        >>> import torch
        >>> f64 = torch.ones(1, dtype=torch.float64)
        >>> groups = group_tensors([torch.ones(1), f64, torch.ones(2)])
        >>> [(g.dtype, g.indices, g.foreach) for g in groups]
        [(torch.float32, [0, 2], True), (torch.float64, [1], True)]
    """
    by_key: dict[tuple[torch.device, torch.dtype], TensorGroup] = {}
    for i, t in enumerate(tensors):
        key = (t.device, t.dtype)
        if key not in by_key:
            by_key[key] = TensorGroup(t.device, t.dtype, [], [], foreach)
        by_key[key].indices.append(i)
        by_key[key].tensors.append(t)
    groups = list(by_key.values())
    if foreach:  # a demand is checked at once, as torch does
        for group in groups:
            _ = group.foreach
    return groups


def in_input_order(
    groups: Sequence[TensorGroup], per_group: Callable[[TensorGroup], Sequence[T]]
) -> list[T]:
    """Run ``per_group`` on every group and put the results back in input order.

    Args:
        groups: from :func:`group_tensors`.
        per_group: returns one result per member of its group.

    Returns:
        One result per input tensor, in input order.
    """
    out: dict[int, T] = {}
    for group in groups:
        out.update(zip(group.indices, per_group(group), strict=True))
    return [out[i] for i in range(len(out))]


def dense_view(t: Tensor) -> Tensor:
    """The stored values of ``t``.

    Args:
        t: a dense or sparse tensor.

    Returns:
        ``t`` itself when dense, the coalesced values when sparse.
    """
    if t.layout == torch.sparse_coo:
        return t.coalesce()._values()
    if t.layout != torch.strided:
        return t.values()
    return t


def _factor_for(factor: Factor, group: TensorGroup, match_dtype: bool) -> Factor | list[Tensor]:
    if not isinstance(factor, Tensor):
        return factor
    f = factor.to(group.device, group.dtype) if match_dtype else factor.to(group.device)
    if f.dim() == 1:  # one factor per input tensor: 0-d views, no sync
        return [f[i] for i in group.indices]
    return f


def mul_(
    tensors: Sequence[Tensor],
    factor: Factor,
    *,
    foreach: bool | None = None,
    match_dtype: bool = True,
) -> None:
    """``t *= factor`` for every tensor, in place, no sync.

    Args:
        tensors: dense or sparse tensors.
        factor: a number, a 0-d tensor, or a 1-d tensor with one factor per tensor.
        foreach: torch's rule (see :func:`group_tensors`).
        match_dtype: cast a tensor factor to each group's dtype (``False``: device
            only, as torch's ``clip_grad_norm_`` does).
    """
    for group in group_tensors(tensors, foreach):
        f = _factor_for(factor, group, match_dtype)
        pairs = [(t, f[k] if isinstance(f, list) else f) for k, t in enumerate(group.tensors)]
        strided = [(t, x) for t, x in pairs if t.layout == torch.strided]
        if strided and group.foreach:
            ts = [t for t, _ in strided]
            torch._foreach_mul_(ts, [x for _, x in strided] if isinstance(f, list) else f)  # type: ignore[arg-type,misc]
        else:
            for t, x in strided:
                t.mul_(x)
        for t, x in pairs:
            if t.layout != torch.strided:
                t.mul_(x)


def mul(tensors: Sequence[Tensor], factor: Tensor) -> list[Tensor]:
    """``[t * factor for t in tensors]``, fused per group.

    Args:
        tensors: dense or sparse tensors.
        factor: a 0-d tensor (cast to each group's device and dtype).

    Returns:
        New tensors, in input order.
    """

    def one_group(group: TensorGroup) -> list[Tensor]:
        f = factor.to(group.device, group.dtype)
        dense = group.dense
        scaled = iter(
            torch._foreach_mul(dense, f) if dense and group.foreach else [t * f for t in dense]
        )
        return [next(scaled) if t.layout == torch.strided else t * f for t in group.tensors]

    return in_input_order(group_tensors(tensors), one_group)


def clamp_(tensors: Sequence[Tensor], bound: Tensor | float, foreach: bool | None = None) -> None:
    """Clamp every dense tensor in place to ``[-bound, bound]``, no sync.

    Args:
        tensors: the tensors; sparse ones are skipped.
        bound: a number or a 0-d tensor.
        foreach: torch's rule (see :func:`group_tensors`).
    """
    dense = [t for t in tensors if t.layout == torch.strided]
    for group in group_tensors(dense, foreach):
        if isinstance(bound, Tensor):  # torch's foreach clamps take no tensor bound
            b = bound.to(group.device, group.dtype)
            for t in group.tensors:
                t.clamp_(min=-b, max=b)
        elif group.foreach:
            torch._foreach_clamp_min_(group.tensors, -bound)
            torch._foreach_clamp_max_(group.tensors, bound)
        else:
            for t in group.tensors:
                t.clamp_(min=-bound, max=bound)

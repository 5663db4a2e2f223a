r"""The norm pass: per-tensor norms and the global norm, overflow-safe and sync-free.

Notation: ``g = (g_1 … g_k)`` are the tensors (``None`` entries skipped) and
``n = ‖g‖_p = (Σ_i ‖g_i‖_p^p)^{1/p}`` (``max_i ‖g_i‖_∞`` for ``p = ∞``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import torch
from torch import Tensor

from gradclip.ops.checks import as_tensor_list, check_norm_type
from gradclip.ops.dispatch import (
    PLAIN_TENSOR_TYPES,
    TensorGroup,
    dense_view,
    foreach_supported,
    group_tensors,
    in_input_order,
)
from gradclip.ops.reduce import combine_partial_norms

if TYPE_CHECKING:
    from gradclip.distributed import Layout

__all__ = ["distributed_layout", "global_norm", "norms_and_total", "tensor_norms"]

Tensors: TypeAlias = Tensor | Iterable[Tensor | None]

LOW_PRECISION = (torch.float16, torch.bfloat16)
# Below this many elements a BLAS dot costs more in dispatch than it saves in reading.
_DOT_MIN_NUMEL = 1 << 15


def _exact_norm(t: Tensor, p: float) -> Tensor:
    """Overflow- and underflow-free norm on the CPU: ``m · ‖t/m‖_p`` in float64, ``m = max|t|``."""
    x = t.detach().to(torch.float64)
    m = float(x.abs().amax()) if x.numel() else 0.0
    if m == 0 or not math.isfinite(m):  # 0, inf, or NaN: the norm is m itself
        return torch.tensor(m, dtype=torch.float64)
    if p == math.inf:
        return torch.tensor(m, dtype=torch.float64)
    return m * torch.linalg.vector_norm(x / m, p)


def _per_tensor_norms_cpu(group: list[Tensor], p: float, dtype: torch.dtype) -> Tensor:
    """Norms of CPU tensors, in input order, one read pass each, with an exact fallback
    for a tensor whose float accumulation over- or underflows (a host read is free on
    the CPU: there is no device to wait for)."""
    out_dtype = torch.float32 if dtype in LOW_PRECISION else dtype
    tiny = torch.finfo(out_dtype).tiny
    detached = [t.detach() for t in group]
    if p == 2 and dtype not in LOW_PRECISION:
        # BLAS dot reads large tensors at memory bandwidth, about twice as fast as
        # vector_norm; small ones share one fused call, as a dot each costs a dispatch.
        is_large = [t.numel() >= _DOT_MIN_NUMEL and t.is_contiguous() for t in detached]
        small = [t for t, big in zip(detached, is_large, strict=True) if not big]
        small_norms = list(torch._foreach_norm(small, 2)) if small else []
        small_squares = iter(torch._foreach_mul(small_norms, small_norms) if small else [])
        squares = torch.stack(
            [
                torch.dot(t.view(-1), t.view(-1)) if big else next(small_squares)
                for t, big in zip(detached, is_large, strict=True)
            ]
        )
        lo, hi = torch.aminmax(squares)  # NaN propagates and fails the test below
        if float(lo) >= tiny and float(hi) < math.inf:
            return squares.sqrt()  # no square over- or underflowed (or is 0)
        norms, tiny = squares.sqrt(), math.sqrt(tiny)
    else:
        norms = torch.stack([torch.linalg.vector_norm(t, p, dtype=out_dtype) for t in detached])
    suspicious = (~torch.isfinite(norms)) | (norms < tiny)
    for i in torch.nonzero(suspicious).flatten().tolist():
        norms[i] = _exact_norm(detached[i], p).to(out_dtype)
    return norms


def _per_tensor_norms(
    group: list[Tensor], p: float, device: torch.device, dtype: torch.dtype
) -> Tensor:
    # Empty tensors have norm 0; a stand-in zero keeps every kernel (inf-norm too) happy.
    dense = [dense_view(t) if t.numel() else t.new_zeros(1) for t in group]
    if device.type == "cpu" and all(type(t) in PLAIN_TENSOR_TYPES for t in dense):
        return _per_tensor_norms_cpu(dense, p, dtype)
    acc = torch.float32 if dtype in LOW_PRECISION else None
    if foreach_supported(dense, device):
        return torch.stack(torch._foreach_norm(dense, p, dtype=acc))
    return torch.stack([torch.linalg.vector_norm(t, p, dtype=acc) for t in dense])


def _promoted_dtype(dtypes: Sequence[torch.dtype]) -> torch.dtype:
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out


def _tensor_norms(present: list[Tensor], p: float) -> Tensor:
    if not present:
        return torch.zeros(0)
    first_device = present[0].device
    result_dtype = _promoted_dtype([torch.float32, *(t.dtype for t in present)])

    def one_group(group: TensorGroup) -> Tensor:
        norms = _per_tensor_norms(group.tensors, p, group.device, group.dtype)
        return norms.to(first_device, result_dtype)

    groups = group_tensors(present)
    if len(groups) == 1:  # grouping keeps the order within a group
        return one_group(groups[0])
    return torch.stack(in_input_order(groups, lambda g: one_group(g).unbind()))


def distributed_layout(tensors: Sequence[Tensor]) -> Layout | None:
    """The :class:`~gradclip.distributed.Layout` of DTensor ``tensors``; None for plain ones."""
    from gradclip.distributed import is_dtensor, layout

    return layout(tensors) if any(is_dtensor(t) for t in tensors) else None


def norms_and_total(
    tensors: Sequence[Tensor], norm_type: float, layout: Layout | None = None
) -> tuple[Tensor, Tensor]:
    """Per-tensor norms and their combination, from one read pass.

    The internals of :func:`global_norm`, handed to the clippers so that the
    per-tensor norms reach observers without a second pass over the gradients.
    Tensors on several ranks (DTensors, or ``layout`` given) get their exact
    global norms from one all-reduce (see :mod:`gradclip.distributed`).

    Args:
        tensors: the tensors (no ``None``); with ``layout``, its local views.
        norm_type: a validated ``p`` (see :func:`~gradclip.ops.check_norm_type`).
        layout: how the tensors lie across ranks (None: found from DTensors).

    Returns:
        ``(norms, total)``: a 1-d tensor in input order and a 0-d tensor.

    Example:
        >>> import torch
        >>> norms_and_total([torch.tensor([3.0]), torch.tensor([4.0])], 2.0)
        (tensor([3., 4.]), tensor(5.))
    """
    if layout is None and (layout := distributed_layout(tensors)) is not None:
        tensors = layout.local
    if layout is not None:
        return layout.norms_and_total([_tensor_norms(list(tensors), norm_type)], norm_type)[0]
    norms = _tensor_norms(list(tensors), norm_type)
    return norms, combine_partial_norms(norms, norm_type)


def global_norm(tensors: Tensors, norm_type: float | str = 2.0) -> Tensor:
    r"""Return the p-norm of all ``tensors`` taken together, without syncing.

    .. math:: n = \Big(\sum_i \lVert g_i \rVert_p^p\Big)^{1/p},\qquad
              n_\infty = \max_i \lVert g_i \rVert_\infty

    Matches ``tf.linalg.global_norm`` (for ``p = 2``) and
    ``torch.nn.utils.get_total_norm`` in value, with three differences on purpose:

    * float16 and bfloat16 accumulate and return in float32;
    * large finite values do not overflow (``[1e30, 1e30]`` has norm ``1.414e30``)
      and tiny ones do not underflow to zero;
    * sparse tensors are coalesced first, so duplicate indices add up.

    Tensors are grouped by device and dtype and each group is reduced in one
    multi-tensor pass (``torch._foreach_norm`` on accelerators, BLAS ``dot`` on
    the CPU); the per-tensor norms then meet in
    :func:`~gradclip.ops.reduce.combine_partial_norms`.

    Args:
        tensors: a tensor or an iterable of tensors; ``None`` entries are skipped.
        norm_type: ``p > 0``, ``inf`` or ``"inf"``.

    Returns:
        A 0-d tensor on the first tensor's device; ``tensor(0.)`` for no tensors.

    Example:
        >>> import torch, gradclip
        >>> gradclip.global_norm([torch.tensor([3.0]), None, torch.tensor([4.0])])
        tensor(5.)
        >>> gradclip.global_norm([torch.tensor([3.0, -4.0])], norm_type="inf")
        tensor(4.)
    """
    p = check_norm_type(norm_type)
    present = [t for t in as_tensor_list(tensors, "tensors") if t is not None]
    return norms_and_total(present, p)[1]


def tensor_norms(tensors: Tensors, norm_type: float | str = 2.0) -> Tensor:
    r"""Return each tensor's p-norm ``‖g_i‖_p``, in input order, as one 1-d tensor.

    The per-tensor half of :func:`global_norm` (same kernels, same overflow
    safety, same float32 accumulation for low precision, sparse tensors
    coalesced, no sync). This is the norm behind per-tensor clipping (Keras
    ``clipnorm``) and per-layer logs.

    Args:
        tensors: a tensor or an iterable of tensors; ``None`` entries are skipped.
        norm_type: ``p > 0``, ``inf`` or ``"inf"``.

    Returns:
        A 1-d tensor with one entry per tensor present, on the first tensor's device.

    Example:
        >>> import torch, gradclip
        >>> gradclip.tensor_norms([torch.tensor([3.0, 4.0]), None, torch.ones(4)])
        tensor([5., 2.])
    """
    p = check_norm_type(norm_type)
    present = [t for t in as_tensor_list(tensors, "tensors") if t is not None]
    if (lay := distributed_layout(present)) is not None:  # global norms, one all-reduce
        return norms_and_total(lay.local, p, lay)[0]
    return _tensor_norms(present, p)

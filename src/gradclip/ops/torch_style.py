r"""PyTorch semantics, in place on ``.grad``, and the in-place building blocks.

:func:`clip_grad_norm_` and :func:`clip_grad_value_` are drop-ins for
``torch.nn.utils``; :func:`scale_` and :func:`clamp_dense_` are the in-place
kernels the clippers share.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from gradclip.ops import dispatch
from gradclip.ops.checks import (
    Threshold,
    as_tensor_list,
    check_norm_type,
    check_threshold,
    warn_if_nothing_to_clip,
)
from gradclip.ops.norms import Tensors, distributed_layout, norms_and_total
from gradclip.ops.reduce import combine_partial_norms
from gradclip.ops.tf_style import clip_by_value

__all__ = ["clamp_dense_", "clip_grad_norm_", "clip_grad_value_", "scale_"]

# torch adds this epsilon to the norm in clip_grad_norm_; kept for the drop-in.
_TORCH_CLIP_EPS = 1e-6


def scale_(tensors: Iterable[Tensor | None], factor: Tensor | float) -> None:
    """Multiply every tensor in place by ``factor`` (a 0-d tensor or a number), no sync.

    One fused ``torch._foreach_mul_`` per device and dtype; sparse tensors are
    scaled one by one. The factor is cast to each group's device and dtype.

    Args:
        tensors: tensors (dense or sparse); ``None`` entries are skipped.
        factor: a number or a 0-d tensor.

    Returns:
        None; the tensors are modified in place.

    Example:
        >>> import torch, gradclip
        >>> g = [torch.ones(2), None]
        >>> gradclip.scale_(g, torch.tensor(0.5))
        >>> g[0]
        tensor([0.5000, 0.5000])
    """
    dispatch.mul_([t for t in tensors if t is not None], factor)


def clamp_dense_(tensors: Iterable[Tensor], bound: Threshold, foreach: bool | None = None) -> None:
    """Clamp every dense (strided) tensor in place to ``[-bound, bound]``, no sync.

    One pair of fused ``_foreach_clamp_min_``/``_foreach_clamp_max_`` calls per
    device and dtype for a numeric bound; a 0-d tensor bound (which torch's
    foreach clamps do not take) is applied tensor by tensor. Sparse tensors are
    left to the caller, who must coalesce them first.

    Args:
        tensors: the tensors; sparse ones are skipped.
        bound: a non-negative number or a 0-d tensor.
        foreach: torch's rule (``None``: fused where supported).

    Returns:
        None; the tensors are modified in place.

    Example:
        >>> import torch
        >>> g = [torch.tensor([-3.0, 0.5])]
        >>> clamp_dense_(g, 1.0); g
        [tensor([-1.0000,  0.5000])]
    """
    dispatch.clamp_(list(tensors), bound, foreach)


def _grads_of(parameters: object) -> tuple[list[Tensor], list[Tensor]]:
    """(parameters, gradients) of the parameters that have a ``.grad``, torch-style,
    warning when the clip would silently do nothing."""
    params = [p for p in as_tensor_list(parameters, "parameters") if p is not None]
    with_grad = [p for p in params if p.grad is not None]
    warn_if_nothing_to_clip(len(params), len(with_grad), all_parameters=True)
    return with_grad, [p.grad for p in with_grad if p.grad is not None]


def _torch_total_norm(grads: list[Tensor], p: float, foreach: bool | None) -> Tensor:
    """``torch.nn.utils.get_total_norm``'s exact kernel sequence, plus sparse support."""
    if not grads:
        return torch.tensor(0.0)
    first_device = grads[0].device
    norms: list[Tensor] = []
    for group in dispatch.group_tensors(grads, foreach):
        dense = [dispatch.dense_view(g) for g in group.tensors]
        if group.foreach:
            norms.extend(torch._foreach_norm(dense, p))
        else:
            norms.extend(torch.linalg.vector_norm(g, p) for g in dense)
    return combine_partial_norms(
        torch.stack([n.to(first_device) for n in norms]), p, method="torch"
    )


def clip_grad_norm_(
    parameters: Tensors,
    max_norm: Threshold,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    r"""Drop-in for ``torch.nn.utils.clip_grad_norm_``: same result, same return value.

    .. math:: g_i \leftarrow g_i \cdot \min\Big(1, \frac{c}{n + 10^{-6}}\Big)

    The factor is always multiplied in (a branch on it would sync the host), so
    gradients below the threshold are rewritten unchanged and clipped ones end
    just below ``c``. On float32 CPU tensors the result equals torch's bit for
    bit. Beyond torch: sparse gradients (``nn.Embedding(sparse=True)``) work, a
    0-d tensor ``max_norm`` does not sync, a negative or NaN ``max_norm`` raises
    ``ValueError`` instead of flipping the gradients' sign, and a clip that would
    silently do nothing (an empty iterable, or parameters none of which has a
    ``.grad``) warns. ``error_if_nonfinite=True`` costs one host sync, as in torch.

    Args:
        parameters: a tensor or an iterable of parameters whose ``.grad`` is clipped.
        max_norm: the threshold ``c`` (a number or a 0-d tensor).
        norm_type: ``p > 0``, ``inf`` or ``"inf"``.
        error_if_nonfinite: raise ``RuntimeError`` for a non-finite total norm.
        foreach: torch's rule (``None``: fused where supported).

    Returns:
        The pre-clip total norm, a 0-d tensor (``tensor(0.)`` when nothing has a gradient).

    Example:
        >>> import torch, gradclip
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> gradclip.clip_grad_norm_([w], max_norm=1.0)
        tensor(5.)
        >>> w.grad
        tensor([0.6000, 0.8000])
    """
    c = check_threshold(max_norm, "max_norm")
    p = check_norm_type(norm_type)
    params, grads = _grads_of(parameters)
    if (lay := distributed_layout(grads)) is None:
        total = _torch_total_norm(grads, p, foreach)
    else:  # DTensor gradients: the global norm over every mesh, one all-reduce
        grads = lay.local
        total = norms_and_total(grads, p, lay)[1]
    if error_if_nonfinite and bool(torch.logical_or(total.isnan(), total.isinf())):
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is non-finite, so it "
            "cannot be clipped. To disable this error and scale the gradients by the non-finite "
            "norm anyway, set `error_if_nonfinite=False`"
        )
    coef = torch.clamp(c / (total + _TORCH_CLIP_EPS), max=1.0)
    dense = [g for g in grads if g.layout == torch.strided]
    dispatch.mul_(dense, coef, foreach=foreach, match_dtype=False)
    for param in params:  # sparse: coalesced first so that duplicates scale once
        g = param.grad
        if g is not None and g.layout != torch.strided:
            param.grad = (g.coalesce() if g.layout == torch.sparse_coo else g) * coef.to(g.device)
    return total


def clip_grad_value_(
    parameters: Tensors, clip_value: Threshold, foreach: bool | None = None
) -> None:
    r"""Drop-in for ``torch.nn.utils.clip_grad_value_``: clamp every ``.grad`` entry in place.

    .. math:: g \leftarrow \min(\max(g, -v), v)

    Like Keras ``clipvalue``. Sparse gradients are coalesced and their values
    clamped. A negative or NaN ``clip_value`` raises ``ValueError``; a clip that
    would silently do nothing warns, as in :func:`clip_grad_norm_`.

    Args:
        parameters: a tensor or an iterable of parameters whose ``.grad`` is clamped.
        clip_value: the bound ``v`` (a number or a 0-d tensor).
        foreach: torch's rule (``None``: fused where supported).

    Returns:
        None, as torch's.

    Example:
        >>> import torch, gradclip
        >>> w = torch.nn.Parameter(torch.zeros(3)); w.grad = torch.tensor([-2.0, 0.5, 3.0])
        >>> gradclip.clip_grad_value_([w], 1.0)
        >>> w.grad
        tensor([-1.0000,  0.5000,  1.0000])
    """
    v = check_threshold(clip_value, "clip_value")
    params, grads = _grads_of(parameters)
    clamp_dense_(grads, v, foreach)
    for p in params:
        if p.grad is not None and p.grad.layout != torch.strided:
            p.grad = clip_by_value(p.grad, -v, v)

r"""TensorFlow semantics, functional: the inputs are never modified.

:func:`clip_by_global_norm`, :func:`clip_by_norm` and :func:`clip_by_value`
match ``tf.clip_by_global_norm``, ``tf.clip_by_norm`` and ``tf.clip_by_value``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

import torch
from torch import Tensor

from gradclip.ops import dispatch
from gradclip.ops.checks import Threshold, as_tensor_list, check_threshold
from gradclip.ops.norms import LOW_PRECISION, global_norm

__all__ = ["clip_by_global_norm", "clip_by_norm", "clip_by_value"]

TensorList: TypeAlias = Sequence[Tensor | None]


def clip_by_global_norm(
    tensors: TensorList, clip_norm: Threshold, use_norm: Tensor | float | None = None
) -> tuple[list[Tensor | None], Tensor]:
    r"""Scale ``tensors`` so that their global L2 norm is at most ``clip_norm``.

    Exact semantics of ``tf.clip_by_global_norm(t_list, clip_norm, use_norm)``:

    .. math:: g_i \leftarrow g_i \cdot \frac{c}{\max(n, c)}

    * functional: the inputs are left unchanged and new tensors are returned;
    * ``None`` stays ``None`` at its position;
    * no epsilon: when ``n > c`` the result has norm exactly ``c`` (to rounding);
    * a non-finite ``n`` turns every output into NaN, to signal an error, as
      TensorFlow documents;
    * ``use_norm`` replaces the computed norm; the returned norm is the pre-clip one.

    ``tensors`` must be a list or tuple (TensorFlow raises ``TypeError`` for
    anything else). ``clip_norm`` must be positive and finite.

    Reference: Pascanu, Mikolov, Bengio, "On the difficulty of training
    recurrent neural networks", ICML 2013, Algorithm 1.

    Args:
        tensors: a list or tuple of tensors and ``None``.
        clip_norm: the threshold ``c`` (positive, finite; a number or a 0-d tensor).
        use_norm: a precomputed global norm to use instead of computing it.

    Returns:
        ``(clipped, norm)``: new tensors (``None`` kept in place) and the pre-clip norm.

    Example:
        >>> import torch, gradclip
        >>> clipped, norm = gradclip.clip_by_global_norm(
        ...     [torch.tensor([3.0]), None, torch.tensor([4.0])], clip_norm=1.0)
        >>> norm, clipped
        (tensor(5.), [tensor([0.6000]), None, tensor([0.8000])])
    """
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a list or tuple of Tensors, got {type(tensors).__name__}")
    items = as_tensor_list(tensors, "tensors")
    c = check_threshold(clip_norm, "clip_norm", allow_zero=False, allow_inf=False)
    present = [t for t in items if t is not None]
    if use_norm is None:
        norm = global_norm(present)
    elif isinstance(use_norm, Tensor):
        norm = use_norm
    elif isinstance(use_norm, (int, float)) and not isinstance(use_norm, bool):
        norm = torch.tensor(float(use_norm))
    else:
        raise TypeError(f"use_norm must be a Tensor, a number or None, got {use_norm!r}")
    c_t = (
        c.to(norm)
        if isinstance(c, Tensor)
        else torch.tensor(c, dtype=norm.dtype, device=norm.device)
    )
    # (norm - norm) is NaN exactly when norm is inf or NaN: TensorFlow's error signal.
    scale = c_t / torch.maximum(norm, c_t) + (norm - norm)
    scaled = iter(dispatch.mul(present, scale))
    out = [None if t is None else next(scaled) for t in items]
    return out, norm


def clip_by_norm(
    t: Tensor, clip_norm: Threshold, axes: int | Sequence[int] | None = None
) -> Tensor:
    r"""Scale ``t`` so that its L2 norm (over ``axes``) is at most ``clip_norm``.

    Semantics of ``tf.clip_by_norm(t, clip_norm, axes)``:

    .. math:: t \leftarrow \frac{t \cdot c}{\max(\lVert t \rVert_2, c)}

    With ``axes`` the norm is taken over those dimensions only, so each slice
    along the remaining ones (each row, say) is clipped on its own. A zero-norm
    tensor or slice gives zeros, never NaN. Low-precision inputs are normed in
    float32 and the result is returned in ``t``'s dtype. Sparse COO tensors are
    coalesced and clipped by the norm of their values (``axes`` must be None),
    like TensorFlow's ``IndexedSlices``.

    Where TensorFlow silently treats a negative ``clip_norm`` as 0, gradclip
    raises ``ValueError``.

    Args:
        t: a dense or sparse COO tensor.
        clip_norm: the threshold ``c`` (non-negative; a number or a 0-d tensor).
        axes: dimensions to take the norm over (``None``: all).

    Returns:
        A new tensor of ``t``'s shape and dtype.

    Example:
        >>> import torch, gradclip
        >>> gradclip.clip_by_norm(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0, axes=1)
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a Tensor, got {type(t).__name__}")
    as_tensor_list([t], "t")
    c = check_threshold(clip_norm, "clip_norm")
    if t.layout != torch.strided:
        if axes is not None:
            raise ValueError("axes is not supported for sparse tensors")
        t = t.coalesce() if t.layout == torch.sparse_coo else t
        values = clip_by_norm(t.values(), c)
        return torch.sparse_coo_tensor(
            t.indices(), values, t.shape, is_coalesced=True, check_invariants=False
        )
    dims = _normalize_axes(axes, t.dim())
    acc = torch.float32 if t.dtype in LOW_PRECISION else t.dtype
    norm = torch.linalg.vector_norm(t, 2, dim=dims, keepdim=True, dtype=acc)
    c_t = c.to(norm) if isinstance(c, Tensor) else torch.tensor(c, dtype=acc, device=t.device)
    denom = torch.maximum(norm, c_t)
    scaled = t.to(acc) * c_t / torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, scaled, torch.zeros_like(scaled)).to(t.dtype)


def _normalize_axes(axes: int | Sequence[int] | None, ndim: int) -> tuple[int, ...] | None:
    if axes is None:
        return None
    raw = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for a in raw:
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"axes must be ints, got {a!r}")
        if not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor of rank {ndim}")
        out.append(a % max(ndim, 1))
    return tuple(out)


def clip_by_value(t: Tensor, clip_value_min: Threshold, clip_value_max: Threshold) -> Tensor:
    r"""Clamp every entry of ``t`` to ``[clip_value_min, clip_value_max]``.

    Semantics of ``tf.clip_by_value``: element-wise, NaN entries stay NaN, the
    bounds may be tensors that broadcast to ``t``'s shape (but must not change
    it). Sparse COO tensors are coalesced first and their values clamped.
    Numeric bounds with ``min > max`` or NaN raise ``ValueError``.

    .. math:: t \leftarrow \min(\max(t, v_{min}), v_{max})

    Args:
        t: a dense or sparse COO tensor.
        clip_value_min: lower bound (a number or a broadcastable tensor).
        clip_value_max: upper bound (a number or a broadcastable tensor).

    Returns:
        A new tensor of ``t``'s shape.

    Example:
        >>> import torch, gradclip
        >>> gradclip.clip_by_value(torch.tensor([-2.0, 0.5, 3.0]), -1.0, 1.0)
        tensor([-1.0000,  0.5000,  1.0000])
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a Tensor, got {type(t).__name__}")
    for name, bound in (("clip_value_min", clip_value_min), ("clip_value_max", clip_value_max)):
        if isinstance(bound, Tensor):
            continue
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise TypeError(f"{name} must be a number or a Tensor, got {bound!r}")
        if math.isnan(bound):
            raise ValueError(f"{name} must not be NaN")
    if (
        not isinstance(clip_value_min, Tensor)
        and not isinstance(clip_value_max, Tensor)
        and clip_value_min > clip_value_max
    ):
        raise ValueError(
            f"clip_value_min ({clip_value_min}) must not exceed clip_value_max ({clip_value_max})"
        )
    if t.layout == torch.sparse_coo:
        t = t.coalesce()
        values = clip_by_value(t.values(), clip_value_min, clip_value_max)
        return torch.sparse_coo_tensor(
            t.indices(), values, t.shape, is_coalesced=True, check_invariants=False
        )
    lo, hi = clip_value_min, clip_value_max
    if isinstance(lo, Tensor) or isinstance(
        hi, Tensor
    ):  # torch.clamp takes two tensors or two numbers
        lo, hi = (torch.as_tensor(b, dtype=t.dtype, device=t.device) for b in (lo, hi))
    out = torch.clamp(t, lo, hi)  # type: ignore[arg-type]
    if out.shape != t.shape:
        raise ValueError(
            f"clip bounds of shapes {getattr(lo, 'shape', ())} and {getattr(hi, 'shape', ())} "
            f"would change the shape of t from {tuple(t.shape)} to {tuple(out.shape)}"
        )
    return out

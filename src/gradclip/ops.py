"""Stateless clipping operations with exact TensorFlow and PyTorch semantics.

Notation: ``g = (g_1 … g_k)`` are the tensors (``None`` entries skipped),
``n = ‖g‖_p = (Σ_i ‖g_i‖_p^p)^{1/p}`` (``max_i ‖g_i‖_∞`` for ``p = ∞``) and
``c`` is the threshold.

Two families live here:

* TensorFlow semantics, functional (inputs are never modified):
  :func:`clip_by_global_norm`, :func:`clip_by_norm`, :func:`clip_by_value`.
* PyTorch semantics, in place on ``.grad``: :func:`clip_grad_norm_` and
  :func:`clip_grad_value_`, drop-ins for ``torch.nn.utils``.

:func:`global_norm` is the shared norm pass. Nothing here reads a device value
on the host, so none of these functions synchronise a CUDA stream (the only
exceptions are the ones torch documents too: ``error_if_nonfinite=True``).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import torch
from torch import Tensor

__all__ = [
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "clip_grad_norm_",
    "clip_grad_value_",
    "global_norm",
    "scale_",
    "tensor_norms",
]

TensorList: TypeAlias = Sequence[Tensor | None]
Tensors: TypeAlias = Tensor | Iterable[Tensor | None]
Number: TypeAlias = float | int
Threshold: TypeAlias = float | int | Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_PLAIN_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
# torch adds this epsilon to the norm in clip_grad_norm_; kept for the drop-in.
_TORCH_CLIP_EPS = 1e-6
# Below this many elements a BLAS dot costs more in dispatch than it saves in reading.
_DOT_MIN_NUMEL = 1 << 15


# --------------------------------------------------------------------------- checks
def _as_tensor_list(tensors: object, name: str) -> list[Tensor | None]:
    """Materialise ``tensors`` (a Tensor or an iterable of Tensor/None) as a list."""
    if isinstance(tensors, Tensor):
        return [tensors]
    if tensors is None or isinstance(tensors, (str, bytes, dict)):
        raise TypeError(
            f"{name} must be a Tensor or an iterable of Tensors, got {type(tensors).__name__}"
        )
    try:
        items = list(tensors)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"{name} must be a Tensor or an iterable of Tensors, got {type(tensors).__name__}"
        ) from None
    for i, item in enumerate(items):
        if item is not None and not isinstance(item, Tensor):
            raise TypeError(f"{name}[{i}] must be a Tensor or None, got {type(item).__name__}")
        if item is not None and not (item.is_floating_point() or item.is_complex()):
            raise TypeError(f"{name}[{i}] must have a floating dtype, got {item.dtype}")
    return items


def check_norm_type(norm_type: object) -> float:
    """Return ``norm_type`` as a float, or raise for anything but ``p > 0`` or ``inf``."""
    if isinstance(norm_type, str) and norm_type.lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)):
        raise TypeError(f"norm_type must be a number or 'inf', got {norm_type!r}")
    p = float(norm_type)
    if math.isnan(p) or p <= 0:
        raise ValueError(f"norm_type must be positive or inf, got {norm_type!r}")
    return p


def check_threshold(
    value: object, name: str, *, allow_zero: bool = True, allow_inf: bool = True
) -> Threshold:
    """Validate a clipping threshold; 0-d tensors pass unchecked (checking would sync)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a 0-d Tensor, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    if v < 0 or (v == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    if math.isinf(v) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


# --------------------------------------------------------------------------- helpers
def _dense_view(t: Tensor) -> Tensor:
    """The stored values of ``t``: itself when dense, the coalesced values when sparse."""
    if t.layout == torch.sparse_coo:
        return t.coalesce()._values()
    if t.layout != torch.strided:
        return t.values()
    return t


def _group_by_device_and_dtype(
    tensors: Iterable[Tensor],
) -> dict[tuple[torch.device, torch.dtype], list[Tensor]]:
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
    for t in tensors:
        groups[(t.device, t.dtype)].append(t)
    return groups


def _foreach_ok(tensors: Sequence[Tensor], device: torch.device) -> bool:
    return device.type in (
        "cuda",
        "xpu",
        "mtia",
        "cpu",
        torch._C._get_privateuse1_backend_name(),
    ) and all(t.layout == torch.strided and type(t) in _PLAIN_TENSOR_TYPES for t in tensors)


def _use_foreach(tensors: Sequence[Tensor], device: torch.device, foreach: bool | None) -> bool:
    """torch's rule: ``None`` picks the fused path when it can, ``True`` demands it."""
    ok = _foreach_ok(tensors, device)
    if foreach and not ok:
        raise RuntimeError(
            f"foreach=True was passed, but can't use the foreach API on {device.type} tensors"
        )
    return ok if foreach is None else foreach


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
    out_dtype = torch.float32 if dtype in _LOW_PRECISION else dtype
    tiny = torch.finfo(out_dtype).tiny
    detached = [t.detach() for t in group]
    if p == 2 and dtype not in _LOW_PRECISION:
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
    dense = [_dense_view(t) if t.numel() else t.new_zeros(1) for t in group]
    if device.type == "cpu" and all(type(t) in _PLAIN_TENSOR_TYPES for t in dense):
        return _per_tensor_norms_cpu(dense, p, dtype)
    acc = torch.float32 if dtype in _LOW_PRECISION else None
    if _foreach_ok(dense, device):
        return torch.stack(torch._foreach_norm(dense, p, dtype=acc))
    return torch.stack([torch.linalg.vector_norm(t, p, dtype=acc) for t in dense])


def _combine_norms(norms: Tensor, p: float) -> Tensor:
    """``‖(n_1 … n_k)‖_p`` scaled by ``m = max n_i`` so that no power overflows; no sync."""
    if norms.numel() == 0:
        return torch.zeros((), dtype=norms.dtype, device=norms.device)
    m = norms.amax()  # propagates NaN
    if p == math.inf:
        return m
    if p <= 2 and norms.device.type == "cpu" and 1e-15 < float(m) < 1e15:  # cannot overflow
        return torch.linalg.vector_norm(norms, p)
    ok = torch.isfinite(m) & (m > 0)
    safe_m = torch.where(ok, m, torch.ones_like(m))
    return torch.where(ok, safe_m * torch.linalg.vector_norm(norms / safe_m, p), m)


# --------------------------------------------------------------------------- norms
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
    the CPU). ``None`` entries are skipped; no tensors give ``tensor(0.)``. The
    result lives on the first tensor's device.

    Example:
        >>> import torch, gradclip
        >>> gradclip.global_norm([torch.tensor([3.0]), None, torch.tensor([4.0])])
        tensor(5.)
        >>> gradclip.global_norm([torch.tensor([3.0, -4.0])], norm_type="inf")
        tensor(4.)
    """
    p = check_norm_type(norm_type)
    return _combine_norms(tensor_norms(tensors, p), p)


def tensor_norms(tensors: Tensors, norm_type: float | str = 2.0) -> Tensor:
    r"""Return each tensor's p-norm ``‖g_i‖_p``, in input order, as one 1-d tensor.

    The per-tensor half of :func:`global_norm` (same kernels, same overflow
    safety, same float32 accumulation for low precision, sparse tensors
    coalesced, no sync). ``None`` entries are skipped, so the result has one
    entry per tensor present; it lives on the first tensor's device. This is
    the norm behind per-tensor clipping (Keras ``clipnorm``) and per-layer logs.

    Example:
        >>> import torch, gradclip
        >>> gradclip.tensor_norms([torch.tensor([3.0, 4.0]), None, torch.ones(4)])
        tensor([5., 2.])
    """
    p = check_norm_type(norm_type)
    present = [t for t in _as_tensor_list(tensors, "tensors") if t is not None]
    if not present:
        return torch.zeros(0)
    first_device = present[0].device
    result_dtype = _promoted_dtype([torch.float32, *(t.dtype for t in present)])
    groups = _group_by_device_and_dtype(present)
    parts = {
        key: _per_tensor_norms(group, p, *key).to(first_device, result_dtype)
        for key, group in groups.items()
    }
    if len(parts) == 1:  # grouping keeps the order within a group
        return next(iter(parts.values()))
    by_id = {
        id(t): n for key, group in groups.items() for t, n in zip(group, parts[key], strict=True)
    }
    return torch.stack([by_id[id(t)] for t in present])


def _promoted_dtype(dtypes: Sequence[torch.dtype]) -> torch.dtype:
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out


# --------------------------------------------------------------------------- scaling
def scale_(tensors: Iterable[Tensor | None], factor: Tensor | float) -> None:
    """Multiply every tensor in place by ``factor`` (a 0-d tensor or a number), no sync.

    One fused ``torch._foreach_mul_`` per device and dtype; sparse tensors are
    scaled one by one. The factor is cast to each group's device and dtype.

    Example:
        >>> import torch, gradclip
        >>> g = [torch.ones(2), None]
        >>> gradclip.scale_(g, torch.tensor(0.5))
        >>> g[0]
        tensor([0.5000, 0.5000])
    """
    present = [t for t in tensors if t is not None]
    for (device, dtype), group in _group_by_device_and_dtype(present).items():
        f = factor.to(device, dtype) if isinstance(factor, Tensor) else factor
        dense = [t for t in group if t.layout == torch.strided]
        if dense and _foreach_ok(dense, device):
            torch._foreach_mul_(dense, f)
        else:
            for t in dense:
                t.mul_(f)
        for t in group:
            if t.layout != torch.strided:
                t.mul_(f)


# --------------------------------------------------------------------------- TensorFlow
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

    Example:
        >>> import torch, gradclip
        >>> clipped, norm = gradclip.clip_by_global_norm(
        ...     [torch.tensor([3.0]), None, torch.tensor([4.0])], clip_norm=1.0)
        >>> norm, clipped
        (tensor(5.), [tensor([0.6000]), None, tensor([0.8000])])
    """
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence):
        raise TypeError(f"tensors must be a list or tuple of Tensors, got {type(tensors).__name__}")
    items = _as_tensor_list(tensors, "tensors")
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
    out: list[Tensor | None] = [None] * len(items)
    index = {id(t): i for i, t in enumerate(items) if t is not None}
    for (device, dtype), group in _group_by_device_and_dtype(present).items():
        s = scale.to(device, dtype)
        dense = [t for t in group if t.layout == torch.strided]
        scaled = (
            torch._foreach_mul(dense, s)
            if dense and _foreach_ok(dense, device)
            else [t * s for t in dense]
        )
        for t, r in zip(dense, scaled, strict=True):
            out[index[id(t)]] = r
        for t in group:
            if t.layout != torch.strided:
                out[index[id(t)]] = t * s
    for i, item in enumerate(items):  # the same tensor may appear twice in the list
        if item is not None and out[i] is None:
            out[i] = out[index[id(item)]]
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

    Example:
        >>> import torch, gradclip
        >>> gradclip.clip_by_norm(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), 1.0, axes=1)
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a Tensor, got {type(t).__name__}")
    _as_tensor_list([t], "t")
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
    acc = torch.float32 if t.dtype in _LOW_PRECISION else t.dtype
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


# --------------------------------------------------------------------------- PyTorch
def _grads_of(parameters: object) -> tuple[list[Tensor], list[Tensor]]:
    """(parameters, gradients) of the parameters that have a ``.grad``, torch-style."""
    is_generator = isinstance(parameters, Iterable) and iter(parameters) is parameters  # type: ignore[arg-type]
    params = [p for p in _as_tensor_list(parameters, "parameters") if p is not None]
    if is_generator and not params:
        warnings.warn(
            "`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3
        )
    with_grad = [p for p in params if p.grad is not None]
    return with_grad, [p.grad for p in with_grad if p.grad is not None]


def _torch_total_norm(grads: list[Tensor], p: float, foreach: bool | None) -> Tensor:
    """``torch.nn.utils.get_total_norm``'s exact kernel sequence, plus sparse support."""
    if not grads:
        return torch.tensor(0.0)
    first_device = grads[0].device
    norms: list[Tensor] = []
    for (device, _), group in _group_by_device_and_dtype(grads).items():
        dense = [_dense_view(g) for g in group]
        if _use_foreach(dense, device, foreach):
            norms.extend(torch._foreach_norm(dense, p))
        else:
            norms.extend(torch.linalg.vector_norm(g, p) for g in dense)
    return torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]), p)


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
    just below ``c``. Returns the pre-clip total norm. On float32 CPU tensors the
    result equals torch's bit for bit. Beyond torch: sparse gradients
    (``nn.Embedding(sparse=True)``) work, a 0-d tensor ``max_norm`` does not sync,
    and a negative or NaN ``max_norm`` raises ``ValueError`` instead of flipping
    the gradients' sign. ``error_if_nonfinite=True`` costs one host sync, as in torch.

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
    total = _torch_total_norm(grads, p, foreach)
    if error_if_nonfinite and bool(torch.logical_or(total.isnan(), total.isinf())):
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is non-finite, so it "
            "cannot be clipped. To disable this error and scale the gradients by the non-finite "
            "norm anyway, set `error_if_nonfinite=False`"
        )
    coef = torch.clamp(c / (total + _TORCH_CLIP_EPS), max=1.0)
    _scale_grads_(params, grads, coef, foreach)
    return total


def _scale_grads_(
    params: list[Tensor], grads: list[Tensor], coef: Tensor, foreach: bool | None
) -> None:
    """Scale ``.grad`` in place; sparse grads are coalesced first so duplicates scale once."""
    for (device, _), group in _group_by_device_and_dtype(grads).items():
        dense = [g for g in group if g.layout == torch.strided]
        c = coef.to(device)
        if dense and _use_foreach(dense, device, foreach):
            torch._foreach_mul_(dense, c)
        else:
            for g in dense:
                g.mul_(c)
    for p in params:
        if p.grad is not None and p.grad.layout != torch.strided:
            p.grad = _coalesced(p.grad) * coef.to(p.grad.device)


def _coalesced(g: Tensor) -> Tensor:
    return g.coalesce() if g.layout == torch.sparse_coo else g


def clip_grad_value_(
    parameters: Tensors, clip_value: Threshold, foreach: bool | None = None
) -> None:
    r"""Drop-in for ``torch.nn.utils.clip_grad_value_``: clamp every ``.grad`` entry in place.

    .. math:: g \leftarrow \min(\max(g, -v), v)

    Like Keras ``clipvalue``. Sparse gradients are coalesced and their values
    clamped. A negative or NaN ``clip_value`` raises ``ValueError``.

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


def clamp_dense_(tensors: Iterable[Tensor], bound: Threshold, foreach: bool | None = None) -> None:
    """Clamp every dense (strided) tensor in place to ``[-bound, bound]``, no sync.

    One pair of fused ``_foreach_clamp_min_``/``_foreach_clamp_max_`` calls per
    device and dtype for a numeric bound; a 0-d tensor bound (which torch's
    foreach clamps do not take) is applied tensor by tensor. Sparse tensors are
    left to the caller, who must coalesce them first.
    """
    dense = [t for t in tensors if t.layout == torch.strided]
    for (device, dtype), group in _group_by_device_and_dtype(dense).items():
        if isinstance(bound, Tensor):
            b = bound.to(device, dtype)
            for t in group:
                t.clamp_(min=-b, max=b)
        elif _use_foreach(group, device, foreach):
            torch._foreach_clamp_min_(group, -bound)
            torch._foreach_clamp_max_(group, bound)
        else:
            for t in group:
                t.clamp_(min=-bound, max=bound)

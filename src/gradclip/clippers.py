r"""Stateful gradient clippers: one protocol, eight methods, no host syncs.

A *clipper* clips gradients in place and reports what it did::

    stats = clipper.clip(model.parameters())     # or a list of gradient tensors

:class:`ClipStats` holds 0-d tensors only (pre-clip norm, threshold, scale,
post-clip norm, a clipped flag, a finite flag), so nothing on the hot path reads
a device value on the host. Adaptive state (AutoClip's ring buffer, ZClip's
EMAs, the warm-up mean) lives in tensors on the gradients' device and is
updated with ``torch.where``, so a non-finite norm never enters any statistic.
Every clipper has ``state_dict()``/``load_state_dict()`` and a readable ``repr``.

Methods, by name (see :data:`CLIPPER_NAMES` and :func:`make_clipper`):

============== =====================================================================
``none``        nothing is clipped; the norm is still measured
``norm``        global norm, ``g · c / max(n, c)`` (Pascanu et al. 2013, Algorithm 1)
``value``       element-wise clamp to ``[-v, v]`` (Keras ``clipvalue``)
``tensor-norm`` each tensor's own norm (Keras ``clipnorm``)
``autoclip``    ``c_t`` = p-th percentile of the norm history incl. the current norm
``zclip``       z-score clipping against EMA mean/variance of the norm
``agc``         unit-wise adaptive clipping against parameter norms (Brock et al. 2021)
``warmup-mean`` Pascanu's heuristic: ``c`` = factor × the mean norm of a warm-up
============== =====================================================================

Non-finite gradients: every clipper takes ``nonfinite=``

* ``"propagate"`` (default): no guard, TensorFlow semantics: a method that
  scales by a norm-derived factor produces NaN (TensorFlow's error signal);
  ``value`` clamps like ``tf.clip_by_value`` (NaN stays NaN). Statistics are
  never updated with the non-finite norm.
* ``"error"``: raise :class:`FloatingPointError` before anything is touched
  (one host sync per call, the price of the check).
* ``"skip"``: gradients and statistics are left untouched and ``stats.finite``
  is False; :class:`gradclip.optim.ClippedOptimizer` then suppresses the step.

Global-scale clippers (``none``, ``norm``, ``autoclip``, ``zclip``,
``warmup-mean``) clip by one multiply, ``g ← g · stats.scale``; with
``clip(..., defer_scale=True)`` they leave the gradients alone so that a fused
optimizer can apply the scale inside its own kernel (see :mod:`gradclip.optim`).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, TypeAlias, Union

import torch
from torch import Tensor

from gradclip.ops import (
    _combine_norms,
    _foreach_ok,
    _group_by_device_and_dtype,
    check_norm_type,
    check_threshold,
    clamp_dense_,
    clip_by_value,
    global_norm,
    scale_,
    tensor_norms,
)

__all__ = [
    "AGC",
    "CLIPPER_NAMES",
    "AutoClip",
    "ClipStats",
    "Clipper",
    "NoClip",
    "NormClip",
    "TensorNormClip",
    "ValueClip",
    "WarmupMeanClip",
    "ZClip",
    "make_clipper",
    "make_clipper_from_spec",
]

NonFinite: TypeAlias = Literal["propagate", "error", "skip"]
_POLICIES = ("propagate", "error", "skip")
#: What ``clip`` accepts: a tensor, an iterable of parameters / gradients, or of
#: ``(name, parameter)`` pairs as ``module.named_parameters()`` yields them.
ClipInput: TypeAlias = Tensor | Iterable[Tensor | tuple[str, Tensor] | None]
_STATE_DTYPE = torch.float32


# --------------------------------------------------------------------------- stats
@dataclasses.dataclass(frozen=True)
class ClipStats:
    """What one clip did. Every field is a 0-d tensor on the gradients' device.

    * ``norm``: pre-clip global norm ``n`` (order ``norm_type``);
    * ``threshold``: the threshold in force (see each clipper for its meaning);
    * ``scale``: the factor applied to the gradients (the effective global
      factor ``clipped_norm / norm`` for per-tensor methods);
    * ``clipped_norm``: the global norm after clipping;
    * ``clipped`` (bool): whether anything was clipped;
    * ``finite`` (bool): whether ``norm`` was finite.

    Reading a field on the host (``float(stats.norm)``) syncs; :meth:`to_dict`
    does it for all fields at once, for logging.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([3.0, 4.0])]
        >>> make_clipper("norm", max_norm=1.0).clip(g).to_dict()  # doctest: +NORMALIZE_WHITESPACE
        {'norm': 5.0, 'threshold': 1.0, 'scale': 0.2, 'clipped_norm': 1.0,
         'clipped': True, 'finite': True}
    """

    norm: Tensor
    threshold: Tensor
    scale: Tensor
    clipped_norm: Tensor
    clipped: Tensor
    finite: Tensor

    def to_dict(self) -> dict[str, float | bool]:
        """All fields as Python numbers (one host sync); floats rounded to 7 digits."""
        values = torch.stack(
            [getattr(self, f.name).detach().to(torch.float64).cpu() for f in _FIELDS]
        ).tolist()
        out: dict[str, float | bool] = {}
        for f, v in zip(_FIELDS, values, strict=True):
            out[f.name] = bool(v) if f.name in ("clipped", "finite") else float(f"{v:.7g}")
        return out


_FIELDS = dataclasses.fields(ClipStats)


# --------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class _Batch:
    params: list[Tensor | None]  # None where a bare gradient was given
    grads: list[Tensor]
    names: list[str | None]


def _collect(parameters: ClipInput) -> _Batch:
    """Materialise the input once: parameters (their ``.grad``), bare gradients,
    or ``(name, parameter)`` pairs. Parameters without a gradient are skipped."""
    items: Iterable[Any] = [parameters] if isinstance(parameters, Tensor) else parameters
    batch = _Batch([], [], [])
    for item in items:
        name: str | None = None
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[0], str):
                raise TypeError(f"expected (name, parameter) pairs, got {item!r:.80}")
            name, item = item
        if item is None:
            continue
        if not isinstance(item, Tensor):
            raise TypeError(f"expected Tensors, got {type(item).__name__}")
        if isinstance(item, torch.nn.Parameter) or item.requires_grad:
            if item.grad is None:
                continue
            batch.params.append(item)
            batch.grads.append(item.grad)
        else:
            batch.params.append(None)
            batch.grads.append(item)
        batch.names.append(name)
    return batch


def _check_policy(nonfinite: object) -> NonFinite:
    if nonfinite not in _POLICIES:
        raise ValueError(f"nonfinite must be one of {_POLICIES}, got {nonfinite!r}")
    return typing.cast(NonFinite, nonfinite)


def _raise_nonfinite(finite: Tensor, norm: Tensor, who: str) -> None:
    if not bool(finite):  # the one host sync of nonfinite="error"
        raise FloatingPointError(
            f"{who}: the gradient norm is {float(norm)}; gradients were left untouched. "
            "Use nonfinite='skip' to skip such steps or 'propagate' to let NaN through."
        )


# --------------------------------------------------------------------------- base
class Clipper:
    """Base class and protocol of all clippers.

    Subclasses define ``name`` and either the threshold rule (global-scale
    clippers, :meth:`_threshold`) or a whole in-place clip (per-tensor ones).
    ``state_dict()`` returns ``{"name", "config", "state"}``; ``state`` holds
    tensors only. Python-side configuration is not restored by
    :meth:`load_state_dict` (build the clipper with the same options).
    """

    name: ClassVar[str] = ""
    #: True when the whole clip is one multiply of every gradient by ``stats.scale``.
    global_scale: ClassVar[bool] = True
    #: True when ``clip`` needs parameters (not bare gradients).
    needs_params: ClassVar[bool] = False

    def __init__(self, *, norm_type: float | str = 2.0, nonfinite: NonFinite = "propagate"):
        self.norm_type = check_norm_type(norm_type)
        self.nonfinite: NonFinite = _check_policy(nonfinite)

    # ---- public protocol
    def clip(
        self,
        parameters: ClipInput,
        *,
        defer_scale: bool = False,
        nonfinite: NonFinite | None = None,
    ) -> ClipStats:
        """Clip the gradients of ``parameters`` in place and return :class:`ClipStats`.

        ``parameters`` may be parameters (their ``.grad`` is used, ``None``
        skipped), bare gradient tensors, or ``(name, parameter)`` pairs.
        ``defer_scale=True`` makes a global-scale clipper leave the gradients
        unchanged: the caller must then multiply them by ``stats.scale`` (a
        fused optimizer does it for free). ``nonfinite`` overrides the policy
        for this call.
        """
        policy = self.nonfinite if nonfinite is None else _check_policy(nonfinite)
        batch = _collect(parameters)
        if self.needs_params and any(p is None for p in batch.params):
            raise TypeError(f"{self.name} needs parameters (with .grad), not bare gradients")
        if not batch.grads:
            zero = torch.zeros(())
            inf = torch.full((), math.inf)
            true, false = torch.ones((), dtype=torch.bool), torch.zeros((), dtype=torch.bool)
            return ClipStats(zero, inf, torch.ones(()), zero, false, true)
        self._to_device(batch.grads[0].device)
        if self.global_scale:
            stats = self._clip_global(batch, policy)
            if not defer_scale and self._writes:
                scale_(batch.grads, stats.scale)
            return stats
        return self._clip_local(batch, policy)

    def state_dict(self) -> dict[str, Any]:
        """``{"name": ..., "config": {...}, "state": {name: tensor}}`` (tensors cloned)."""
        return {
            "name": self.name,
            "config": self._config(),
            "state": {k: v.detach().clone() for k, v in self._state().items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the statistics saved by :meth:`state_dict` (bit for bit)."""
        if state_dict.get("name") != self.name:
            raise ValueError(
                f"state_dict is for clipper {state_dict.get('name')!r}, not {self.name!r}"
            )
        mine = self._state()
        saved = state_dict.get("state", {})
        if set(saved) != set(mine):
            raise ValueError(f"{self.name}: state keys {sorted(saved)} != {sorted(mine)}")
        for k, v in saved.items():
            if tuple(v.shape) != tuple(mine[k].shape):
                raise ValueError(
                    f"{self.name}: state {k!r} has shape {tuple(v.shape)}, "
                    f"expected {tuple(mine[k].shape)} (was the clipper built with other options?)"
                )
            mine[k].copy_(v)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({opts})"

    # ---- hooks
    _writes: ClassVar[bool] = True

    def _config(self) -> dict[str, Any]:
        return {"norm_type": self.norm_type, "nonfinite": self.nonfinite}

    def _state(self) -> dict[str, Tensor]:
        """The statistics, as live tensors (mutated in place by ``load_state_dict``)."""
        return {}

    def _to_device(self, device: torch.device) -> None:
        for name, t in self._state().items():
            if t.device != device:
                setattr(self, "_" + name, t.to(device))

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(threshold, target)`` and update the statistics where ``finite``.

        The norm is clipped when ``norm > threshold``, and then to ``target``.
        """
        raise NotImplementedError

    def _clip_local(self, batch: _Batch, policy: NonFinite) -> ClipStats:
        raise NotImplementedError

    # ---- global-scale machinery
    def _clip_global(self, batch: _Batch, policy: NonFinite) -> ClipStats:
        norm = global_norm(batch.grads, self.norm_type)
        finite = torch.isfinite(norm)
        if policy == "error":
            _raise_nonfinite(finite, norm, repr(self))
        thr, target = self._threshold(norm, finite)
        thr, target = thr.to(norm.dtype), target.to(norm.dtype)
        clipped = finite & (norm > thr)
        scale = torch.where(clipped, target / torch.where(clipped, norm, 1.0), 1.0)
        clipped_norm = torch.where(clipped, target, norm)
        if policy == "propagate" and self._writes:
            nan_if_nonfinite = norm - norm  # TensorFlow's signal: NaN when n is inf or NaN
            scale = scale + nan_if_nonfinite
            clipped_norm = clipped_norm + nan_if_nonfinite
        return ClipStats(norm, thr, scale, clipped_norm, clipped, finite)


def _local_stats(
    norm: Tensor, finite: Tensor, threshold: float, clipped_norm: Tensor, clipped: Tensor
) -> ClipStats:
    scale = torch.where(norm > 0, clipped_norm / torch.where(norm > 0, norm, 1.0), 1.0)
    thr = torch.full((), threshold, dtype=norm.dtype, device=norm.device)
    return ClipStats(norm, thr, scale, clipped_norm, finite & clipped, finite)


# --------------------------------------------------------------------------- methods
class NoClip(Clipper):
    """``none``: measure the global norm, change nothing (``threshold = inf``).

    Useful as a baseline and for logging: unlike ``clip_grad_norm_(…, inf)``
    it never rewrites the gradients. With ``nonfinite="skip"`` it still skips
    steps with a non-finite norm.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([3.0, 4.0])]
        >>> make_clipper("none").clip(g).norm, g[0]
        (tensor(5.), tensor([3., 4.]))
    """

    name = "none"
    _writes = False

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        inf = torch.full_like(norm, math.inf)
        return inf, inf


class NormClip(Clipper):
    r"""``norm``: clip the global norm at ``max_norm`` (Pascanu et al. 2013, Algorithm 1).

    .. math:: g \leftarrow g \cdot \frac{c}{\max(n, c)}

    TensorFlow's ``tf.clip_by_global_norm`` rule: exact (no epsilon, the
    post-clip norm is ``c``), gradients below the threshold are scaled by
    exactly 1. ``norm_type`` picks the p-norm (``"inf"`` allowed).

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([3.0]), torch.tensor([4.0])]
        >>> stats = make_clipper("norm", max_norm=1.0).clip(g)
        >>> stats.norm, stats.clipped_norm, g
        (tensor(5.), tensor(1.), [tensor([0.6000]), tensor([0.8000])])
    """

    name = "norm"

    def __init__(
        self,
        max_norm: float = 1.0,
        *,
        norm_type: float | str = 2.0,
        nonfinite: NonFinite = "propagate",
    ):
        super().__init__(norm_type=norm_type, nonfinite=nonfinite)
        self.max_norm = check_threshold(max_norm, "max_norm")

    def _config(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, **super()._config()}

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        c = self.max_norm
        thr = c.to(norm) if isinstance(c, Tensor) else torch.full_like(norm, c)
        return thr, thr


class ValueClip(Clipper):
    r"""``value``: clamp every gradient entry to ``[-clip_value, clip_value]``.

    .. math:: g \leftarrow \min(\max(g, -v), v)

    Keras ``clipvalue`` / ``tf.clip_by_value`` / ``torch.nn.utils.clip_grad_value_``.
    Under ``"propagate"`` NaN entries stay NaN and ±inf are clamped, as in
    TensorFlow. Stats: ``threshold = v``; ``clipped_norm`` is measured after
    the clamp (one more read pass); ``clipped`` is True when the clamp lowered
    the norm.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([-2.0, 0.5, 3.0])]
        >>> _ = make_clipper("value", clip_value=1.0).clip(g); g
        [tensor([-1.0000,  0.5000,  1.0000])]
    """

    name = "value"
    global_scale = False

    def __init__(
        self,
        clip_value: float = 1.0,
        *,
        norm_type: float | str = 2.0,
        nonfinite: NonFinite = "propagate",
    ):
        super().__init__(norm_type=norm_type, nonfinite=nonfinite)
        self.clip_value = _number_threshold(clip_value, "clip_value")

    def _config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value, **super()._config()}

    def _clip_local(self, batch: _Batch, policy: NonFinite) -> ClipStats:
        norm = global_norm(batch.grads, self.norm_type)
        finite = torch.isfinite(norm)
        if policy == "error":
            _raise_nonfinite(finite, norm, repr(self))
        v = self.clip_value
        # Under "skip", bounds of ±inf leave a non-finite step untouched, with no sync.
        clamp_dense_(batch.grads, torch.where(finite, v, math.inf) if policy == "skip" else v)
        for p, g in zip(batch.params, batch.grads, strict=True):
            if g.layout != torch.strided:
                if p is None or policy == "skip":
                    raise TypeError(
                        "value: sparse gradients need parameters and nonfinite != 'skip'"
                    )
                p.grad = clip_by_value(g, -v, v)
        post = global_norm([g if p is None else p.grad for p, g in _pairs(batch)])
        return _local_stats(norm, finite, v, post.to(norm.dtype), post < norm)


def _number_threshold(value: object, name: str) -> float:
    """A non-negative, non-NaN number (these clippers keep their bound on the host)."""
    checked = check_threshold(value, name)
    if isinstance(checked, Tensor):
        raise TypeError(f"{name} must be a number")
    return float(checked)


def _pairs(batch: _Batch) -> list[tuple[Tensor | None, Tensor]]:
    return list(zip(batch.params, batch.grads, strict=True))


class TensorNormClip(Clipper):
    r"""``tensor-norm``: clip each tensor's norm separately at ``max_norm``.

    .. math:: g_i \leftarrow g_i \cdot \frac{c}{\max(\lVert g_i \rVert_p, c)}

    Keras ``clipnorm`` (``tf.clip_by_norm`` on each variable). A zero tensor
    stays zero. Under ``"propagate"`` a tensor with a non-finite norm becomes
    NaN. Stats: ``norm``/``clipped_norm`` are global norms before/after,
    ``threshold = max_norm``, ``scale = clipped_norm / norm``.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])]
        >>> _ = make_clipper("tensor-norm", max_norm=1.0).clip(g); g
        [tensor([0.6000, 0.8000]), tensor([0.3000, 0.4000])]
    """

    name = "tensor-norm"
    global_scale = False

    def __init__(
        self,
        max_norm: float = 1.0,
        *,
        norm_type: float | str = 2.0,
        nonfinite: NonFinite = "propagate",
    ):
        super().__init__(norm_type=norm_type, nonfinite=nonfinite)
        self.max_norm = _number_threshold(max_norm, "max_norm")

    def _config(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, **super()._config()}

    def _clip_local(self, batch: _Batch, policy: NonFinite) -> ClipStats:
        p, c = self.norm_type, self.max_norm
        device0 = batch.grads[0].device
        n = tensor_norms(batch.grads, p).to(device0)
        norm = _combine_norms(n, p)
        finite = torch.isfinite(norm)
        if policy == "error":
            _raise_nonfinite(finite, norm, repr(self))
        over = n > c
        s = torch.where(over, c / torch.where(over, n, 1.0), 1.0)
        if policy == "propagate":
            s = s + (n - n)
        elif policy == "skip":
            s = torch.where(finite, s, 1.0)
        index = {id(g): i for i, g in enumerate(batch.grads)}
        for (device, dtype), group in _group_by_device_and_dtype(batch.grads).items():
            s_here = s.to(device, dtype)
            _mul_each_(group, [s_here[index[id(g)]] for g in group])  # 0-d views: no sync
        post = _combine_norms(torch.where(over, c, n), p)
        if policy == "propagate":
            post = post + (norm - norm)
        return _local_stats(norm, finite, c, post, over.any())


def _mul_each_(tensors: list[Tensor], factors: list[Tensor]) -> None:
    """``tensors[i] *= factors[i]`` (0-d tensors; one foreach call when possible), no sync."""
    dense = all(t.layout == torch.strided for t in tensors)
    if dense and tensors and _foreach_ok(tensors, tensors[0].device):
        torch._foreach_mul_(tensors, factors)
    else:
        for t, f in zip(tensors, factors, strict=True):
            t.mul_(f)


class AutoClip(Clipper):
    r"""``autoclip``: clip at the ``percentile``-th percentile of the norm history.

    .. math:: c_t = P_p\big(\{n_{t-W+1}, \dots, n_t\}\big),\qquad
              g \leftarrow g \cdot \frac{c_t}{\max(n_t, c_t)}

    Seetharaman, Wichern, Pardo, Le Roux, "AutoClip: Adaptive Gradient
    Clipping for Source Separation Networks", MLSP 2020 (published default
    ``p = 10``). As in the paper, the current norm is appended **before** the
    percentile is taken (so the first step is never clipped). ``P_p`` is
    NumPy's default linear-interpolation percentile.

    Memory is bounded by a ring buffer of the last ``window`` finite norms
    (default 1000); the paper uses the whole history, which ``window`` ≥ the
    number of steps reproduces exactly. The buffer lives on the gradients'
    device; empty slots hold NaN and ``torch.nanquantile`` ignores them, so
    no host sync. Non-finite norms never enter the history. Cost: a sort of
    ``window`` floats per step (about 40 µs on a CPU core at 1000).

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> clipper = make_clipper("autoclip", percentile=50, window=100)
        >>> [float(clipper.clip([torch.tensor([n])]).clipped_norm) for n in (1.0, 3.0, 2.0, 10.0)]
        [1.0, 2.0, 2.0, 2.5]
    """

    name = "autoclip"

    def __init__(
        self,
        percentile: float = 10.0,
        window: int = 1000,
        *,
        norm_type: float | str = 2.0,
        nonfinite: NonFinite = "propagate",
    ):
        super().__init__(norm_type=norm_type, nonfinite=nonfinite)
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)):
            raise TypeError(f"percentile must be a number, got {percentile!r}")
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        self.percentile = float(percentile)
        self.window = window
        self._history = torch.full((window,), math.nan, dtype=_STATE_DTYPE)
        self._position = torch.zeros((), dtype=torch.int64)

    def _config(self) -> dict[str, Any]:
        return {"percentile": self.percentile, "window": self.window, **super()._config()}

    def _state(self) -> dict[str, Tensor]:
        return {"history": self._history, "position": self._position}

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        pos = self._position.view(1)
        old = self._history.index_select(0, pos)
        new = torch.where(finite, norm.to(_STATE_DTYPE), old)
        self._history.index_copy_(0, pos, new)
        self._position.copy_((self._position + finite.to(torch.int64)) % self.window)
        thr = torch.nanquantile(self._history, self.percentile / 100.0)
        return thr, thr


class ZClip(Clipper):
    r"""``zclip``: z-score clipping against EMAs of the norm's mean and variance.

    After a warm-up of ``warmup`` finite norms, ``μ`` and ``σ²`` are their mean
    and (population) variance. Then, each step:

    .. math::
        z = \frac{n - μ}{σ},\qquad
        n^* = \begin{cases} μ + \frac{z_{thr}^2}{z}\,σ & z > z_{thr}\\ n & \text{else}\end{cases}

        μ \leftarrow α μ + (1-α) n^*,\qquad σ^2 \leftarrow α σ^2 + (1-α)(n^* - μ)^2

    (the variance update uses the new ``μ``, and the statistics see the
    *clipped* norm ``n*``, as the ZClip code does). Kumar, Owen, Roy
    Chowdhury, Güra, "ZClip: Adaptive Spike Mitigation for LLM Pre-Training",
    arXiv:2504.02507; defaults ``α = 0.97``, ``z_thr = 2.5``, warm-up 25.

    ``stats.threshold`` is the clipping boundary ``μ + z_thr·σ``; a clipped
    norm goes to ``n*``, which lies below it. During warm-up nothing is clipped
    unless ``warmup_max_norm`` is given (then it is a fixed threshold); unlike
    zclip 1.0.0 there is no cap after warm-up. ``σ = 0`` is handled without
    NaN (``z = inf`` for ``n > μ``, which clips to ``μ``). Non-finite norms
    never enter the statistics.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> clipper = make_clipper("zclip", warmup=3)
        >>> for n in (1.0, 2.0, 3.0):  # warm-up: mu = 2, sigma^2 = 2/3
        ...     _ = clipper.clip([torch.tensor([n])])
        >>> stats = clipper.clip([torch.tensor([10.0])])  # z = 9.8 > 2.5
        >>> round(float(stats.clipped_norm), 4), round(float(stats.threshold), 4)
        (2.5208, 4.0412)
    """

    name = "zclip"

    def __init__(
        self,
        z_threshold: float = 2.5,
        alpha: float = 0.97,
        warmup: int = 25,
        *,
        warmup_max_norm: float | None = None,
        norm_type: float | str = 2.0,
        nonfinite: NonFinite = "propagate",
    ):
        super().__init__(norm_type=norm_type, nonfinite=nonfinite)
        if not (isinstance(z_threshold, (int, float)) and z_threshold > 0):
            raise ValueError(f"z_threshold must be positive, got {z_threshold!r}")
        if not (isinstance(alpha, (int, float)) and 0 <= alpha < 1):
            raise ValueError(f"alpha must be in [0, 1), got {alpha!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup must be a positive int, got {warmup!r}")
        if warmup_max_norm is not None:
            check_threshold(warmup_max_norm, "warmup_max_norm")
        self.z_threshold = float(z_threshold)
        self.alpha = float(alpha)
        self.warmup = warmup
        self.warmup_max_norm = None if warmup_max_norm is None else float(warmup_max_norm)
        # During warm-up mean/var hold Welford's running mean and M2.
        self._count = torch.zeros((), dtype=_STATE_DTYPE)
        self._mean = torch.zeros((), dtype=_STATE_DTYPE)
        self._var = torch.zeros((), dtype=_STATE_DTYPE)

    def _config(self) -> dict[str, Any]:
        return {
            "z_threshold": self.z_threshold,
            "alpha": self.alpha,
            "warmup": self.warmup,
            "warmup_max_norm": self.warmup_max_norm,
            **super()._config(),
        }

    def _state(self) -> dict[str, Tensor]:
        return {"count": self._count, "mean": self._mean, "var": self._var}

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        # Branch-free: both phases are computed and selected with torch.where, and
        # nothing is stored unless the norm is finite (unselected NaN/inf is harmless).
        n = norm.to(_STATE_DTYPE)
        mean, var, count = self._mean, self._var, self._count
        warm = count < self.warmup
        # -- warm-up: Welford's running mean and M2, turned into σ² at the last step
        k = count + 1
        delta = n - mean
        w_mean = mean + delta / k
        w_m2 = var + delta * (n - w_mean)
        w_var = torch.where(k == self.warmup, w_m2 / k, w_m2)
        # -- after warm-up: z > z_thr  <=>  n > μ + z_thr·σ, and then
        #    n* = μ + (z_thr²/z)·σ = μ + z_thr²·σ²/(n − μ)   (n − μ > 0 there; σ = 0 gives μ)
        boundary = mean + self.z_threshold * var.sqrt()
        target = mean + self.z_threshold**2 * var / (n - mean)
        n_eff = torch.where(n > boundary, target, n)
        e_mean = torch.lerp(mean, n_eff, 1 - self.alpha)  # α·μ + (1 − α)·n*
        e_var = torch.lerp(var, (n_eff - e_mean).square(), 1 - self.alpha)
        # -- select; update only where the norm is finite
        cap = math.inf if self.warmup_max_norm is None else self.warmup_max_norm
        thr = torch.where(warm, cap, boundary)
        tgt = torch.where(warm, cap, target)
        self._mean.copy_(torch.where(finite, torch.where(warm, w_mean, e_mean), mean))
        self._var.copy_(torch.where(finite, torch.where(warm, w_var, e_var), var))
        self._count.add_(finite & warm)  # saturates at ``warmup``: exact in float32
        return thr, tgt


class WarmupMeanClip(Clipper):
    r"""``warmup-mean``: Pascanu's heuristic, ``c = factor × mean warm-up norm``.

    Pascanu, Mikolov, Bengio, "On the difficulty of training recurrent neural
    networks", ICML 2013, §3.2: choose the threshold from "the average norm
    over a sufficiently large number of updates"; "values from half to ten
    times this average can still yield convergence". So:

    .. math:: c = f \cdot \frac{1}{N}\sum_{t \le N} \min(n_t, s_t),
              \qquad 0.5 \le f \le 10

    over the first ``warmup_steps`` = N finite norms; from then on ``c`` is
    fixed and applied as :class:`NormClip` does. Safety cap during warm-up:
    each warm-up norm is clipped at ``s_t = warmup_cap ×`` the mean of the
    earlier warm-up norms (the first is not clipped), so one explosion in the
    warm-up can neither blow up the run nor the measured mean; ``None``
    disables the cap. Default ``factor = 5``, inside Pascanu's range and on the
    5–10× rule of thumb the AutoClip paper cites. Non-finite norms are not
    counted.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> clipper = make_clipper("warmup-mean", warmup_steps=2, factor=2.0)
        >>> for n in (1.0, 3.0):
        ...     _ = clipper.clip([torch.tensor([n])])
        >>> clipper.clip([torch.tensor([100.0])]).threshold
        tensor(4.)
    """

    name = "warmup-mean"

    def __init__(
        self,
        warmup_steps: int = 100,
        factor: float = 5.0,
        *,
        warmup_cap: float | None = 10.0,
        norm_type: float | str = 2.0,
        nonfinite: NonFinite = "propagate",
    ):
        super().__init__(norm_type=norm_type, nonfinite=nonfinite)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"warmup_steps must be a positive int, got {warmup_steps!r}")
        if not (isinstance(factor, (int, float)) and 0.5 <= factor <= 10):
            raise ValueError(
                f"factor must be within Pascanu's 'half to ten times' range [0.5, 10], "
                f"got {factor!r}"
            )
        if warmup_cap is not None and not (isinstance(warmup_cap, (int, float)) and warmup_cap > 0):
            raise ValueError(f"warmup_cap must be positive or None, got {warmup_cap!r}")
        self.warmup_steps = warmup_steps
        self.factor = float(factor)
        self.warmup_cap = None if warmup_cap is None else float(warmup_cap)
        self._count = torch.zeros((), dtype=_STATE_DTYPE)
        self._mean = torch.zeros((), dtype=_STATE_DTYPE)

    def _config(self) -> dict[str, Any]:
        return {
            "warmup_steps": self.warmup_steps,
            "factor": self.factor,
            "warmup_cap": self.warmup_cap,
            **super()._config(),
        }

    def _state(self) -> dict[str, Tensor]:
        return {"count": self._count, "mean": self._mean}

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        count, mean = self._count, self._mean
        warm = count < self.warmup_steps
        if self.warmup_cap is None:
            cap = torch.full_like(mean, math.inf)
        else:
            cap = torch.where(count > 0, self.warmup_cap * mean, math.inf)
        thr = torch.where(warm, cap, self.factor * mean)
        new_mean = mean + (torch.minimum(norm.to(_STATE_DTYPE), cap) - mean) / (count + 1)
        update = finite & warm  # a non-finite norm is never selected into the mean
        self._mean.copy_(torch.where(update, new_mean, mean))
        self._count.add_(update)  # saturates at ``warmup_steps``: exact in float32
        return thr, thr


class AGC(Clipper):
    r"""``agc``: unit-wise adaptive gradient clipping (Brock et al. 2021).

    For each unit ``i`` of a parameter ``W`` with gradient ``G``:

    .. math:: m_i = λ \max(\lVert W_i \rVert_F, ε),\qquad
              G_i \leftarrow G_i \cdot \frac{m_i}{\max(\lVert G_i \rVert_F, m_i)}

    Brock, De, Smith, Simonyan, "High-Performance Large-Scale Image
    Recognition Without Normalization", arXiv:2102.06171; published defaults
    ``λ = clip_factor = 0.01``, ``ε = 1e-3``, final layer excluded.

    Units follow torch layouts (like timm's ``adaptive_clip_grad``): dim 0 is
    the output unit and the norm runs over dims 1…n, so one row per output
    unit for ``Linear`` and LSTM/GRU ``weight_ih``/``weight_hh`` (each gate
    row), one filter per output channel for ``Conv``, one row per token for
    ``Embedding``; biases and scalars are one unit. (``ConvTranspose`` stores
    ``(in, out, …)``; its units are then input channels: exclude it or accept
    that.) A unit gradient below its bound is left unchanged, never
    normalised (the agc-optims defect).

    The head is left out with ``exclude``: parameter names or prefixes
    (``exclude=("decoder",)`` matches ``decoder.weight`` and ``decoder.bias``;
    the input must then carry names, e.g. ``model.named_parameters()``, or an
    optimizer built from named parameters), or the parameter tensors
    themselves. Excluded gradients are untouched but count in the stats'
    global norms. Stats: ``threshold = λ``; ``norm``/``clipped_norm`` are
    global L2 norms before/after, derived from the unit norms (no extra
    pass). Under ``"propagate"`` a unit with a non-finite norm becomes NaN.
    Always L2 (``norm_type`` is not an option).

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> lin = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        >>> lin.weight.grad = torch.tensor([[1.0, 0.0], [0.001, 0.0]])
        >>> _ = make_clipper("agc", clip_factor=0.01).clip(lin.parameters())
        >>> lin.weight.grad  # row 0: bound 0.05 -> clipped; row 1: 0.001 < 0.01 -> kept
        tensor([[0.0500, 0.0000],
                [0.0010, 0.0000]])
    """

    name = "agc"
    global_scale = False
    needs_params = True

    def __init__(
        self,
        clip_factor: float = 0.01,
        eps: float = 1e-3,
        *,
        exclude: Sequence[str | Tensor] = (),
        nonfinite: NonFinite = "propagate",
    ):
        super().__init__(norm_type=2.0, nonfinite=nonfinite)
        if not (isinstance(clip_factor, (int, float)) and clip_factor > 0):
            raise ValueError(f"clip_factor must be positive, got {clip_factor!r}")
        if not (isinstance(eps, (int, float)) and eps >= 0):
            raise ValueError(f"eps must be non-negative, got {eps!r}")
        if isinstance(exclude, (str, Tensor)):
            exclude = (exclude,)
        self.clip_factor = float(clip_factor)
        self.eps = float(eps)
        self.exclude: tuple[str | Tensor, ...] = tuple(exclude)
        self._exclude_names = tuple(e for e in self.exclude if isinstance(e, str))
        self._exclude_ids = {id(e) for e in self.exclude if isinstance(e, Tensor)}

    def _config(self) -> dict[str, Any]:
        shown = tuple(
            e if isinstance(e, str) else f"<tensor {tuple(e.shape)}>" for e in self.exclude
        )
        return {
            "clip_factor": self.clip_factor,
            "eps": self.eps,
            "exclude": shown,
            "nonfinite": self.nonfinite,
        }

    def _excluded(self, param: Tensor, name: str | None) -> bool:
        if id(param) in self._exclude_ids:
            return True
        if not self._exclude_names:
            return False
        if name is None:
            raise ValueError(
                f"agc: exclude={self._exclude_names!r} names parameters, but the parameters came "
                "without names; pass module.named_parameters() (or build the optimizer from "
                "named parameters), or exclude the tensors themselves"
            )
        return any(name == e or name.startswith(e + ".") for e in self._exclude_names)

    def _clip_local(self, batch: _Batch, policy: NonFinite) -> ClipStats:
        device0 = batch.grads[0].device
        work: list[tuple[Tensor, Tensor | None]] = []  # (grad, bound per unit or None)
        unit_norms: list[Tensor] = []
        for param, grad, name in zip(batch.params, batch.grads, batch.names, strict=True):
            assert param is not None
            if grad.layout != torch.strided:
                raise TypeError("agc does not support sparse gradients")
            dims = tuple(range(1, grad.dim())) if grad.dim() > 1 else None
            acc = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else None
            g_norm = torch.linalg.vector_norm(grad, 2, dim=dims, keepdim=True, dtype=acc)
            unit_norms.append(g_norm.reshape(-1).to(device0, torch.float32))
            if self._excluded(param, name):
                work.append((g_norm, None))
                continue
            w_norm = torch.linalg.vector_norm(param.detach(), 2, dim=dims, keepdim=True, dtype=acc)
            work.append((g_norm, self.clip_factor * w_norm.clamp(min=self.eps)))
        norm = _combine_norms(torch.cat(unit_norms), 2.0)
        finite = torch.isfinite(norm)
        if policy == "error":
            _raise_nonfinite(finite, norm, repr(self))
        post_units: list[Tensor] = []
        any_clipped = torch.zeros((), dtype=torch.bool, device=device0)
        for grad, (g_norm, bound) in zip(batch.grads, work, strict=True):
            if bound is None:
                post_units.append(g_norm.reshape(-1).to(device0, torch.float32))
                continue
            over = g_norm > bound
            s = torch.where(over, bound / torch.where(over, g_norm, 1.0), 1.0)
            if policy == "propagate":
                s = s + (g_norm - g_norm)
            elif policy == "skip":
                s = torch.where(finite.to(s.device), s, 1.0)
            any_clipped = any_clipped | over.any().to(device0)
            post_units.append(
                torch.where(over, bound, g_norm).reshape(-1).to(device0, torch.float32)
            )
            grad.mul_(s.to(grad.dtype))
        post = _combine_norms(torch.cat(post_units), 2.0)
        if policy == "propagate":
            post = post + (norm - norm)
        return _local_stats(norm, finite, self.clip_factor, post, any_clipped)


# --------------------------------------------------------------------------- factory
_REGISTRY: dict[str, type[Clipper]] = {
    cls.name: cls
    for cls in (NoClip, NormClip, ValueClip, TensorNormClip, AutoClip, ZClip, AGC, WarmupMeanClip)
}
#: The names :func:`make_clipper` accepts, as the CLI and configs spell them.
CLIPPER_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"clipper name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ValueError(f"unknown clipper {name!r}; choose one of {', '.join(CLIPPER_NAMES)}")
    return key


def _options(cls: type[Clipper]) -> dict[str, Any]:
    """Keyword options of a clipper class with their resolved type hints."""
    hints = typing.get_type_hints(cls.__init__)
    return {k: v for k, v in hints.items() if k not in ("return", "self")}


def make_clipper(name: str, **options: Any) -> Clipper:
    """Build a clipper by name with keyword options.

    Names: ``none``, ``norm``, ``value``, ``tensor-norm``, ``autoclip``,
    ``zclip``, ``agc``, ``warmup-mean`` (``_`` may replace ``-``, case is
    ignored). An unknown name or option raises ``ValueError`` naming it.

    Example:
        >>> from gradclip import make_clipper
        >>> make_clipper("autoclip", percentile=10)
        AutoClip(percentile=10.0, window=1000, norm_type=2.0, nonfinite='propagate')
        >>> make_clipper("autoclip", p=10)
        Traceback (most recent call last):
        ...
        ValueError: clipper 'autoclip' has no option 'p'; options: percentile, window, ...
    """
    key = _canonical(name)
    cls = _REGISTRY[key]
    allowed = _options(cls)
    for opt in options:
        if opt not in allowed:
            raise ValueError(
                f"clipper {key!r} has no option {opt!r}; options: {', '.join(allowed)}"
            )
    return cls(**options)


def _parse_value(raw: str, hint: Any, where: str) -> Any:
    text = raw.strip()
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, where)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{where}: cannot parse {raw!r} ({'; '.join(errors)})")
    if origin is Literal:
        if text in typing.get_args(hint):
            return text
        raise ValueError(f"{where}: {raw!r} is not one of {typing.get_args(hint)}")
    if origin in (tuple, Sequence, list) or origin is getattr(typing, "Sequence", None):
        return tuple(part for part in text.split("+") if part)
    if hint is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{where}: {raw!r} is not a boolean")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{where}: {raw!r} is not an int") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: {raw!r} is not a number") from None
    if hint is str:
        return text
    if hint is Tensor:
        raise ValueError(f"{where}: a tensor cannot be given in a spec")
    raise ValueError(f"{where}: unsupported option type {hint!r}")


def make_clipper_from_spec(spec: str) -> Clipper:
    """Build a clipper from ``"name:key=value,key=value"`` (the CLI/config form).

    Values are parsed with the option's type (float, int, bool, ``none`` for
    optional values; lists such as AGC's ``exclude`` are joined with ``+``).

    Example:
        >>> from gradclip import make_clipper_from_spec
        >>> make_clipper_from_spec("autoclip:percentile=10,window=500")
        AutoClip(percentile=10.0, window=500, norm_type=2.0, nonfinite='propagate')
        >>> make_clipper_from_spec("agc:exclude=decoder+head")
        AGC(clip_factor=0.01, eps=0.001, exclude=('decoder', 'head'), nonfinite='propagate')
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    name, _, rest = spec.partition(":")
    key = _canonical(name)
    allowed = _options(_REGISTRY[key])
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        opt, eq, raw = part.partition("=")
        opt = opt.strip().replace("-", "_")
        if not eq:
            raise ValueError(f"clipper spec {spec!r}: expected key=value, got {part!r}")
        if opt not in allowed:
            raise ValueError(
                f"clipper {key!r} has no option {opt!r}; options: {', '.join(allowed)}"
            )
        options[opt] = _parse_value(raw, allowed[opt], f"{key}.{opt}")
    return make_clipper(key, **options)

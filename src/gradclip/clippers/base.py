r"""The clipper protocol: :class:`Clipper`, :class:`ClipStats`, input collection;
it uses :class:`~gradclip.clippers.nonfinite.NonFinitePolicy`, the one place
where non-finite norms are handled.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeAlias

import torch
from torch import Tensor
from torch.distributed import ProcessGroup

from gradclip.clippers.nonfinite import NonFinitePolicy
from gradclip.clippers.options import NonFinite, Option, validate_options
from gradclip.distributed import Layout, layout
from gradclip.ops import scale_
from gradclip.ops.checks import warn_if_nothing_to_clip
from gradclip.ops.norms import norms_and_total

__all__ = [
    "ClipBatch",
    "ClipInput",
    "ClipOutcome",
    "ClipStats",
    "Clipper",
    "NonFinitePolicy",
    "collect",
]

#: What ``clip`` accepts: a tensor, an iterable of parameters / gradients, or of
#: ``(name, parameter)`` pairs as ``module.named_parameters()`` yields them.
ClipInput: TypeAlias = Tensor | Iterable[Tensor | tuple[str, Tensor] | None]
STATE_DTYPE = torch.float32


def scalar_state() -> Tensor:
    """A fresh 0-d statistic.

    Returns:
        ``tensor(0.)`` in the statistics' dtype (float32).
    """
    return torch.zeros((), dtype=STATE_DTYPE)


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
        """All fields as Python numbers (one host sync).

        Returns:
            ``{field: value}``; floats rounded to 7 significant digits, flags as bools.
        """
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
class ClipBatch:
    """The gradients of one clip, materialised once.

    When the gradients live on several ranks (DTensors, or a process group
    was given), ``layout`` says how and ``grads`` are the plain local views
    (writing them writes the gradients); see :mod:`gradclip.distributed`.
    """

    params: list[Tensor | None]  # None where a bare gradient was given
    grads: list[Tensor]
    names: list[str | None]
    layout: Layout | None = None

    def norms_and_total(self, norm_type: float) -> tuple[Tensor, Tensor]:
        """Per-tensor norms and the total norm of the gradients: the global ones,
        from one all-reduce, when they live on several ranks.

        Args:
            norm_type: ``p``.

        Returns:
            ``(norms, total)``: 1-d in input order, and 0-d.
        """
        return norms_and_total(self.grads, norm_type, self.layout)


def collect(parameters: ClipInput, group: ProcessGroup | None = None) -> ClipBatch:
    """Materialise the input once: parameters (their ``.grad``), bare gradients,
    or ``(name, parameter)`` pairs. Parameters without a gradient are skipped.

    A tensor that requires grad is a parameter; any other tensor is a bare
    gradient. Warns when the clip would silently do nothing: an empty input
    (an exhausted generator) or parameters none of which has a ``.grad``.

    Args:
        parameters: see :data:`ClipInput`.
        group: the process group over which plain (non-DTensor) gradients
            differ, e.g. pipeline stages (see :func:`gradclip.distributed.layout`).

    Returns:
        A :class:`ClipBatch`.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(1)); w.grad = torch.ones(1)
        >>> collect([("w", w), torch.ones(2)]).names
        ['w', None]
    """
    items: Iterable[Any] = [parameters] if isinstance(parameters, Tensor) else parameters
    batch = ClipBatch([], [], [])
    given, params_only = 0, True
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
        given += 1
        if isinstance(item, torch.nn.Parameter) or item.requires_grad:
            if item.grad is None:
                continue
            batch.params.append(item)
            batch.grads.append(item.grad)
        else:
            params_only = False
            batch.params.append(None)
            batch.grads.append(item)
        batch.names.append(name)
    warn_if_nothing_to_clip(given, len(batch.grads), params_only)
    batch.layout = layout(batch.grads, group)
    if batch.layout is not None:
        batch.grads = batch.layout.local
    return batch


# --------------------------------------------------------------------------- base
@dataclasses.dataclass(frozen=True)
class ClipOutcome:
    """A clip's statistics and the per-tensor pre-clip norms it computed on the way."""

    stats: ClipStats
    _norms: Tensor | Callable[[], Tensor] | None = None

    def tensor_norms(self) -> Tensor | None:
        """The per-tensor pre-clip norms (built on demand, from what the clip computed).

        Returns:
            A 1-d tensor in input order, or None.
        """
        return self._norms() if callable(self._norms) else self._norms


def _empty_stats() -> ClipStats:
    zero, inf = torch.zeros(()), torch.full((), math.inf)
    true, false = torch.ones((), dtype=torch.bool), torch.zeros((), dtype=torch.bool)
    return ClipStats(zero, inf, torch.ones(()), zero, false, true)


class Clipper:
    """Base class and protocol of all clippers.

    Subclasses set ``name``, declare ``options`` (see
    :mod:`~gradclip.clippers.options`; the constructor binds and validates them
    and stores each as an attribute), and define either the threshold rule
    (global-scale clippers, :meth:`_threshold`) or a whole in-place clip
    (per-tensor ones, :meth:`_clip_local`). ``state_dict()`` returns
    ``{"name", "config", "state"}``; ``state`` holds tensors only.
    Python-side configuration is not restored by :meth:`load_state_dict`
    (build the clipper with the same options).
    """

    name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    #: True when the whole clip is one multiply of every gradient by ``stats.scale``.
    global_scale: ClassVar[bool] = True
    #: True when ``clip`` needs parameters (not bare gradients).
    needs_params: ClassVar[bool] = False
    #: False when the clipper never changes the gradients (``none``).
    writes: ClassVar[bool] = True
    nonfinite: NonFinite
    norm_type: float

    def __init__(self, *args: Any, **options: Any) -> None:
        for key, value in validate_options(self.name, self.options, args, options).items():
            setattr(self, key, value)
        self.norm_type = getattr(self, "norm_type", 2.0)

    @property
    def policy(self) -> NonFinitePolicy:
        """The :class:`NonFinitePolicy` of ``nonfinite``."""
        return NonFinitePolicy(self.nonfinite)

    # ---- public protocol
    def clip(
        self,
        parameters: ClipInput,
        *,
        defer_scale: bool = False,
        nonfinite: NonFinite | None = None,
        group: ProcessGroup | None = None,
    ) -> ClipStats:
        """Clip the gradients of ``parameters`` in place.

        Args:
            parameters: parameters (their ``.grad`` is used, ``None`` skipped),
                bare gradient tensors, or ``(name, parameter)`` pairs.
            defer_scale: make a global-scale clipper leave the gradients
                unchanged: the caller must then multiply them by ``stats.scale``
                (a fused optimizer does it for free).
            nonfinite: overrides the policy for this call.
            group: the process group over which plain gradients differ
                (pipeline stages); DTensor gradients need none (see
                :mod:`gradclip.distributed`).

        Returns:
            This clip's :class:`ClipStats`.
        """
        return self.clip_collected(
            collect(parameters, group), defer_scale=defer_scale, nonfinite=nonfinite
        ).stats

    def clip_collected(
        self, batch: ClipBatch, *, defer_scale: bool = False, nonfinite: NonFinite | None = None
    ) -> ClipOutcome:
        """:meth:`clip` on an already :func:`collect`-ed batch, keeping the
        per-tensor norms the clip computed (for observers: no second pass).

        Args:
            batch: from :func:`collect`.
            defer_scale: as in :meth:`clip`.
            nonfinite: as in :meth:`clip`.

        Returns:
            A :class:`ClipOutcome`.
        """
        policy = self.policy if nonfinite is None else NonFinitePolicy.of(nonfinite)
        if self.needs_params and any(p is None for p in batch.params):
            raise TypeError(f"{self.name} needs parameters (with .grad), not bare gradients")
        if not batch.grads and batch.layout is None:
            return ClipOutcome(_empty_stats(), torch.zeros(0))
        if batch.grads:  # (a rank of a group with none still joins the all-reduce)
            self._to_device(batch.grads[0].device)
        if not self.global_scale:
            return self._clip_local(batch, policy)
        norms, norm, finite = self._measure(batch, policy)
        stats = self._clip_global(norm, finite, policy)
        if not defer_scale and self.writes:
            scale_(batch.grads, stats.scale)
        return ClipOutcome(stats, norms)

    def state_dict(self) -> dict[str, Any]:
        """Returns: ``{"name": ..., "config": {...}, "state": {name: tensor}}`` (tensors cloned)."""
        return {
            "name": self.name,
            "config": self._config(),
            "state": {k: v.detach().clone() for k, v in self._state().items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the statistics saved by :meth:`state_dict` (bit for bit).

        Args:
            state_dict: from :meth:`state_dict` of a clipper built with the same options.
        """
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
    def _config(self) -> dict[str, Any]:
        return {o.name: getattr(self, o.name) for o in self.options}

    def _register_state(self, **tensors: Tensor) -> None:
        """Keep ``tensors`` as the statistics, each as attribute ``_<name>``."""
        self._state_names = tuple(tensors)
        for name, t in tensors.items():
            setattr(self, "_" + name, t)

    def _state(self) -> dict[str, Tensor]:
        """The statistics, as live tensors (mutated in place by ``load_state_dict``)."""
        return {name: getattr(self, "_" + name) for name in getattr(self, "_state_names", ())}

    def _to_device(self, device: torch.device) -> None:
        for name, t in self._state().items():
            if t.device != device:
                setattr(self, "_" + name, t.to(device))

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(threshold, target)`` and update the statistics where ``finite``.

        The norm is clipped when ``norm > threshold``, and then to ``target``.
        """
        raise NotImplementedError

    def _clip_local(self, batch: ClipBatch, policy: NonFinitePolicy) -> ClipOutcome:
        raise NotImplementedError

    def _measure(self, batch: ClipBatch, policy: NonFinitePolicy) -> tuple[Tensor, Tensor, Tensor]:
        """The norm pass: per-tensor norms, the global norm and whether it is finite
        (raising under ``"error"``)."""
        norms, norm = batch.norms_and_total(self.norm_type)
        finite = torch.isfinite(norm)
        policy.check(finite, norm, repr(self))
        return norms, norm, finite

    def _clip_global(self, norm: Tensor, finite: Tensor, policy: NonFinitePolicy) -> ClipStats:
        thr, target = self._threshold(norm, finite)
        thr, target = thr.to(norm.dtype), target.to(norm.dtype)
        clipped = finite & (norm > thr)
        scale = torch.where(clipped, target / torch.where(clipped, norm, 1.0), 1.0)
        clipped_norm = torch.where(clipped, target, norm)
        if self.writes and policy.mode == "propagate":
            scale, clipped_norm = policy.poison(scale, norm), policy.poison(clipped_norm, norm)
        return ClipStats(norm, thr, scale, clipped_norm, clipped, finite)


def local_stats(
    norm: Tensor, finite: Tensor, threshold: float, clipped_norm: Tensor, clipped: Tensor
) -> ClipStats:
    """:class:`ClipStats` of a per-tensor clip, from its global norms before and after.

    Args:
        norm: the pre-clip global norm.
        finite: whether ``norm`` is finite.
        threshold: the clipper's threshold.
        clipped_norm: the post-clip global norm.
        clipped: whether any tensor or unit was clipped.

    Returns:
        The stats; ``scale = clipped_norm / norm`` (1 for a zero norm).
    """
    scale = torch.where(norm > 0, clipped_norm / torch.where(norm > 0, norm, 1.0), 1.0)
    thr = torch.full((), threshold, dtype=norm.dtype, device=norm.device)
    return ClipStats(norm, thr, scale, clipped_norm, finite & clipped, finite)

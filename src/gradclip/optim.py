r"""Clip and step in one call, fused into torch's fused optimizers.

:class:`ClippedOptimizer` wraps a ``torch.optim.Optimizer`` and a
:class:`~gradclip.clippers.Clipper`; :func:`clipped_step` is the one-shot form.

**Fused optimizers** (``SGD``/``Adam``/``AdamW`` with ``fused=True``): their
kernels read two optional attributes, ``optimizer.grad_scale`` (every gradient
is *divided* by it, and the divided gradient is written back to ``.grad``) and
``optimizer.found_inf`` (1.0 skips the whole update: parameters, momentum
buffers, Adam moments, and ``step`` counters stay as they were). A
global-scale clipper therefore costs one norm pass: ``grad_scale = 1/scale``
applies the clip inside the optimizer's own pass, and ``found_inf`` skips a
non-finite step without reading anything on the host.

**Fused plain SGD** (no momentum, no weight decay) needs not even that write:
the scale is folded into a tensor learning rate, ``θ ← θ − (lr·s)·g``, so the
clipped step reads each gradient twice (norm, update) and writes only the
parameters; ``.grad`` keeps the unclipped gradient.

**Other optimizers**: the clip is one foreach multiply (no sync). Skipping a
step (``nonfinite="skip"``) needs **one host sync** per step, to decide in
Python whether to call ``optimizer.step()``.

**Fused SGD with momentum, first step skipped**: torch allocates the momentum
buffers with ``empty_like`` before the kernel runs, so a skipped first step
leaves uninitialised memory that the next step reads as momentum (this bites
``GradScaler`` too). When a skip is possible, :class:`ClippedOptimizer`
pre-fills the buffers with zeros for groups with ``dampening == 0`` (bit-exact:
``0·μ + g = g``), and otherwise pays one host sync on the first step only to
drop the buffers again if the step was skipped.

**GradScaler**: pass ``scaler=`` to :meth:`ClippedOptimizer.step`. The
gradients are unscaled **before** the norm is taken, so the threshold applies
to true gradients, and the scaler then steps (and skips steps whose
gradients overflowed, whatever the clipper's ``nonfinite`` policy: an
overflow is the scaler's signal, so it is handled as ``"skip"``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.amp.grad_scaler import GradScaler, OptState

from gradclip.clippers import ClipInput, Clipper, ClipStats

__all__ = ["ClippedOptimizer", "clipped_step", "is_fused"]


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer`` is a torch fused optimizer in every parameter group
    (it then honours ``grad_scale`` and ``found_inf``).

    Example:
        >>> import torch
        >>> from gradclip.optim import is_fused
        >>> p = [torch.nn.Parameter(torch.zeros(1))]
        >>> is_fused(torch.optim.Adam(p, fused=True)), is_fused(torch.optim.Adam(p))
        (True, False)
    """
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and all(
        bool(g.get("fused", False)) for g in optimizer.param_groups
    )


def _named_params(optimizer: torch.optim.Optimizer) -> list[tuple[str, Tensor]] | list[Tensor]:
    """Parameters with a gradient, with names when the optimizer was built from
    ``named_parameters()`` (torch stores them as ``param_names``)."""
    params: list[Tensor] = []
    names: list[str] = []
    named = True
    for group in optimizer.param_groups:
        group_names = group.get("param_names")
        if group_names is None:
            named = False
        for i, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            params.append(p)
            if group_names is not None:
                names.append(group_names[i])
    if named:
        return list(zip(names, params, strict=True))
    return params


class ClippedOptimizer:
    r"""An optimizer that clips before it steps: ``stats = opt.step()``.

    .. math:: g \leftarrow \mathrm{clip}(g);\quad θ \leftarrow \mathrm{step}(θ, g)

    Clip placement matches optax's ``chain(clip_by_global_norm(c), adam(...))``
    and Keras' ``global_clipnorm``: the raw (unscaled) gradient is clipped
    before the optimizer sees it (never the momentum, unlike torch-clip). See
    the module docstring for the fused path, skipping and ``GradScaler``.

    Attributes: ``optimizer`` and ``clipper`` (the wrapped objects),
    ``last_stats`` (the latest :class:`ClipStats`), ``history`` (a deque of the
    last ``history`` stats, default 1000; ``None`` keeps every step's), :attr:`clip_rate`,
    :attr:`skip_count`. ``param_groups``, ``state``, ``defaults`` and
    ``zero_grad`` are the optimizer's (so ``group["lr"] = …`` works; give LR
    schedulers ``opt.optimizer``). :meth:`state_dict` holds the optimizer's
    and the clipper's state and the counters.

    Example:
        >>> import torch
        >>> from gradclip import ClippedOptimizer, make_clipper
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = ClippedOptimizer(torch.optim.SGD([w], lr=1.0), make_clipper("norm", max_norm=1.0))
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> stats = opt.step()
        >>> w.detach(), stats.norm, opt.clip_rate
        (tensor([-0.6000, -0.8000]), tensor(5.), tensor(1.))
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, clipper: Clipper, *, history: int | None = 1000
    ):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r:.80}")
        if not isinstance(clipper, Clipper):
            raise TypeError(f"clipper must be a gradclip Clipper, got {clipper!r:.80}")
        self.optimizer = optimizer
        self.clipper = clipper
        self.history: collections.deque[ClipStats] = collections.deque(maxlen=history)
        self.last_stats: ClipStats | None = None
        self._steps = 0
        self._clipped = torch.zeros((), dtype=torch.int64)
        self._skipped = torch.zeros((), dtype=torch.int64)

    # ---- optimizer facade
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    # ---- counters
    @property
    def clip_rate(self) -> Tensor:
        """Fraction of steps so far whose gradients were clipped (0-d tensor, no sync)."""
        return self._clipped.to(torch.float32) / max(self._steps, 1)

    @property
    def skip_count(self) -> Tensor:
        """Number of steps skipped for a non-finite gradient norm (0-d tensor)."""
        return self._skipped

    @property
    def steps(self) -> int:
        """Number of calls to :meth:`step` (skipped ones included)."""
        return self._steps

    # ---- the step
    def step(
        self, closure: Callable[[], Any] | None = None, *, scaler: GradScaler | None = None
    ) -> ClipStats:
        """Clip the gradients, then step; return this step's :class:`ClipStats`.

        ``closure`` (re-evaluates the loss, as in torch) is called first.
        ``scaler``: a ``torch.amp.GradScaler`` whose ``scale(loss).backward()``
        produced the gradients; it is unscaled here (unless already) and
        stepped; call ``scaler.update()`` afterwards as usual.
        """
        if closure is not None:
            with torch.enable_grad():
                closure()
        return self._step(None, scaler)

    def _step(self, parameters: ClipInput | None, scaler: GradScaler | None) -> ClipStats:
        opt = self.optimizer
        amp = scaler is not None and scaler.is_enabled()
        if amp:
            assert scaler is not None
            if scaler._per_optimizer_states[id(opt)]["stage"] is not OptState.UNSCALED:
                scaler.unscale_(opt)
        policy = "skip" if amp else self.clipper.nonfinite
        can_skip = policy == "skip"
        fused = is_fused(opt)
        first_fix = self._prepare_fused_sgd(can_skip) if fused else []

        params = _named_params(opt) if parameters is None else parameters
        stats = self.clipper.clip(params, defer_scale=fused, nonfinite=policy)

        if fused:
            defer = self.clipper.global_scale and self.clipper._writes
            saved_lrs = _fold_scale_into_lr(opt, stats.scale) if defer and not amp else None
            if defer and saved_lrs is None:
                opt.grad_scale = stats.scale.reciprocal().to(torch.float32)  # type: ignore[attr-defined]
            if can_skip and not amp:
                opt.found_inf = (~stats.finite).to(torch.float32)  # type: ignore[attr-defined]
            try:
                if amp:
                    assert scaler is not None
                    scaler.step(opt)  # keeps our grad_scale (stage UNSCALED), sets found_inf
                else:
                    opt.step()
            finally:
                for attr in ("grad_scale", "found_inf"):
                    if hasattr(opt, attr):
                        delattr(opt, attr)
                for group, lr in zip(opt.param_groups, saved_lrs or [], strict=False):
                    group["lr"] = lr
            if first_fix and not bool(stats.finite):  # one sync, first step only
                for p in first_fix:
                    opt.state.get(p, {}).pop("momentum_buffer", None)
        elif amp:
            assert scaler is not None
            scaler.step(opt)  # the scaler syncs on its own inf check
        elif not can_skip or bool(stats.finite):  # the one host sync of "skip"
            opt.step()

        self._steps += 1
        self._clipped = self._clipped.to(stats.clipped.device) + stats.clipped.to(torch.int64)
        if can_skip:
            self._skipped = self._skipped.to(stats.finite.device) + (~stats.finite).to(torch.int64)
        self.last_stats = stats
        self.history.append(stats)
        return stats

    def _prepare_fused_sgd(self, can_skip: bool) -> list[Tensor]:
        """Work around fused SGD's uninitialised momentum after a skipped first step.

        Returns the parameters whose new buffers must be dropped again if this
        step turns out skipped (groups with ``dampening != 0``; costs one sync)."""
        opt = self.optimizer
        if not can_skip or not isinstance(opt, torch.optim.SGD):
            return []
        watch: list[Tensor] = []
        for group in opt.param_groups:
            if group["momentum"] == 0:
                continue
            params = [p for p in group["params"] if p.grad is not None]
            if any("momentum_buffer" in opt.state.get(p, {}) for p in params):
                continue  # not the group's first step
            if group["dampening"] == 0:
                for p in params:  # 0·μ + (1-0)·g == g: torch's first step, bit for bit
                    opt.state[p]["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
            else:
                watch.extend(params)
        return watch

    # ---- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """``{"optimizer", "clipper", "steps", "clipped", "skipped"}``."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "clipper": self.clipper.state_dict(),
            "steps": self._steps,
            "clipped": self._clipped.detach().clone(),
            "skipped": self._skipped.detach().clone(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; training then continues bit for bit."""
        missing = {"optimizer", "clipper"} - set(state_dict)
        if missing:
            raise ValueError(f"not a ClippedOptimizer state_dict: missing {sorted(missing)}")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.clipper.load_state_dict(state_dict["clipper"])
        self._steps = int(state_dict.get("steps", 0))
        self._clipped = state_dict.get("clipped", torch.zeros((), dtype=torch.int64)).clone()
        self._skipped = state_dict.get("skipped", torch.zeros((), dtype=torch.int64)).clone()

    def __repr__(self) -> str:
        return f"ClippedOptimizer({type(self.optimizer).__name__}, {self.clipper!r})"


def _fold_scale_into_lr(opt: torch.optim.Optimizer, scale: Tensor) -> list[Any] | None:
    """For fused plain SGD (no momentum, no weight decay) ``θ ← θ − lr·(s·g)`` equals
    ``θ ← θ − (lr·s)·g``: give the kernel the tensor ``lr·s`` and it reads each gradient
    once and writes nothing back (``grad_scale`` would write the scaled gradient to
    ``.grad``). Returns the groups' learning rates to restore, or None when the rule
    does not apply. ``.grad`` then keeps the unclipped gradient."""
    if not isinstance(opt, torch.optim.SGD) or any(
        g["momentum"] != 0 or g["weight_decay"] != 0 for g in opt.param_groups
    ):
        return None
    saved = [g["lr"] for g in opt.param_groups]
    for group, lr in zip(opt.param_groups, saved, strict=True):
        base = lr if isinstance(lr, Tensor) else torch.tensor(lr, dtype=torch.float32)
        group["lr"] = base.to(scale.device) * scale.to(torch.float32)
    return saved


def clipped_step(
    optimizer: torch.optim.Optimizer,
    clipper: Clipper,
    parameters: ClipInput | None = None,
    *,
    scaler: GradScaler | None = None,
) -> ClipStats:
    """Clip ``optimizer``'s gradients with ``clipper`` and step, in one call.

    The stateless form of :class:`ClippedOptimizer` (same fused path, skipping
    and ``GradScaler`` handling); ``parameters`` is ignored unless given, in
    which case it must be the optimizer's own parameters (e.g. with names for
    AGC's ``exclude``).

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> from gradclip.optim import clipped_step
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.Adam([w], lr=0.1, fused=True)
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> clipped_step(opt, make_clipper("norm", max_norm=1.0)).clipped
        tensor(True)
    """
    return ClippedOptimizer(optimizer, clipper, history=1)._step(parameters, scaler)

"""The clipped optimizer step (see :mod:`gradclip.optim` for the paths and ``.grad``)."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.amp.grad_scaler import GradScaler, OptState
from torch.distributed import ProcessGroup
from torch.utils.hooks import RemovableHandle

from gradclip.clippers import ClipInput, ClipOutcome, Clipper, ClipStats, NonFinitePolicy
from gradclip.clippers.base import ClipBatch, collect
from gradclip.optim.fused import fold_scale_into_lr, is_fused, prepare_fused_sgd
from gradclip.optim.observers import StepObservation, StepObserver

__all__ = ["ClippedOptimizer", "clipped_step"]


def _optimizer_params(
    optimizer: torch.optim.Optimizer, named: bool = True
) -> list[tuple[str, Tensor]] | list[Tensor]:
    """All parameters of ``optimizer``, with names when it was built from
    ``named_parameters()`` (torch stores them as ``param_names``)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not named or any(g.get("param_names") is None for g in optimizer.param_groups):
        return params
    names = [n for g in optimizer.param_groups for n in g["param_names"]]
    return list(zip(names, params, strict=True))


def _scaler_skipped(scaler: GradScaler, opt: torch.optim.Optimizer, device: torch.device) -> Tensor:
    """Whether ``scaler.step(opt)`` skipped the update: the sum of the scaler's
    per-device ``found_inf`` (as torch's ``GradScaler.step`` forms it) is > 0; no sync."""
    found = scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values()
    total = torch.zeros((), dtype=torch.float32, device=device)
    for flag in found:
        total = total + flag.to(device, non_blocking=True)
    return total > 0


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
    and the clipper's state and the counters. ``group``: the process group
    over which plain gradients differ (pipeline stages; DTensor gradients
    under FSDP2 need none), see :mod:`gradclip.distributed`.

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
        self,
        optimizer: torch.optim.Optimizer,
        clipper: Clipper,
        *,
        history: int | None = 1000,
        group: ProcessGroup | None = None,
    ):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r:.80}")
        if not isinstance(clipper, Clipper):
            raise TypeError(f"clipper must be a gradclip Clipper, got {clipper!r:.80}")
        self.optimizer = optimizer
        self.clipper = clipper
        self.group = group
        self.history: collections.deque[ClipStats] = collections.deque(maxlen=history)
        self.last_stats: ClipStats | None = None
        self._steps = 0
        self._clipped = torch.zeros((), dtype=torch.int64)
        self._skipped = torch.zeros((), dtype=torch.int64)
        self._observers: collections.OrderedDict[int, StepObserver] = collections.OrderedDict()

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
        """The optimizer's ``zero_grad``.

        Args:
            set_to_none: set ``.grad`` to None instead of zeroing it.
        """
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """The optimizer's ``add_param_group``.

        Args:
            param_group: the new group, as for torch.
        """
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

        Args:
            closure: re-evaluates the loss (optional).
            scaler: the ``GradScaler`` of this step (optional).

        Returns:
            This step's :class:`~gradclip.clippers.ClipStats`.
        """
        if closure is not None:
            with torch.enable_grad():
                closure()
        return self._step(None, scaler)

    def add_observer(self, observer: StepObserver) -> RemovableHandle:
        """Call ``observer.before_step(obs)`` and ``observer.after_step(obs)`` every step.

        Args:
            observer: a :class:`~gradclip.optim.observers.StepObserver` (or any
                object with both methods).

        Returns:
            A handle whose ``remove()`` detaches the observer.
        """
        handle = RemovableHandle(self._observers)
        self._observers[handle.id] = observer
        return handle

    def _step(self, parameters: ClipInput | None, scaler: GradScaler | None) -> ClipStats:
        opt = self.optimizer
        amp = scaler is not None and scaler.is_enabled()
        if amp:
            assert scaler is not None
            if scaler._per_optimizer_states[id(opt)]["stage"] is not OptState.UNSCALED:
                scaler.unscale_(opt)
        policy = NonFinitePolicy.of("skip") if amp else self.clipper.policy
        fused = is_fused(opt)
        first_fix = prepare_fused_sgd(opt, policy.skips) if fused else []

        batch = collect(_optimizer_params(opt) if parameters is None else parameters, self.group)
        outcome = self.clipper.clip_collected(batch, defer_scale=fused, nonfinite=policy.mode)
        stats = outcome.stats
        obs = self._observe(batch, outcome) if self._observers else None
        if obs is not None:
            for observer in list(self._observers.values()):
                observer.before_step(obs)

        if fused:
            defer = self.clipper.global_scale and self.clipper.writes
            saved_lrs = fold_scale_into_lr(opt, stats.scale) if defer and not amp else None
            if defer and saved_lrs is None:
                opt.grad_scale = stats.scale.reciprocal().to(torch.float32)  # type: ignore[attr-defined]
            if policy.skips and not amp:
                opt.found_inf = policy.skipped(stats.finite, torch.float32)  # type: ignore[attr-defined]
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
        elif policy.should_step(stats.finite):  # the one host sync of "skip"
            opt.step()

        self._steps += 1
        self._clipped = self._clipped.to(stats.clipped.device) + stats.clipped.to(torch.int64)
        skipped = None
        if amp:  # what the scaler itself decided on (no sync)
            assert scaler is not None
            skipped = _scaler_skipped(scaler, opt, stats.finite.device)
        elif policy.skips or obs is not None:
            skipped = policy.skipped(stats.finite, torch.bool)
        if policy.skips:
            assert skipped is not None
            self._skipped = self._skipped.to(stats.finite.device) + skipped.to(torch.int64)
        self.last_stats = stats
        self.history.append(stats)
        if obs is not None:
            obs = dataclasses.replace(obs, skipped=skipped)
            for observer in list(self._observers.values()):
                observer.after_step(obs)
        return stats

    def _observe(self, batch: ClipBatch, outcome: ClipOutcome) -> StepObservation:
        position = {id(p): i for i, p in enumerate(_optimizer_params(self.optimizer, named=False))}
        names = tuple(
            name if name is not None else f"param{position.get(id(p), k)}"
            for k, (name, p) in enumerate(zip(batch.names, batch.params, strict=True))
        )
        return StepObservation(
            step=self._steps,
            names=names,
            params=tuple(batch.params),
            grads=tuple(batch.grads),
            tensor_norms=outcome.tensor_norms(),
            stats=outcome.stats,
        )

    # ---- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The state to checkpoint.

        Returns:
            ``{"optimizer", "clipper", "steps", "clipped", "skipped"}``.
        """
        return {
            "optimizer": self.optimizer.state_dict(),
            "clipper": self.clipper.state_dict(),
            "steps": self._steps,
            "clipped": self._clipped.detach().clone(),
            "skipped": self._skipped.detach().clone(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved; training then continues bit for bit.

        Args:
            state_dict: from :meth:`state_dict`.
        """
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


def clipped_step(
    optimizer: torch.optim.Optimizer,
    clipper: Clipper,
    parameters: ClipInput | None = None,
    *,
    scaler: GradScaler | None = None,
    group: ProcessGroup | None = None,
) -> ClipStats:
    """Clip ``optimizer``'s gradients with ``clipper`` and step, in one call.

    The stateless form of :class:`ClippedOptimizer` (same fused path, skipping
    and ``GradScaler`` handling); ``parameters`` is ignored unless given, in
    which case it must be the optimizer's own parameters (e.g. with names for
    AGC's ``exclude``).

    Args:
        optimizer: the optimizer to step.
        clipper: the clipper to clip with.
        parameters: the optimizer's parameters (optional, e.g. named).
        scaler: a ``GradScaler`` (optional).
        group: as in :class:`ClippedOptimizer`.

    Returns:
        The step's :class:`~gradclip.clippers.ClipStats`.

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
    return ClippedOptimizer(optimizer, clipper, history=1, group=group)._step(parameters, scaler)

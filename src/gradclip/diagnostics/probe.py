"""Measuring gradient norms on a deep copy, leaving the caller's state untouched.

The machinery of :func:`gradclip.suggest`: :class:`RngSnapshot` saves and restores
every random state a training step could touch, :func:`copy_optimizer` copies an
optimizer onto copied parameters, and :class:`NormPass` trains a copy step by step,
recording the global pre-clip norm with a :class:`~gradclip.monitor.GradMonitor`,
unclipped or clipped at a fixed threshold.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from gradclip import clip_grad_norm_
from gradclip.diagnostics.thresholds import ExplosionWatch
from gradclip.monitor import GradMonitor

__all__ = ["NormPass", "RngSnapshot", "copy_optimizer"]


class RngSnapshot:
    """Every RNG a training step could touch: torch CPU and CUDA, Python, NumPy.

    Example:
        >>> snap = RngSnapshot()
        >>> a = torch.rand(1)
        >>> snap.restore()
        >>> bool(torch.equal(torch.rand(1), a))
        True
    """

    def __init__(self) -> None:
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # type: ignore[no-untyped-call]
        self.python = random.getstate()
        try:
            import numpy as np
        except ImportError:  # pragma: no cover
            self.numpy: Any = None
        else:
            self.numpy = np.random.get_state()

    def restore(self) -> None:
        """Put every saved state back."""
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.python)
        if self.numpy is not None:
            import numpy as np

            np.random.set_state(self.numpy)


def copy_optimizer(
    optimizer: Any, model: torch.nn.Module, copied: torch.nn.Module
) -> torch.optim.Optimizer | None:
    """The optimizer of ``copied``: ``optimizer`` deep-copied onto its parameters.

    Args:
        optimizer: a ``torch.optim.Optimizer`` over ``model``'s parameters (its state
            is copied; a ``ClippedOptimizer``'s inner optimizer is used), a factory
            ``params -> Optimizer``, or ``None``.
        model: the original model.
        copied: a deep copy of ``model``.

    Returns:
        The copied optimizer, or ``None``.

    Example:
        >>> m = torch.nn.Linear(2, 1)
        >>> c = copy.deepcopy(m)
        >>> opt = copy_optimizer(torch.optim.SGD(m.parameters(), lr=0.1), m, c)
        >>> opt.param_groups[0]["params"][0] is c.weight
        True
    """
    if optimizer is None:
        return None
    inner = getattr(optimizer, "optimizer", optimizer)  # a ClippedOptimizer steps unclipped here
    if isinstance(inner, torch.optim.Optimizer):
        # deepcopy with a memo that maps the user's parameters to the copies
        memo = {id(p): q for p, q in zip(model.parameters(), copied.parameters(), strict=True)}
        return copy.deepcopy(inner, memo)
    if callable(inner):
        opt = inner(copied.parameters())
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError("the optimizer factory must return a torch.optim.Optimizer")
        return opt
    raise TypeError(
        f"optimizer must be a torch.optim.Optimizer, a factory or None, got {type(optimizer)}"
    )


class NormPass:
    r"""Train a deep copy of ``model`` step by step, recording the global pre-clip norm.

    Each step: ``loss_fn(copy, batch).backward()``, record
    :math:`n_t = \lVert g_t \rVert_p`, clip at ``clip_at`` if it is > 0
    (:func:`gradclip.clip_grad_norm_`, torch's semantics), ``optimizer.step()``. A
    non-finite loss or norm (both kept in ``norms`` and ``losses``) stops the pass
    (``diverged_at``); with
    ``stop_at_explosion`` so does the first explosion (``exploded_at``, by
    :class:`~gradclip.diagnostics.thresholds.ExplosionWatch`).

    Args:
        model: the model (deep-copied; never modified).
        optimizer: as for :func:`copy_optimizer`.
        norm_type: order of the norm.
        clip_at: the clip threshold (0: unclipped).

    Example:
        >>> torch.manual_seed(0) and None
        >>> m = torch.nn.Linear(3, 1)
        >>> data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(5)]
        >>> mse = lambda net, b: torch.nn.functional.mse_loss(net(b[0]), b[1])
        >>> p = NormPass(m, torch.optim.SGD(m.parameters(), lr=0.1), 2.0)
        >>> p.run(mse, data, steps=5, tick=lambda: None)
        >>> p.done, len(p.norms), p.diverged_at
        (5, 5, None)
    """

    def __init__(
        self, model: torch.nn.Module, optimizer: Any, norm_type: float, clip_at: float = 0.0
    ) -> None:
        self.model = copy.deepcopy(model)
        self.opt = copy_optimizer(optimizer, model, self.model)
        self.model.train()
        self.clip_at = clip_at
        self.norm_type = norm_type
        self.monitor = GradMonitor(
            self.model, norm_type=norm_type, update_ratio_every=0, warn=False, flush_every=1
        )
        self.norms: list[float] = []
        self.losses: list[float] = []
        self.done = 0
        self.diverged_at: int | None = None
        self.exploded_at: int | None = None

    def run(
        self,
        loss_fn: Callable[[torch.nn.Module, Any], Tensor],
        batches: Iterable[Any],
        steps: int,
        tick: Callable[[], None],
        *,
        stop_at_explosion: bool = False,
    ) -> None:
        """Train up to ``steps`` steps on ``batches``, calling ``tick()`` after each."""
        watch = ExplosionWatch()
        for batch in batches:
            if self.done >= steps:
                break
            self.model.zero_grad(set_to_none=True)
            loss = loss_fn(self.model, batch)
            loss.backward()  # type: ignore[no-untyped-call]
            self.monitor.observe(step=self.done)
            self.monitor.flush()
            norm = next(r["norm"] for r in reversed(self.monitor.records) if r["kind"] == "step")
            self.norms.append(norm)
            self.losses.append(float(loss.detach()))
            self.done += 1
            tick()
            if not (math.isfinite(self.losses[-1]) and math.isfinite(norm)):
                self.diverged_at = self.done - 1
                self.exploded_at = self.diverged_at if self.diverged_at > 0 else None
                break
            if stop_at_explosion and watch.update(norm):
                self.exploded_at = watch.at
                break
            if self.opt is not None:
                if self.clip_at > 0:
                    clip_grad_norm_(self.model.parameters(), self.clip_at, self.norm_type)
                self.opt.step()

    def layers(self) -> list[dict[str, Any]]:
        """The monitor's worst layers by peak norm."""
        rows: list[dict[str, Any]] = self.monitor.summary()["worst_layers"]
        return rows

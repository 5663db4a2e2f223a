"""Helpers of the fused-optimizer path (see :mod:`gradclip.optim`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["fold_scale_into_lr", "is_fused", "prepare_fused_sgd"]


def is_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is a torch fused optimizer in every parameter group
    (it then honours ``grad_scale`` and ``found_inf``).

    Args:
        optimizer: any ``torch.optim.Optimizer``.

    Returns:
        True for e.g. ``Adam(..., fused=True)``.

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


def prepare_fused_sgd(opt: torch.optim.Optimizer, can_skip: bool) -> list[Tensor]:
    """Work around fused SGD's uninitialised momentum after a skipped first step.

    Pre-fills the momentum buffers with zeros for groups with ``dampening == 0``
    (bit-exact: ``0·μ + g = g``).

    Args:
        opt: the wrapped optimizer.
        can_skip: whether this step may be skipped.

    Returns:
        The parameters whose new buffers must be dropped again if this step
        turns out skipped (groups with ``dampening != 0``; costs one sync).
    """
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


def fold_scale_into_lr(opt: torch.optim.Optimizer, scale: Tensor) -> list[Any] | None:
    """Fold the clip scale into a tensor learning rate for fused plain SGD.

    For fused plain SGD (no momentum, no weight decay) ``θ ← θ − lr·(s·g)`` equals
    ``θ ← θ − (lr·s)·g``: give the kernel the tensor ``lr·s`` and it reads each
    gradient once and writes nothing back (``grad_scale`` would write the scaled
    gradient to ``.grad``). ``.grad`` then keeps the unclipped gradient.

    Args:
        opt: the wrapped optimizer.
        scale: the clip's 0-d scale.

    Returns:
        The groups' learning rates to restore, or None when the rule does not apply.
    """
    if not isinstance(opt, torch.optim.SGD) or any(
        g["momentum"] != 0 or g["weight_decay"] != 0 for g in opt.param_groups
    ):
        return None
    saved = [g["lr"] for g in opt.param_groups]
    for group, lr in zip(opt.param_groups, saved, strict=True):
        base = lr if isinstance(lr, Tensor) else torch.tensor(lr, dtype=torch.float32)
        group["lr"] = base.to(scale.device) * scale.to(torch.float32)
    return saved

"""Turning one step's host values into a step record (flush time, host only)."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from gradclip.monitor.grouping import Grouping
from gradclip.ops.reduce import combine_partial_norms

__all__ = ["HEAD", "STATS", "step_record"]

#: The ClipStats fields a seam row starts with, then ``skipped``, then the per-tensor norms.
STATS = ("norm", "clipped_norm", "scale", "threshold", "clipped", "finite")
HEAD = len(STATS) + 1


def step_record(
    step: int,
    head: list[float],
    tensor_norms: Tensor,
    grouping: Grouping,
    norm_type: float,
    *,
    max_norm: float | None,
    has_stats: bool,
    update: Tensor | None = None,
) -> dict[str, Any]:
    """The step record of one buffered row.

    Args:
        step: the step.
        head: the row's first :data:`HEAD` values (NaN in a plain-loop row).
        tensor_norms: the per-tensor norms (float64, CPU).
        grouping: the layers of these tensors.
        norm_type: the norms' order.
        max_norm: a plain loop's threshold (torch's ``clip_grad_norm_`` rule).
        has_stats: whether ``head`` holds a clipper's statistics.
        update: ``[‖Δθ_i‖..., ‖θ_i‖...]`` when the update ratio was measured.

    Returns:
        The record (see :mod:`gradclip.monitor`).

    Example:
        >>> import torch
        >>> g = Grouping(("a.w", "a.b"), lambda n: n.split(".")[0])
        >>> r = step_record(3, [float("nan")] * HEAD, torch.tensor([3.0, 4.0], dtype=torch.float64),
        ...                 g, 2.0, max_norm=1.0, has_stats=False)
        >>> r["norm"], r["clipped"], r["layers"]
        (5.0, True, {'a': 5.0})
    """
    if has_stats:
        norm, clipped_norm, scale, threshold, clipped, finite, skipped = head
        rec: dict[str, Any] = {
            "kind": "step",
            "step": step,
            "norm": norm,
            "clipped_norm": clipped_norm,
            "clip_coef": scale,
            "threshold": threshold,
            "clipped": bool(clipped),
            "skipped": bool(skipped),
            "finite": bool(finite),
        }
    else:
        norm = float(combine_partial_norms(tensor_norms, norm_type))
        coef = 1.0 if max_norm is None else min(1.0, max_norm / (norm + 1e-6))
        rec = {
            "kind": "step",
            "step": step,
            "norm": norm,
            "clipped_norm": norm * coef,
            "clip_coef": coef,
            "threshold": max_norm,
            "clipped": coef < 1.0,
            "skipped": False,
            "finite": math.isfinite(norm),
        }
    values = grouping.combine(tensor_norms.unsqueeze(0), norm_type)[0]
    rec["layers"] = dict(zip(grouping.layers, values, strict=True))
    if update is not None:
        t = len(grouping.names)
        num = grouping.combine(update[:t].unsqueeze(0), 2.0)[0]
        den = grouping.combine(update[t:].unsqueeze(0), 2.0)[0]
        rec["update_ratio"] = {
            layer: (x / y if y > 0 else math.nan)
            for layer, x, y in zip(grouping.layers, num, den, strict=True)
        }
    return rec

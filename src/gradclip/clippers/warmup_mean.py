"""``warmup-mean``: Pascanu's mean-norm heuristic (Pascanu et al. 2013, §3.2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradclip.clippers.base import STATE_DTYPE, Clipper, scalar_state
from gradclip.clippers.options import (
    COMMON,
    Option,
    number_in,
    positive_int,
    threshold,
)
from gradclip.clippers.registry import register_clipper


@register_clipper(order=70)
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

    Args:
        warmup_steps: ``N``, the number of finite norms averaged.
        factor: ``f`` in Pascanu's range [0.5, 10].
        warmup_cap: the safety cap's multiple of the running mean (``None``: no cap).
        norm_type: order of the norm.
        nonfinite: ``"propagate"``, ``"error"`` or ``"skip"``.

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
    options = (
        Option("warmup_steps", int, 100, "finite norms averaged before the threshold is fixed",
               positive_int),
        Option("factor", float, 5.0, "threshold = factor x the mean warm-up norm",
               number_in(0.5, 10, why="within Pascanu's 'half to ten times' range")),
        Option("warmup_cap", float, 10.0, "cap each warm-up norm at this x the running mean",
               threshold(), optional=True, kw_only=True),
        *COMMON,
    )  # fmt: skip
    warmup_steps: int
    factor: float
    warmup_cap: float | None

    _count: Tensor
    _mean: Tensor

    def __init__(self, *args: object, **options: object) -> None:
        super().__init__(*args, **options)
        self._register_state(count=scalar_state(), mean=scalar_state())

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        count, mean = self._count, self._mean
        warm = count < self.warmup_steps
        if self.warmup_cap is None:
            cap = torch.full_like(mean, math.inf)
        else:
            cap = torch.where(count > 0, self.warmup_cap * mean, math.inf)
        thr = torch.where(warm, cap, self.factor * mean)
        new_mean = mean + (torch.minimum(norm.to(STATE_DTYPE), cap) - mean) / (count + 1)
        update = finite & warm  # a non-finite norm is never selected into the mean
        self._mean.copy_(torch.where(update, new_mean, mean))
        self._count.add_(update)  # saturates at ``warmup_steps``: exact in float32
        return thr, thr

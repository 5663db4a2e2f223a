"""``zclip``: z-score clipping against EMAs of the norm (Kumar et al. 2025)."""

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


@register_clipper(order=50)
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

    Args:
        z_threshold: ``z_thr`` (positive).
        alpha: EMA factor ``α`` in [0, 1).
        warmup: number of finite norms measured before clipping starts.
        warmup_max_norm: a fixed threshold during warm-up (``None``: none).
        norm_type: order of the norm.
        nonfinite: ``"propagate"``, ``"error"`` or ``"skip"``.

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
    options = (
        Option("z_threshold", float, 2.5, "clip norms whose z-score exceeds this",
               threshold()),
        Option("alpha", float, 0.97, "EMA factor of the mean and variance",
               number_in(0, 1, hi_open=True)),
        Option("warmup", int, 25, "finite norms measured before clipping starts", positive_int),
        Option("warmup_max_norm", float, None, "fixed threshold during warm-up (none: off)",
               threshold(), optional=True, kw_only=True),
        *COMMON,
    )  # fmt: skip
    z_threshold: float
    alpha: float
    warmup: int
    warmup_max_norm: float | None

    _count: Tensor
    _mean: Tensor
    _var: Tensor

    def __init__(self, *args: object, **options: object) -> None:
        super().__init__(*args, **options)
        # During warm-up mean/var hold Welford's running mean and M2.
        self._register_state(count=scalar_state(), mean=scalar_state(), var=scalar_state())

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        # Branch-free: both phases are computed and selected with torch.where, and
        # nothing is stored unless the norm is finite (unselected NaN/inf is harmless).
        n = norm.to(STATE_DTYPE)
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

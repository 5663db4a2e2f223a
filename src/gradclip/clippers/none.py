"""``none``: measure the global norm, change nothing."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradclip.clippers.base import Clipper
from gradclip.clippers.options import COMMON
from gradclip.clippers.registry import register_clipper


@register_clipper(order=0)
class NoClip(Clipper):
    """``none``: measure the global norm, change nothing (``threshold = inf``).

    Useful as a baseline and for logging: unlike ``clip_grad_norm_(…, inf)``
    it never rewrites the gradients. With ``nonfinite="skip"`` it still skips
    steps with a non-finite norm.

    Args:
        norm_type: order of the measured norm.
        nonfinite: ``"propagate"``, ``"error"`` or ``"skip"``.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([3.0, 4.0])]
        >>> make_clipper("none").clip(g).norm, g[0]
        (tensor(5.), tensor([3., 4.]))
    """

    name = "none"
    options = COMMON
    writes = False

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        inf = torch.full_like(norm, math.inf)
        return inf, inf

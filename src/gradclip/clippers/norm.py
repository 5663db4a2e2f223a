"""``norm``: clip the global norm (Pascanu et al. 2013, Algorithm 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from gradclip.clippers.base import Clipper
from gradclip.clippers.options import COMMON, Option, threshold
from gradclip.clippers.registry import register_clipper


@register_clipper(order=10)
class NormClip(Clipper):
    r"""``norm``: clip the global norm at ``max_norm`` (Pascanu et al. 2013, Algorithm 1).

    .. math:: g \leftarrow g \cdot \frac{c}{\max(n, c)}

    TensorFlow's ``tf.clip_by_global_norm`` rule: exact (no epsilon, the
    post-clip norm is ``c``), gradients below the threshold are scaled by
    exactly 1. ``norm_type`` picks the p-norm (``"inf"`` allowed).

    Args:
        max_norm: the threshold ``c`` (positive; a 0-d tensor is taken unchecked).
        norm_type: order ``p`` of the norm.
        nonfinite: ``"propagate"``, ``"error"`` or ``"skip"``.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([3.0]), torch.tensor([4.0])]
        >>> stats = make_clipper("norm", max_norm=1.0).clip(g)
        >>> stats.norm, stats.clipped_norm, g
        (tensor(5.), tensor(1.), [tensor([0.6000]), tensor([0.8000])])
    """

    name = "norm"
    options = (
        Option("max_norm", float, 1.0, "clip the global norm at this value",
               threshold(allow_tensor=True)),
        *COMMON,
    )  # fmt: skip
    max_norm: float | Tensor

    def _threshold(self, norm: Tensor, finite: Tensor) -> tuple[Tensor, Tensor]:
        c = self.max_norm
        thr = c.to(norm) if isinstance(c, Tensor) else torch.full_like(norm, c)
        return thr, thr

"""``tensor-norm``: clip each tensor's norm separately (Keras ``clipnorm``)."""

from __future__ import annotations

import torch

from gradclip.clippers.base import ClipBatch, ClipOutcome, Clipper, NonFinitePolicy, local_stats
from gradclip.clippers.options import COMMON, Option, threshold
from gradclip.clippers.registry import register_clipper
from gradclip.ops import dispatch, tensor_norms
from gradclip.ops.reduce import combine_partial_norms


@register_clipper(order=30)
class TensorNormClip(Clipper):
    r"""``tensor-norm``: clip each tensor's norm separately at ``max_norm``.

    .. math:: g_i \leftarrow g_i \cdot \frac{c}{\max(\lVert g_i \rVert_p, c)}

    Keras ``clipnorm`` (``tf.clip_by_norm`` on each variable). A zero tensor
    stays zero. Under ``"propagate"`` a tensor with a non-finite norm becomes
    NaN. Stats: ``norm``/``clipped_norm`` are global norms before/after,
    ``threshold = max_norm``, ``scale = clipped_norm / norm``.

    Args:
        max_norm: the per-tensor threshold ``c`` (positive).
        norm_type: order ``p`` of the norm.
        nonfinite: ``"propagate"``, ``"error"`` or ``"skip"``.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])]
        >>> _ = make_clipper("tensor-norm", max_norm=1.0).clip(g); g
        [tensor([0.6000, 0.8000]), tensor([0.3000, 0.4000])]
    """

    name = "tensor-norm"
    options = (
        Option("max_norm", float, 1.0, "clip each tensor's norm at this value", threshold()),
        *COMMON,
    )
    global_scale = False
    max_norm: float

    def _clip_local(self, batch: ClipBatch, policy: NonFinitePolicy) -> ClipOutcome:
        p, c = self.norm_type, self.max_norm
        if batch.layout is None:
            n, norm, finite = self._measure(batch, policy)
            post, clipped = combine_partial_norms(torch.where(n > c, c, n), p), (n > c).any()
        else:  # the totals after clipping ride in the same all-reduce
            packet = batch.layout.packet(p)
            pending = batch.layout.add_tensor_norms(
                packet, tensor_norms(batch.grads, p), post=lambda m: torch.where(m > c, c, m)
            )
            packet.reduce()
            (n, norm), (post, clipped) = pending.result(), pending.post_total()
            finite = torch.isfinite(norm)
            policy.check(finite, norm, repr(self))
        over = n > c
        s = policy.guard(torch.where(over, c / torch.where(over, n, 1.0), 1.0), n, finite)
        dispatch.mul_(batch.grads, s)  # one 0-d factor per tensor: no sync
        post = policy.poison(post, norm)
        return ClipOutcome(local_stats(norm, finite, c, post, clipped), n)

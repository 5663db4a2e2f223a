"""``value``: clamp every gradient entry (Keras ``clipvalue``)."""

from __future__ import annotations

import math

import torch

from gradclip.clippers.base import ClipBatch, ClipOutcome, Clipper, NonFinitePolicy, local_stats
from gradclip.clippers.options import COMMON, Option, threshold
from gradclip.clippers.registry import register_clipper
from gradclip.ops import clamp_dense_, clip_by_value, global_norm, tensor_norms


@register_clipper(order=20)
class ValueClip(Clipper):
    r"""``value``: clamp every gradient entry to ``[-clip_value, clip_value]``.

    .. math:: g \leftarrow \min(\max(g, -v), v)

    Keras ``clipvalue`` / ``tf.clip_by_value`` / ``torch.nn.utils.clip_grad_value_``.
    Under ``"propagate"`` NaN entries stay NaN and ±inf are clamped, as in
    TensorFlow. Stats: ``threshold = v``; ``clipped_norm`` is measured after
    the clamp (one more read pass); ``clipped`` is True when the clamp lowered
    the norm.

    Args:
        clip_value: the bound ``v`` (positive).
        norm_type: order of the norms in the stats.
        nonfinite: ``"propagate"``, ``"error"`` or ``"skip"``.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> g = [torch.tensor([-2.0, 0.5, 3.0])]
        >>> _ = make_clipper("value", clip_value=1.0).clip(g); g
        [tensor([-1.0000,  0.5000,  1.0000])]
    """

    name = "value"
    options = (
        Option("clip_value", float, 1.0, "clamp every entry to [-v, v]", threshold()),
        *COMMON,
    )
    global_scale = False
    clip_value: float

    def _clip_local(self, batch: ClipBatch, policy: NonFinitePolicy) -> ClipOutcome:
        if batch.layout is not None:
            return self._clip_sharded(batch, policy)
        norms, norm, finite = self._measure(batch, policy)
        v = self.clip_value
        # Under "skip", bounds of ±inf leave a non-finite step untouched, with no sync.
        clamp_dense_(batch.grads, torch.where(finite, v, math.inf) if policy.skips else v)
        for p, g in zip(batch.params, batch.grads, strict=True):
            if g.layout != torch.strided:
                if p is None or policy.skips:
                    raise TypeError(
                        "value: sparse gradients need parameters and nonfinite != 'skip'"
                    )
                p.grad = clip_by_value(g, -v, v)
        post = global_norm(
            [g if p is None else p.grad for p, g in zip(batch.params, batch.grads, strict=True)],
            self.norm_type,
        )
        return ClipOutcome(local_stats(norm, finite, v, post.to(norm.dtype), post < norm), norms)

    def _clip_sharded(self, batch: ClipBatch, policy: NonFinitePolicy) -> ClipOutcome:
        """The clip when the gradients live on several ranks: the post-clamp norms
        are measured on clamped copies first, so that the norms before and after
        share the one all-reduce (and the decision under ``"skip"``/``"error"``
        comes before anything is written)."""
        assert batch.layout is not None
        p, v = self.norm_type, self.clip_value
        pre = tensor_norms(batch.grads, p)
        clamped = tensor_norms([g.clamp(-v, v) for g in batch.grads], p)
        (norms, norm), (_, post) = batch.layout.norms_and_total([pre, clamped], p)
        finite = torch.isfinite(norm)
        policy.check(finite, norm, repr(self))
        clamp_dense_(batch.grads, torch.where(finite, v, math.inf) if policy.skips else v)
        post = torch.where(finite, post, norm) if policy.skips else post
        return ClipOutcome(local_stats(norm, finite, v, post, post < norm), norms)

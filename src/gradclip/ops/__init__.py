"""Stateless clipping operations with exact TensorFlow and PyTorch semantics.

Notation: ``g = (g_1 … g_k)`` are the tensors (``None`` entries skipped),
``n = ‖g‖_p = (Σ_i ‖g_i‖_p^p)^{1/p}`` (``max_i ‖g_i‖_∞`` for ``p = ∞``) and
``c`` is the threshold.

* TensorFlow semantics, functional (:mod:`~gradclip.ops.tf_style`):
  :func:`clip_by_global_norm`, :func:`clip_by_norm`, :func:`clip_by_value`.
* PyTorch semantics, in place on ``.grad`` (:mod:`~gradclip.ops.torch_style`):
  :func:`clip_grad_norm_` and :func:`clip_grad_value_`, drop-ins for ``torch.nn.utils``.
* The norm pass (:mod:`~gradclip.ops.norms`): :func:`global_norm`, :func:`tensor_norms`.

Internals shared by the core: :mod:`~gradclip.ops.dispatch` (the one
group-by-device-and-dtype helper that picks the foreach, loop or sparse path)
and :mod:`~gradclip.ops.reduce` (:func:`~gradclip.ops.reduce.combine_partial_norms`,
the one place where partial norms are combined, and where a distributed
reduction goes). Nothing here reads a device value on the host, so none of
these functions synchronise a CUDA stream (except where torch documents it too:
``error_if_nonfinite=True``).
"""

from gradclip.ops.checks import check_norm_type, check_threshold
from gradclip.ops.norms import global_norm, tensor_norms
from gradclip.ops.tf_style import clip_by_global_norm, clip_by_norm, clip_by_value
from gradclip.ops.torch_style import clamp_dense_, clip_grad_norm_, clip_grad_value_, scale_

__all__ = [
    "check_norm_type",
    "check_threshold",
    "clamp_dense_",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "clip_grad_norm_",
    "clip_grad_value_",
    "global_norm",
    "scale_",
    "tensor_norms",
]

r"""THE point where partial norms are combined into a total norm.

Every total norm in gradclip (:func:`~gradclip.ops.global_norm`, the drop-in
``clip_grad_norm_``, every clipper's statistics, AGC's unit norms) is
:func:`combine_partial_norms` of a 1-d tensor of partial norms: one per tensor,
per unit, or per group. Nothing else adds norms up.

Across ranks (DTensor gradients, pipeline stages) the partial norms are
first made global by ONE all-reduce, in
:class:`gradclip.distributed.NormPacket` (float64 ``Σ_r n^p`` per sharded
tensor and one sum for the tensors a rank holds whole; MAX for ``p = ∞``);
the global norms then meet here like any others. See :mod:`gradclip.distributed`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["combine_partial_norms"]


def combine_partial_norms(
    norms: Tensor, norm_type: float, *, method: Literal["safe", "torch"] = "safe"
) -> Tensor:
    r"""Combine partial p-norms into one: ``‖(n_1 … n_k)‖_p``, no sync on accelerators.

    .. math:: n = \Big(\sum_i n_i^p\Big)^{1/p} = m \Big(\sum_i (n_i/m)^p\Big)^{1/p},
              \quad m = \max_i n_i;\qquad n_\infty = m

    The single combination point of gradclip (see the module docstring for the
    distributed form). ``method="safe"`` scales by ``m`` so that no power over-
    or underflows (on the CPU, where reading ``m`` costs no device wait, it
    takes ``torch.linalg.vector_norm`` directly when ``m`` is in a safe range);
    ``method="torch"`` is ``torch.linalg.vector_norm(norms, p)``, the kernel of
    ``torch.nn.utils.get_total_norm``, for bit-exact drop-ins.

    Args:
        norms: 1-d tensor of partial norms (per tensor, per unit or per group).
        norm_type: ``p > 0`` or ``inf`` (already validated).
        method: ``"safe"`` or ``"torch"``.

    Returns:
        A 0-d tensor on ``norms``' device; ``tensor(0.)`` for no norms.

    Example:
        >>> combine_partial_norms(torch.tensor([3.0, 4.0]), 2.0)
        tensor(5.)
        >>> combine_partial_norms(torch.tensor([3e30, 4e30]), 2.0)
        tensor(5.0000e+30)
    """
    if method == "torch":
        return torch.linalg.vector_norm(norms, norm_type)
    if norms.numel() == 0:
        return torch.zeros((), dtype=norms.dtype, device=norms.device)
    m = norms.amax()  # propagates NaN
    if norm_type == math.inf:
        return m
    if norm_type <= 2 and norms.device.type == "cpu" and 1e-15 < float(m) < 1e15:
        return torch.linalg.vector_norm(norms, norm_type)  # cannot overflow
    ok = torch.isfinite(m) & (m > 0)
    safe_m = torch.where(ok, m, torch.ones_like(m))
    return torch.where(ok, safe_m * torch.linalg.vector_norm(norms / safe_m, norm_type), m)

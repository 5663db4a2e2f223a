"""``agc``: unit-wise adaptive gradient clipping (Brock et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from gradclip.clippers.base import ClipBatch, ClipOutcome, Clipper, NonFinitePolicy, local_stats
from gradclip.clippers.options import NONFINITE, Option, number_in, threshold
from gradclip.clippers.registry import register_clipper
from gradclip.distributed import is_dtensor
from gradclip.ops.reduce import combine_partial_norms


def _exclusions(value: Any, name: str) -> tuple[str | Tensor, ...]:
    items = (value,) if isinstance(value, (str, Tensor)) else value
    if not isinstance(items, Sequence) or not all(isinstance(e, (str, Tensor)) for e in items):
        raise TypeError(f"{name} must be parameter names, name prefixes or tensors, got {value!r}")
    return tuple(items)


@register_clipper(order=60)
class AGC(Clipper):
    r"""``agc``: unit-wise adaptive gradient clipping (Brock et al. 2021).

    For each unit ``i`` of a parameter ``W`` with gradient ``G``:

    .. math:: m_i = λ \max(\lVert W_i \rVert_F, ε),\qquad
              G_i \leftarrow G_i \cdot \frac{m_i}{\max(\lVert G_i \rVert_F, m_i)}

    Brock, De, Smith, Simonyan, "High-Performance Large-Scale Image
    Recognition Without Normalization", arXiv:2102.06171; published defaults
    ``λ = clip_factor = 0.01``, ``ε = 1e-3``, final layer excluded.

    Units follow torch layouts (like timm's ``adaptive_clip_grad``): dim 0 is
    the output unit and the norm runs over dims 1…n, so one row per output
    unit for ``Linear`` and LSTM/GRU ``weight_ih``/``weight_hh`` (each gate
    row), one filter per output channel for ``Conv``, one row per token for
    ``Embedding``; biases and scalars are one unit. (``ConvTranspose`` stores
    ``(in, out, …)``; its units are then input channels: exclude it or accept
    that.) A unit gradient below its bound is left unchanged, never
    normalised (the agc-optims defect).

    The head is left out with ``exclude``: parameter names or prefixes
    (``exclude=("decoder",)`` matches ``decoder.weight`` and ``decoder.bias``;
    the input must then carry names, e.g. ``model.named_parameters()``, or an
    optimizer built from named parameters), or the parameter tensors
    themselves. Excluded gradients are untouched but count in the stats'
    global norms. Stats: ``threshold = λ``; ``norm``/``clipped_norm`` are
    global L2 norms before/after, derived from the unit norms (no extra
    pass). Under ``"propagate"`` a unit with a non-finite norm becomes NaN.
    Always L2 (``norm_type`` is not an option).

    Args:
        clip_factor: ``λ`` (positive).
        eps: ``ε`` (non-negative), the floor of a unit's parameter norm.
        exclude: parameter names, name prefixes or tensors left unclipped.
        nonfinite: ``"propagate"``, ``"error"`` or ``"skip"``.

    Example:
        >>> import torch
        >>> from gradclip import make_clipper
        >>> lin = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        >>> lin.weight.grad = torch.tensor([[1.0, 0.0], [0.001, 0.0]])
        >>> _ = make_clipper("agc", clip_factor=0.01).clip(lin.parameters())
        >>> lin.weight.grad  # row 0: bound 0.05 -> clipped; row 1: 0.001 < 0.01 -> kept
        tensor([[0.0500, 0.0000],
                [0.0010, 0.0000]])
    """

    name = "agc"
    options = (
        Option("clip_factor", float, 0.01, "lambda: a unit's gradient norm is capped at "
               "lambda x its parameter norm", threshold()),
        Option("eps", float, 1e-3, "floor of a unit's parameter norm", number_in(0, float("inf"))),
        Option("exclude", tuple, (), "parameter names or prefixes left unclipped "
               "(joined with + in a spec)", _exclusions, kw_only=True),
        NONFINITE,
    )  # fmt: skip
    global_scale = False
    needs_params = True
    clip_factor: float
    eps: float
    exclude: tuple[str | Tensor, ...]

    def __init__(self, *args: object, **options: object) -> None:
        super().__init__(*args, **options)
        self._exclude_names = tuple(e for e in self.exclude if isinstance(e, str))
        self._exclude_ids = {id(e) for e in self.exclude if isinstance(e, Tensor)}

    def _config(self) -> dict[str, Any]:
        shown = tuple(
            e if isinstance(e, str) else f"<tensor {tuple(e.shape)}>" for e in self.exclude
        )
        return {**super()._config(), "exclude": shown}

    def _excluded(self, param: Tensor, name: str | None) -> bool:
        if id(param) in self._exclude_ids:
            return True
        if not self._exclude_names:
            return False
        if name is None:
            raise ValueError(
                f"agc: exclude={self._exclude_names!r} names parameters, but the parameters came "
                "without names; pass module.named_parameters() (or build the optimizer from "
                "named parameters), or exclude the tensors themselves"
            )
        return any(name == e or name.startswith(e + ".") for e in self._exclude_names)

    def _units(self, param: Tensor, grad: Tensor, name: str | None) -> tuple[Tensor, Tensor | None]:
        """A tensor's unit gradient norms and unit parameter norms (None when excluded),
        over its local rows, shaped to broadcast against the gradient."""
        if grad.layout != torch.strided:
            raise TypeError("agc does not support sparse gradients")
        dims = tuple(range(1, grad.dim())) if grad.dim() > 1 else None
        acc = torch.float32 if grad.dtype in (torch.float16, torch.bfloat16) else None
        g_norm = torch.linalg.vector_norm(grad, 2, dim=dims, keepdim=True, dtype=acc)
        if self._excluded(param, name):
            return g_norm, None
        w = param.detach()
        w = w.to_local() if is_dtensor(w) else w  # type: ignore[attr-defined]
        return g_norm, torch.linalg.vector_norm(w, 2, dim=dims, keepdim=True, dtype=acc)

    def _bound(self, w_norm: Tensor | None) -> Tensor | None:
        return None if w_norm is None else self.clip_factor * w_norm.clamp(min=self.eps)

    @staticmethod
    def _post(g_norm: Tensor, bound: Tensor | None) -> Tensor:
        """The unit norms after clipping (NaN stays NaN)."""
        return g_norm if bound is None else torch.where(g_norm > bound, bound, g_norm)

    @staticmethod
    def _scale(
        grad: Tensor, g_norm: Tensor, bound: Tensor, finite: Tensor, policy: NonFinitePolicy
    ) -> Tensor:
        """Clip the units of ``grad`` in place; return which were over their bound."""
        over = g_norm > bound
        s = torch.where(over, bound / torch.where(over, g_norm, 1.0), 1.0)
        grad.mul_(policy.guard(s, g_norm, finite).to(grad.dtype))
        return over

    def _clip_local(self, batch: ClipBatch, policy: NonFinitePolicy) -> ClipOutcome:
        units = [
            self._units(param, grad, name)
            for param, grad, name in zip(batch.params, batch.grads, batch.names, strict=True)
            if param is not None
        ]
        if batch.layout is not None:
            return self._clip_sharded(batch, units, policy)
        device0 = batch.grads[0].device
        unit_norms = [g_norm.reshape(-1).to(device0, torch.float32) for g_norm, _ in units]
        norm = combine_partial_norms(torch.cat(unit_norms), 2.0)
        finite = torch.isfinite(norm)
        policy.check(finite, norm, repr(self))
        post_units: list[Tensor] = []
        any_clipped = torch.zeros((), dtype=torch.bool, device=device0)
        for grad, (g_norm, w_norm) in zip(batch.grads, units, strict=True):
            bound = self._bound(w_norm)
            if bound is not None:
                over = self._scale(grad, g_norm, bound, finite, policy)
                any_clipped = any_clipped | over.any().to(device0)
            post_units.append(self._post(g_norm, bound).reshape(-1).to(device0, torch.float32))
        post = policy.poison(combine_partial_norms(torch.cat(post_units), 2.0), norm)
        stats = local_stats(norm, finite, self.clip_factor, post, any_clipped)
        # Each tensor's norm from its unit norms, built only when an observer asks.
        return ClipOutcome(
            stats, lambda: torch.stack([torch.linalg.vector_norm(u, 2) for u in unit_norms])
        )

    def _clip_sharded(
        self, batch: ClipBatch, units: list[tuple[Tensor, Tensor | None]], policy: NonFinitePolicy
    ) -> ClipOutcome:
        """The clip when the gradients live on several ranks, with ONE all-reduce.

        Units this rank holds whole (FSDP2's ``Shard(0)`` rows, replicas, plain
        tensors) are clipped from local norms; only their totals before and after
        travel. Units split across ranks (``Shard(d ≥ 1)``, sharded biases) travel
        as per-unit partial norms of the gradient and the parameter, at their
        global rows (see :meth:`gradclip.distributed.Layout.add_units`).
        """
        lay = batch.layout
        assert lay is not None
        packet = lay.packet(2.0)
        device0 = packet.device
        local = [
            torch.linalg.vector_norm(g.to(device0, torch.float32)).reshape(1) for g, _ in units
        ]
        pending = lay.add_tensor_norms(packet, torch.cat([torch.zeros(0, device=device0), *local]))
        split: dict[int, tuple[int, int | None]] = {}
        post_whole, counted, lowered = [], [], []
        for i, (g_norm, w_norm) in enumerate(units):
            if lay.shards[i].units_split:
                h_w = None if w_norm is None else lay.add_units(packet, i, w_norm.reshape(-1))
                split[i] = (lay.add_units(packet, i, g_norm.reshape(-1)), h_w)
                continue
            post = self._post(g_norm, self._bound(w_norm)).reshape(-1).to(device0, torch.float32)
            post_whole.append(post)
            counted.append(torch.full_like(post, lay.counted(i), dtype=torch.bool))
            lowered.append((post < g_norm.reshape(-1).to(post)).any())
        none = torch.zeros(0, device=device0)
        h_post = packet.total(torch.cat([none, *post_whole]), torch.cat([none.bool(), *counted]))
        h_lowered = packet.any(torch.stack([torch.tensor(False, device=device0), *lowered]))
        packet.reduce()
        tensor_norms, norm = pending.result()
        finite = torch.isfinite(norm)
        policy.check(finite, norm, repr(self))
        any_clipped = packet.get(h_lowered)[0] > 0
        post_split: list[Tensor] = []
        for i, (grad, (g_norm, w_norm)) in enumerate(zip(batch.grads, units, strict=True)):
            bound = self._bound(w_norm)
            if i in split:  # the summed norms of every unit, then this rank's rows
                h_g, h_w = split[i]
                g_all = packet.get(h_g)
                b_all = None if h_w is None else self._bound(packet.get(h_w))
                post_split.append(self._post(g_all, b_all).to(device0, torch.float32))
                if b_all is None:
                    continue
                any_clipped = any_clipped | (g_all > b_all).any()
                g_norm = lay.local_rows(i, g_all).reshape(g_norm.shape).to(g_norm.dtype)
                bound = lay.local_rows(i, b_all).reshape(g_norm.shape)
            if bound is not None:
                self._scale(grad, g_norm, bound, finite, policy)
        post = combine_partial_norms(torch.cat([*post_split, packet.get(h_post)]), 2.0)
        stats = local_stats(norm, finite, self.clip_factor, policy.poison(post, norm), any_clipped)
        return ClipOutcome(stats, tensor_norms)

"""The temporal profile: how much of the last step's loss gradient reaches each earlier step.

Backpropagation through time multiplies one Jacobian per step (Pascanu, Mikolov &
Bengio 2013, "On the difficulty of training Recurrent Neural Networks", ICML,
§2)::

    ∂L_T/∂h_t = (∂L_T/∂h_T) · ∏_{t<k≤T} ∂h_k/∂h_{k−1},
    ∂h_k/∂h_{k−1} = W_recᵀ diag(σ′(·))            (vanilla RNN)

so the norms shrink geometrically (vanishing) or grow (exploding) going back in
time. For a vanilla RNN with ‖diag(σ′)‖ ≤ γ (γ = 1 for tanh and ReLU, ¼ for the
logistic sigmoid) and λ₁ the largest singular value of W_rec, λ₁ < 1/γ is
*sufficient* for vanishing and λ₁ > 1/γ is *necessary* for exploding (§2).

:func:`temporal_profile` runs the recurrence one step at a time, keeps every
state ``h_t`` in the graph and reads ``∂L_T/∂h_t`` off autograd; it also builds
the exact per-step state Jacobians (``torch.func.jacrev``) and reports the
**spectral** norms of their products.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradclip.diagnostics.jacobians import jacobian_product_norms, state_parts

__all__ = [
    "PROFILE_FILE",
    "PROFILE_PLOT",
    "RecurrentWeight",
    "TemporalProfile",
    "temporal_profile",
    "write_profile",
]

PROFILE_FILE = "profile.json"
PROFILE_PLOT = "profile.png"

_GAMMA = {"tanh": 1.0, "relu": 1.0, "sigmoid": 0.25}


@dataclass(frozen=True)
class RecurrentWeight:
    """The largest singular value λ₁ of one recurrent weight against Pascanu's bound 1/γ.

    Attributes:
        name: parameter name, e.g. ``"rnn.weight_hh_l0"``.
        sigma_max: λ₁, the largest singular value (``torch.linalg.matrix_norm(W, 2)``).
        gamma: the bound on ``‖diag(σ′)‖``: 1 for tanh/ReLU (and the tanh paths of
            LSTM/GRU), ¼ for the sigmoid.
    """

    name: str
    sigma_max: float
    gamma: float

    @property
    def bound(self) -> float:
        """1/γ: below it vanishing is guaranteed, above it exploding becomes possible."""
        return 1.0 / self.gamma

    @property
    def condition(self) -> str:
        """``"vanishing guaranteed"`` if λ₁ < 1/γ, else ``"exploding possible"``."""
        return "vanishing guaranteed" if self.sigma_max < self.bound else "exploding possible"


@dataclass(frozen=True)
class TemporalProfile:
    """The result of :func:`temporal_profile`; index ``k`` is "``k`` steps back from ``T``".

    Attributes:
        steps_back: ``[0, 1, …, T]``; ``k`` stands for the state ``h_{T−k}`` (``h_0`` is the
            initial state).
        grad_norms: ``‖∂L_T/∂h_{T−k}‖₂`` over the whole batch and every layer (for an LSTM
            the state is ``(h, c)``).
        layer_grad_norms: the same per layer, ``[k][layer]``.
        jacobian_norms: spectral norms ``‖∂h_T/∂h_{T−k}‖₂`` of the products of per-step state
            Jacobians for batch element 0 (``1`` at ``k = 0``), or ``None`` when the state
            was larger than ``max_jacobian_dim``.
        weights: λ₁ of every ``weight_hh_l*`` against 1/γ.
        growth_per_step: ``exp`` of the least-squares slope of ``ln grad_norms[k]`` over
            ``k = 1 … T``; above 1 the gradient grows going back in time.
        verdict: ``"exploding"``, ``"vanishing"`` or ``"stable"``.
        evidence: one plain sentence with the numbers behind the verdict.
        cell: ``"rnn_tanh"``, ``"rnn_relu"``, ``"lstm"``, ``"gru"`` or another name.
        meta: what was measured: ``steps`` (T), ``batch``, ``loss`` (default or custom).
    """

    steps_back: list[int]
    grad_norms: list[float]
    layer_grad_norms: list[list[float]]
    jacobian_norms: list[float] | None
    weights: list[RecurrentWeight]
    growth_per_step: float
    verdict: str
    evidence: str
    cell: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite floats become ``None``); see :meth:`from_dict`."""
        from gradclip.lm.rundir import strict_json

        return strict_json(asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TemporalProfile:
        """Inverse of :meth:`to_dict` (``None`` norms read back as ``inf``)."""
        d = dict(data)
        d["weights"] = [RecurrentWeight(**w) for w in d["weights"]]
        d["grad_norms"] = [math.inf if v is None else float(v) for v in d["grad_norms"]]
        d["growth_per_step"] = (
            math.inf if d["growth_per_step"] is None else float(d["growth_per_step"])
        )
        return cls(**d)


@dataclass
class _Parts:
    rnn: nn.RNNBase
    encode: Callable[[Tensor], Tensor]
    head: Callable[[Tensor], Tensor]
    time_major: bool


def _split(model: nn.Module) -> _Parts:
    """The recurrent core plus what comes before (embedding) and after (readout) it."""
    encode: nn.Module
    head: nn.Module
    if isinstance(model, nn.RNNBase):
        rnn, encode, head = model, nn.Identity(), nn.Identity()
    elif isinstance(getattr(model, "rnn", None), nn.RNNBase):
        rnn = model.rnn  # type: ignore[assignment]
        emb = getattr(model, "embedding", None)
        encode = nn.Identity() if emb is None else emb
        drop = getattr(model, "input_dropout", None)
        if drop is not None:
            encode = nn.Sequential(encode, drop)
        dec = getattr(model, "decoder", None)
        head = nn.Identity() if dec is None else dec
    else:
        raise TypeError(
            "temporal_profile needs an nn.RNN/nn.LSTM/nn.GRU, or a module with an `rnn` "
            f"attribute of that kind (optional `embedding`, `decoder`); got {type(model).__name__}"
        )
    if rnn.bidirectional:
        raise ValueError("temporal_profile needs a unidirectional RNN (bidirectional=True given)")
    return _Parts(rnn, encode, head, not rnn.batch_first)


def _cell_name(rnn: nn.RNNBase) -> str:
    if isinstance(rnn, nn.LSTM):
        return "lstm"
    if isinstance(rnn, nn.GRU):
        return "gru"
    return f"rnn_{getattr(rnn, 'nonlinearity', 'tanh')}"


def _weights(rnn: nn.RNNBase, prefix: str) -> list[RecurrentWeight]:
    nonlin = getattr(rnn, "nonlinearity", "tanh")
    gamma = _GAMMA.get(nonlin, 1.0) if isinstance(rnn, nn.RNN) else 1.0
    out = []
    for name, param in rnn.named_parameters():
        if name.startswith("weight_hh"):
            sigma = float(torch.linalg.matrix_norm(param.detach().double(), ord=2))
            out.append(RecurrentWeight(prefix + name, sigma, gamma))
    return out


def _fit_growth(norms: list[float]) -> float:
    """exp(slope) of the least-squares line through ``ln norms[k]``, ``k = 1 … T``."""
    ys = [math.log(max(v, 1e-300)) for v in norms[1:]]
    if len(ys) < 2:
        return 1.0
    xs = list(range(1, len(ys) + 1))
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return math.exp(min(slope, 700.0))


def _default_loss(out: Tensor, target: Tensor | None) -> Tensor:
    if target is None:
        return out.sum() / out.shape[0]
    if not target.is_floating_point():
        return F.cross_entropy(out, target.long())
    return F.mse_loss(out, target)


def temporal_profile(
    model: nn.Module,
    inputs: Tensor,
    loss_fn: Callable[[Tensor], Tensor] | None = None,
    *,
    targets: Tensor | None = None,
    state: Tensor | tuple[Tensor, Tensor] | None = None,
    tolerance: float = 0.05,
    max_jacobian_dim: int = 1024,
) -> TemporalProfile:
    """Measure ``‖∂L_T/∂h_t‖`` for ``t = T … 0`` and judge exploding/vanishing/stable.

    ``L_T`` is the loss of the **last** step only: ``loss_fn(y_T)`` with ``y_T`` the
    model's output at step ``T`` (the top layer's ``h_T`` for a bare RNN, the
    ``decoder``'s logits for a model with ``embedding → rnn → decoder`` such as
    :class:`gradclip.lm.model.PTBModel`). The recurrence runs one step at a time so
    that every state stays in the graph; the model is put in ``eval()`` mode (no
    dropout) for the measurement and restored afterwards. Parameter ``.grad`` is
    not touched.

    The verdict compares ``g = exp(slope of ln ‖∂L_T/∂h_{T−k}‖ over k)`` with
    ``1 ± tolerance``: ``g > 1 + tol`` is exploding, ``g < 1/(1 + tol)`` vanishing.
    A non-finite gradient is exploding.

    Reference: Pascanu, Mikolov & Bengio (2013), §2 (the λ₁ vs 1/γ bounds).

    Args:
        model: ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (any depth, ``batch_first`` either way,
            unidirectional) or a module with such an ``rnn`` attribute plus optional
            ``embedding``/``input_dropout``/``decoder`` (the package's ``PTBModel``).
        inputs: ``[T, B, …]`` (``[B, T, …]`` if ``batch_first``), or unbatched ``[T,
            features]`` for a bare RNN; token ids ``[T, B]`` for a model with an
            embedding. ``T ≥ 1``.
        loss_fn: maps ``y_T [B, …]`` to a scalar. Default: cross-entropy against
            ``targets[T−1]`` for integer targets, MSE for float targets, and
            ``Σ y_T / B`` without targets.
        targets: optional per-step targets laid out like ``inputs``' first two dims.
        state: initial state (zeros by default).
        tolerance: per-step growth tolerance of the verdict.
        max_jacobian_dim: skip the Jacobian products when one batch element's state has
            more entries than this (their cost grows as the cube).

    Returns:
        A :class:`TemporalProfile`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> rnn = torch.nn.RNN(3, 8)
        >>> with torch.no_grad():
        ...     _ = rnn.weight_hh_l0.copy_(0.1 * torch.eye(8))
        >>> prof = temporal_profile(rnn, torch.randn(12, 4, 3))
        >>> prof.verdict, len(prof.grad_norms)
        ('vanishing', 13)
    """
    parts = _split(model)
    rnn = parts.rnn
    if isinstance(parts.encode, nn.Identity) and inputs.dim() == 2:  # unbatched [T, features]
        inputs = inputs.unsqueeze(1)
        targets = None if targets is None else targets.unsqueeze(1)
    elif not parts.time_major:
        inputs = inputs.transpose(0, 1)
        targets = None if targets is None else targets.transpose(0, 1)
    if inputs.dim() < 2 or inputs.shape[0] < 1:
        raise ValueError(
            f"inputs need a time dimension of length ≥ 1, got shape {tuple(inputs.shape)}"
        )
    seq_len, batch = inputs.shape[0], inputs.shape[1]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            if state is None:
                state = _zero_state(rnn, batch, inputs)
            s = tuple(p.detach().clone().requires_grad_(True) for p in state_parts(state))
            states = [s]
            encoded = [parts.encode(inputs[t : t + 1]) for t in range(seq_len)]
            if rnn.batch_first:  # each step goes in as [B, 1, …]
                encoded = [e.transpose(0, 1) for e in encoded]
            for t in range(seq_len):
                _, new = rnn(encoded[t], s if len(s) == 2 else s[0])
                s = state_parts(new)
                states.append(s)
            y_last = parts.head(s[0][-1])
            target = None if targets is None else targets[seq_len - 1]
            loss = loss_fn(y_last) if loss_fn is not None else _default_loss(y_last, target)
            flat = [p for st in states for p in st]
            grads = torch.autograd.grad(loss, flat, allow_unused=True)
        per_state = len(states[0])
        layer_norms: list[list[float]] = []
        for k in range(seq_len, -1, -1):  # k = T … 0, stored as steps back 0 … T
            gs = [grads[k * per_state + j] for j in range(per_state)]
            sq = torch.zeros(rnn.num_layers, dtype=torch.float64)
            for g in gs:
                if g is not None:
                    sq += g.detach().double().pow(2).sum(dim=(1, 2))
            layer_norms.append([math.sqrt(float(v)) for v in sq])
        norms = [math.sqrt(sum(v * v for v in row)) for row in layer_norms]
        jac = jacobian_product_norms(rnn, encoded, states, max_jacobian_dim)
    finally:
        model.train(was_training)
    prefix = "" if isinstance(model, nn.RNNBase) else "rnn."
    prof = _judge(norms, layer_norms, jac, _weights(rnn, prefix), tolerance, _cell_name(rnn))
    prof.meta.update(steps=seq_len, batch=batch, loss="custom" if loss_fn else "default")
    return prof


def _zero_state(rnn: nn.RNNBase, batch: int, ref: Tensor) -> Tensor | tuple[Tensor, Tensor]:
    w = next(p for n, p in rnn.named_parameters() if n == "weight_hh_l0")
    out_size = rnn.proj_size if getattr(rnn, "proj_size", 0) > 0 else rnn.hidden_size
    h = torch.zeros(rnn.num_layers, batch, out_size, dtype=w.dtype, device=w.device)
    if isinstance(rnn, nn.LSTM):
        c = torch.zeros(rnn.num_layers, batch, rnn.hidden_size, dtype=w.dtype, device=w.device)
        return (h, c)
    return h


def _judge(
    norms: list[float],
    layer_norms: list[list[float]],
    jac: list[float] | None,
    weights: list[RecurrentWeight],
    tolerance: float,
    cell: str,
) -> TemporalProfile:
    steps = list(range(len(norms)))
    if not all(math.isfinite(v) for v in norms):
        growth, verdict = math.inf, "exploding"
        evidence = "the gradient reaching earlier steps is not finite"
    else:
        growth = _fit_growth(norms)
        ratio = norms[-1] / norms[1] if len(norms) > 1 and norms[1] > 0 else 1.0
        if growth > 1 + tolerance:
            verdict = "exploding"
        elif growth < 1 / (1 + tolerance):
            verdict = "vanishing"
        else:
            verdict = "stable"
        evidence = (
            f"going back {len(norms) - 1} steps the gradient norm changes by ×{growth:.3g} per "
            f"step (fitted), ×{ratio:.3g} in all"
        )
    if weights:
        top = max(weights, key=lambda w: w.sigma_max)
        evidence += (
            f"; largest recurrent singular value λ₁ = {top.sigma_max:.3g} vs 1/γ = "
            f"{top.bound:g} ({top.condition})"
        )
    return TemporalProfile(
        steps, norms, layer_norms, jac, weights, growth, verdict, evidence + ".", cell
    )


def write_profile(folder: str | Path, prof: TemporalProfile, source: str) -> Path:
    """Write ``folder/profile.png`` (log scale) and ``folder/profile.json`` (strict JSON,
    ``{"kind": "profile", "source": …, "profile": prof.to_dict()}``), atomically.

    Args:
        folder: the output folder (created if needed).
        prof: the profile.
        source: one line saying what was measured.

    Returns:
        The folder.

    Example:
        >>> import tempfile, pathlib
        >>> prof = temporal_profile(nn.RNN(2, 3), torch.ones(5, 1, 2))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     sorted(p.name for p in write_profile(d, prof, "nn.RNN").iterdir())
        ['profile.json', 'profile.png']
    """
    from gradclip.diagnostics.plots import plot_profile
    from gradclip.lm.rundir import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plot_profile([(source, prof)], folder / PROFILE_PLOT)
    doc = {"kind": "profile", "source": source, "profile": prof.to_dict()}
    text = json.dumps(doc, indent=1, allow_nan=False)
    atomic_write_bytes(folder / PROFILE_FILE, text.encode("utf-8"))
    return folder

"""``gradclip demo``: why recurrent gradients explode, and what clipping does about it.

Three short experiments on the CPU, each a few seconds:

1. **Temporal profile.** The norm of ``∂E_T/∂h_k`` for a tanh RNN, going back in time.
   Backpropagation through time multiplies one Jacobian ``W_recᵀ diag(tanh′)`` per
   step, so the profile shrinks geometrically when the recurrent weight's largest
   singular value is below 1 and grows when it is above (Pascanu et al. 2013, §2).
2. **The cliff.** Pascanu's single-unit RNN ``x_t = w·σ(x_{t−1}) + b`` (§2.3, Fig. 6)
   trained by gradient descent to reach ``σ(x_50) = 0.7``, with and without
   :func:`gradclip.clip_by_global_norm`. An unclipped step at the wall jumps across
   the valley onto a plateau; the clipped step stays.
3. **Choosing the threshold.** Pascanu's heuristic from the norms just observed:
   "half to ten times" the average norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import gradclip


def temporal_profile(gain: float, hidden: int, steps: int, seed: int) -> list[float]:
    """``‖∂E/∂h_k‖`` for ``k = T−1 … 0`` of a tanh RNN whose recurrent weight is
    ``gain`` times a random orthogonal matrix, with ``E = ‖h_T‖²``."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, hidden, generator=gen))
    w_rec = (gain * q).requires_grad_()
    inputs = 0.1 * torch.randn(steps, hidden, generator=gen)
    h = torch.zeros(hidden)
    states = []
    for t in range(steps):
        h = torch.tanh(w_rec @ h + inputs[t])
        h.retain_grad()
        states.append(h)
    torch.autograd.backward((states[-1] ** 2).sum())
    return [float(torch.linalg.vector_norm(s.grad)) for s in reversed(states) if s.grad is not None]


@dataclass
class CliffRun:
    losses: list[float]
    norms: list[float]
    w: float
    b: float


def cliff_loss(w: torch.Tensor, b: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """Pascanu's single-unit RNN: ``E = (σ(x_T) − 0.7)²`` with ``x_t = w·σ(x_{t−1}) + b``."""
    x = torch.tensor(0.5, dtype=w.dtype)
    for _ in range(steps):
        x = w * torch.sigmoid(x) + b
    return (torch.sigmoid(x) - 0.7) ** 2


def descend_cliff(w0: float, b0: float, lr: float, steps: int, clip_norm: float | None) -> CliffRun:
    """Plain gradient descent on :func:`cliff_loss`, optionally clipped like TensorFlow."""
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    losses, norms = [], []
    for _ in range(steps):
        loss = cliff_loss(w, b)
        grads = list(torch.autograd.grad(loss, [w, b]))
        if clip_norm is None:
            norm = gradclip.global_norm(grads)
        else:
            clipped, norm = gradclip.clip_by_global_norm(grads, clip_norm)
            grads = [g for g in clipped if g is not None]
        with torch.no_grad():
            w -= lr * grads[0]
            b -= lr * grads[1]
        losses.append(float(loss.detach()))
        norms.append(float(norm))
    return CliffRun(losses, norms, float(w.detach()), float(b.detach()))


def run(seed: int = 0, steps: int = 300, clip_norm: float = 1.0) -> None:
    """Print the three experiments (see the module docstring).

    Args:
        seed: random seed.
        steps: gradient-descent steps on the cliff.
        clip_norm: threshold of the clipped descent.
    """
    torch.manual_seed(seed)

    print("1. Backpropagation through time multiplies one Jacobian per step.")
    print("   ‖∂E_T/∂h_k‖ of a 32-unit tanh RNN, T = 60, for recurrent gains 0.9 and 1.3:\n")
    lags = [0, 10, 20, 30, 40, 50, 59]
    profiles = {g: temporal_profile(g, 32, 60, seed) for g in (0.9, 1.3)}
    print("   steps back  " + "".join(f"{lag:>10d}" for lag in lags))
    for gain, profile in profiles.items():
        print(f"   gain {gain:<5}  " + "".join(f"{profile[lag]:>10.2g}" for lag in lags))
    print(
        "\n   Below gain 1 the long-term components vanish; above it they grow back in time"
        "\n   and dominate the gradient, so a single step can be huge."
    )

    print("\n2. The cliff (Pascanu et al. 2013, Fig. 6): x_t = w·σ(x_{t−1}) + b, target")
    print(f"   σ(x_50) = 0.7, gradient descent, lr 0.5, {steps} steps, from (w, b) = (6, −3):\n")
    plain = descend_cliff(6.0, -3.0, 0.5, steps, None)
    clipped = descend_cliff(6.0, -3.0, 0.5, steps, clip_norm)
    for label, r in (("no clipping", plain), (f"clip at {clip_norm:g}", clipped)):
        n_clipped = sum(n > clip_norm for n in r.norms)
        print(
            f"   {label:<14} final loss {r.losses[-1]:.2e}   (w, b) = ({r.w:5.2f}, {r.b:5.2f})"
            f"   largest norm {max(r.norms):6.2f}   steps above {clip_norm:g}: {n_clipped}"
        )
    jump = max(range(len(plain.norms)), key=plain.norms.__getitem__)
    print(
        f"\n   Without clipping, step {jump} meets the wall (norm {plain.norms[jump]:.1f}) and the"
        "\n   update throws (w, b) across the valley onto a plateau it never leaves."
        "\n   Clipped, the same step is rescaled to the threshold and descent goes on."
    )

    norms = torch.tensor(plain.norms[: max(1, jump)])
    mean = float(norms.mean())
    print("\n3. Choosing the threshold (Pascanu et al., §3.2): take the average norm over many")
    print("   updates; 'values from half to ten times this average can still yield convergence'.")
    print(
        f"   Before the wall the average norm was {mean:.3g}, "
        f"so try {0.5 * mean:.2g} … {10 * mean:.2g}."
    )
    print(
        "\n   In code:  clipped, norm = gradclip.clip_by_global_norm(grads, clip_norm)"
        "\n             # the TensorFlow tutorial's tf.clip_by_global_norm(grads, max_grad_norm)\n"
    )

"""Pascanu's cliff: the single-unit RNN whose loss surface has a wall.

Pascanu, Mikolov & Bengio (2013), §2.3 and Fig. 6, eq. (8)::

    x_t = w·σ(x_{t−1}) + b,   x_0 = 0.5,   E = (σ(x_50) − 0.7)²

with σ the logistic sigmoid and no input. Where the unit's fixed point bifurcates,
``E`` jumps over a tiny change of ``(w, b)``: the gradient there is huge, and so is
the curvature. A full gradient step at the wall throws ``(w, b)`` far across the
valley; the same step clipped to norm ``c`` moves at most ``lr·c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from gradclip import clip_by_global_norm, global_norm

__all__ = [
    "CliffSurface",
    "CliffTrajectory",
    "cliff_loss",
    "cliff_surface",
    "descend",
    "plot_cliff",
]

X0 = 0.5
TARGET = 0.7


def cliff_loss(w: Tensor | float, b: Tensor | float, steps: int = 50) -> Tensor:
    """``E = (σ(x_T) − 0.7)²`` of ``x_t = w·σ(x_{t−1}) + b`` from ``x_0 = 0.5`` (eq. 8).

    ``w`` and ``b`` broadcast against each other, so a grid evaluates in one call.

    Args:
        w: recurrent weight(s); a float is taken as a float64 scalar.
        b: bias(es).
        steps: ``T``, the number of recurrent steps (50 in the paper).

    Returns:
        The loss, with the broadcast shape of ``w`` and ``b``.

    Example:
        >>> round(float(cliff_loss(0.0, 0.0)), 4)  # σ(0) = 0.5 → (0.5 − 0.7)²
        0.04
    """
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {steps}")
    wt = torch.as_tensor(w, dtype=torch.float64) if not isinstance(w, Tensor) else w
    bt = torch.as_tensor(b, dtype=torch.float64) if not isinstance(b, Tensor) else b
    x = torch.full_like(wt + bt, X0)  # the broadcast shape
    for _ in range(steps):
        x = wt * torch.sigmoid(x) + bt
    return (torch.sigmoid(x) - TARGET) ** 2


@dataclass(frozen=True)
class CliffSurface:
    """``loss[i, j] = cliff_loss(w[j], b[i])`` on a regular grid (float64)."""

    w: Tensor
    b: Tensor
    loss: Tensor


def cliff_surface(
    w_range: tuple[float, float] = (-2.0, 10.0),
    b_range: tuple[float, float] = (-6.0, 2.0),
    n: int = 201,
    steps: int = 50,
) -> CliffSurface:
    """The cliff's loss over an ``n × n`` grid of ``(w, b)``.

    Args:
        w_range: ``(low, high)`` of the recurrent weight.
        b_range: ``(low, high)`` of the bias.
        n: points per axis (≥ 2).
        steps: recurrent steps ``T``.

    Returns:
        A :class:`CliffSurface` with ``loss`` of shape ``[n, n]`` (rows are ``b``).

    Example:
        >>> s = cliff_surface((0.0, 1.0), (0.0, 1.0), n=3)
        >>> tuple(s.loss.shape)
        (3, 3)
    """
    if n < 2:
        raise ValueError(f"n must be ≥ 2, got {n}")
    w = torch.linspace(w_range[0], w_range[1], n, dtype=torch.float64)
    b = torch.linspace(b_range[0], b_range[1], n, dtype=torch.float64)
    return CliffSurface(w, b, cliff_loss(w[None, :], b[:, None], steps))


@dataclass(frozen=True)
class CliffTrajectory:
    """Gradient descent on the cliff: ``w[k], b[k]`` before step ``k`` (one more point than
    steps), the loss and the gradient norm (before clipping) at each step, and whether the
    step was clipped."""

    w: list[float]
    b: list[float]
    losses: list[float]
    norms: list[float]
    clipped: list[bool]
    clip: float | None

    @property
    def step_lengths(self) -> list[float]:
        """``‖(w, b)_{k+1} − (w, b)_k‖₂`` of each step (one per loss).

        Example:
            >>> CliffTrajectory([0.0, 3.0], [0.0, 4.0], [1.0], [5.0], [False], None).step_lengths
            [5.0]
        """
        return [
            math.hypot(self.w[i + 1] - self.w[i], self.b[i + 1] - self.b[i])
            for i in range(len(self.losses))
        ]


def descend(
    w0: float,
    b0: float,
    lr: float,
    steps: int,
    clip: float | None = None,
    *,
    horizon: int = 50,
) -> CliffTrajectory:
    """Plain gradient descent ``θ ← θ − lr·g`` on :func:`cliff_loss`, optionally clipped.

    With ``clip = c`` the gradient goes through :func:`gradclip.clip_by_global_norm`
    (``g ← g·c/max(‖g‖, c)``, TensorFlow's ``tf.clip_by_global_norm``, Pascanu's
    Algorithm 1), so no step is longer than ``lr·c``.

    Args:
        w0: starting recurrent weight.
        b0: starting bias.
        lr: learning rate (> 0).
        steps: number of updates (≥ 0).
        clip: global-norm threshold, or ``None`` for no clipping.
        horizon: ``T`` of the loss.

    Returns:
        A :class:`CliffTrajectory`.

    Example:
        >>> t = descend(6.0, -3.0, lr=0.5, steps=3, clip=1.0)
        >>> len(t.w), len(t.losses)
        (4, 3)
    """
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    w = torch.tensor(float(w0), dtype=torch.float64, requires_grad=True)
    b = torch.tensor(float(b0), dtype=torch.float64, requires_grad=True)
    ws, bs, losses, norms, flags = [float(w0)], [float(b0)], [], [], []
    for _ in range(steps):
        loss = cliff_loss(w, b, horizon)
        grads = list(torch.autograd.grad(loss, [w, b]))
        norm = float(global_norm(grads))
        if clip is not None:
            clipped, _ = clip_by_global_norm(grads, clip)
            grads = [g for g in clipped if g is not None]
        with torch.no_grad():
            w -= lr * grads[0]
            b -= lr * grads[1]
        losses.append(float(loss.detach()))
        norms.append(norm)
        flags.append(clip is not None and norm > clip)
        ws.append(float(w.detach()))
        bs.append(float(b.detach()))
    return CliffTrajectory(ws, bs, losses, norms, flags, clip)


def plot_cliff(
    surface: CliffSurface, trajectories: Sequence[tuple[str, CliffTrajectory]], path: str | Path
) -> Path:
    """Draw ``log10 E`` over ``(w, b)`` with the trajectories on top; write a PNG.

    Args:
        surface: from :func:`cliff_surface`.
        trajectories: ``(label, trajectory)`` pairs drawn as lines with markers.
        path: the PNG to write (atomically).

    Returns:
        The path written.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = plot_cliff(cliff_surface(n=5), [("gd", descend(6, -3, 0.5, 2))],
        ...                      pathlib.Path(d) / "cliff.png")
        ...     out.read_bytes()[:4]
        b'\\x89PNG'
    """
    from gradclip.diagnostics import plots

    fig, (ax, loss_ax) = plots.figure(11.5, 4.8, ncols=2)
    z = torch.log10(surface.loss.clamp_min(1e-12)).numpy()
    mesh = ax.pcolormesh(surface.w.numpy(), surface.b.numpy(), z, shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="log₁₀ E₅₀")
    # red (first, on top, thin) over black (wide): both readable on yellow and on blue
    styles = (("#e8202a", 1.1, 4), ("#000000", 2.2, 3), ("#ff9f00", 1.6, 2))
    for (label, tr), (color, lw, z_order) in zip(trajectories, styles, strict=False):
        ax.plot(tr.w, tr.b, "-o", ms=2.2, lw=lw, color=color, label=label, zorder=z_order)
        ax.plot(tr.w[-1], tr.b[-1], "*", ms=12, color=color, mec="white", zorder=5)
        ax.plot(tr.w[0], tr.b[0], "s", color="black", mec="white", ms=7, zorder=6)
        jumps = tr.step_lengths
        if jumps:
            k = max(range(len(jumps)), key=jumps.__getitem__)
            if jumps[k] > 0.1 * (surface.w[-1] - surface.w[0]).item():  # a jump worth naming
                ax.annotate(
                    f"one step: {jumps[k]:.2f}",
                    ((tr.w[k] + tr.w[k + 1]) / 2, (tr.b[k] + tr.b[k + 1]) / 2),
                    xytext=(12, 0),
                    textcoords="offset points",
                    color=color,
                    fontsize=8,
                    bbox={"boxstyle": "round", "fc": "white", "ec": color, "alpha": 0.85},
                )
        loss_ax.semilogy(range(1, len(tr.losses) + 1), tr.losses, color=color, lw=1.4, label=label)
    ax.set_xlim(float(surface.w[0]), float(surface.w[-1]))
    ax.set_ylim(float(surface.b[0]), float(surface.b[-1]))
    ax.set_xlabel("w (recurrent weight)")
    ax.set_ylabel("b (bias)")
    ax.set_title("Pascanu's cliff: x_t = w·σ(x_{t−1}) + b, E = (σ(x₅₀) − 0.7)²", fontsize=9)
    ax.legend(loc="lower left", fontsize=8, title="■ start  ★ end", title_fontsize=8)
    loss_ax.set_xlabel("gradient-descent step")
    loss_ax.set_ylabel("E₅₀ (log)")
    loss_ax.set_title("The loss along each descent", fontsize=9)
    loss_ax.grid(True, which="both", alpha=0.3)
    loss_ax.legend(fontsize=8)
    return plots.save(fig, path)

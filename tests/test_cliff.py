"""Pascanu's cliff against a direct scalar evaluation, and clipping's step bound."""

from __future__ import annotations

import math

import pytest
import torch

from gradclip.diagnostics.cliff import cliff_loss, cliff_surface, descend, plot_cliff

pytestmark = pytest.mark.usefixtures("one_thread")


def scalar_loss(w: float, b: float, steps: int = 50) -> float:
    """The recurrence in plain Python floats (independent of torch)."""
    x = 0.5
    for _ in range(steps):
        x = w / (1.0 + math.exp(-x)) + b
    return (1.0 / (1.0 + math.exp(-x)) - 0.7) ** 2


def test_surface_matches_scalar_evaluation() -> None:
    s = cliff_surface((-1.0, 9.0), (-5.0, 1.0), n=13)
    assert s.loss.shape == (13, 13)
    for i in range(0, 13, 3):
        for j in range(0, 13, 2):
            want = scalar_loss(float(s.w[j]), float(s.b[i]))
            assert float(s.loss[i, j]) == pytest.approx(want, rel=1e-9, abs=1e-15)


def test_loss_broadcasts_and_checks() -> None:
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert cliff_loss(w, 0.5, steps=10).shape == (2,)
    assert float(cliff_loss(2.0, 0.5, steps=10)) == pytest.approx(scalar_loss(2.0, 0.5, 10))
    with pytest.raises(ValueError, match="steps"):
        cliff_loss(1.0, 1.0, steps=-1)
    with pytest.raises(ValueError, match="lr"):
        descend(1.0, 1.0, lr=0.0, steps=1)


def _steps(tr: object) -> list[float]:
    w, b = tr.w, tr.b  # type: ignore[attr-defined]
    return [math.hypot(w[i + 1] - w[i], b[i + 1] - b[i]) for i in range(len(w) - 1)]


def test_clipped_steps_never_exceed_lr_times_threshold() -> None:
    lr, c = 0.5, 1.0
    tr = descend(6.0, -3.0, lr, 200, clip=c)
    assert max(_steps(tr)) <= lr * c * (1 + 1e-9)
    assert any(tr.clipped)
    # every recorded norm is the unclipped gradient's: clipped exactly where it exceeds c
    assert tr.clipped == [n > c for n in tr.norms]


def test_unclipped_step_at_the_wall_jumps_far() -> None:
    lr, c = 0.5, 1.0
    plain = descend(6.0, -3.0, lr, 200)
    k = max(range(len(plain.norms)), key=plain.norms.__getitem__)
    w0, b0 = plain.w[k], plain.b[k]  # the point where descent meets the wall
    jump = _steps(descend(w0, b0, lr, 1))[0]
    held = _steps(descend(w0, b0, lr, 1, clip=c))[0]
    assert jump == pytest.approx(lr * plain.norms[k], rel=1e-9)
    assert jump > 5 * lr * c
    assert held == pytest.approx(lr * c, rel=1e-9)
    # and, over the run, the clipped descent ends lower than the unclipped one
    clipped = descend(6.0, -3.0, lr, 300, clip=c)
    plain = descend(6.0, -3.0, lr, 300)
    assert clipped.losses[-1] < 1e-3 < plain.losses[-1]  # (moved from the old demo's test)


def test_plot_writes_png(tmp_path: object) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "cliff.png"
    s = cliff_surface(n=20)
    plot_cliff(s, [("plain", descend(6.0, -3.0, 0.5, 5))], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

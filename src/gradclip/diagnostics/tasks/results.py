"""The records of a task run: :class:`TaskConfig` (what to train) and :class:`TaskResult`
(what it ended with), JSON-ready.

Example:
    >>> TaskConfig("torder", 50, seed=0, alpha=2.0).method_label
    'none + Ω(α=2)'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TaskConfig", "TaskResult"]


@dataclass(frozen=True)
class TaskConfig:
    """One training run. ``method`` is a clipper spec (``none``, ``norm:max_norm=1``, …);
    ``alpha`` the regulariser's weight (0: none; the paper's MSGD-CR used 4 on temporal
    order, the code's default is 2); ``max_length``, when set, makes the lengths random
    over ``[length, max_length)``."""

    task: str
    length: int
    seed: int
    method: str = "none"
    steps: int = 2000
    lr: float = 0.01
    batch: int = 20
    hidden: int = 50
    init: str = "basic_tanh"
    eval_size: int = 10_000
    check_every: int = 250
    alpha: float = 0.0
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be finite and ≥ 0, got {self.alpha}")
        if self.max_length is not None and self.max_length <= self.length:
            raise ValueError(f"max_length must be > length, got [{self.length}, {self.max_length})")

    @property
    def length_label(self) -> str:
        """``"50"``, or ``"50–200"`` for random lengths in ``[50, 200)``."""
        return str(self.length) if self.max_length is None else f"{self.length}–{self.max_length}"

    @property
    def method_label(self) -> str:
        """The clipper spec, with ``" + Ω(α=2)"`` when the regulariser is on."""
        return self.method if self.alpha == 0 else f"{self.method} + Ω(α={self.alpha:g})"


@dataclass
class TaskResult:
    """What one run ended with: the paper's error and success, divergence, norm statistics,
    the regulariser's mean and last Ω (NaN without it), and subsampled curves
    (``curve_steps``, ``losses``, ``norms``)."""

    config: TaskConfig
    error: float
    success: bool
    diverged: bool
    steps_run: int
    final_loss: float
    norm_mean: float
    norm_max: float
    clip_rate: float
    wall_s: float
    curve_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    events: list[tuple[int, str]] = field(default_factory=list)
    omega_mean: float = math.nan
    omega_last: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become ``None``)."""
        from gradclip.lm.rundir import strict_json

        return strict_json(asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        """Inverse of :meth:`to_dict` (``None`` reads back as NaN)."""
        d = {k: _unfinite(v) for k, v in data.items()}
        d["config"] = TaskConfig(**data["config"])
        d["events"] = [(int(s), str(k)) for s, k in data.get("events", [])]
        return cls(**d)


def _unfinite(v: Any) -> Any:
    if v is None:
        return math.nan
    if isinstance(v, list):
        return [math.nan if x is None else x for x in v]
    return v

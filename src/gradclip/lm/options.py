"""What a training run is given besides its config (:class:`RunOptions`), and how it
ended (:class:`RunResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

__all__ = ["RunOptions", "RunResult"]


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out (not what it computes: that is the config).

    Attributes:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
        metrics: write ``metrics.jsonl``.
        tensorboard: write TensorBoard event files (when tensorboard is installed).
        monitor: attach a :class:`~gradclip.monitor.GradMonitor`: per-layer norms,
            update ratios and events in ``metrics.jsonl``, a gradient summary in
            ``summary.json``.
        progress: show progress: a bar on a terminal, else a line every
            ``progress_seconds``.
        progress_seconds: least time between two plain progress lines.
        refresh_every: steps between two progress updates (each reads the device).
        flush_every: steps between two ``metrics.jsonl`` writes.
        test_chunk: tokens per forward in the batch-1 test pass.
        stop_after: stop (checkpoint saved, status ``stopped``) after this many steps in all.
        handle_signals: SIGINT/SIGTERM stop the run at the next step (main thread only).
        out: where messages go (default ``sys.stdout``).
        distributed: ``"none"``, or ``"ddp"`` / ``"fsdp"`` under ``torchrun``
            (:mod:`gradclip.lm.parallel`); ``None`` on resume: the run's own.

    Example:
        >>> import dataclasses
        >>> quiet = RunOptions(progress=False, tensorboard=False)
        >>> dataclasses.replace(quiet, stop_after=100).stop_after
        100
    """

    device: str | torch.device | None = "auto"
    metrics: bool = True
    tensorboard: bool = True
    monitor: bool = True
    progress: bool = True
    progress_seconds: float = 30.0
    refresh_every: int = 50
    flush_every: int = 200
    test_chunk: int = 100
    stop_after: int | None = None
    handle_signals: bool = True
    out: TextIO | None = None
    distributed: str | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended.

    Attributes:
        run_dir: the run directory.
        status: ``finished``, ``stopped`` or ``diverged``.
        steps: training steps done in all.
        epochs: epochs completed.
        train_ppl: the last completed epoch's training perplexity (``None`` before one).
        valid_ppl: its validation perplexity.
        test_ppl: the test perplexity (``finished`` runs only).
        clip_rate: fraction of all steps whose gradients were clipped.
        wall_seconds: time this call took.
        diverged_step: the step at which the run diverged.
        stop_reason: what stopped it (``"SIGTERM"``, ``"stopped after 100 steps"``).
        signum: the signal that stopped it, if one did.
        history: one record per completed epoch.

    Example:
        >>> r = RunResult(Path("runs/r"), "stopped", 120, 0, None, None, None, 0.25, 3.0,
        ...               stop_reason="SIGTERM", signum=15)
        >>> r.exit_status
        143
    """

    run_dir: Path
    status: str
    steps: int
    epochs: int
    train_ppl: float | None
    valid_ppl: float | None
    test_ppl: float | None
    clip_rate: float | None
    wall_seconds: float
    diverged_step: int | None = None
    stop_reason: str = ""
    signum: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """The CLI's exit status.

        Returns:
            0 finished or stopped by ``stop_after``, 3 diverged, 128 + N stopped
            by signal N (130 SIGINT, 143 SIGTERM).
        """
        if self.status == "diverged":
            return 3
        return 128 + self.signum if self.status == "stopped" and self.signum else 0

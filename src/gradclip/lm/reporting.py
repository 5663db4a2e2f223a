"""What a training run tells the world while it runs: ``metrics.jsonl``, TensorBoard,
the gradient monitor, progress (a bar on a terminal, plain lines otherwise) and
console messages.

Per step nothing is read from the device: :class:`MetricsLog` keeps the step's
0-d tensors and writes them in blocks (one ``torch.stack(...).tolist()`` per
column every ``flush_every`` steps), :class:`LoopMonitor` (a
:class:`~gradclip.monitor.GradMonitor`) buffers its per-tensor norms on the
device until the same flush, and the progress display reads the device every
``refresh_every`` steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from gradclip.lm.rundir import strict_json
from gradclip.monitor import GradMonitor, MemorySink

__all__ = ["METRIC_COLUMNS", "LoopMonitor", "MetricsLog", "Progress", "make_tb_writer", "say"]

#: Per-step values taken from the loss and the step's ``ClipStats``.
METRIC_COLUMNS = ("loss", "norm", "clipped_norm", "threshold", "clipped")


def say(message: str, stream: TextIO | None = None) -> None:
    """Print one line and flush; if the reader went away (``gradclip train | head``),
    stay quiet from then on instead of failing the run.

    Args:
        message: the line.
        stream: where to (default ``sys.stdout``).

    Example:
        >>> say("epoch 1/13  lr 1")
        epoch 1/13  lr 1
    """
    stream = stream or sys.stdout
    try:
        print(message, file=stream, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):  # later writes and exit flush go nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


class LoopMonitor(GradMonitor):
    """The :class:`~gradclip.monitor.GradMonitor` of ``gradclip train``: attached to the
    loop's ``ClippedOptimizer``, it numbers steps like ``metrics.jsonl`` (1, 2, ...)
    and hands its records to :class:`MetricsLog`, which adds them to each step's row:

    * ``layers``: per-layer gradient norms (module prefix: ``embedding``, ``rnn``,
      ``output``), from the clipper's own per-tensor norms;
    * ``update_ratio``: ‖Δθ‖/‖θ‖ per layer, every ``update_ratio_every``-th step;
    * ``skipped``: whether the step was skipped (non-finite gradient under ``skip``);
    * ``events``: the monitor's explosion / vanishing / non-finite events of that step.

    Args:
        model: the model (gives the parameter names).
        optimizer: the :class:`~gradclip.ClippedOptimizer` to observe.
        update_ratio_every: steps between two update-ratio measurements.

    Example:
        >>> import torch
        >>> from gradclip import ClippedOptimizer, make_clipper
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> opt = ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
        ...                        make_clipper("norm", max_norm=1.0))
        >>> monitor = LoopMonitor(model, opt)
        >>> model(torch.ones(1, 2)).sum().backward(); _ = opt.step()
        >>> sorted(monitor.take()[1]["layers"])  # step 1, like metrics.jsonl
        ['0']
    """

    def __init__(self, model: torch.nn.Module, optimizer: Any, update_ratio_every: int = 100):
        self.sink = MemorySink()
        super().__init__(
            model,
            sinks=[self.sink],
            flush_every=2**31 - 1,  # MetricsLog flushes
            update_ratio_every=update_ratio_every,
            warn=False,  # MetricsLog prints the events
        )
        self.attach(optimizer)

    def before_step(self, obs: Any) -> None:
        """Observer hook: the monitor's, with the step numbered from 1."""
        super().before_step(dataclasses.replace(obs, step=obs.step + 1))

    def take(self) -> dict[int, dict[str, Any]]:
        """Flush and return, by step, what each step adds to its ``metrics.jsonl`` row.

        Returns:
            step → ``{"skipped", "layers"[, "update_ratio"][, "events"]}``.
        """
        self.flush()
        extra: dict[int, dict[str, Any]] = {}
        for rec in self.sink.records:
            if rec["kind"] == "step":
                add = {"skipped": rec["skipped"], "layers": rec["layers"]}
                if "update_ratio" in rec:
                    add["update_ratio"] = rec["update_ratio"]
                extra[rec["step"]] = add
            else:
                extra[rec["step"]].setdefault("events", []).append(rec)
        self.sink.records.clear()
        return extra

    def replay(self, rows: Iterable[dict[str, Any]]) -> None:
        """Feed recorded ``metrics.jsonl`` rows to the event detector and the summary,
        so that a resumed run detects and counts exactly as an uninterrupted one.

        Args:
            rows: the rows up to the checkpoint, in step order.
        """
        for row in rows:
            norm = math.nan if row.get("norm") is None else row["norm"]
            layers = {k: math.nan if v is None else v for k, v in row.get("layers", {}).items()}
            events = self.detector.update(row["step"], norm, layers, ())
            rec = {"norm": norm, "layers": layers, "skipped": row.get("skipped", False)}
            self.stats.add({**rec, "clipped": row.get("clipped", False)}, events)


class MetricsLog:
    """Per-step metrics kept as tensors and written to ``metrics.jsonl`` in blocks.

    Every step goes to ``metrics.jsonl`` (strict JSON: a non-finite value is
    ``null``); TensorBoard gets every ``tb_every``-th step (six scalars cost
    about 0.3 ms a row, 0.7 % of a small-config step).

    Args:
        path: the JSONL file (appended to), or ``None``.
        tb_writer: a TensorBoard ``SummaryWriter`` or ``None``.
        flush_every: rows kept before a write.
        tb_every: TensorBoard stride in steps.
        max_loss: a loss above this (or not finite) marks divergence; the loop
            passes 709·T, above which the step's perplexity exp(loss/T) overflows.
        monitor: adds per-layer norms, update ratios and events to the rows.
        events_to: where an event's message is printed (one line per kind per flush).

    Example:
        >>> import io, torch
        >>> log = MetricsLog(None, flush_every=2, max_loss=100.0)
        >>> one = torch.tensor(1.0)
        >>> log.add(1, 0, 1.0, (one, one, one, one, torch.tensor(False)))
        >>> log.add(2, 0, 1.0, (torch.tensor(float("nan")), one, one, one, torch.tensor(False)))
        2
    """

    def __init__(
        self,
        path: Path | None,
        tb_writer: Any = None,
        flush_every: int = 200,
        tb_every: int = 10,
        max_loss: float = math.inf,
        monitor: LoopMonitor | None = None,
        events_to: TextIO | None = None,
    ) -> None:
        self.tb = tb_writer
        self.max_loss = max_loss
        self.monitor = monitor
        self.events_to = events_to
        self.flush_every = flush_every
        self.tb_every = tb_every
        self.rows: list[tuple[int, int, float, tuple[Tensor, ...]]] = []
        self._fh: TextIO | None = None
        if path is not None:
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def add(self, step: int, epoch: int, lr: float, values: tuple[Tensor, ...]) -> int | None:
        """Keep one step's values (``METRIC_COLUMNS`` order); flush every ``flush_every``.

        Args:
            step: the global step (1-based).
            epoch: the 0-based epoch.
            lr: the learning rate.
            values: 0-d tensors in ``METRIC_COLUMNS`` order.

        Returns:
            What :meth:`flush` returned when this call flushed, else ``None``.
        """
        self.rows.append((step, epoch, lr, values))
        return self.flush() if len(self.rows) >= self.flush_every else None

    def flush(self) -> int | None:
        """Write the kept rows.

        Returns:
            The first step of these rows whose loss is not finite or above
            ``max_loss`` (divergence), or ``None``.
        """
        if not self.rows:
            return None
        columns = [
            torch.stack([r[3][j] for r in self.rows]).tolist() for j in range(len(METRIC_COLUMNS))
        ]
        extra = self.monitor.take() if self.monitor is not None else {}
        lines, diverged, told = [], None, set()
        for k, (step, epoch, lr, _) in enumerate(self.rows):
            rec: dict[str, Any] = {"step": step, "epoch": epoch + 1}
            for j, name in enumerate(METRIC_COLUMNS):
                rec[name] = bool(columns[j][k]) if name == "clipped" else columns[j][k]
            rec["lr"] = lr
            rec.update(extra.get(step, {}))
            for event in rec.get("events", []):
                if event["event"] not in told and self.events_to is not None:
                    told.add(event["event"])
                    say(f"gradclip train: {event['message']}", self.events_to)
            if diverged is None and not rec["loss"] <= self.max_loss:  # NaN included
                diverged = step
            lines.append(json.dumps(strict_json(rec), allow_nan=False))
            if self.tb is not None and step % self.tb_every == 0:
                for tag, key in (("loss", "loss"), ("grad_norm", "norm"), ("lr", "lr")):
                    self.tb.add_scalar(f"train/{tag}", rec[key], step)
                for key in ("clipped_norm", "threshold", "clipped"):
                    self.tb.add_scalar(f"train/{key}", float(rec[key]), step)
                for layer, norm in rec.get("layers", {}).items():
                    self.tb.add_scalar(f"grad_norm/{layer}", norm, step)
        if self._fh is not None:
            self._fh.write("\n".join(lines) + "\n")
            self._fh.flush()
        self.rows.clear()
        return diverged

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def make_tb_writer(log_dir: Path, purge_step: int | None = None) -> Any:
    """A TensorBoard ``SummaryWriter`` when tensorboard is installed, else ``None``.

    Args:
        log_dir: the event-file directory.
        purge_step: on resume, the first step to be written again: TensorBoard
            discards the earlier files' events at this step and later ones (events
            written after the checkpoint by the interrupted process).

    Returns:
        The writer, or ``None``.

    Example:
        >>> import tempfile
        >>> tb = make_tb_writer(Path(tempfile.mkdtemp()))
        >>> if tb is not None:
        ...     tb.add_scalar("train/loss", 1.5, 1); tb.close()
    """
    try:
        import tensorboard  # type: ignore[import-untyped]  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class Progress:
    r"""Progress of one epoch: a tqdm bar when ``stream`` is a terminal, otherwise a
    plain line at most every ``seconds`` (so logs of batch jobs show speed too).

    Args:
        total: steps in the epoch.
        desc: e.g. ``"epoch 2/13"``.
        initial: steps already done (on resume).
        enabled: ``False`` shows nothing.
        seconds: least time between two plain lines.
        stream: where to (default ``sys.stderr``).

    Example:
        >>> import io
        >>> out = io.StringIO()  # not a terminal: plain lines
        >>> p = Progress(100, "epoch 1/2", seconds=0.0, stream=out)
        >>> p.update(50, "ppl=300.00"); out.getvalue()
        'epoch 1/2 step 50/100  ppl=300.00\n'
    """

    def __init__(
        self,
        total: int,
        desc: str,
        initial: int = 0,
        enabled: bool = True,
        seconds: float = 30.0,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.desc, self.seconds = total, desc, seconds
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.first = initial
        self.t0 = self.last_line = time.perf_counter()
        self.bar: Any = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit="step", file=self.stream,
                dynamic_ncols=True, leave=False,
            )  # fmt: skip

    def words_per_second(self, done: int, words_per_step: int) -> float:
        """Speed since this epoch's start (or resume).

        Args:
            done: steps of the epoch done.
            words_per_step: B · T.

        Returns:
            Words per second.
        """
        elapsed = time.perf_counter() - self.t0
        return (done - self.first) * words_per_step / max(elapsed, 1e-9)

    def update(self, done: int, postfix: str) -> None:
        """Show that ``done`` steps of the epoch are done, with ``postfix`` (speed, ppl...).

        Args:
            done: steps of the epoch done.
            postfix: the figures to show.
        """
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(done - self.bar.n)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.seconds:
            self.last_line = now
            say(f"{self.desc} step {done}/{self.total}  {postfix}", self.stream)

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()

"""Grids of task runs: parallel jobs, a progress bar, the success table and plot, the run folder.

A tasks run folder holds ``tasks.json`` (``{"kind": "tasks", "settings": …, "results":
[TaskResult.to_dict(), …]}``, strict JSON) and ``success.png`` (success rate
against length, one line per task and method). A cell trained on random lengths
``[lo, hi)`` is labelled ``lo–hi`` in the table and drawn in the plot as one square
marker at the range's midpoint with a horizontal bar spanning the range.
"""

from __future__ import annotations

import json
import math
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from gradclip.diagnostics.tasks.curriculum import CurriculumResult
from gradclip.diagnostics.tasks.generators import TASKS
from gradclip.diagnostics.tasks.results import TaskConfig, TaskResult
from gradclip.diagnostics.workers import end_with_parent

__all__ = [
    "RESULTS_FILE",
    "SUCCESS_PLOT",
    "grid_configs",
    "plot_success",
    "read_curricula",
    "read_results",
    "run_grid",
    "success_table",
    "write_results",
]

C = TypeVar("C")
R = TypeVar("R")

RESULTS_FILE = "tasks.json"
SUCCESS_PLOT = "success.png"


def grid_configs(
    tasks: Sequence[str],
    lengths: Sequence[int | tuple[int, int]],
    seeds: Sequence[int],
    methods: Sequence[str],
    **options: Any,
) -> list[TaskConfig]:
    """Every (task, length, method, seed) combination as a :class:`TaskConfig`.

    A length is an integer ``L`` or a pair ``(lo, hi)``: random lengths in ``[lo, hi)``.

    Example:
        >>> len(grid_configs(["torder"], [20, (50, 200)], [0, 1, 2], ["none", "norm:max_norm=1"]))
        12
    """
    spans = [(n, None) if isinstance(n, int) else (n[0], n[1]) for n in lengths]
    return [
        TaskConfig(task=t, length=lo, seed=s, method=m, max_length=hi, **options)
        for t in tasks
        for lo, hi in spans
        for m in methods
        for s in seeds
    ]


def _init_worker(parent_pid: int, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    end_with_parent(parent_pid)  # a killed parent (SIGTERM, SIGKILL) ends us too
    torch.set_num_threads(threads)


def run_grid(
    run: Callable[[C], R],
    configs: Sequence[C],
    jobs: int = 1,
    progress: bool = True,
    on_result: Callable[[R], None] | None = None,
) -> list[R]:
    """``run(config)`` for every config, as ``map`` does, ``jobs`` at a time in worker
    processes, with a tqdm bar.

    The workers are a ``multiprocessing`` pool (spawned); Ctrl-C terminates them at once.

    The CPU's threads are split between the jobs (``torch.set_num_threads(cpus // jobs)``
    in each worker). Results come back in ``configs`` order.

    Args:
        run: what trains one config, a module-level function (workers import it):
            :func:`train_task` for a :class:`TaskConfig`, or
            :func:`~gradclip.diagnostics.tasks.curriculum.run_curriculum` for a
            :class:`~gradclip.diagnostics.tasks.curriculum.CurriculumConfig`.
        configs: the runs.
        jobs: parallel processes (1 runs in this process).
        progress: show the bar (also off when stderr is not a terminal).
        on_result: called with each result as it finishes.

    Returns:
        One result per config.

    Example:
        >>> from gradclip.diagnostics.tasks import train_task
        >>> cfgs = grid_configs(["add"], [10], [0], ["none"], steps=2, eval_size=10)
        >>> [r.steps_run for r in run_grid(train_task, cfgs, progress=False)]
        [2]
    """
    from tqdm.auto import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be ≥ 1, got {jobs}")
    bar = tqdm(total=len(configs), desc="task runs", unit="run", disable=not progress or None)
    results: list[R | None] = [None] * len(configs)
    try:
        if jobs == 1:
            for i, cfg in enumerate(configs):
                results[i] = _done(run(cfg), bar, on_result)
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            ctx = torch.multiprocessing.get_context("spawn")
            pool = ctx.Pool(jobs, _init_worker, (os.getpid(), threads))
            try:
                items = [(i, run, cfg) for i, cfg in enumerate(configs)]
                for i, res in pool.imap_unordered(_indexed, items):
                    results[i] = _done(res, bar, on_result)
                pool.close()
            except BaseException:  # Ctrl-C or a failed run: stop the workers now
                pool.terminate()
                raise
            finally:
                pool.join()
    finally:
        bar.close()
    return [r for r in results if r is not None]


def _indexed(item: tuple[int, Callable[[C], R], C]) -> tuple[int, R]:
    return item[0], item[1](item[2])


def _done(r: R, bar: Any, cb: Callable[[R], None] | None) -> R:
    bar.update(1)
    cfg = r.config  # type: ignore[attr-defined]
    bar.set_postfix_str(f"{cfg.task} L={cfg.length_label} {cfg.method_label}")
    if cb is not None:
        cb(r)
    return r


Span = tuple[int, int | None]  # (length, max_length)


def _groups(results: Iterable[TaskResult]) -> dict[tuple[str, str], dict[Span, list[TaskResult]]]:
    out: dict[tuple[str, str], dict[Span, list[TaskResult]]] = {}
    for r in results:
        key = (r.config.task, r.config.method_label)
        span = (r.config.length, r.config.max_length)
        out.setdefault(key, {}).setdefault(span, []).append(r)
    return out


def _order(span: Span) -> tuple[int, int]:
    return span[0], span[0] if span[1] is None else span[1]


def _rate(rs: list[TaskResult]) -> float:
    return sum(r.success for r in rs) / len(rs)


def success_table(results: Sequence[TaskResult]) -> str:
    """A Markdown table: success rate (successes/seeds), mean test error, runs diverged,
    mean final training loss (finite runs) and mean updates, per task × method × length
    (``lo–hi`` for random lengths in ``[lo, hi)``; the regulariser, when on, joins the
    method as ``+ Ω(α=…)``).

    Example:
        >>> print(success_table([]))
        | task | method | length | success | mean error | diverged | final loss | mean steps |
        |---|---|---|---|---|---|---|---|
    """
    lines = [
        "| task | method | length | success | mean error | diverged | final loss | mean steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, method), by_len in _groups(results).items():
        for span in sorted(by_len, key=_order):
            rs = by_len[span]
            length = rs[0].config.length_label
            ok = sum(r.success for r in rs)
            err = sum(r.error for r in rs) / len(rs)
            div = sum(r.diverged for r in rs)
            steps = sum(r.steps_run for r in rs) / len(rs)
            losses = [r.final_loss for r in rs if math.isfinite(r.final_loss)]
            loss = f"{sum(losses) / len(losses):.3g}" if losses else "—"
            lines.append(
                f"| {TASKS[task].title} | {method} | {length} | {ok}/{len(rs)} | "
                f"{100 * err:.1f} % | {div} | {loss} | {steps:.0f} |"
            )
    return "\n".join(lines)


def success_axes(ax: Any, results: Sequence[TaskResult]) -> None:
    """Success rate against length, one line per (task, method); the lines are offset by
    0.01 each so that equal rates do not hide one another. A random-length cell
    ``[lo, hi)`` is a square at ``(lo + hi)/2`` with a bar spanning the range, in its
    line's colour. Each point is labelled with its count of successes, ``k/n``."""
    for i, ((task, method), by_len) in enumerate(_groups(results).items()):
        label = f"{TASKS[task].title}, {method}"
        fixed = sorted(n for n, hi in by_len if hi is None)
        color = None
        if fixed:
            ys = [_rate(by_len[(n, None)]) + 0.01 * i for n in fixed]
            (line,) = ax.plot(fixed, ys, "-o", label=label)
            color = line.get_color()
            for n, y in zip(fixed, ys, strict=True):
                _label_count(ax, n, y, by_len[(n, None)], color)
        for lo, hi in sorted(s for s in by_len if s[1] is not None):
            assert hi is not None
            x, y = (lo + hi) / 2, _rate(by_len[(lo, hi)]) + 0.01 * i
            bar = ax.errorbar(
                x,
                y,
                xerr=(hi - lo) / 2,
                fmt="s",
                color=color,
                capsize=3,
                label=None if color else f"{label}, random L",
            )
            color = bar[0].get_color()
            _label_count(ax, x, y, by_len[(lo, hi)], color)
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("success rate (< 1 % wrong of fresh sequences)")
    ax.set_ylim(-0.05, 1.12)  # room for the k/n labels
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _label_count(ax: Any, x: float, y: float, runs: list[TaskResult], color: Any) -> None:
    label = f"{sum(r.success for r in runs)}/{len(runs)}"
    ax.annotate(label, (x, y), xytext=(6, 4), textcoords="offset points", fontsize=7, color=color)


def plot_success(results: Sequence[TaskResult], path: str | Path) -> Path:
    """Write the success-rate-against-length plot as a PNG (atomically).

    Args:
        results: the runs.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    from gradclip.diagnostics import plots

    fig, ax = plots.figure(6.4, 4.0)
    success_axes(ax, results)
    ax.set_title("Pascanu's tasks: 50-unit tanh RNN, SGD with and without clipping", fontsize=9)
    return plots.save(fig, path)


def write_results(
    folder: str | Path,
    results: Sequence[TaskResult],
    settings: dict[str, Any],
    curricula: Sequence[CurriculumResult] = (),
) -> Path:
    """Write ``tasks.json`` (strict JSON) and ``success.png`` into ``folder`` (created if
    needed), each atomically. With ``curricula`` the file also holds them (key
    ``curricula``) and the plot is theirs (:func:`.curriculum_summary.plot_curricula`).

    Args:
        folder: the output folder.
        results: the runs from scratch.
        settings: the command's settings, kept beside the results.
        curricula: the curriculum runs.

    Returns:
        The folder.

    Example:
        >>> import tempfile
        >>> from gradclip.diagnostics.tasks import TaskConfig, train_task
        >>> r = train_task(TaskConfig("add", 10, 0, steps=2, eval_size=10))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = write_results(d, [r], {"steps": 2})
        ...     back, settings = read_results(d)
        >>> back[0].config == r.config, settings
        (True, {'steps': 2})
    """
    from gradclip.diagnostics.tasks.curriculum_summary import plot_curricula
    from gradclip.lm.rundir import atomic_write_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"kind": "tasks", "settings": settings, "results": [r.to_dict() for r in results]}
    if curricula:
        doc["curricula"] = [c.to_dict() for c in curricula]
    text = json.dumps(doc, indent=1, allow_nan=False)
    atomic_write_bytes(folder / RESULTS_FILE, text.encode())
    if curricula:
        plot_curricula(curricula, folder / SUCCESS_PLOT)
    else:
        plot_success(results, folder / SUCCESS_PLOT)
    return folder


def read_results(folder: str | Path) -> tuple[list[TaskResult], dict[str, Any]]:
    """Read ``tasks.json`` back: the results and the settings (see :func:`write_results`).

    Args:
        folder: a folder written by :func:`write_results`.

    Returns:
        ``(results, settings)``.
    """
    doc = _read(folder)
    return [TaskResult.from_dict(r) for r in doc["results"]], doc.get("settings", {})


def read_curricula(folder: str | Path) -> list[CurriculumResult]:
    """Read the curriculum runs of ``tasks.json`` back (empty when it has none).

    Args:
        folder: a folder written by :func:`write_results`.

    Returns:
        The :class:`~gradclip.diagnostics.tasks.curriculum.CurriculumResult` list.
    """
    return [CurriculumResult.from_dict(c) for c in _read(folder).get("curricula", [])]


def _read(folder: str | Path) -> dict[str, Any]:
    doc = json.loads((Path(folder) / RESULTS_FILE).read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise TypeError(f"expected a JSON object, got {type(doc).__name__}")
    return doc

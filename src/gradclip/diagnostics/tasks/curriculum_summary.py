"""Tables and plots of curriculum runs (:mod:`.curriculum`): success against length over
every run of an arm, and each run's climb (the longest length solved against updates).

Example:
    >>> print(curriculum_table([]))
    | task | method | lengths | solved | mean updates to solve |
    |---|---|---|---|---|
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradclip.diagnostics.tasks.curriculum import CurriculumResult
from gradclip.diagnostics.tasks.generators import TASKS

__all__ = [
    "climb_axes",
    "climb_table",
    "curriculum_axes",
    "curriculum_figure",
    "curriculum_table",
    "plot_curricula",
]


def _arms(results: Sequence[CurriculumResult]) -> dict[tuple[str, str], list[CurriculumResult]]:
    arms: dict[tuple[str, str], list[CurriculumResult]] = {}
    for r in results:
        arms.setdefault((r.config.task, r.config.method_label), []).append(r)
    return arms


def _solved(runs: Sequence[CurriculumResult], length: int) -> int:
    return sum(length in r.solved_lengths for r in runs)


def _span(lengths: Sequence[int]) -> str:
    return str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}–{lengths[-1]}"


def curriculum_table(results: Sequence[CurriculumResult]) -> str:
    """A Markdown table of success against length: per task × arm, the runs that solved
    each length (``k/n``, over every run of the arm), consecutive lengths with the same
    count on one row; and the mean updates from the start until the row's first and last
    lengths were solved, over the runs that solved them.

    Args:
        results: the runs.

    Returns:
        The table.
    """
    lines = [
        "| task | method | lengths | solved | mean updates to solve |",
        "|---|---|---|---|---|",
    ]
    for (task, method), runs in _arms(results).items():
        lengths = runs[0].config.lengths
        for count, group in itertools.groupby(lengths, key=lambda n: _solved(runs, n)):
            span = list(group)
            updates = "—"
            if count:
                ends = [_mean_updates(runs, n) for n in (span[0], span[-1])]
                updates = " → ".join(dict.fromkeys(ends))
            lines.append(
                f"| {TASKS[task].title} | {method} | {_span(span)} | {count}/{len(runs)} "
                f"| {updates} |"
            )
    return "\n".join(lines)


def _mean_updates(runs: Sequence[CurriculumResult], length: int) -> str:
    done = [u for r in runs if (u := r.updates_to_solve(length)) is not None]
    return f"{sum(done) / len(done):,.0f}"


def climb_table(results: Sequence[CurriculumResult]) -> str:
    """A Markdown table of each arm's runs: the longest length each seed solved (``—``:
    none), where the first failure happened and how wrong it was, updates, the share of
    updates clipped, the largest gradient norm, and seconds.

    Args:
        results: the runs.

    Returns:
        The table.
    """
    lines = [
        "| task | method | longest solved, by seed | stopped at (wrong) | updates "
        "| clipped | largest norm | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, method), runs in _arms(results).items():
        longest = ", ".join(f"{r.config.seed}: {r.longest_solved or '—'}" for r in runs)
        failed = [r.stages[-1] for r in runs if r.stages and not r.stages[-1].success]
        stops = ", ".join(f"{s.config.length} ({100 * s.error:.0f} %)" for s in failed) or "—"
        updates = [r.updates for r in runs]
        clipped = [100 * r.clip_rate for r in runs]
        peaks = [max(s.norm_max for s in r.stages) for r in runs if r.stages]
        secs = [r.wall_s for r in runs]
        lines.append(
            f"| {TASKS[task].title} | {method} | {longest} | {stops} | {_range(updates, ',.0f')} "
            f"| {_range(clipped, '.0f')} % | {_range(peaks, '.3g')} | {_range(secs, '.0f')} |"
        )
    return "\n".join(lines)


def _range(xs: Sequence[float], fmt: str) -> str:
    if not xs:
        return "—"
    lo, hi = format(min(xs), fmt), format(max(xs), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def curriculum_axes(ax: Any, results: Sequence[CurriculumResult]) -> None:
    """Success rate against length, one step line per task × arm (offset by 0.005 each so
    that equal rates stay visible), in :func:`climb_axes`' colours: its legend serves both."""
    for i, runs in enumerate(_arms(results).values()):
        lengths = runs[0].config.lengths
        rates = [_solved(runs, n) / len(runs) + 0.005 * i for n in lengths]
        ax.step(lengths, rates, where="mid", marker=".", color=f"C{i}")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("runs that solved L (< 1 % wrong)")
    ax.set_ylim(-0.05, 1.1)
    ax.grid(True, alpha=0.3)


def climb_axes(ax: Any, results: Sequence[CurriculumResult]) -> None:
    """The longest length solved against updates, one line per run, one colour per arm;
    an ``x`` marks where a run stopped on an unsolved stage. The arms' legend goes below
    the figure (a constrained-layout figure, as :func:`gradclip.diagnostics.plots.figure`
    makes)."""
    for colour, ((task, method), runs) in enumerate(_arms(results).items()):
        for n, r in enumerate(runs):
            xs, ys, total, best = [0], [0], 0, 0
            for s in r.stages:
                total += s.steps_run
                best = s.config.length if s.success else best
                xs.append(total)
                ys.append(best)
            ax.step(xs, ys, where="post", color=f"C{colour}", alpha=0.8, lw=1.2,
                    label=f"{TASKS[task].title}, {method}" if n == 0 else None)  # fmt: skip
            if r.stages and not r.stages[-1].success:
                ax.plot(xs[-1], ys[-1], "x", color=f"C{colour}")
    ax.set_xlabel("SGD updates")
    ax.set_ylabel("longest length solved")
    ax.grid(True, alpha=0.3)
    ax.figure.legend(fontsize=7, loc="outside lower center", ncols=2)


def curriculum_figure(results: Sequence[CurriculumResult], height: float = 4.6) -> Any:
    """Both panels side by side: success against length (:func:`curriculum_axes`) and the
    climbs (:func:`climb_axes`), the arms' legend below.

    Args:
        results: the runs.
        height: inches (the width is 11).

    Returns:
        The matplotlib figure.
    """
    from gradclip.diagnostics import plots

    fig, (left, right) = plots.figure(11, height, ncols=2)
    curriculum_axes(left, results)
    climb_axes(right, results)
    return fig


def plot_curricula(results: Sequence[CurriculumResult], path: str | Path) -> Path:
    """Write :func:`curriculum_figure` as a PNG, atomically, with a title.

    Args:
        results: the runs.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    from gradclip.diagnostics import plots

    fig = curriculum_figure(results)
    fig.suptitle("Pascanu's tasks by a curriculum: one tanh RNN lengthened in stages", fontsize=9)
    return plots.save(fig, path)

"""``gradclip sweep``: short training runs over thresholds × methods × seeds.

Every cell is one run directory under the sweep directory, trained with
:func:`gradclip.lm.train` under one budget (``steps`` or ``epochs``), then
evaluated on the validation split. A cell is done when its ``cell.json`` exists;
re-running the same sweep skips done cells and retrains the others from
scratch (an interrupted cell's directory is replaced). ``jobs > 1`` runs cells
in that many processes, each with ``threads // jobs`` torch threads.

Methods are clipper specs (``none``, ``norm``, ``value``, ``autoclip:percentile=25``,
...). A method whose clipper has a threshold option (``max_norm`` or
``clip_value``) gets one cell per threshold; the others (``none``, ``autoclip``,
``zclip``, ...) one cell per seed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradclip.clippers import clipper_options, format_clipper_spec, parse_clipper_spec
from gradclip.diagnostics.workers import end_with_parent
from gradclip.errors import UserError

__all__ = [
    "THRESHOLD_OPTIONS", "Cell", "SweepResult", "make_cells", "perplexity_text", "run_cell",
    "run_sweep",
]  # fmt: skip

THRESHOLD_OPTIONS = ("max_norm", "clip_value")
CELL_FILE = "cell.json"
COLUMNS = (
    "method", "threshold", "seed", "status", "steps", "valid_ppl", "train_ppl", "diverged",
    "diverged_step", "clip_rate", "wall_seconds", "run_dir",
)  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One run of the grid.

    Attributes:
        method: the method as given (a clipper spec).
        threshold: the threshold, or ``None`` for a method without one.
        seed: the config's seed.
        spec: the full clipper spec the run trains with.
    """

    method: str
    threshold: float | None
    seed: int
    spec: str

    @property
    def name(self) -> str:
        """The cell's directory name, e.g. ``norm-t5-s1``."""
        slug = re.sub(r"[^A-Za-z0-9.]+", "_", self.method).strip("_")
        thr = "" if self.threshold is None else f"-t{self.threshold:g}"
        return f"{slug}{thr}-s{self.seed}"


def make_cells(
    methods: Sequence[str], thresholds: Sequence[float], seeds: Sequence[int]
) -> list[Cell]:
    """The grid, validated: every method is a known clipper spec.

    Args:
        methods: clipper specs, e.g. ``["none", "norm", "zclip"]``.
        thresholds: thresholds for methods that take one (> 0, finite).
        seeds: seeds.

    Returns:
        The cells, method-major.

    Raises:
        UserError: empty grid, unknown method (with a did-you-mean), bad threshold.

    Example:
        >>> [c.name for c in make_cells(["none", "norm"], [1, 5], [1])]
        ['none-s1', 'norm-t1-s1', 'norm-t5-s1']
    """
    if not methods or not seeds:
        raise UserError("empty sweep grid: give at least one method and one seed")
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, int | float) or not (0 < t < math.inf):
            raise UserError(f"sweep threshold must be a positive finite number, got {t!r}")
    cells: list[Cell] = []
    for method in methods:
        try:
            name, options = parse_clipper_spec(method)
            key = next((k for k in THRESHOLD_OPTIONS if k in clipper_options(name)), None)
        except (TypeError, ValueError) as exc:
            raise UserError(f"sweep method {method!r}: {exc}") from None
        if key is not None and key not in options:
            if not thresholds:
                raise UserError(f"empty sweep grid: method {method!r} needs --thresholds")
            for t in thresholds:
                spec = format_clipper_spec(name, {**options, key: float(t)})
                cells += [Cell(method, float(t), s, spec) for s in seeds]
        else:
            spec = format_clipper_spec(name, options)
            cells += [Cell(method, None, s, spec) for s in seeds]
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise UserError("sweep grid has duplicate cells (a method or threshold given twice)")
    return cells


def _valid_ppl(run_dir: Path, corpus: Any) -> float:
    from gradclip.lm.evaluation import evaluate
    from gradclip.lm.rundir import read_run
    from gradclip.lm.session import load_run_checkpoint

    run = read_run(run_dir)
    _, model = load_run_checkpoint(run, torch.device("cpu"))
    with torch.no_grad():
        return evaluate(model, corpus.valid, run.config.batch_size, run.config.num_steps)


def run_cell(
    cell: Cell,
    sweep_dir: str | Path,
    config: str,
    data: str | Path,
    *,
    steps: int | None = None,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train one cell and write its ``cell.json``; return its row.

    Args:
        cell: the cell.
        sweep_dir: the sweep directory (the cell's run directory goes inside).
        config: a built-in config name or TOML path.
        data: the corpus directory.
        steps: step budget (evaluated on the validation split at the end).
        epochs: epoch budget (``max_max_epoch``); exactly one of the two.
        overrides: config fields to set in every cell (e.g. ``learning_rate``).
        threads: torch threads for this cell.

    Returns:
        The row (see ``COLUMNS``).
    """
    from gradclip.lm import RunOptions, load_config, load_corpus, train
    from gradclip.lm.rundir import read_run, write_json

    if threads:
        torch.set_num_threads(threads)
    fields = {**(overrides or {}), "clip": cell.spec, "seed": cell.seed}
    if epochs is not None:
        fields["max_max_epoch"] = epochs
    cfg, _ = load_config(config, fields)
    run_dir = Path(sweep_dir) / cell.name
    if run_dir.exists():  # an interrupted cell: start it again
        shutil.rmtree(run_dir)
    corpus = load_corpus(data, vocab_size=cfg.vocab_size)
    options = RunOptions(
        device="cpu", tensorboard=False, progress=False, stop_after=steps,
        handle_signals=False, out=io.StringIO(),
    )  # fmt: skip
    result = train(cfg, corpus, run_dir, options=options)
    if result.status == "diverged":
        ppl = math.inf
    elif steps is not None:
        ppl = _valid_ppl(run_dir, corpus)
    else:
        ppl = result.valid_ppl if result.valid_ppl is not None else math.nan
    row = {
        "method": cell.method,
        "threshold": cell.threshold,
        "seed": cell.seed,
        "status": result.status,
        "steps": result.steps,
        "valid_ppl": ppl,
        "train_ppl": read_run(run_dir).tail_train_ppl(),
        "diverged": result.status == "diverged" or not math.isfinite(ppl),
        "diverged_step": result.diverged_step,
        "clip_rate": result.clip_rate,
        "wall_seconds": result.wall_seconds,
        "run_dir": cell.name,
    }
    write_json(run_dir / CELL_FILE, row)
    return row


def _read_cell(sweep_dir: Path, cell: Cell) -> dict[str, Any] | None:
    path = sweep_dir / cell.name / CELL_FILE
    if not path.is_file():
        return None
    try:
        row: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if row.get("method") != cell.method:
        return None
    if "train_ppl" not in row:  # a cell.json from before the column: read it off the metrics
        from gradclip.lm.rundir import read_run

        try:
            row["train_ppl"] = read_run(sweep_dir / cell.name).tail_train_ppl()
        except UserError:
            row["train_ppl"] = math.nan
    return row


def perplexity_text(ppl: float | None) -> str:
    """A perplexity for a table: two decimals, or three significant digits once it is
    past a million (a run that blew up without a non-finite loss), ``-`` when absent.

    >>> perplexity_text(112.3456), perplexity_text(5.8e22), perplexity_text(None)
    ('112.35', '5.8e+22', '-')
    """
    if ppl is None:
        return "-"
    return f"{ppl:.2f}" if ppl < 1e6 else f"{ppl:.3g}"


@dataclass
class SweepResult:
    """The rows of a sweep (one per cell, grid order) and what was reused.

    Attributes:
        sweep_dir: the sweep directory.
        rows: one dict per cell (``COLUMNS``); ``valid_ppl`` is ``inf`` for a
            diverged cell.
        trained: names of the cells trained by this call (the rest were done).
    """

    sweep_dir: Path
    rows: list[dict[str, Any]]
    trained: list[str]

    def means(self) -> list[dict[str, Any]]:
        """One row per (method, threshold), grid order: the mean validation and training
        perplexities over its finite seeds (``nan`` when every seed diverged), ``seeds``
        and ``diverged`` (how many seeds blew up)."""
        groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
        for r in self.rows:
            groups.setdefault((r["method"], r["threshold"]), []).append(r)
        out = []
        for (method, threshold), cells in groups.items():
            ok = [r for r in cells if math.isfinite(r["valid_ppl"] or math.inf)]
            train = [x for r in ok if math.isfinite(x := r.get("train_ppl") or math.inf)]
            out.append(
                {"method": method, "threshold": threshold,
                 "valid_ppl": sum(r["valid_ppl"] for r in ok) / len(ok) if ok else math.nan,
                 "train_ppl": sum(train) / len(train) if train else math.nan,
                 "seeds": len(cells), "diverged": len(cells) - len(ok)}
            )  # fmt: skip
        return out

    def best(self) -> dict[str, Any] | None:
        """The :meth:`means` row with the lowest mean (seeds are averaged before comparing:
        with several seeds, the best single cell is mostly the luckiest seed). A setting
        with a diverged seed only counts when every setting had one."""
        ok = [m for m in self.means() if math.isfinite(m["valid_ppl"])]
        ok = [m for m in ok if not m["diverged"]] or ok
        return min(ok, key=lambda m: (m["diverged"], m["valid_ppl"])) if ok else None

    def table(self) -> str:
        """Aligned text: method, threshold, seed, valid ppl, train ppl (``Run.tail_train_ppl``),
        diverged, clip rate, seconds."""
        head = f"{'method':<22} {'threshold':>9} {'seed':>4} {'valid ppl':>10} {'train ppl':>10} "
        head += f"{'diverged':>8} "
        lines = [head + f"{'clip rate':>9} {'seconds':>8}"]
        for r in self.rows:
            thr = "-" if r["threshold"] is None else f"{r['threshold']:g}"
            ppl, train = r["valid_ppl"], r.get("train_ppl")
            rate = r["clip_rate"]
            lines.append(
                f"{r['method']:<22} {thr:>9} {r['seed']:>4} "
                f"{perplexity_text(ppl):>10} {perplexity_text(train):>10} "
                f"{('yes' if r['diverged'] else 'no'):>8} "
                f"{(f'{rate:.1%}' if rate is not None else '-'):>9} {r['wall_seconds']:>8.1f}"
            )
        return "\n".join(lines)

    def write(self) -> None:
        """Write ``sweep.json`` and ``sweep.csv`` (strict JSON: inf as ``null``)."""
        from gradclip.lm.rundir import atomic_write_bytes, strict_json

        payload = json.dumps(strict_json({"rows": self.rows}), indent=2, allow_nan=False)
        atomic_write_bytes(self.sweep_dir / "sweep.json", (payload + "\n").encode())
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.sweep_dir / "sweep.csv", buf.getvalue().encode())

    def plot(self, path: str | Path | None = None) -> Path:
        """The plot of :func:`~gradclip.diagnostics.plots.plot_sweep`."""
        from gradclip.diagnostics.plots import plot_sweep

        return plot_sweep(self, path or self.sweep_dir / "sweep.png")


def run_sweep(
    sweep_dir: str | Path,
    config: str,
    data: str | Path,
    *,
    methods: Sequence[str],
    thresholds: Sequence[float],
    seeds: Sequence[int] = (1,),
    steps: int | None = None,
    epochs: int | None = None,
    overrides: dict[str, Any] | None = None,
    jobs: int = 1,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SweepResult:
    """Run (or finish) a sweep; write ``sweep.json``, ``sweep.csv`` and ``sweep.png``.

    Args:
        sweep_dir: the sweep directory (created).
        config: a built-in config name or TOML path.
        data: the corpus directory.
        methods: clipper specs (see :func:`make_cells`).
        thresholds: thresholds for methods with one.
        seeds: seeds.
        steps: step budget; exactly one of ``steps`` and ``epochs``.
        epochs: epoch budget.
        overrides: config fields for every cell.
        jobs: cells run at once (processes).
        threads: total torch threads, split across jobs (default: the current count).
        progress: called ``(done, total)`` as cells finish.

    Returns:
        The :class:`SweepResult`.
    """
    if (steps is None) == (epochs is None):
        raise UserError("sweep needs exactly one budget: --steps or --epochs")
    for name, v in (("steps", steps), ("epochs", epochs), ("jobs", jobs)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise UserError(f"--{name} must be a positive integer, got {v!r}")
    cells = make_cells(methods, thresholds, seeds)
    from gradclip.lm import load_config, load_corpus

    cfg, _ = load_config(config, dict(overrides or {}))  # bad config/override: fail before any run
    load_corpus(data, vocab_size=cfg.vocab_size)
    root = Path(sweep_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for c in cells:
        row = _read_cell(root, c)
        if row is None:
            todo.append(c)
        else:
            rows[c.name] = row
    total_threads = threads or torch.get_num_threads()
    per_job = max(1, total_threads // max(1, min(jobs, len(todo) or 1)))
    kw: dict[str, Any] = dict(steps=steps, epochs=epochs, overrides=overrides, threads=per_job)
    done = len(rows)
    if progress:
        progress(done, len(cells))
    if jobs == 1 or len(todo) <= 1:
        for c in todo:
            rows[c.name] = run_cell(c, root, config, data, **kw)
            done += 1
            if progress:
                progress(done, len(cells))
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        init = (end_with_parent, (os.getpid(),))  # a killed sweep leaves no orphan cell
        with ProcessPoolExecutor(jobs, ctx, *init) as pool:
            futures = {pool.submit(run_cell, c, root, config, data, **kw): c for c in todo}
            for fut in as_completed(futures):
                rows[futures[fut].name] = fut.result()
                done += 1
                if progress:
                    progress(done, len(cells))
    result = SweepResult(root, [rows[c.name] for c in cells], [c.name for c in todo])
    result.write()
    result.plot()
    return result

"""``gradclip sweep``: short training runs over thresholds × methods × seeds.

Example: ``gradclip sweep --config small --data DIR --methods none,norm
--thresholds 0.5,1,2,5,10 --seeds 1 --steps 300 --sweep-dir sweeps/small``.
Each cell is a run directory inside ``--sweep-dir``; run the same command again
after an interruption and only unfinished cells train. Writes ``sweep.json``,
``sweep.csv`` and ``sweep.png`` (validation perplexity against threshold).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from gradclip.cli.flags import add_command, add_progress_flag, positive_int
from gradclip.cli.suggest import parse_set
from gradclip.diagnostics.sweep import perplexity_text, run_sweep
from gradclip.errors import UserError


def _list(kind: type, flag: str) -> Any:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag}: expected comma-separated {kind.__name__}s, got {text!r}"
            ) from None

    return parse


def register(subparsers: Any) -> None:
    """Add ``gradclip sweep``."""
    p = add_command(
        subparsers,
        "sweep",
        help="train short runs over a grid of thresholds, methods and seeds",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--config", default="small", help="built-in config or TOML file")
    p.add_argument("--data", required=True, metavar="DIR", help="corpus directory")
    p.add_argument("--sweep-dir", required=True, metavar="DIR", help="where the cells go")
    p.add_argument(
        "--methods", type=_list(str, "--methods"), default=["none", "norm"],
        help="comma-separated clipper specs; 'none' is no clipping",
    )  # fmt: skip
    p.add_argument(
        "--thresholds", type=_list(float, "--thresholds"), default=[],
        help="comma-separated thresholds for methods that take one (norm, value, tensor-norm)",
    )  # fmt: skip
    p.add_argument("--seeds", type=_list(int, "--seeds"), default=[1], help="comma-separated seeds")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=positive_int, metavar="N", help="training steps per cell")
    budget.add_argument("--epochs", type=positive_int, metavar="N", help="epochs per cell")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="config override for every cell"
    )
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="cells in parallel")
    p.add_argument(
        "--threads", type=positive_int, metavar="N",
        help="torch threads in all, split across --jobs (default: the current count)",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_progress_flag(p)
    p.set_defaults(func=_run_sweep)


def _run_sweep(args: argparse.Namespace) -> int:
    """``gradclip sweep``: runs the grid, prints the table, returns 0."""
    bar = None
    if not args.no_progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc="sweep", unit="cell", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    if not args.methods:
        raise UserError("empty sweep grid: --methods is empty")
    try:
        result = run_sweep(
            args.sweep_dir, args.config, args.data,
            methods=args.methods, thresholds=args.thresholds, seeds=args.seeds,
            steps=args.steps, epochs=args.epochs, overrides=parse_set(args.set),
            jobs=args.jobs, threads=args.threads, progress=progress,
        )  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        from gradclip.lm.rundir import strict_json

        print(json.dumps(strict_json({"rows": result.rows}), allow_nan=False))
        return 0
    print(result.table())
    reused = len(result.rows) - len(result.trained)
    print(
        f"{len(result.trained)} cell(s) trained, {reused} already done; "
        f"results in {result.sweep_dir}/sweep.json, sweep.csv, sweep.png"
    )
    best = result.best()
    if best is not None and any(m["seeds"] > 1 for m in result.means()):
        print(_means_table(result.means(), best["valid_ppl"]))
    if best is not None:
        thr = "" if best["threshold"] is None else f" at {best['threshold']:g}"
        over = f"mean over {best['seeds']} seeds" if best["seeds"] > 1 else "one seed"
        ppl = perplexity_text(best["valid_ppl"])
        print(f"best: {best['method']}{thr}, valid ppl {ppl} ({over})")
    return 0


def _means_table(means: list[dict[str, Any]], best: float) -> str:
    """Each setting's means over its seeds, and its distance from the best mean."""
    lines = [
        "mean over seeds:",
        f"{'method':<22} {'threshold':>9} {'seeds':>5} {'valid ppl':>10} {'vs best':>8} "
        f"{'train ppl':>10} {'diverged':>8}",
    ]
    for m in means:
        thr = "-" if m["threshold"] is None else f"{m['threshold']:g}"
        ratio = m["valid_ppl"] / best
        gap = (
            "-"
            if not math.isfinite(ratio)
            else f"{ratio - 1:+.1%}"
            if ratio < 10
            else f"{ratio:.3g}x"
        )
        ppl, train = perplexity_text(m["valid_ppl"]), perplexity_text(m["train_ppl"])
        lines.append(
            f"{m['method']:<22} {thr:>9} {m['seeds']:>5} {ppl:>10} {gap:>8} {train:>10} "
            f"{m['diverged']:>8}"
        )
    return "\n".join(lines)

"""``gradclip tasks``: Pascanu's long-range tasks, trained with and without clipping.

A 50-unit tanh RNN (Pascanu, Mikolov & Bengio 2013, §4.1) is trained with plain SGD
on each task × length × method × seed; a run succeeds when fewer than 1 % of 10,000
fresh sequences are wrong (the paper's criterion). Prints the success-rate table and
writes ``OUT/tasks.json`` and ``OUT/success.png`` (success rate against length).
Tasks: torder (temporal order), torder3 (3-bit), add, mul, perm (random
permutation), mem (noiseless memorization). ``--method`` is a clipper spec and may
repeat (default: ``none`` and ``norm:max_norm=1``, the paper's threshold).

``--lengths`` lists fixed lengths and ranges: ``--lengths 20,50,50-200`` trains at
L = 20, at L = 50, and on random lengths, one drawn uniformly from [50, 200) per
minibatch and per validation chunk of 1,000 (the official code's scheme; the paper's
random-length experiment used 50-200). ``--alpha A`` adds the norm-preserving
regulariser Ω of eq. (9) with weight A to the recurrent weight's gradient before the
clip: clipping + ``--alpha`` is the paper's MSGD-CR (α = 4 on temporal order; the code's
default is 2).
"""

from __future__ import annotations

import argparse
import math
import re
import time

from gradclip.cli.flags import add_command, add_progress_flag, positive_float, positive_int
from gradclip.diagnostics.plots import output_folder
from gradclip.diagnostics.tasks import TASKS, min_length
from gradclip.diagnostics.tasks.grid import (
    RESULTS_FILE,
    SUCCESS_PLOT,
    grid_configs,
    run_grid,
    success_table,
    write_results,
)
from gradclip.errors import UserError


def _lengths(text: str) -> list[int | tuple[int, int]]:
    """``"20,50-200"`` → ``[20, (50, 200)]``; ``LO-HI`` means random lengths in [LO, HI)."""
    values: list[int | tuple[int, int]] = []
    for item in (v.strip() for v in text.split(",")):
        if not item:
            continue
        span = re.fullmatch(r"(\d+)\s*-\s*(\d+)", item)
        if span:
            lo, hi = int(span[1]), int(span[2])
            if hi <= lo:
                raise argparse.ArgumentTypeError(f"range {item!r} must have LO < HI")
            values.append((lo, hi))
            continue
        try:
            values.append(int(item))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be comma-separated lengths L or ranges LO-HI, got {text!r}"
            ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"must list at least one length, got {text!r}")
    return values


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be finite and ≥ 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        subparsers,
        "tasks",
        "Pascanu's six long-range tasks: success rate with/without clipping",
        (__doc__ or "").replace("``", ""),
    )
    p.add_argument("--tasks", default="torder", help=f"comma-separated: {', '.join(TASKS)}")
    p.add_argument(
        "--lengths",
        type=_lengths,
        default=[20, 50],
        help="comma-separated lengths L and ranges LO-HI (random L in [LO, HI) per minibatch)",
    )
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds per cell (0 … N−1)")
    p.add_argument(
        "--method",
        action="append",
        metavar="SPEC",
        help="clipper spec, repeatable (default: none and norm:max_norm=1)",
    )
    p.add_argument("--steps", type=positive_int, default=2000, help="SGD updates per run (most)")
    p.add_argument(
        "--lr", type=positive_float, default=0.01, help="SGD learning rate (paper: 0.01)"
    )
    p.add_argument(
        "--alpha",
        type=_alpha,
        default=0.0,
        help="weight of the regulariser Ω (Pascanu et al. 2013, eq. 9); 0 = none",
    )
    p.add_argument("--batch", type=positive_int, default=20, help="minibatch (paper: 20)")
    p.add_argument("--hidden", type=positive_int, default=50, help="hidden units (paper: 50)")
    p.add_argument(
        "--init", choices=("basic_tanh", "smart_tanh"), default="basic_tanh", help="init"
    )
    p.add_argument("--eval-size", type=positive_int, default=10_000, help="fresh test sequences")
    p.add_argument("--jobs", type=positive_int, default=1, help="parallel processes")
    p.add_argument("--out", default="gradclip-tasks", metavar="DIR", help="output folder")
    add_progress_flag(p)
    p.set_defaults(func=run_tasks)


def run_tasks(args: argparse.Namespace) -> int:
    """Run the grid, print the table, write the folder; return 0."""
    from gradclip import make_clipper_from_spec

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASKS:
            raise UserError(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    if not tasks:
        raise UserError("--tasks is empty")
    for t in tasks:
        for n in args.lengths:
            lo = n if isinstance(n, int) else n[0]
            if lo < min_length(t):
                raise UserError(f"--lengths: {t} needs L ≥ {min_length(t)}, got {lo}")
    output_folder(args.out)
    methods = args.method or ["none", "norm:max_norm=1"]
    for m in methods:
        try:
            make_clipper_from_spec(m)
        except ValueError as exc:
            raise UserError(f"--method {m!r}: {exc}") from None
    settings = {
        "tasks": tasks,
        "lengths": [n if isinstance(n, int) else f"{n[0]}-{n[1]}" for n in args.lengths],
        "seeds": args.seeds,
        "methods": methods,
        "steps": args.steps,
        "lr": args.lr,
        "alpha": args.alpha,
        "batch": args.batch,
        "hidden": args.hidden,
        "init": args.init,
        "eval_size": args.eval_size,
        "jobs": args.jobs,
    }
    configs = grid_configs(
        tasks,
        args.lengths,
        range(args.seeds),
        methods,
        steps=args.steps,
        lr=args.lr,
        batch=args.batch,
        hidden=args.hidden,
        init=args.init,
        eval_size=args.eval_size,
        alpha=args.alpha,
    )
    t0 = time.perf_counter()
    results = run_grid(configs, jobs=args.jobs, progress=not args.no_progress)
    settings["wall_s"] = round(time.perf_counter() - t0, 1)
    out = write_results(args.out, results, settings)
    print(success_table(results))
    print(f"\n{len(results)} runs in {settings['wall_s']} s with {args.jobs} job(s)")
    print(f"wrote {out / RESULTS_FILE} and {out / SUCCESS_PLOT}")
    return 0

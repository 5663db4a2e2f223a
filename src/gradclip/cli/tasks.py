"""``gradclip tasks``: Pascanu's long-range tasks, trained with and without clipping.

A 50-unit tanh RNN (Pascanu, Mikolov & Bengio 2013, §4.1) is trained with plain SGD
on each task × length × method × seed; a run succeeds when fewer than 1 % of 10,000
fresh sequences are wrong (the paper's criterion). Prints the success-rate table and
writes ``OUT/tasks.json`` and ``OUT/success.png`` (success rate against length).
Tasks: torder (temporal order), torder3 (3-bit), add, mul, perm (random
permutation), mem (noiseless memorization). ``--method`` is a clipper spec and may
repeat (default: ``none`` and ``norm:max_norm=1``, the paper's threshold).
"""

from __future__ import annotations

import argparse
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


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"must list at least one integer, got {text!r}")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        subparsers,
        "tasks",
        "Pascanu's six long-range tasks: success rate with/without clipping",
        (__doc__ or "").replace("``", ""),
    )
    p.add_argument("--tasks", default="torder", help=f"comma-separated: {', '.join(TASKS)}")
    p.add_argument("--lengths", type=_ints, default=[20, 50], help="comma-separated lengths L")
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
            if n < min_length(t):
                raise UserError(f"--lengths: {t} needs L ≥ {min_length(t)}, got {n}")
    output_folder(args.out)
    methods = args.method or ["none", "norm:max_norm=1"]
    for m in methods:
        try:
            make_clipper_from_spec(m)
        except ValueError as exc:
            raise UserError(f"--method {m!r}: {exc}") from None
    settings = {
        "tasks": tasks,
        "lengths": args.lengths,
        "seeds": args.seeds,
        "methods": methods,
        "steps": args.steps,
        "lr": args.lr,
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
    )
    t0 = time.perf_counter()
    results = run_grid(configs, jobs=args.jobs, progress=not args.no_progress)
    settings["wall_s"] = round(time.perf_counter() - t0, 1)
    out = write_results(args.out, results, settings)
    print(success_table(results))
    print(f"\n{len(results)} runs in {settings['wall_s']} s with {args.jobs} job(s)")
    print(f"wrote {out / RESULTS_FILE} and {out / SUCCESS_PLOT}")
    return 0

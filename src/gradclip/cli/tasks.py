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
default is 2). ``--alpha 0,2`` runs every method both without and with Ω.

``--curriculum START:STOP:STEP`` trains one model per method × α × seed at L = START
until it meets the criterion, then at START + STEP with the same weights, and so on up to
STOP; the first stage not solved within ``--steps`` updates ends the run. ``--lr-after``
and ``--method-after`` change the learning rate and the clipper after the first stage.
The table then gives, per length, the runs that solved it, and the plot the success rate
against length beside each run's climb. Temporal order at 50-200, as in docs/why-clip.md:
gradclip tasks --curriculum 50:200:5 --init smart_tanh --lr 0.1 --lr-after 0.01
--method none --method norm:max_norm=1 --alpha 0,2 --steps 8000 --seeds 4 --jobs 2
"""

from __future__ import annotations

import argparse
import math
import re
import time

from gradclip.cli.flags import add_command, add_progress_flag, positive_float, positive_int
from gradclip.diagnostics.plots import output_folder
from gradclip.diagnostics.tasks import TASKS, TaskResult, min_length, train_task
from gradclip.diagnostics.tasks.curriculum import (
    curriculum_configs,
    curriculum_lengths,
    run_curriculum,
)
from gradclip.diagnostics.tasks.curriculum_summary import climb_table, curriculum_table
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


def _alphas(text: str) -> list[float]:
    """``"0,2"`` → ``[0.0, 2.0]``: weights of Ω, each finite and ≥ 0."""
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be numbers, got {text!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"must be finite and ≥ 0, got {text!r}")
        values.append(value)
    return list(dict.fromkeys(values))


def _curriculum(text: str) -> tuple[int, ...]:
    """``"50:200:5"`` → ``(50, 55, …, 200)``."""
    parts = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*:\s*(\d+)\s*", text)
    try:
        if parts is None:
            raise ValueError
        return curriculum_lengths(int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be START:STOP:STEP with 1 ≤ START ≤ STOP and STEP ≥ 1, got {text!r}"
        ) from None


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
        help="comma-separated lengths L and ranges LO-HI (random L in [LO, HI) per "
        "minibatch); default 20,50",
    )
    p.add_argument(
        "--curriculum",
        type=_curriculum,
        metavar="START:STOP:STEP",
        help="instead of --lengths: one model lengthened from START to STOP by STEP",
    )
    p.add_argument("--seeds", type=positive_int, default=3, help="seeds per cell (0 … N−1)")
    p.add_argument(
        "--method",
        action="append",
        metavar="SPEC",
        help="clipper spec, repeatable (default: none and norm:max_norm=1)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=2000,
        help="SGD updates per run (most); per stage with --curriculum",
    )
    p.add_argument(
        "--lr", type=positive_float, default=0.01, help="SGD learning rate (paper: 0.01)"
    )
    p.add_argument(
        "--lr-after",
        type=positive_float,
        help="with --curriculum: the learning rate after the first stage (default: --lr)",
    )
    p.add_argument(
        "--method-after",
        metavar="SPEC",
        help="with --curriculum: the clipper spec after the first stage (default: --method)",
    )
    p.add_argument(
        "--alpha",
        type=_alphas,
        default=[0.0],
        help="weights of the regulariser Ω (Pascanu et al. 2013, eq. 9), comma-separated; 0 = none",
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
    """Run the grid (or the curricula), print the tables, write the folder; return 0."""
    from gradclip import make_clipper_from_spec

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASKS:
            raise UserError(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    if not tasks:
        raise UserError("--tasks is empty")
    curriculum = args.curriculum is not None
    if curriculum and args.lengths is not None:
        raise UserError("--lengths and --curriculum exclude each other: pick one")
    if not curriculum and (args.lr_after is not None or args.method_after is not None):
        raise UserError("--lr-after and --method-after need --curriculum")
    lengths = args.curriculum if curriculum else args.lengths or [20, 50]
    for t in tasks:
        lo = min(n if isinstance(n, int) else n[0] for n in lengths)
        if lo < min_length(t):
            flag = "--curriculum" if curriculum else "--lengths"
            raise UserError(f"{flag}: {t} needs L ≥ {min_length(t)}, got {lo}")
    methods = args.method or ["none", "norm:max_norm=1"]
    for flag, m in [("--method", m) for m in methods] + [("--method-after", args.method_after)]:
        try:
            if m is not None:
                make_clipper_from_spec(m)
        except ValueError as exc:
            raise UserError(f"{flag} {m!r}: {exc}") from None
    output_folder(args.out)
    shared = {
        "batch": args.batch,
        "hidden": args.hidden,
        "init": args.init,
        "eval_size": args.eval_size,
    }
    settings = {
        "tasks": tasks,
        "lengths": [n if isinstance(n, int) else f"{n[0]}-{n[1]}" for n in lengths],
        "seeds": args.seeds,
        "methods": methods,
        "steps": args.steps,
        "lr": args.lr,
        "alpha": args.alpha,
        **shared,
        "jobs": args.jobs,
    }
    t0 = time.perf_counter()
    if curriculum:
        step = lengths[1] - lengths[0] if len(lengths) > 1 else 1
        settings |= {"curriculum": f"{lengths[0]}:{lengths[-1]}:{step}"}
        settings["lr_after"] = args.lr_after
        settings["method_after"] = args.method_after
        runs = curriculum_configs(
            tasks,
            lengths,
            range(args.seeds),
            methods,
            args.alpha,
            stage_steps=args.steps,
            lr=args.lr,
            lr_after=args.lr_after,
            method_after=args.method_after,
            **shared,
        )
        curricula = run_grid(run_curriculum, runs, args.jobs, not args.no_progress)
        results: list[TaskResult] = []
        count = len(curricula)
    else:
        configs = [
            c
            for alpha in args.alpha
            for c in grid_configs(
                tasks, lengths, range(args.seeds), methods, steps=args.steps, lr=args.lr,
                alpha=alpha, **shared,
            )
        ]  # fmt: skip
        results = run_grid(train_task, configs, args.jobs, not args.no_progress)
        curricula = []
        count = len(results)
    settings["wall_s"] = round(time.perf_counter() - t0, 1)
    out = write_results(args.out, results, settings, curricula)
    if curricula:
        print(curriculum_table(curricula), climb_table(curricula), sep="\n\n")
    else:
        print(success_table(results))
    print(f"\n{count} runs in {settings['wall_s']} s with {args.jobs} job(s)")
    print(f"wrote {out / RESULTS_FILE} and {out / SUCCESS_PLOT}")
    return 0

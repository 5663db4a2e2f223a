"""Temporal order at lengths 50 to 200 by a curriculum: one 50-unit tanh RNN, lengthened
in stages.

Pascanu et al. (2013, §4.1.1 and Fig. 7) train at each length from scratch for up to
5 million updates. Within a CPU budget of minutes that fails here from length 100 on (see
``docs/why-clip.md``). This pilot trains one model at ``--lengths``' first length until
it meets the paper's criterion at that length: every 250 updates 1,000 fresh sequences
are checked, and below 1 % wrong ``--eval-size`` fresh ones decide. It then moves to the
next length with the same weights, and so on. A stage not solved within
``--stage-steps`` updates ends the run. After the first stage the learning rate drops
to ``--lr-after``: at 0.1 throughout, all four pilot runs fell back to chance, at lengths 70 to
90; at 0.03, five of the six runs that solved length 50 did so later, at 75 to 190.

The pieces are gradclip's own: ``TaskRNN``, the task generator, the error criterion and
``gradclip tasks``' own update (``sgd_step``: the loss, the regulariser Ω with
``--alpha``, and a ``ClippedOptimizer`` around plain SGD
with the ``--method`` clipper (``none`` for the unclipped control; ``--method-after none``
takes the clip away once the first stage is solved).)

    python benchmarks/temporal_order_curriculum.py --seeds 0,1,2,3 \\
        --method norm:max_norm=1 --alpha 2 --lr 0.1 --lr-after 0.01 --out curriculum.json

Prints one line per stage and writes every stage of every run to ``--out`` (JSON);
``--plot PNG A.json,B.json`` draws the longest length solved against updates, one colour
per file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gradclip import ClippedOptimizer
from gradclip.cli.flags import nonnegative_int, positive_float, positive_int
from gradclip.clippers import make_clipper_from_spec
from gradclip.diagnostics.tasks import TASKS
from gradclip.diagnostics.tasks.criteria import SUCCESS_ERROR, evaluate, screened_error
from gradclip.diagnostics.tasks.generators import generate, min_length
from gradclip.diagnostics.tasks.train import TaskRNN, sgd_step
from gradclip.lm.files import atomic_write_bytes

TASK = "torder"
CHECK_EVERY = 250


def run_curriculum(
    seed: int,
    lengths: list[int],
    *,
    method: str = "norm:max_norm=1",
    alpha: float = 2.0,
    lr: float = 0.1,
    lr_after: float = 0.01,
    method_after: str | None = None,
    stage_steps: int = 8000,
    eval_size: int = 10_000,
    batch: int = 20,
    on_stage: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[TaskRNN, list[dict[str, Any]]]:
    """Train one model through ``lengths``; returns it and one record per stage reached."""
    spec = TASKS[TASK]
    torch.manual_seed(seed)
    model = TaskRNN(spec, 50, "smart_tanh")
    opt = ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=lr), make_clipper_from_spec(method)
    )
    gen = torch.Generator().manual_seed(seed + 1)
    t0, total, stages = time.perf_counter(), 0, []
    for index, length in enumerate(lengths):
        if index == 1:
            for group in opt.param_groups:
                group["lr"] = lr_after
            if method_after is not None:  # plain SGD keeps no state: only the clip changes
                opt = ClippedOptimizer(opt.optimizer, make_clipper_from_spec(method_after))
        solved, clipped, norm_max, losses, diverged = False, 0, 0.0, [], False
        for step in range(1, stage_steps + 1):
            loss, stats, _ = sgd_step(model, opt, generate(TASK, length, batch, gen), alpha)
            total += 1
            norm, value = float(stats.norm), float(loss)
            clipped += bool(stats.clipped)
            losses.append(value)
            if not (math.isfinite(norm) and math.isfinite(value)):
                diverged = True
                break
            norm_max = max(norm_max, norm)
            if step % CHECK_EVERY == 0:
                model.eval()
                full = screened_error(model, TASK, length, eval_size, seed=total)
                if full is not None:
                    error, solved = full, full < SUCCESS_ERROR
                model.train()
                if solved:
                    break
        if not solved:
            model.eval()
            error = math.nan if diverged else evaluate(model, TASK, length, eval_size)
            model.train()
        tail = losses[-50:]
        stages.append(
            {
                "seed": seed,
                "length": length,
                "solved": solved,
                "diverged": diverged,
                "updates": step,
                "total_updates": total,
                "error": error,
                "clip_rate": clipped / step,
                "norm_max": norm_max,
                "final_loss": sum(tail) / len(tail),
                "wall_s": time.perf_counter() - t0,
            }
        )
        if on_stage is not None:
            on_stage(stages[-1])
        if not solved:
            break
    return model, stages


def _seeds(text: str) -> list[int]:
    return [nonnegative_int(x) for x in text.split(",")]


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text!r}")
    return value


def _lengths(text: str) -> list[int]:
    lengths = [positive_int(x) for x in text.split(",")]
    if lengths[0] < min_length(TASK):
        raise argparse.ArgumentTypeError(f"lengths must be ≥ {min_length(TASK)}, got {text!r}")
    if any(b <= a for a, b in itertools.pairwise(lengths)):
        raise argparse.ArgumentTypeError(f"lengths must increase, got {text!r}")
    return lengths


def _print_stage(s: dict[str, Any]) -> None:
    print(
        f"seed {s['seed']} L {s['length']:>3}: {'solved' if s['solved'] else 'FAILED'} "
        f"after {s['updates']} updates ({s['total_updates']} in all), "
        f"{100 * s['error']:.2f} % wrong, {100 * s['clip_rate']:.0f} % clipped, "
        f"largest norm {s['norm_max']:.3g}, {s['wall_s']:.0f} s",
        flush=True,
    )


def _arm_label(args: dict[str, Any]) -> str:
    label = "plain SGD" if args["method"] == "none" else f"clip ({args['method']})"
    if args.get("method_after") == "none":
        label += ", then plain SGD"
    return label + (f" + Ω (α={args['alpha']:g})" if args["alpha"] else "")


def plot_runs(files: list[Path], path: Path) -> Path:
    """Length solved against updates, one line per run, one colour per ``--out`` file."""
    from gradclip.diagnostics import plots

    fig, ax = plots.figure(6.4, 4.0)
    for colour, file in enumerate(files):
        data = json.loads(file.read_text())
        by_seed: dict[int, list[dict[str, Any]]] = {}
        for stage in data["stages"]:
            by_seed.setdefault(stage["seed"], []).append(stage)
        for n, stages in enumerate(by_seed.values()):
            solved = [s for s in stages if s["solved"]]
            xs = [0] + [s["total_updates"] for s in solved] + [stages[-1]["total_updates"]]
            ys = [0] + [s["length"] for s in solved]
            ys.append(ys[-1])
            ax.step(
                xs,
                ys,
                where="post",
                color=f"C{colour}",
                alpha=0.8,
                label=_arm_label(data["args"]) if n == 0 else None,
            )
            if not stages[-1]["solved"]:
                ax.plot(xs[-1], ys[-1], "x", color=f"C{colour}")
    ax.set_xlabel("SGD updates")
    ax.set_ylabel("longest length solved (< 1 % wrong)")
    ax.set_title("Temporal order by a curriculum: 50-unit tanh RNN, one line per seed", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return plots.save(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=_seeds, default=[0, 1], help="comma-separated seeds")
    p.add_argument(
        "--lengths",
        type=_lengths,
        default=list(range(50, 205, 5)),
        help="comma-separated stage lengths (default 50, 55, …, 200)",
    )
    p.add_argument("--method", default="norm:max_norm=1", help="clipper spec ('none': no clip)")
    p.add_argument("--method-after", help="clipper spec after the first stage (default: --method)")
    p.add_argument("--alpha", type=_alpha, default=2.0, help="weight of Ω (0: none)")
    p.add_argument(
        "--lr", type=positive_float, default=0.1, help="learning rate of the first stage"
    )
    p.add_argument("--lr-after", type=positive_float, default=0.01, help="learning rate after it")
    p.add_argument("--stage-steps", type=positive_int, default=8000, help="most updates per stage")
    p.add_argument(
        "--eval-size", type=positive_int, default=10_000, help="fresh sequences per stage"
    )
    p.add_argument("--batch", type=positive_int, default=20, help="minibatch")
    p.add_argument("--out", type=Path, help="JSON file for every stage of every run")
    p.add_argument(
        "--plot",
        nargs=2,
        metavar=("PNG", "JSONS"),
        help="instead of training: draw the runs of comma-separated --out files to PNG",
    )
    args = p.parse_args(argv)
    if args.plot is not None:
        files = [Path(f) for f in args.plot[1].split(",")]
        try:
            print(f"wrote {plot_runs(files, Path(args.plot[0]))}")
        except (OSError, ValueError, KeyError) as e:  # a missing, empty or foreign file
            p.error(f"--plot: {e}")
        return
    if args.out is not None and not args.out.parent.is_dir():
        p.error(f"--out: no folder {args.out.parent}")
    for spec in (args.method, args.method_after):
        if spec is not None:
            try:
                make_clipper_from_spec(spec)
            except ValueError as e:
                p.error(f"clipper spec {spec!r}: {e}")
    torch.set_num_threads(1)
    records = []
    for seed in args.seeds:
        _, stages = run_curriculum(
            seed,
            args.lengths,
            method=args.method,
            alpha=args.alpha,
            lr=args.lr,
            lr_after=args.lr_after,
            method_after=args.method_after,
            stage_steps=args.stage_steps,
            eval_size=args.eval_size,
            batch=args.batch,
            on_stage=_print_stage,
        )
        records.extend(stages)
    if args.out is not None:
        record = {"args": vars(args) | {"out": str(args.out)}, "stages": records}
        atomic_write_bytes(args.out, json.dumps(record, indent=1).encode())


if __name__ == "__main__":
    main()

"""``gradclip demo``: why we clip, shown: three trainings, the temporal profile, the cliff.

Runs in about a minute on a CPU (well under three on 2 cores), with no download.
See :mod:`gradclip.diagnostics.demo` for the story and the settings.
"""

from __future__ import annotations

import argparse

from gradclip.cli.flags import add_command, add_progress_flag, nonnegative_int, positive_int
from gradclip.diagnostics.plots import output_folder


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``gradclip demo``."""
    p = add_command(
        subparsers,
        "demo",
        help="why clip, shown: RNN trained with/without clipping, profile, cliff, report (~1 min)",
    )
    p.add_argument("--out", default="gradclip-demo", metavar="DIR", help="output folder")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
    p.add_argument("--steps", type=positive_int, default=1500, help="most SGD updates per run")
    p.add_argument("--quick", action="store_true", help="tiny budget (for tests; not conclusive)")
    add_progress_flag(p)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """``gradclip demo``: tells the story, writes ``DIR/report.html``; returns 0."""
    from gradclip.diagnostics.demo import run_demo as demo

    output_folder(args.out)
    demo(
        args.out, seed=args.seed, steps=args.steps, quick=args.quick, progress=not args.no_progress
    )
    return 0

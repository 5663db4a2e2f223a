"""``gradclip demo``: why RNN gradients explode and what clipping does about it.

The experiments live in :mod:`gradclip.diagnostics.demo`.
"""

from __future__ import annotations

import argparse
from typing import Any

from gradclip.cli.flags import add_command, nonnegative_int, positive_float, positive_int


def register(subparsers: Any) -> None:
    """Add ``gradclip demo``."""
    p = add_command(
        subparsers,
        "demo",
        help="show why RNN gradients explode and what clipping does (about 10 s on a CPU)",
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
    p.add_argument(
        "--steps", type=positive_int, default=300, help="gradient-descent steps on the cliff"
    )
    p.add_argument(
        "--clip-norm", type=positive_float, default=1.0, help="threshold for the clipped run"
    )
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """``gradclip demo``: prints the story, returns 0."""
    from gradclip.diagnostics.demo import run

    run(args.seed, args.steps, args.clip_norm)
    return 0

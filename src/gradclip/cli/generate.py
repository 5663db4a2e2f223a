"""``gradclip generate RUN_DIR``: sample text from a run's checkpoint."""

from __future__ import annotations

import argparse
from typing import Any

from gradclip.cli.flags import (
    add_command,
    add_device_flags,
    device_from_args,
    nonnegative_int,
    positive_float,
    positive_int,
)
from gradclip.lm.sample import sample
from gradclip.lm.session import open_trained


def register(subparsers: Any) -> None:
    """Add ``gradclip generate``.

    Args:
        subparsers: the object ``add_subparsers`` returned.
    """
    p = add_command(subparsers, "generate", help="sample text from a run's checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a gradclip train run directory")
    p.add_argument("--length", type=positive_int, default=100, metavar="N", help="tokens to sample")
    p.add_argument(
        "--temperature", type=positive_float, default=1.0, metavar="X",
        help="softmax temperature τ > 0",
    )  # fmt: skip
    p.add_argument("--seed", type=nonnegative_int, default=0, metavar="N", help="sampling seed")
    p.add_argument("--prompt", default="", help="text to condition on (tokenised like the corpus)")
    add_device_flags(p)
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    """Print text sampled from ``args.run_dir``'s checkpoint; exit status 0."""
    run, model, _ = open_trained(args.run_dir, device_from_args(args))
    tokens = run.info["tokens"]
    print(sample(model, run.vocab, tokens, args.prompt, args.length, args.temperature, args.seed))
    return 0

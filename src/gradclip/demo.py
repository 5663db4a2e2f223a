"""``gradclip demo``: placeholder replaced below."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="show exploding gradients and what clipping does")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return 0

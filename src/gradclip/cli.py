"""The ``gradclip`` command line.

Each command lives in its own module that exposes ``register(subparsers)``;
the parser it adds sets ``func`` (taking the parsed namespace, returning an
exit status). Errors a user can fix (bad paths, bad values, bad text) are
reported as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gradclip import __version__

# Modules that add sub-commands; each has register(subparsers) -> None.
COMMAND_MODULES = ("gradclip.demo", "gradclip.lm.commands")


class UsageError(ValueError):
    """An input problem the user can fix; reported in one line with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradclip",
        description="Gradient clipping and exploding-gradient diagnostics for PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"gradclip {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"gradclip {args.command}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, OSError, UnicodeDecodeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"gradclip {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``gradclip`` command line: one module per command, found automatically.

Every module of this package that defines ``register(subparsers)`` adds its
command: a new command is one new file (``cli/NAME.py``), nothing else. The
parser it adds sets ``func``, which takes the parsed namespace and returns the
exit status. Shared flag helpers live in :mod:`gradclip.cli.flags`.

Exit statuses: 0 success; 2 a usage or input error
(:class:`~gradclip.errors.UserError` or an argparse error), printed as one line
``gradclip COMMAND: error: MESSAGE``; 3 a training run diverged; 130/143
stopped by SIGINT/SIGTERM (checkpoint saved); 141 the reader of stdout went
away (``| head``), quietly. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

from gradclip import __version__
from gradclip.cli.flags import Parser
from gradclip.errors import UserError

__all__ = ["build_parser", "command_modules", "main"]


def command_modules() -> Iterator[ModuleType]:
    """The modules of :mod:`gradclip.cli` that define ``register``, by name.

    Returns:
        An iterator over the imported modules.

    Example:
        >>> "gradclip.cli.train" in [m.__name__ for m in command_modules()]
        True
    """
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            if callable(getattr(module, "register", None)):
                yield module


def build_parser() -> Parser:
    """The ``gradclip`` parser with every discovered command.

    Returns:
        The parser (a :class:`~gradclip.cli.flags.Parser`).

    Example:
        >>> build_parser().parse_args(["generate", "runs/r", "--length", "5"]).length
        5
    """
    parser = Parser(
        prog="gradclip",
        description="Gradient clipping and exploding-gradient diagnostics for PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"gradclip {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gradclip`` with ``argv`` (default ``sys.argv[1:]``).

    Args:
        argv: the arguments.

    Returns:
        The exit status (see the module docstring).

    Example:
        >>> main(["evaluate", "/nonexistent/run"])  # the one-line error goes to stderr
        2
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"gradclip {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gradclip {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):  # nothing more reaches the closed pipe
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

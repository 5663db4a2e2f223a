"""Flag helpers shared by every ``gradclip`` command.

* :class:`Parser`: an ``ArgumentParser`` whose errors are one line
  (``gradclip COMMAND: error: ...``, exit 2) and whose help shows defaults;
* ``type=`` callables: :func:`positive_int`, :func:`nonnegative_int`,
  :func:`positive_float`;
* :func:`add_command`: a sub-command parser with the shared formatter;
* :func:`add_device_flags` / :func:`device_from_args`: ``--device`` and ``--threads``;
* :func:`add_progress_flag`: ``--no-progress``.
"""

from __future__ import annotations

import argparse
import math
import re
from typing import Any, NoReturn

import torch

from gradclip.lm.session import resolve_device, set_threads

__all__ = [
    "HelpFormatter",
    "Parser",
    "add_command",
    "add_device_flags",
    "add_progress_flag",
    "device_from_args",
    "nonnegative_int",
    "positive_float",
    "positive_int",
]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after each option's help, except where there is no
    default to show (``None``, ``False``, or the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action) or text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reports a usage error in one line and exits 2.

    Example:
        >>> p = Parser(prog="gradclip demo")
        >>> _ = p.add_argument("--steps", type=positive_int, default=3)
        >>> p.parse_args(["--steps", "5"]).steps
        5
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit 2."""
        # "argument --steps: must be ..." reads better as "--steps must be ..."
        message = re.sub(r"^argument (\S+): must be", r"\1 must be", message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, text: str, rule: str, ok: Any) -> Any:
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """``type=`` for an integer ≥ 1.

    Args:
        text: the flag's value.

    Returns:
        The integer; anything else raises ``argparse.ArgumentTypeError``.

    Example:
        >>> positive_int("3")
        3
    """
    return int(_number(int, text, "a positive integer", lambda v: v >= 1))


def nonnegative_int(text: str) -> int:
    """``type=`` for an integer ≥ 0 (a seed; a count that may be zero).

    Args:
        text: the flag's value, e.g. ``"0"``.

    Returns:
        The integer; ``"-1"`` raises ``argparse.ArgumentTypeError`` (argparse then
        reports ``--seed must be a non-negative integer, got '-1'``).
    """
    return int(_number(int, text, "a non-negative integer", lambda v: v >= 0))


def positive_float(text: str) -> float:
    """``type=`` for a finite number > 0 (``nan``, ``inf``, 0 rejected).

    Args:
        text: the flag's value.

    Returns:
        The number.

    Example:
        >>> positive_float("0.5")
        0.5
        >>> positive_float("nan")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be positive and finite, got 'nan'
    """
    rule = "positive and finite"
    return float(_number(float, text, rule, lambda v: math.isfinite(v) and v > 0))


def fraction(text: str) -> float:
    """``type=`` for a number in [0, 1) (``nan``, negatives and 1 rejected).

    Args:
        text: the flag's value.

    Returns:
        The number.

    Example:
        >>> fraction("0.003")
        0.003
        >>> fraction("-0.1")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a fraction in [0, 1), got '-0.1'
    """
    return float(_number(float, text, "a fraction in [0, 1)", lambda v: 0 <= v < 1))


def add_command(subparsers: Any, name: str, help: str, description: str | None = None) -> Parser:
    """Add sub-command ``name`` with the shared one-line errors and defaults in help.

    Args:
        subparsers: the object ``add_subparsers`` returned.
        name: the command.
        help: one line for ``gradclip --help``.
        description: the command's ``--help`` text (default: ``help``).

    Returns:
        The command's parser.

    Example:
        >>> sub = Parser(prog="gradclip").add_subparsers()
        >>> p = add_command(sub, "hello", help="say hello")
        >>> _ = p.add_argument("--times", type=positive_int, default=1, help="how often")
        >>> "(default: 1)" in p.format_help()
        True
    """
    parser: Parser = subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=HelpFormatter
    )
    return parser


def add_device_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device {auto,cpu,cuda}`` and ``--threads N``.

    Args:
        parser: a parser or argument group.

    Example:
        >>> p = Parser(prog="gradclip x"); add_device_flags(p)
        >>> vars(p.parse_args(["--threads", "2"]))
        {'device': 'auto', 'threads': 2}
    """
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N"
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads (default: one per core, or $OMP_NUM_THREADS)",
    )


def device_from_args(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and resolve ``--device`` (a missing CUDA is a UserError).

    Args:
        args: parsed flags of :func:`add_device_flags`.

    Returns:
        The device.
    """
    set_threads(args.threads)
    return resolve_device(args.device)


def add_progress_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--no-progress``: no progress bar or progress lines.

    Args:
        parser: a parser or argument group.
    """
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (on a terminal) or progress lines (otherwise)",
    )

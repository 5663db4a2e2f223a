"""Clipper options, declared once: name, type, default, help and validation.

Each clipper lists its :class:`Option` declarations in ``options``; the
constructor, :func:`~gradclip.clippers.make_clipper`, the spec grammar
(:mod:`~gradclip.clippers.spec`), ``repr``, the CLI's help and the docs all
read them. :func:`validate_options` is the one place where option values are
checked, so a value is rejected the same way whichever door it comes through.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

from torch import Tensor

from gradclip.ops import check_norm_type, check_threshold

__all__ = [
    "COMMON",
    "NONFINITE",
    "NONFINITE_POLICIES",
    "NORM_TYPE",
    "NonFinite",
    "Option",
    "choice",
    "number_in",
    "positive_int",
    "suggest",
    "threshold",
    "validate_options",
]

NonFinite: TypeAlias = Literal["propagate", "error", "skip"]
NONFINITE_POLICIES: tuple[str, ...] = ("propagate", "error", "skip")
Check: TypeAlias = Callable[[Any, str], Any]


@dataclasses.dataclass(frozen=True)
class Option:
    """One clipper option.

    Attributes:
        name: the keyword, as in ``make_clipper(name, **{option.name: value})``.
        type: what a spec value is parsed as: ``float``, ``int``, ``str`` or
            ``tuple`` (a ``+``-joined list of names).
        default: the value when not given.
        help: one line for ``--help`` and the docs.
        check: ``check(value, name) -> normalised value``; raises ``TypeError``
            or ``ValueError`` naming the option.
        optional: ``None`` is accepted (spelled ``none`` in a spec).
        kw_only: keyword-only in the constructor.
    """

    name: str
    type: type
    default: Any
    help: str
    check: Check
    optional: bool = False
    kw_only: bool = False

    def validate(self, value: Any) -> Any:
        """Check and normalise a value of this option.

        Args:
            value: the value given (``None`` for an optional option).

        Returns:
            The value to store (e.g. an int becomes a float).
        """
        if value is None and self.optional:
            return None
        return self.check(value, self.name)


def suggest(word: str, choices: Sequence[str]) -> str:
    """The nearest-name hint of error messages.

    Args:
        word: the unknown word.
        choices: the known words.

    Returns:
        ``"; did you mean 'x'? "`` for the closest of ``choices``, or ``" "``: it
        goes between the unknown word and the list of choices.

    Example:
        >>> suggest("nrom", ["none", "norm"])
        "; did you mean 'norm'? "
        >>> "unknown clipper 'bogus'" + suggest("bogus", ["none", "norm"]) + "(choose from ...)"
        "unknown clipper 'bogus' (choose from ...)"
    """
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}? " if close else " "


def validate_options(
    who: str, options: Sequence[Option], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Bind ``args``/``kwargs`` to ``options`` and validate every value.

    Args:
        who: the clipper's name, for messages.
        options: the clipper's declarations, in order.
        args: positional values (bound to the leading non-keyword-only options).
        kwargs: keyword values.

    Returns:
        Every option's value (defaults filled in), in declaration order.

    Example:
        >>> validate_options("x", [NORM_TYPE], (), {"norm_type": "inf"})
        {'norm_type': inf}
    """
    names = [o.name for o in options]
    positional = [o.name for o in options if not o.kw_only]
    if len(args) > len(positional):
        raise TypeError(f"{who} takes at most {len(positional)} positional options")
    given = dict(zip(positional, args, strict=False))
    for key, value in kwargs.items():
        if key not in names:
            raise ValueError(
                f"clipper {who!r} has no option {key!r}{suggest(key, names)}"
                f"(options: {', '.join(names)})"
            )
        if key in given:
            raise TypeError(f"{who}: option {key!r} given twice")
        given[key] = value
    return {o.name: o.validate(given[o.name]) if o.name in given else o.default for o in options}


# --------------------------------------------------------------------------- checks
def threshold(*, allow_inf: bool = True, allow_tensor: bool = False) -> Check:
    """A clipping threshold: a positive number (zero, negative, NaN, bools rejected).

    Args:
        allow_inf: accept ``inf``.
        allow_tensor: accept a 0-d tensor (taken unchecked: checking would sync).

    Returns:
        The check.
    """

    def check(value: Any, name: str) -> Any:
        checked = check_threshold(value, name, allow_zero=False, allow_inf=allow_inf)
        if isinstance(checked, Tensor) and not allow_tensor:
            raise TypeError(f"{name} must be a number")
        return checked

    return check


def number_in(
    lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False, why: str = ""
) -> Check:
    """A real number (not a bool, not NaN) in the interval from ``lo`` to ``hi``.

    Args:
        lo: lower end.
        hi: upper end.
        lo_open: exclude ``lo``.
        hi_open: exclude ``hi``.
        why: replaces "in" in the message ("must be <why> [lo, hi]").

    Returns:
        The check (it returns a float).
    """
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def check(value: Any, name: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        v = float(value)
        below = v <= lo if lo_open else v < lo
        above = v >= hi if hi_open else v > hi
        if math.isnan(v) or below or above:
            raise ValueError(f"{name} must be {why or 'in'} {span}, got {value!r}")
        return v

    return check


def positive_int(value: Any, name: str) -> int:
    """Check an int ≥ 1 (not a bool).

    Args:
        value: the value.
        name: the option's name, for the message.

    Returns:
        ``value``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def choice(*allowed: str) -> Check:
    """A string among ``allowed``.

    Args:
        *allowed: the accepted values.

    Returns:
        The check.
    """

    def check(value: Any, name: str) -> str:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        return str(value)

    return check


NORM_TYPE = Option(
    "norm_type", float, 2.0, "order p of the norm (a number > 0, or inf)",
    lambda v, _: check_norm_type(v), kw_only=True,
)  # fmt: skip
NONFINITE = Option(
    "nonfinite", str, "propagate",
    "non-finite gradients: propagate (NaN, like TensorFlow), error, or skip the step",
    choice(*NONFINITE_POLICIES), kw_only=True,
)  # fmt: skip
#: The options every norm-based clipper shares, after its own.
COMMON = (NORM_TYPE, NONFINITE)

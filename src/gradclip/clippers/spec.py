"""The spec grammar ``NAME:key=value,key=value``, parsed and formatted here only.

Values are parsed with the option's declared type: ``float`` (``inf``
allowed), ``int``, ``str``, ``none`` for optional options, and ``+``-joined
lists (AGC's ``exclude=decoder+head``). Keys may use ``-`` for ``_``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from gradclip.clippers.base import Clipper
from gradclip.clippers.options import Option, suggest
from gradclip.clippers.registry import canonical_name, clipper_options, make_clipper

__all__ = ["format_clipper_spec", "make_clipper_from_spec", "parse_clipper_spec"]

_RESERVED = ",=:+"


def _parse_value(raw: str, option: Option, where: str) -> Any:
    text = raw.strip()
    if option.optional and text.lower() in ("none", "null", ""):
        return None
    if option.type is tuple:
        return tuple(part for part in text.split("+") if part)
    if option.type in (int, float):
        try:
            return option.type(text)
        except ValueError:
            kind = "an int" if option.type is int else "a number"
            raise ValueError(f"{where}: {raw!r} is not {kind}") from None
    return text


def parse_clipper_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Parse ``"name:key=value,..."`` into the canonical name and validated options.

    Args:
        spec: the spec, e.g. ``"autoclip:percentile=10,window=500"``.

    Returns:
        ``(name, options)``: only the options the spec sets, typed and validated.

    Example:
        >>> parse_clipper_spec("Tensor_Norm: max-norm=0.5")
        ('tensor-norm', {'max_norm': 0.5})
        >>> parse_clipper_spec("norm:max_norm=0")
        Traceback (most recent call last):
        ...
        ValueError: norm.max_norm: max_norm must be positive, got 0.0
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    raw_name, _, rest = spec.partition(":")
    name = canonical_name(raw_name)
    declared = clipper_options(name)
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not eq:
            raise ValueError(f"clipper spec {spec!r}: expected key=value, got {part!r}")
        if key not in declared:
            raise ValueError(
                f"clipper {name!r} has no option {key!r}{suggest(key, list(declared))}"
                f"(options: {', '.join(declared)})"
            )
        where = f"{name}.{key}"
        value = _parse_value(raw, declared[key], where)
        try:
            options[key] = declared[key].validate(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
    return name, options


def _format_value(value: Any, where: str) -> str:
    if value is None:
        return "none"
    if isinstance(value, Tensor):
        raise TypeError(f"{where}: a tensor cannot be written in a spec")
    if isinstance(value, float):
        return "inf" if value == math.inf else repr(value)
    parts = [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    for part in parts:
        if not part or any(c in part for c in _RESERVED) or part != part.strip():
            raise ValueError(f"{where}: {part!r} cannot be written in a spec")
    return "+".join(parts)


def format_clipper_spec(name: str, options: Mapping[str, Any]) -> str:
    """Write ``name`` and ``options`` as a spec that :func:`parse_clipper_spec` reads back.

    The options are validated first; ``parse_clipper_spec(format_clipper_spec(n, o))``
    gives back ``(canonical name, validated o)``.

    Args:
        name: a clipper name.
        options: option values (a subset of the clipper's options).

    Returns:
        The spec string.

    Example:
        >>> format_clipper_spec("norm", {"max_norm": 5})
        'norm:max_norm=5.0'
        >>> format_clipper_spec("agc", {"exclude": ("decoder", "head")})
        'agc:exclude=decoder+head'
    """
    canonical = canonical_name(name)
    declared = clipper_options(canonical)
    parts = []
    for key, value in options.items():
        if key not in declared:
            raise ValueError(
                f"clipper {canonical!r} has no option {key!r}{suggest(key, list(declared))}"
                f"(options: {', '.join(declared)})"
            )
        checked = declared[key].validate(value)
        parts.append(f"{key}={_format_value(checked, f'{canonical}.{key}')}")
    return canonical + (":" + ",".join(parts) if parts else "")


def make_clipper_from_spec(spec: str, **defaults: Any) -> Clipper:
    """Build a clipper from ``"name:key=value,key=value"`` (the CLI/config form).

    Args:
        spec: the spec (see :func:`parse_clipper_spec`).
        **defaults: options used where the spec does not set them (e.g. a
            ``--max-grad-norm`` flag). A key the clipper does not declare
            raises ``ValueError``, so nothing is silently ignored.

    Returns:
        A new :class:`Clipper`.

    Example:
        >>> from gradclip import make_clipper_from_spec
        >>> make_clipper_from_spec("autoclip:percentile=10,window=500")
        AutoClip(percentile=10.0, window=500, norm_type=2.0, nonfinite='propagate')
        >>> make_clipper_from_spec("agc:exclude=decoder+head")
        AGC(clip_factor=0.01, eps=0.001, exclude=('decoder', 'head'), nonfinite='propagate')
        >>> make_clipper_from_spec("norm", max_norm=5.0).max_norm
        5.0
    """
    name, options = parse_clipper_spec(spec)
    return make_clipper(name, **{**defaults, **options})

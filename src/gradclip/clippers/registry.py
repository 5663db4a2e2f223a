"""The clipper registry: a clipper joins it where it is defined.

::

    @register_clipper(order=25)
    class MyClip(Clipper):
        name = "my-clip"
        options = (Option("max_norm", float, 1.0, "...", threshold()), NORM_TYPE, NONFINITE)

Every module in :mod:`gradclip.clippers` is imported when the package is, so a
new module is all it takes: :data:`~gradclip.clippers.CLIPPER_NAMES`, the
spec grammar, the CLI's ``--clip`` help, the docs check and the test tables
read this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from gradclip.clippers.base import Clipper
from gradclip.clippers.options import Option, suggest

__all__ = [
    "canonical_name",
    "clipper_class",
    "clipper_names",
    "clipper_options",
    "make_clipper",
    "register_clipper",
]

C = TypeVar("C", bound=type[Clipper])
_REGISTRY: dict[str, tuple[float, type[Clipper]]] = {}


def register_clipper(*, order: float) -> Callable[[C], C]:
    """Class decorator: register a :class:`Clipper` subclass under its ``name``.

    Args:
        order: its place in :func:`clipper_names` (ascending): the baseline
            first, then fixed thresholds, then adaptive methods.

    Returns:
        The decorator (which returns the class unchanged).
    """

    def register(cls: C) -> C:
        name = cls.name
        if not name or name != name.lower() or "_" in name:
            raise ValueError(f"clipper name {name!r} must be lower-case with '-' (not '_')")
        if name in _REGISTRY and _REGISTRY[name][1] is not cls:
            raise ValueError(f"clipper {name!r} is already registered")
        _REGISTRY[name] = (order, cls)
        return cls

    return register


def clipper_names() -> tuple[str, ...]:
    """Returns: every registered name, in registration ``order``."""
    return tuple(sorted(_REGISTRY, key=lambda n: _REGISTRY[n][0]))


def canonical_name(name: object) -> str:
    """The registered spelling of ``name`` (case ignored, ``_`` for ``-``).

    Args:
        name: a clipper name, e.g. ``"Tensor_Norm"``.

    Returns:
        The registered name, e.g. ``"tensor-norm"``.

    Example:
        >>> canonical_name("Tensor_Norm")
        'tensor-norm'
        >>> canonical_name("nrom")
        Traceback (most recent call last):
        ...
        ValueError: unknown clipper 'nrom'; did you mean 'norm'? (choose from none, norm, ...)
    """
    if not isinstance(name, str):
        raise TypeError(f"clipper name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        names = clipper_names()
        raise ValueError(
            f"unknown clipper {name!r}{suggest(key, names)}(choose from {', '.join(names)})"
        )
    return key


def clipper_class(name: str) -> type[Clipper]:
    """The class behind a name.

    Args:
        name: a clipper name (spelling as in :func:`canonical_name`).

    Returns:
        The :class:`Clipper` subclass registered as ``name``.
    """
    return _REGISTRY[canonical_name(name)][1]


def clipper_options(name: str) -> dict[str, Option]:
    """The option declarations of clipper ``name``.

    Args:
        name: a clipper name.

    Returns:
        ``{option name: Option}`` in declaration order; each has ``.type``,
        ``.default``, ``.help`` and ``.validate(value)``.

    Example:
        >>> from gradclip.clippers import clipper_options
        >>> opt = clipper_options("norm")["max_norm"]
        >>> opt.type, opt.default
        (<class 'float'>, 1.0)
    """
    return {o.name: o for o in clipper_class(name).options}


def make_clipper(name: str, **options: Any) -> Clipper:
    """Build a clipper by name with keyword options.

    Names: see :data:`~gradclip.clippers.CLIPPER_NAMES` (``_`` may replace
    ``-``, case is ignored). An unknown name or option raises ``ValueError``
    naming it and suggesting the nearest; every value is validated by its
    declaration (zero thresholds, NaN and bools are rejected).

    Args:
        name: the clipper's name.
        **options: its options (see :func:`clipper_options`).

    Returns:
        A new :class:`Clipper`.

    Example:
        >>> from gradclip import make_clipper
        >>> make_clipper("autoclip", percentile=10)
        AutoClip(percentile=10.0, window=1000, norm_type=2.0, nonfinite='propagate')
        >>> make_clipper("autoclip", windw=10)
        Traceback (most recent call last):
        ...
        ValueError: clipper 'autoclip' has no option 'windw'; did you mean 'window'? (options: ...)
    """
    return clipper_class(name)(**options)

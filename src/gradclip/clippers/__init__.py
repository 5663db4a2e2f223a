r"""Stateful gradient clippers: one protocol, one module per method, no host syncs.

A *clipper* clips gradients in place and reports what it did::

    stats = clipper.clip(model.parameters())     # or a list of gradient tensors

:class:`ClipStats` holds 0-d tensors only (pre-clip norm, threshold, scale,
post-clip norm, a clipped flag, a finite flag), so nothing on the hot path reads
a device value on the host. Adaptive state (AutoClip's ring buffer, ZClip's
EMAs, the warm-up mean) lives in tensors on the gradients' device and is
updated with ``torch.where``, so a non-finite norm never enters any statistic.
Every clipper has ``state_dict()``/``load_state_dict()`` and a readable ``repr``.

Layout: :mod:`~gradclip.clippers.base` (protocol, stats, input collection, the
non-finite policy), :mod:`~gradclip.clippers.options` (option declarations and
their validation), :mod:`~gradclip.clippers.registry` (names → classes),
:mod:`~gradclip.clippers.spec` (the ``NAME:key=value,...`` grammar), and one
module per method. Every module of this package is imported here, so a new
clipper is one new module decorated with ``@register_clipper``:
:data:`CLIPPER_NAMES` lists the registered names.

Global-scale clippers (``none``, ``norm``, ``autoclip``, ``zclip``,
``warmup-mean``) clip by one multiply, ``g ← g · stats.scale``; with
``clip(..., defer_scale=True)`` they leave the gradients alone so that a fused
optimizer can apply the scale inside its own kernel (see :mod:`gradclip.optim`).
See :mod:`~gradclip.clippers.base` for the ``nonfinite`` policies.
"""

from __future__ import annotations

import importlib
import pkgutil

from gradclip.clippers.agc import AGC
from gradclip.clippers.autoclip import AutoClip
from gradclip.clippers.base import ClipInput, ClipOutcome, Clipper, ClipStats, NonFinitePolicy
from gradclip.clippers.none import NoClip
from gradclip.clippers.norm import NormClip
from gradclip.clippers.options import NonFinite, Option
from gradclip.clippers.registry import (
    clipper_class,
    clipper_names,
    clipper_options,
    make_clipper,
    register_clipper,
)
from gradclip.clippers.spec import format_clipper_spec, make_clipper_from_spec, parse_clipper_spec
from gradclip.clippers.tensor_norm import TensorNormClip
from gradclip.clippers.value import ValueClip
from gradclip.clippers.warmup_mean import WarmupMeanClip
from gradclip.clippers.zclip import ZClip

# Import every module of the package, so that a clipper registers by existing.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

#: The names :func:`make_clipper` accepts, as the CLI and configs spell them.
CLIPPER_NAMES: tuple[str, ...] = clipper_names()

__all__ = [
    "AGC",
    "CLIPPER_NAMES",
    "AutoClip",
    "ClipInput",
    "ClipOutcome",
    "ClipStats",
    "Clipper",
    "NoClip",
    "NonFinite",
    "NonFinitePolicy",
    "NormClip",
    "Option",
    "TensorNormClip",
    "ValueClip",
    "WarmupMeanClip",
    "ZClip",
    "clipper_class",
    "clipper_options",
    "format_clipper_spec",
    "make_clipper",
    "make_clipper_from_spec",
    "parse_clipper_spec",
    "register_clipper",
]

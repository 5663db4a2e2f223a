"""gradclip: gradient clipping and exploding-gradient diagnostics for PyTorch.

The public API is re-exported here; see :mod:`gradclip.ops` for the stateless
clipping operations. The diagnostics :func:`suggest` and :func:`temporal_profile`
live in the application layer (:mod:`gradclip.diagnostics`) and are imported on
first use, so ``import gradclip`` stays light and the core never imports them.

Example:
    >>> import gradclip
    >>> gradclip.suggest.__module__, gradclip.temporal_profile.__module__
    ('gradclip.diagnostics.suggest', 'gradclip.diagnostics.profile')
"""

from typing import Any

from gradclip.clippers import (
    CLIPPER_NAMES,
    Clipper,
    ClipStats,
    format_clipper_spec,
    make_clipper,
    make_clipper_from_spec,
    parse_clipper_spec,
)
from gradclip.monitor import GradMonitor
from gradclip.ops import (
    clip_by_global_norm,
    clip_by_norm,
    clip_by_value,
    clip_grad_norm_,
    clip_grad_value_,
    global_norm,
    scale_,
    tensor_norms,
)
from gradclip.optim import ClippedOptimizer, StepObservation, StepObserver, clipped_step

__version__ = "0.1.0"

__all__ = [
    "CLIPPER_NAMES",
    "ClipStats",
    "ClippedOptimizer",
    "Clipper",
    "GradMonitor",
    "StepObservation",
    "StepObserver",
    "__version__",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clipped_step",
    "format_clipper_spec",
    "global_norm",
    "make_clipper",
    "make_clipper_from_spec",
    "parse_clipper_spec",
    "scale_",
    "suggest",
    "temporal_profile",
    "tensor_norms",
]

# Application-layer functions, imported on first access (PEP 562).
_LAZY = {
    "suggest": "gradclip.diagnostics.suggest",
    "temporal_profile": "gradclip.diagnostics.profile",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gradclip' has no attribute {name!r}")

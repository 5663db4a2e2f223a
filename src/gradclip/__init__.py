"""gradclip: gradient clipping and exploding-gradient diagnostics for PyTorch.

The public API is re-exported here; see :mod:`gradclip.ops` for the stateless
clipping operations.
"""

from gradclip.clippers import (
    CLIPPER_NAMES,
    Clipper,
    ClipStats,
    format_clipper_spec,
    make_clipper,
    make_clipper_from_spec,
    parse_clipper_spec,
)
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
    "tensor_norms",
]

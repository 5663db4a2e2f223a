"""Diagnostics: why recurrent gradients explode, and what clipping does about it.

Application layer (it may use :mod:`gradclip.lm`; the core never imports it).
Submodules are imported on first use, so ``import gradclip.diagnostics`` stays light:

* :func:`temporal_profile` / :class:`TemporalProfile` (``diagnostics.profile``):
  ``‖∂L_T/∂h_t‖`` going back in time, Jacobian-product norms, λ₁ vs 1/γ, a verdict;
* :func:`cliff_loss`, :func:`cliff_surface`, :func:`descend` (``diagnostics.cliff``):
  Pascanu's single-unit cliff;
* :mod:`gradclip.diagnostics.tasks`: Pascanu's six long-range tasks;
* :func:`write_report` (``diagnostics.report``): one self-contained HTML report;
* ``diagnostics.suggest.suggest`` and :func:`suggest_from_norms` (``diagnostics.suggest``;
  the function is not re-exported here, where its module's name would shadow it) and
  the rules of ``diagnostics.thresholds``: a clipping threshold from measured norms;
* :func:`run_sweep` (``diagnostics.sweep``): short runs over thresholds × methods × seeds.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "temporal_profile": "gradclip.diagnostics.profile",
    "TemporalProfile": "gradclip.diagnostics.profile",
    "RecurrentWeight": "gradclip.diagnostics.profile",
    "cliff_loss": "gradclip.diagnostics.cliff",
    "cliff_surface": "gradclip.diagnostics.cliff",
    "descend": "gradclip.diagnostics.cliff",
    "CliffSurface": "gradclip.diagnostics.cliff",
    "CliffTrajectory": "gradclip.diagnostics.cliff",
    "write_report": "gradclip.diagnostics.report",
    "suggest_from_norms": "gradclip.diagnostics.suggest",
    "Suggestion": "gradclip.diagnostics.suggest",
    "plot_norm_histogram": "gradclip.diagnostics.plots",
    "threshold_rules": "gradclip.diagnostics.thresholds",
    "run_sweep": "gradclip.diagnostics.sweep",
    "SweepResult": "gradclip.diagnostics.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

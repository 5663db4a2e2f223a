r"""``gradclip.suggest``: measure the gradient norm, propose a ``max_norm``.

:func:`suggest` trains a deep copy of the model for ``steps`` steps **without
clipping**, recording the global gradient norm each step with a
:class:`~gradclip.monitor.GradMonitor`; the caller's model, optimizer and RNG
states are left bit for bit as they were. :func:`suggest_from_norms` does the
same from norms already recorded (``gradclip suggest RUN_DIR``). Both apply
the rules of :mod:`gradclip.diagnostics.thresholds` and recommend one.

The recommendation is ``2 × median`` kept inside Pascanu's working range
``[½, 10] × mean``: it leaves ordinary steps alone and caps the spikes (the
steps whose norm is several times the typical one), which is what clipping is
for (Pascanu et al. 2013). ``docs/choosing-a-threshold.md`` measures it against
a sweep of fixed thresholds.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradclip.diagnostics.thresholds import Rule, first_explosion, threshold_rules
from gradclip.monitor import EventRules, GradMonitor, percentile

__all__ = ["Suggestion", "first_explosion", "plot_norm_histogram", "suggest", "suggest_from_norms"]

RECOMMENDED_RULE = "median_x2"


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest` found.

    Attributes:
        threshold: the recommended ``max_norm``.
        rule: the rule it comes from.
        rules: every rule's row (threshold, clip fraction).
        norms: the observed global pre-clip norms, step order (NaN kept).
        steps: steps observed.
        diverged_at: first step whose loss or norm was not finite, or None.
        explanation: plain sentences for a newcomer.
        layers: worst layers by peak norm (from :meth:`GradMonitor.summary`).
        exploded_at: with ``healthy_only``, the first step whose norm jumped past
            ``explode_factor`` × the running median; the rules then use only the
            steps before it. None when there was no such jump.
    """

    threshold: float
    rule: str
    rules: list[Rule]
    norms: list[float]
    steps: int
    diverged_at: int | None
    explanation: str
    layers: list[dict[str, Any]] = field(default_factory=list)
    exploded_at: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``--json`` (non-finite norms as ``None``)."""
        finite = [n for n in self.norms if math.isfinite(n)]
        s = sorted(finite)
        return {
            "threshold": self.threshold,
            "rule": self.rule,
            "steps": self.steps,
            "diverged_at": self.diverged_at,
            "exploded_at": self.exploded_at,
            "norm": {
                "mean": sum(s) / len(s),
                "median": percentile(s, 50),
                "p5": percentile(s, 5),
                "p95": percentile(s, 95),
                "max": s[-1],
            },
            "rules": [r.as_dict() for r in self.rules],
            "explanation": self.explanation,
            "layers": self.layers,
            "norms": [n if math.isfinite(n) else None for n in self.norms],
        }

    def table(self) -> str:
        """The rules table as aligned text, the recommended row marked ``*``."""
        lines = [f"  {'rule':<14} {'threshold':>11} {'clips':>7}  description"]
        for r in self.rules:
            mark = "*" if r.name == self.rule else " "
            lines.append(
                f"{mark} {r.name:<14} {r.threshold:>11.4g} {r.clip_fraction:>7.1%}  {r.description}"
            )
        return "\n".join(lines)


def _recommend(rules: list[Rule]) -> Rule:
    by = {r.name: r for r in rules}
    lo, hi = by["pascanu_half"].threshold, by["pascanu_10x"].threshold
    chosen = by[RECOMMENDED_RULE]
    if lo <= chosen.threshold <= hi:
        return chosen
    return by["pascanu_half"] if chosen.threshold < lo else by["pascanu_10x"]


def _explain(
    norms: list[float],
    rec: Rule,
    rules: list[Rule],
    diverged_at: int | None,
    what: str,
    exploded_at: int | None = None,
) -> str:
    s = sorted(n for n in norms if math.isfinite(n))
    by = {r.name: r for r in rules}
    mean = by["pascanu_mean"].threshold
    text = [
        f"Over {len(norms)} {what}, the gradient norm had median "
        f"{percentile(s, 50):.3g} (90% of steps between {percentile(s, 5):.3g} and "
        f"{percentile(s, 95):.3g}; largest {s[-1]:.3g}).",
        "Clipping rescales a step's gradient whenever its norm is above the threshold: a "
        "threshold far above the typical norm only catches the spikes, one below it clips "
        "almost every step and then acts like a smaller learning rate.",
        f"Recommended: max_norm = {rec.threshold:.3g} ({rec.description}); it would have "
        f"clipped {rec.clip_fraction:.0%} of these steps.",
        f"Pascanu et al. (2013) found that half to ten times the average norm "
        f"({0.5 * mean:.3g} to {10 * mean:.3g} here) can still converge.",
    ]
    if exploded_at is not None:
        text.append(
            f"At step {exploded_at} the norm jumped past {EventRules().explode_factor:g}× its "
            "running median: an exploding gradient. The steps after it describe a model the "
            f"explosion had already thrown off, so the rules use only the {exploded_at} steps "
            "before it."
        )
    if diverged_at is not None:
        text.append(
            f"Without clipping, training diverged at step {diverged_at} (non-finite loss or "
            "norm): clipping is needed here, and the norms before the divergence are all "
            "the rules could use."
        )
    p10 = by["autoclip_p10"]
    text.append(
        f"If training still spikes or diverges, try a lower value such as {p10.threshold:.3g} "
        f"(AutoClip's 10th percentile, which clips about {p10.clip_fraction:.0%} of steps)."
    )
    return " ".join(text)


def suggest_from_norms(
    norms: Sequence[float | None],
    *,
    diverged_at: int | None = None,
    layers: list[dict[str, Any]] | None = None,
    what: str = "training steps without clipping",
    healthy_only: bool = False,
    **rule_options: Any,
) -> Suggestion:
    """Rules table and recommendation from norms already recorded.

    With ``healthy_only`` (for norms of *unclipped* training), the rules see only
    the steps before the first explosion: the first step whose norm exceeds
    ``k`` × the median of the steps before it (the rule of
    :class:`~gradclip.monitor.EventDetector`, ``k = 5``, from the fourth step on).
    After an explosion the weights are no longer those of a healthy run, and the
    norms measured there would put the threshold far too high.

    Args:
        norms: global pre-clip norms in step order (``None``/NaN/inf allowed).
        diverged_at: the step training diverged at, if it did.
        layers: per-layer summary rows to carry along.
        what: what the norms are, for the explanation ("recorded training steps").
        healthy_only: cut the norms at the first explosion (see above).
        **rule_options: passed to :func:`~gradclip.diagnostics.thresholds.threshold_rules`.

    Returns:
        The :class:`Suggestion`.

    Raises:
        ValueError: when no norm is finite and positive.

    Example:
        >>> s = suggest_from_norms([1.0, 1.2, 0.9, 1.1, 8.0])
        >>> s.rule, s.threshold, s.rules[0].name
        ('median_x2', 2.2, 'pascanu_mean')
        >>> s = suggest_from_norms([1.0, 1.2, 0.9, 1.1, 8.0, 9.0, 30.0], healthy_only=True)
        >>> s.exploded_at, s.threshold
        (4, 2.1)
    """
    values = [math.nan if n is None else float(n) for n in norms]
    exploded_at = first_explosion(values) if healthy_only else None
    rules = threshold_rules(values[:exploded_at], **rule_options)
    rec = _recommend(rules)
    if diverged_at is None:
        bad = [i for i, n in enumerate(values) if not math.isfinite(n)]
        diverged_at = bad[0] if bad else None
    return Suggestion(
        threshold=rec.threshold,
        rule=rec.name,
        rules=rules,
        norms=values,
        steps=len(values),
        diverged_at=diverged_at,
        explanation=_explain(values[:exploded_at], rec, rules, diverged_at, what, exploded_at),
        layers=list(layers or []),
        exploded_at=exploded_at,
    )


class _RngState:
    """Every RNG suggest could touch: torch CPU and CUDA, Python, NumPy."""

    def __init__(self) -> None:
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # type: ignore[no-untyped-call]
        self.python = random.getstate()
        try:
            import numpy as np
        except ImportError:  # pragma: no cover
            self.numpy: Any = None
        else:
            self.numpy = np.random.get_state()

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.python)
        if self.numpy is not None:
            import numpy as np

            np.random.set_state(self.numpy)


def _copy_optimizer(
    optimizer: Any, model: torch.nn.Module, copied: torch.nn.Module
) -> torch.optim.Optimizer | None:
    if optimizer is None:
        return None
    inner = getattr(optimizer, "optimizer", optimizer)  # a ClippedOptimizer steps unclipped here
    if isinstance(inner, torch.optim.Optimizer):
        # deepcopy with a memo that maps the user's parameters to the copies
        memo = {id(p): q for p, q in zip(model.parameters(), copied.parameters(), strict=True)}
        return copy.deepcopy(inner, memo)
    if callable(inner):
        opt = inner(copied.parameters())
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError("the optimizer factory must return a torch.optim.Optimizer")
        return opt
    raise TypeError(
        f"optimizer must be a torch.optim.Optimizer, a factory or None, got {type(optimizer)}"
    )


def suggest(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], Tensor],
    batches: Iterable[Any],
    optimizer: Any = None,
    *,
    steps: int = 200,
    norm_type: float = 2.0,
    progress: Callable[[int], None] | None = None,
    **rule_options: Any,
) -> Suggestion:
    r"""Train a copy without clipping for ``steps`` steps and suggest a ``max_norm``.

    Each step: ``loss = loss_fn(copy, batch)``, ``loss.backward()``, record the
    global pre-clip norm :math:`n_t = \lVert g_t \rVert_p` (and per-layer norms),
    ``optimizer.step()``. Stops early at the first non-finite loss or norm.

    Nothing of the caller's changes: the model and optimizer are deep-copied
    (the copy of the optimizer points at the copied parameters), and the torch
    (CPU and CUDA), Python and NumPy RNG states are restored afterwards.

    Args:
        model: the model (not modified).
        loss_fn: ``(model, batch) -> scalar loss``; it receives the copy.
        batches: yields at least one batch; the first ``steps`` are used.
        optimizer: a ``torch.optim.Optimizer`` over ``model``'s parameters (copied
            with its state; a ``ClippedOptimizer``'s inner optimizer is used, so the
            copy steps unclipped), a factory ``params -> Optimizer``, or ``None``
            (no update: the norms at the current weights over ``steps`` batches).
        steps: steps to observe (> 0).
        norm_type: order of the norm.
        progress: called with the step index after each step.
        **rule_options: passed to :func:`~gradclip.diagnostics.thresholds.threshold_rules`.

    Returns:
        The :class:`Suggestion`.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> model = torch.nn.Linear(4, 1)
        >>> data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(30)]
        >>> loss = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
        >>> s = suggest(model, loss, data, torch.optim.SGD(model.parameters(), lr=0.1), steps=30)
        >>> s.steps, s.rule, s.threshold > 0
        (30, 'median_x2', True)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    rng = _RngState()
    try:
        copied = copy.deepcopy(model)
        opt = _copy_optimizer(optimizer, model, copied)
        copied.train()
        monitor = GradMonitor(
            copied, norm_type=norm_type, update_ratio_every=0, warn=False, flush_every=1
        )
        diverged_at = None
        done = 0
        for batch in batches:
            if done >= steps:
                break
            copied.zero_grad(set_to_none=True)
            loss = loss_fn(copied, batch)
            loss.backward()  # type: ignore[no-untyped-call]
            monitor.observe(step=done)
            monitor.flush()
            done += 1
            if progress is not None:
                progress(done)
            norm = next(r["norm"] for r in reversed(monitor.records) if r["kind"] == "step")
            if not (math.isfinite(float(loss.detach())) and math.isfinite(norm)):
                diverged_at = done - 1
                break
            if opt is not None:
                opt.step()
        if done == 0:
            raise ValueError("suggest: batches yielded nothing")
        norms = [r["norm"] for r in monitor.records if r["kind"] == "step"]
        layers = monitor.summary()["worst_layers"]
    finally:
        rng.restore()
    return suggest_from_norms(
        norms, diverged_at=diverged_at, layers=layers, healthy_only=True, **rule_options
    )


def plot_norm_histogram(suggestion: Suggestion, path: str | Path, *, title: str = "") -> Path:
    """Histogram of the norms on a log axis, with each rule's threshold marked.

    Args:
        suggestion: from :func:`suggest` or :func:`suggest_from_norms`.
        path: the PNG to write (atomically).
        title: figure title.

    Returns:
        ``path``.
    """
    import numpy as np

    from gradclip.diagnostics.plots import figure, save

    finite = np.array([n for n in suggestion.norms if math.isfinite(n) and n > 0])
    fig, ax = figure(7.0, 4.2)
    lo, hi = float(finite.min()), float(finite.max())
    marks = [r for r in suggestion.rules if math.isfinite(r.threshold) and r.threshold > 0]
    lo = min([lo, *(r.threshold for r in marks)])
    hi = max([hi, *(r.threshold for r in marks)])
    bins = np.logspace(math.log10(lo) - 0.05, math.log10(hi) + 0.05, 50)
    ax.hist(finite, bins=bins, color="0.6", edgecolor="0.3")
    ax.set_xscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
    colors = ["C0", "C1", "C2", "C3", "C4", "C5", "C6"]
    for r, color in zip(marks, colors, strict=False):
        width = 2.5 if r.name == suggestion.rule else 1.2
        label = f"{r.name} = {r.threshold:.3g} (clips {r.clip_fraction:.0%})"
        if r.name == suggestion.rule:
            label += "  <- recommended"
        ax.axvline(r.threshold, color=color, linewidth=width, linestyle="--", label=label)
    ax.set_xlabel("global gradient norm before clipping (log scale)")
    ax.set_ylabel("steps")
    ax.set_title(title or f"Gradient norms over {suggestion.steps} unclipped steps")
    ax.legend(fontsize=7, loc="upper right")
    return save(fig, path)

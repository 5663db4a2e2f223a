r"""``gradclip.suggest``: measure the gradient norm, propose a ``max_norm``.

:func:`suggest` trains a deep copy of the model **without clipping**, recording
the global gradient norm each step with a :class:`~gradclip.monitor.GradMonitor`;
if the norm explodes, it starts again from the same weights with a conservative
clip and measures the healthy norms under it. The caller's model, optimizer and
RNG states are left bit for bit as they were. :func:`suggest_from_norms` does the
same from norms already recorded (``gradclip suggest RUN_DIR``). Both apply
the rules of :mod:`gradclip.diagnostics.thresholds` and recommend one.

The recommendation is Pascanu's heuristic, the mean norm of healthy training
(Pascanu, Mikolov & Bengio 2013, §3.2: "look at statistics on the average norm over
a sufficiently large number of updates"): it sits a little above the typical
(median) norm, because the spikes pull the mean up, so it leaves ordinary steps
alone and caps the spikes. ``docs/choosing-a-threshold.md`` measures it, and the
earlier ``2 × median``, against sweeps of fixed thresholds in two settings. With
``trials=True`` the candidates are also trained, and the lowest training loss decides
when it beats the mean norm's by a margin (:mod:`gradclip.diagnostics.trials`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from gradclip.clippers.options import number_in, positive_int
from gradclip.diagnostics.plots import plot_norm_histogram
from gradclip.diagnostics.probe import NormPass, RngSnapshot
from gradclip.diagnostics.suggestion import (
    TRIAL_MARGIN,
    Suggestion,
    explain,
    recommend,
)
from gradclip.diagnostics.thresholds import (
    Rule,
    first_explosion,
    measured_clip_rule,
    threshold_rules,
)
from gradclip.diagnostics.trial_search import search_trials
from gradclip.diagnostics.trials import Trial, run_trials
from gradclip.monitor import EventRules, percentile

__all__ = ["Suggestion", "first_explosion", "plot_norm_histogram", "suggest", "suggest_from_norms"]


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
        >>> s.rule, round(s.threshold, 6), s.rules[0].name
        ('pascanu_mean', 2.44, 'pascanu_mean')
        >>> s = suggest_from_norms([1.0, 1.2, 0.9, 1.1, 8.0, 9.0, 30.0], healthy_only=True)
        >>> s.exploded_at, round(s.threshold, 6)
        (4, 1.05)
    """
    values = [math.nan if n is None else float(n) for n in norms]
    exploded_at = first_explosion(values) if healthy_only else None
    return _suggestion(values, exploded_at, diverged_at, layers, what, rule_options)


def _suggestion(
    values: list[float],
    cut: int | None,
    diverged_at: int | None,
    layers: list[dict[str, Any]] | None,
    what: str,
    rule_options: dict[str, Any],
    *,
    probe: tuple[list[float], int, float] | None = None,
) -> Suggestion:
    """Apply the rules to ``values[:cut]``; ``probe`` is (unclipped norms, explosion step,
    re-measuring clip) when :func:`suggest` measured again under a clip."""
    rules = threshold_rules(values[:cut], **rule_options)
    rec = recommend(rules)
    if diverged_at is None:
        bad = [i for i, n in enumerate(values) if not math.isfinite(n)]
        diverged_at = bad[0] if bad else None
    exploded_at, clip_at = (probe[1], probe[2]) if probe else (cut, None)
    return Suggestion(
        threshold=rec.threshold,
        rule=rec.name,
        rules=rules,
        norms=values,
        steps=len(values) + (len(probe[0]) if probe else 0),
        diverged_at=diverged_at,
        explanation=explain(
            values[:cut], rec, rules, diverged_at, what, exploded_at, measured_clip=clip_at
        ),
        layers=list(layers or []),
        exploded_at=exploded_at,
        measured_clip=clip_at,
        probe_norms=list(probe[0]) if probe else [],
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
    restart: Callable[[], None] | None = None,
    trials: bool = False,
    trial_repeats: int = 1,
    trial_init: Callable[[torch.nn.Module, int], None] | None = None,
    trial_margin: float = TRIAL_MARGIN,
    on_total: Callable[[int], None] | None = None,
    **rule_options: Any,
) -> Suggestion:
    r"""Train a copy for ``steps`` steps, measuring the gradient norm, and suggest a ``max_norm``.

    Each step: ``loss = loss_fn(copy, batch)``, ``loss.backward()``, record the
    global pre-clip norm :math:`n_t = \lVert g_t \rVert_p` (and per-layer norms),
    ``optimizer.step()``. Two phases share the ``steps`` budget:

    1. **probe**, without clipping, until the first explosion (a norm past 5 × the
       running median, as :class:`~gradclip.monitor.GradMonitor` flags it, or a
       non-finite one). Without an explosion this is the whole measurement.
    2. **measure under a clip**, after an explosion: a fresh copy trains again from
       the same weights on the same batches, with the global norm clipped at
       :math:`c_0 = \min_{t < t_\text{explode}} n_t`, the smallest norm before the
       explosion (a step the model took safely). Its pre-clip norms are the norms of
       a healthy run; after an explosion the unclipped ones would put every rule far
       too high (``docs/choosing-a-threshold.md`` measures this).

    Nothing of the caller's changes: the model and optimizer are deep-copied
    (the copy of the optimizer points at the copied parameters), and the torch
    (CPU and CUDA), Python and NumPy RNG states are restored afterwards.

    Args:
        model: the model (not modified).
        loss_fn: ``(model, batch) -> scalar loss``; it receives the copy.
        batches: yields at least one batch; at most ``steps`` are drawn.
        optimizer: a ``torch.optim.Optimizer`` over ``model``'s parameters (copied
            with its state; a ``ClippedOptimizer``'s inner optimizer is used, so the
            copy steps unclipped), a factory ``params -> Optimizer``, or ``None``
            (no update: the norms at the current weights over ``steps`` batches).
        steps: training steps in all (> 0).
        norm_type: order of the norm.
        progress: called with the step index after each step.
        restart: called before phase 2 and before every trial, e.g. to reset a
            recurrent state that ``loss_fn`` carries from batch to batch.
        trials: then train each candidate threshold for ``steps`` steps on a fresh copy,
            from the same weights on the same batches, and recommend the one with the
            lowest training loss over the last quarter of its steps, if it beats the mean
            norm's by ``trial_margin`` and in every repeat; when the lowest candidate
            wins, up to two lower thresholds are tried too, one at a time
            (:mod:`gradclip.diagnostics.trials`; up to eight times the cost of the
            measurement).
        trial_repeats: with ``trials``, train each candidate on this many consecutive
            windows of ``steps`` batches and score it by the mean (``batches`` must then
            yield ``trial_repeats * steps``); each repeat costs as much again.
        trial_init: with ``trials``, make the repeats trials from several
            initialisations instead: ``trial_init(copy, r)`` sets the fresh copy's weights
            in place for repeat ``r`` (0 … ``trial_repeats`` - 1), and every repeat trains
            on the first ``steps`` batches. For a model you build from a seed, load the
            weights that seed ``seed + r`` gives (``gradclip suggest --trial-seeds``).
        trial_margin: with ``trials``, the lowest trial loss replaces the mean norm only
            if it is lower than the mean norm's by more than this fraction (default
            0.3 %; 0: the lowest always decides).
        on_total: called once with the number of steps in all, when trials add theirs
            (for a progress bar).
        **rule_options: passed to :func:`~gradclip.diagnostics.thresholds.threshold_rules`.

    Returns:
        The :class:`Suggestion` (``exploded_at``, ``measured_clip`` and
        ``probe_norms`` say whether phase 2 ran).

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> model = torch.nn.Linear(4, 1)
        >>> data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(30)]
        >>> loss = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
        >>> s = suggest(model, loss, data, torch.optim.SGD(model.parameters(), lr=0.1), steps=30)
        >>> s.steps, s.rule, s.threshold > 0, s.measured_clip
        (30, 'pascanu_mean', True, None)
    """
    positive_int(steps, "steps")
    positive_int(trial_repeats, "trial_repeats")  # before the measurement, not after it
    number_in(0, 1, hi_open=True)(trial_margin, "trial_margin")
    rng = RngSnapshot()
    source, seen = iter(batches), []
    counter = itertools.count(1)
    tick = (lambda: progress(next(counter))) if progress is not None else (lambda: None)

    def drawn() -> Iterator[Any]:  # phase 1's batches are kept for phase 2
        for batch in source:
            seen.append(batch)
            yield batch

    try:
        probe = NormPass(model, optimizer, norm_type)
        probe.run(loss_fn, drawn(), steps, tick, stop_at_explosion=optimizer is not None)
        if probe.done == 0:
            raise ValueError("suggest: batches yielded nothing")
        healthy = [n for n in probe.norms[: probe.exploded_at] if math.isfinite(n) and n > 0]
        if optimizer is None or probe.exploded_at is None or not healthy or probe.done >= steps:
            found = suggest_from_norms(
                probe.norms,
                diverged_at=probe.diverged_at,
                layers=probe.layers(),
                healthy_only=True,
                **rule_options,
            )
        else:
            rng.restore()
            if restart is not None:
                restart()
            again = NormPass(model, optimizer, norm_type, clip_at=min(healthy))
            again.run(loss_fn, itertools.chain(list(seen), drawn()), steps - probe.done, tick)
            found = _remeasured(probe, again, rule_options)
        if trials and optimizer is not None:
            total = found.steps

            def trial(rows: list[Rule]) -> list[Trial]:
                nonlocal total
                total += steps * len(rows) * trial_repeats
                if on_total is not None:
                    on_total(total)
                return run_trials(
                    model, loss_fn, lambda: itertools.chain(list(seen), drawn()), optimizer,
                    rows, steps=steps, norm_type=norm_type, tick=tick, restart=restart,
                    repeats=trial_repeats, init=trial_init,
                )  # fmt: skip

            found = search_trials(
                found, trial, from_inits=trial_init is not None, margin=trial_margin
            )
    finally:
        rng.restore()
    return found


def _remeasured(probe: NormPass, again: NormPass, rule_options: dict[str, Any]) -> Suggestion:
    """The suggestion from the norms measured again under ``again.clip_at`` after the
    probe's explosion, with a warning when even clipped they stayed far above the clip.

    The clip itself becomes a row, ``measured_clip``: the model has just trained safely
    under it, so trials try it below a winning lowest candidate."""
    clip_at = again.clip_at
    what = f"training steps clipped at {clip_at:.3g}"
    assert probe.exploded_at is not None
    probed = (probe.norms, probe.exploded_at, clip_at)
    found = _suggestion(
        again.norms, None, again.diverged_at, again.layers(), what, rule_options, probe=probed
    )
    safe = measured_clip_rule(again.norms, clip_at)
    found = dataclasses.replace(found, rules=[*found.rules, safe])
    typical = percentile(sorted(n for n in again.norms if math.isfinite(n)), 50)
    factor = EventRules().explode_factor
    if not typical > factor * clip_at:
        return found
    warning = (
        f" Even clipped at {clip_at:.3g}, the norm stayed far above it (median {typical:.3g}, "
        f"over {factor:g}×): the steps keep overshooting, so the learning rate is likely too "
        "high for clipping alone to help; try a lower one."
    )
    return dataclasses.replace(found, explanation=found.explanation + warning)

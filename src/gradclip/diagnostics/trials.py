r"""Trying candidate thresholds by training: the ``trials`` step of :func:`gradclip.suggest`.

A statistic of the norms cannot tell when the best clip is a cut of the learning rate
(``docs/choosing-a-threshold.md``, setting B: at learning rate 2 the best fixed clip
is half the mean norm, and it clips 99 % of the steps). A trial settles it by
measurement: each candidate :math:`c` trains a fresh copy for the same ``steps``, from
the same weights, on the same batches, with the global norm clipped at :math:`c`; the
candidate with the lowest mean training loss over the last quarter of its steps
(:func:`trial_score`) wins, if it beats the mean norm's by
:data:`~gradclip.diagnostics.suggestion.TRIAL_MARGIN`.
The batches are shared, so the comparison is paired: every candidate is scored on the
same data.

One trial is one run, and a run's luck can outweigh a small difference between
thresholds: in setting A of the docs, twelve seeds find 7.4 and 9.49 4 % apart in
validation perplexity, while one trial ranked them the other way round by 0.3 % of
training loss. With ``repeats`` = :math:`k` each candidate trains :math:`k` times, from
the same weights, on :math:`k` consecutive windows of ``steps`` batches (window
:math:`r` is batches :math:`r \cdot steps + 1 \ldots (r + 1) \cdot steps`), and its score
is the mean over the windows. (Measured on A, three windows did not change that pick:
the docs' "Trials of several runs".) With ``init`` the repeats are trials from several
initialisations instead: repeat :math:`r` trains on the first ``steps`` batches from the
weights ``init(copy, r)`` sets, which is what the twelve-seed sweeps replay.

The candidates are the rules of :mod:`gradclip.diagnostics.thresholds` in
:data:`TRIAL_RULES`: the mean norm, the low end of Pascanu et al.'s working range ("values
from half to ten times this average can still yield convergence", 2013, §3.2), and the
ZClip, 2 × median and AutoClip thresholds, even where AutoClip's falls below that range.
The range's high end (``pascanu_10x``) is left out: the sweeps of
``docs/choosing-a-threshold.md`` lose the most there. A threshold within 5 % of one
already kept is dropped.

When the lowest candidate wins, :func:`gradclip.suggest` tries lower thresholds, one at a
time and at most :data:`LOWER_STEPS` (:func:`lower_candidate`): first, after an explosion,
the clip the norms were measured under (``measured_clip``: the model trained safely under
it; the best threshold of setting E in the docs), then half of the winner
(:data:`~gradclip.diagnostics.thresholds.HALVED_RULES`; the best clip of setting C lies
below every rule's). Each replaces the winner only if it beats it. Tried among the first
candidates instead, the measured clip won setting B by a training loss its validation
perplexity did not bear out (+6.8 %).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from gradclip.clippers.options import positive_int
from gradclip.diagnostics.probe import NormPass, RngSnapshot
from gradclip.diagnostics.thresholds import HALVED_RULES, Rule, halved_rule

__all__ = [
    "LOWER_RULES",
    "LOWER_STEPS",
    "SCORED_FRACTION",
    "TRIAL_RULES",
    "Trial",
    "lower_candidate",
    "run_trials",
    "trial_candidates",
    "trial_score",
]

TRIAL_RULES = ("pascanu_mean", "zclip", "median_x2", "pascanu_half", "autoclip_p10")
# Tried below a winning lowest candidate, one at a time, at most LOWER_STEPS of them.
LOWER_RULES = ("measured_clip", *HALVED_RULES)
LOWER_STEPS = 2
SCORED_FRACTION = 0.25
_SAME = 0.05  # candidates closer than this (relative) train nearly alike


def trial_score(losses: Sequence[float], fraction: float = SCORED_FRACTION) -> float:
    r"""A trial's score: the mean of the last ``fraction`` of its training losses.

    .. math:: S = \frac{1}{m} \sum_{t = n - m + 1}^{n} L_t, \quad m = \lceil f n \rceil

    The last quarter (:data:`SCORED_FRACTION`) rather than the second half: a lower
    threshold is a smaller step, which leads early and falls behind late, and the final
    validation perplexity follows the late losses (``docs/choosing-a-threshold.md``,
    setting D: the second half ranked half the mean norm first, 9 % from the best).

    Args:
        losses: the training loss of each step, in order.
        fraction: the share of the last steps scored, in (0, 1].

    Returns:
        The mean, or ``inf`` when there are no losses or one of those scored is not
        finite.

    Example:
        >>> trial_score([8.0, 6.0, 5.0, 4.0, 3.0, 3.0, 2.0, 1.5])  # the last 2 of 8
        1.75
        >>> trial_score([3.0, float("nan")])
        inf
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    scored = losses[len(losses) - math.ceil(fraction * len(losses)) :]
    if not scored or not all(map(math.isfinite, scored)):
        return math.inf
    return statistics.fmean(scored)


@dataclass(frozen=True)
class Trial:
    """One candidate's trial.

    Attributes:
        rule: the rule the threshold comes from.
        threshold: the clip it trained with.
        loss: mean training loss over the last quarter of its steps
            (:func:`trial_score`), averaged over the repeats (``inf`` when the loss or
            norm stopped being finite in any).
        steps: steps it trained in each repeat (the last repeat's, if one stopped early).
        losses: the score of each repeat, in window order.
        start: the training loss of the first step (before any update), averaged over
            the repeats; a ``loss`` above it means training under this clip went
            backwards.
    """

    rule: str
    threshold: float
    loss: float
    steps: int
    losses: tuple[float, ...] = ()
    start: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        """The trial as a plain dict."""
        return asdict(self)


def trial_candidates(rules: Sequence[Rule]) -> list[Rule]:
    """The rules worth a trial: those of :data:`TRIAL_RULES`, in that order, without one
    whose threshold is within 5 % of a candidate already kept.

    Args:
        rules: the rows of :func:`~gradclip.diagnostics.thresholds.threshold_rules`.

    Returns:
        The candidates.

    Example:
        >>> rows = [Rule("pascanu_mean", 2.0, 0.3, ""), Rule("zclip", 2.05, 0.3, ""),
        ...         Rule("pascanu_half", 1.0, 0.9, ""), Rule("pascanu_10x", 20.0, 0.0, "")]
        >>> [r.name for r in trial_candidates(rows)]  # zclip is within 5 % of the mean
        ['pascanu_mean', 'pascanu_half']
    """
    by = {r.name: r for r in rules}
    kept: list[Rule] = []
    for name in TRIAL_RULES:
        r = by.get(name)
        if r is None or not (math.isfinite(r.threshold) and r.threshold > 0):
            continue
        if all(abs(r.threshold - k.threshold) > _SAME * k.threshold for k in kept):
            kept.append(r)
    return kept


def lower_candidate(
    rules: Sequence[Rule], winner: Rule, tried: Collection[str], norms: Sequence[float]
) -> Rule:
    """The next threshold to try below ``winner``, the lowest candidate, which won: the
    ``measured_clip`` row if there is one, not yet tried, more than 5 % below the winner;
    else half of the winner (:func:`~gradclip.diagnostics.thresholds.halved_rule`).

    Args:
        rules: the rules table (with ``measured_clip`` after an explosion).
        winner: the winning row.
        tried: the rule names already trained.
        norms: the measured norms, for a halved row's clip fraction.

    Returns:
        The row to try next.

    Example:
        >>> rows = [Rule("pascanu_half", 4.0, 0.5, ""), Rule("measured_clip", 3.0, 0.9, "")]
        >>> lower_candidate(rows, rows[0], {"pascanu_half"}, [2.0, 5.0]).name
        'measured_clip'
        >>> lower_candidate(rows, rows[1], {"pascanu_half", "measured_clip"}, [2.0, 5.0]).threshold
        1.5
    """
    clip = next((r for r in rules if r.name == "measured_clip"), None)
    below = clip is not None and clip.threshold < (1 - _SAME) * winner.threshold
    if clip is not None and below and clip.name not in tried:
        return clip
    return halved_rule(norms, winner, sum(name in HALVED_RULES for name in tried))


def run_trials(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], Tensor],
    batches: Callable[[], Iterable[Any]],
    optimizer: Any,
    candidates: Sequence[Rule],
    *,
    steps: int,
    norm_type: float = 2.0,
    tick: Callable[[], None] = lambda: None,
    restart: Callable[[], None] | None = None,
    repeats: int = 1,
    init: Callable[[torch.nn.Module, int], None] | None = None,
) -> list[Trial]:
    r"""Train each candidate on a fresh copy and score it (see the module docstring).

    Before each trial the RNG states are put back and ``restart`` is called, so every
    candidate starts where the others did; the caller's model and optimizer are only
    copied (:class:`~gradclip.diagnostics.probe.NormPass`).

    Args:
        model: the model (not modified).
        loss_fn: ``(model, batch) -> scalar loss``.
        batches: returns a fresh iterable of the same batches for each trial (at least
            ``repeats * steps`` of them).
        optimizer: as for :func:`gradclip.suggest` (not ``None``).
        candidates: the rules to try (:func:`trial_candidates`).
        steps: steps per trial (> 0).
        norm_type: order of the norm.
        tick: called after every step.
        restart: called before every trial (e.g. to reset a carried recurrent state).
        repeats: runs per candidate (>= 1): consecutive windows of ``steps`` batches,
            or with ``init`` initialisations.
        init: ``(copy, r) -> None`` sets the fresh copy's weights, in place, for repeat
            ``r`` (0 … ``repeats`` - 1) before it trains; every repeat then uses the same
            first ``steps`` batches. ``None``: every repeat starts from ``model``'s weights.

    Returns:
        One :class:`Trial` per candidate, in order.

    Raises:
        ValueError: ``repeats`` is not a positive int, or the batches ran out before a
            repeat's window was full.

    Example:
        >>> from gradclip.diagnostics.thresholds import threshold_rules
        >>> torch.manual_seed(0) and None
        >>> m = torch.nn.Linear(3, 1)
        >>> data = [(torch.randn(8, 3), torch.randn(8, 1)) for _ in range(6)]
        >>> mse = lambda net, b: torch.nn.functional.mse_loss(net(b[0]), b[1])
        >>> rules = threshold_rules([0.5, 1.0, 2.0])
        >>> out = run_trials(m, mse, lambda: data, torch.optim.SGD(m.parameters(), lr=0.1),
        ...                  trial_candidates(rules)[:2], steps=6)
        >>> [(t.rule, t.steps, t.loss > 0) for t in out]
        [('pascanu_mean', 6, True), ('zclip', 6, True)]
    """
    positive_int(repeats, "repeats")
    rng = RngSnapshot()
    out = []
    try:
        for rule in candidates:
            scores, starts, done = [], [], 0
            for r in range(repeats):
                score, first, done = _one_trial(
                    model, loss_fn, batches, optimizer, rule.threshold, steps, r, norm_type,
                    tick, restart, rng, init,
                )  # fmt: skip
                scores.append(score)
                starts.append(first)
            loss = statistics.fmean(scores) if all(map(math.isfinite, scores)) else math.inf
            start = statistics.fmean(starts)
            out.append(Trial(rule.name, rule.threshold, loss, done, tuple(scores), start))
    finally:
        rng.restore()
    return out


def _one_trial(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, Any], Tensor],
    batches: Callable[[], Iterable[Any]],
    optimizer: Any,
    clip_at: float,
    steps: int,
    window: int,
    norm_type: float,
    tick: Callable[[], None],
    restart: Callable[[], None] | None,
    rng: RngSnapshot,
    init: Callable[[torch.nn.Module, int], None] | None,
) -> tuple[float, float, int]:
    """Train a fresh copy clipped at ``clip_at`` for repeat ``window``: from the weights
    ``init`` sets on the first batches, or without it on that window of the batches;
    returns its score (``inf`` if it diverged), its first step's loss and the steps it
    took."""
    rng.restore()
    if restart is not None:
        restart()
    run = NormPass(model, optimizer, norm_type, clip_at=clip_at)
    skip = window * steps
    if init is not None:
        init(run.model, window)
        skip = 0
    run.run(loss_fn, itertools.islice(batches(), skip, None), steps, tick)
    if run.diverged_at is None and run.done < steps and skip > 0:
        raise ValueError(
            f"trials: repeat {window + 1} needs batches {window * steps + 1}-"
            f"{(window + 1) * steps}, but the batches ran out after {window * steps + run.done}"
        )
    score = math.inf if run.diverged_at is not None else trial_score(run.losses)
    first = run.losses[0] if run.losses else math.nan
    return score, first, run.done

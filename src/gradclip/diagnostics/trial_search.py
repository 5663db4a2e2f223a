"""The selection of ``suggest(trials=True)``: trials of the candidates, then lower
thresholds while the lowest candidate wins.

The training is left to a callable, so that :func:`gradclip.suggest` runs it for real and
``benchmarks/trial_repeats_from_sweep.py`` replays it from the cells of a sweep.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gradclip.diagnostics.suggestion import TRIAL_MARGIN, Suggestion, picked_lowest, with_trials
from gradclip.diagnostics.thresholds import Rule
from gradclip.diagnostics.trials import LOWER_STEPS, Trial, lower_candidate, trial_candidates

__all__ = ["search_trials"]


def search_trials(
    found: Suggestion,
    trial: Callable[[list[Rule]], list[Trial]],
    *,
    from_inits: bool = False,
    margin: float = TRIAL_MARGIN,
) -> Suggestion:
    """``found`` after trials of its candidates and, while the lowest one wins, of a lower
    one (:func:`~gradclip.diagnostics.trials.lower_candidate`, at most
    :data:`~gradclip.diagnostics.trials.LOWER_STEPS`): a search that stops at the edge of
    its candidates has not bracketed the best (``docs/choosing-a-threshold.md``, settings
    C and E).

    Args:
        found: the measured suggestion.
        trial: trains the given rows' thresholds and returns their trials, in order.
        from_inits: the repeats are trials from several initialisations.
        margin: as :func:`~gradclip.diagnostics.suggestion.with_trials`.

    Returns:
        The suggestion with the trials' pick
        (:func:`~gradclip.diagnostics.suggestion.with_trials`), its ``rules`` extended by
        any lower row tried.

    Example:
        >>> from gradclip.diagnostics.suggest import suggest_from_norms
        >>> found = suggest_from_norms([4.0, 5.0, 6.0, 5.0])  # mean 5, half 2.5
        >>> loss = lambda c: 100 + abs(c - 0.6)  # the best clip lies below every candidate
        >>> tried = lambda rows: [Trial(r.name, r.threshold, loss(r.threshold), 10) for r in rows]
        >>> picked = search_trials(found, tried, margin=0)
        >>> [(t.rule, t.threshold) for t in picked.trials][-3:]  # 2.5 won, then half, quarter
        [('autoclip_p10', 4.3), ('half_lowest', 1.25), ('quarter_lowest', 0.625)]
        >>> picked.rule, picked.threshold
        ('quarter_lowest', 0.625)
    """
    tried = trial(trial_candidates(found.rules))
    picked = with_trials(found, tried, from_inits=from_inits, margin=margin)
    for _ in range(LOWER_STEPS):
        if not picked_lowest(picked):
            break
        winner = next(r for r in found.rules if r.name == picked.rule)
        row = lower_candidate(found.rules, winner, {t.rule for t in tried}, found.norms)
        if row not in found.rules:
            found = dataclasses.replace(found, rules=[*found.rules, row])
        tried += trial([row])
        picked = with_trials(found, tried, from_inits=from_inits, margin=margin)
    return picked

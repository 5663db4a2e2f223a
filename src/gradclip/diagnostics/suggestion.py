"""What :func:`gradclip.suggest` found (:class:`Suggestion`), and its plain-language text.

The recommendation is Pascanu's heuristic, the mean norm of healthy training (Pascanu,
Mikolov & Bengio 2013, §3.2), unless trials (:mod:`gradclip.diagnostics.trials`) trained
the candidates and one had a training loss lower than the mean norm's by more than
:data:`TRIAL_MARGIN`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from gradclip.diagnostics.thresholds import Rule
from gradclip.diagnostics.trials import LOWER_RULES, Trial
from gradclip.monitor import EventRules, percentile

__all__ = [
    "RECOMMENDED_RULE", "TRIAL_MARGIN", "Suggestion", "backwards", "beats", "explain",
    "fallback", "picked_lowest", "recommend", "recommended", "with_trials",
]  # fmt: skip

RECOMMENDED_RULE = "pascanu_mean"
# A candidate's trial loss must beat the mean norm's by this fraction to replace it:
# smaller gaps are within the runs' noise (docs/choosing-a-threshold.md, "A margin").
TRIAL_MARGIN = 0.003


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
        exploded_at: the first step of unclipped training whose norm jumped past
            ``explode_factor`` × the running median (``healthy_only``, or
            :func:`suggest`'s probe); None when there was no such jump.
        measured_clip: when :func:`suggest` re-measured under a clip after an
            explosion, that clip's threshold (else None); ``norms`` are then the
            pre-clip norms of the clipped steps.
        probe_norms: :func:`suggest`'s unclipped norms up to the explosion, when it
            re-measured (else empty).
        trials: with ``suggest(trials=True)``, each candidate's
            :class:`~gradclip.diagnostics.trials.Trial`; the recommendation is then the
            one with the lowest training loss, if it beats the mean norm's by the margin.
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
    measured_clip: float | None = None
    probe_norms: list[float] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)

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
            "measured_clip": self.measured_clip,
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
            "probe_norms": [n if math.isfinite(n) else None for n in self.probe_norms],
            "trials": [t.as_dict() for t in self.trials],
        }

    def table(self) -> str:
        """The rules table as aligned text, the recommended row marked ``*`` (with trials, a
        column of their training losses)."""
        tried = {t.rule: t.loss for t in self.trials}
        col = f" {'trial loss':>10}" if tried else ""
        lines = [f"  {'rule':<14} {'threshold':>11} {'clips':>7}{col}  description"]
        for r in self.rules:
            mark = "*" if r.name == self.rule else " "
            loss = f" {tried[r.name]:>10.4g}" if r.name in tried else " " * len(col)
            lines.append(
                f"{mark} {r.name:<14} {r.threshold:>11.4g} {r.clip_fraction:>7.1%}{loss}  "
                f"{r.description}"
            )
        return "\n".join(lines)


def recommend(rules: list[Rule]) -> Rule:
    """The row of :data:`RECOMMENDED_RULE` (the mean norm) among ``rules``."""
    return next(r for r in rules if r.name == RECOMMENDED_RULE)


def recommended(rec: Rule) -> str:
    """The explanation's sentence that names the recommendation ``rec``."""
    return (
        f"Recommended: max_norm = {rec.threshold:.3g} ({rec.description}); it would have "
        f"clipped {rec.clip_fraction:.0%} of these steps."
    )


def with_trials(
    found: Suggestion,
    trials: list[Trial],
    *,
    from_inits: bool = False,
    margin: float = TRIAL_MARGIN,
) -> Suggestion:
    r"""``found`` with the trials' winner as the recommendation.

    The winner is the trial with the lowest loss :math:`L^*`. It replaces the measured
    recommendation (loss :math:`L_0`) only if it :func:`beats` it
    (:math:`L^* < (1 - \text{margin})\,L_0`, and lower in every run when the trials had
    several), or if the measured one's trial failed; if every trial failed, nothing
    changes. Trials of the :data:`~gradclip.diagnostics.trials.LOWER_RULES` rows (below
    the lowest candidate, after it won) come last and are taken in order: each replaces
    the winner so far only if it beats it too.

    Args:
        found: the measured suggestion (with the rows of every trial's rule).
        trials: the candidates' trials (:func:`~gradclip.diagnostics.trials.run_trials`).
        from_inits: the repeats were trials from several initialisations.
        margin: the relative margin (>= 0; 0: the lowest loss always decides).

    Returns:
        The suggestion, with ``trials`` and the trials' sentence in its explanation.

    Example:
        >>> from gradclip.diagnostics.suggest import suggest_from_norms
        >>> found = suggest_from_norms([4.0, 5.0, 6.0, 5.0])  # the mean norm: 5
        >>> half = Trial("pascanu_half", 2.5, 99.8, 10)
        >>> with_trials(found, [Trial("pascanu_mean", 5.0, 100.0, 10), half]).threshold
        5.0
        >>> with_trials(found, [Trial("pascanu_mean", 5.0, 100.0, 10), half], margin=0).rule
        'pascanu_half'
    """
    ok = [t for t in trials if math.isfinite(t.loss)]
    first = [t for t in ok if t.rule not in LOWER_RULES]
    if not first:
        note = " Every trial's loss stopped being finite, so the recommendation stays as measured."
        return dataclasses.replace(found, trials=trials, explanation=found.explanation + note)
    best = min(first, key=lambda t: t.loss)
    measured = next((t for t in first if t.rule == found.rule), None)
    by = {r.name: r for r in found.rules}
    old = by[found.rule]
    every = " and lower in every run" if len(best.losses) > 1 else ""
    rule = f"replaces {found.rule} only if lower by more than {margin:.1%}{every}"
    decides = f"The lowest {rule}." if margin > 0 or every else "The lowest decides."
    if measured is not None and best is not measured and not beats(best, measured, margin):
        by_how = f"lower by only {1 - best.loss / measured.loss:.2%}"
        if best.loss < (1 - margin) * measured.loss:
            by_how = f"lower by {1 - best.loss / measured.loss:.2%} on average but not in every run"
        decides = (
            f"The lowest {rule}: {best.threshold:.3g} ({best.rule}) was {by_how}, within the "
            f"runs' noise, so {found.rule} stays."
        )
        best = measured
    best, below = _below(best, [t for t in trials if t.rule in LOWER_RULES], margin)
    rec = by[best.rule]
    listed = ", ".join(f"{t.threshold:.3g} ({t.rule}): {t.loss:.5g}" for t in trials)
    runs = len(best.losses)
    start, on, averaged = "from the same weights", "on the same batches", ""
    if runs > 1 and from_inits:
        start, averaged = f"from each of {runs} initialisations", " (averaged over them)"
    elif runs > 1:
        on, averaged = f"on each of {runs} windows of batches", " (averaged over the windows)"
    note = (
        f" Trials: each candidate trained {best.steps} steps {start} {on}, "
        f"clipped at its threshold; mean training loss over the last quarter{averaged}: "
        f"{listed}. {decides}{below}"
    )
    p10 = by["autoclip_p10"]
    text = found.explanation.replace(recommended(old), recommended(rec))
    text = text.replace(fallback(old, p10), fallback(rec, p10))
    note += backwards(ok) or lowest_won(trials, best)
    return dataclasses.replace(
        found, threshold=rec.threshold, rule=rec.name, trials=trials, explanation=text + note
    )


def beats(challenger: Trial, incumbent: Trial, margin: float = TRIAL_MARGIN) -> bool:
    r"""Whether ``challenger``'s trial beats ``incumbent``'s beyond the runs' noise: its
    mean loss is lower by more than ``margin`` (:math:`L_c < (1 - m) L_i`) and, when both
    trained the same several runs (repeats, paired by window or initialisation), its loss
    is lower in every one of them.

    One run of the pair can favour either threshold by more than the margin when the two
    are alike: in setting A of ``docs/choosing-a-threshold.md`` 2 × the median led the mean
    norm by 0.48 % over three initialisations, after leading two and losing one, and it is
    2.5 % worse there over twelve seeds. Requiring every run is a sign test (with three
    runs, a chance of 1/8 when the two thresholds are equal).

    Example:
        >>> mean = Trial("pascanu_mean", 5.0, 100.0, 10, (101.0, 99.0, 100.0))
        >>> beats(Trial("zclip", 6.0, 99.0, 10, (98.5, 98.0, 100.5)), mean)  # lost run 3
        False
        >>> beats(Trial("zclip", 6.0, 99.0, 10, (100.0, 98.0, 99.0)), mean)
        True
    """
    if not challenger.loss < (1 - margin) * incumbent.loss:  # NaN or inf: no
        return False
    pairs = zip(challenger.losses, incumbent.losses, strict=False)
    return len(challenger.losses) != len(incumbent.losses) or all(c < i for c, i in pairs)


def _below(best: Trial, lower: list[Trial], margin: float) -> tuple[Trial, str]:
    """The winner after the trials of lower thresholds, each taken only if it
    :func:`beats` the winner so far, and the sentence that says so."""
    text = ""
    for t in lower:
        won = beats(t, best, margin)
        verdict = (
            "trained better beyond the margin and replaces it"
            if won
            else f"did not train better beyond the margin, so {best.threshold:.3g} stays"
        )
        text += (
            f" The lowest candidate, {best.threshold:.3g}, won, so a lower one was tried: "
            f"{t.threshold:.3g} ({t.rule}) {verdict}."
        )
        if not won:
            break
        best = t
    return best, text


def picked_lowest(s: Suggestion) -> bool:
    """Whether ``s``'s trials (two or more, one finite) picked the lowest threshold of them
    all, so a lower one might train better still."""
    return any(math.isfinite(t.loss) for t in s.trials) and _is_lowest(s.trials, s.threshold)


def _is_lowest(trials: list[Trial], threshold: float) -> bool:
    """Whether ``threshold`` is the lowest of two or more ``trials``' thresholds."""
    return len(trials) >= 2 and threshold <= min(t.threshold for t in trials)


def backwards(trials: list[Trial]) -> str:
    """A warning (with its leading space) when under every finite trial the training
    loss ended above its first step's, so no candidate trains the model; else ``""``."""
    if not trials or not all(t.loss > t.start for t in trials):  # a NaN start: no claim
        return ""
    low = min(trials, key=lambda t: t.loss)
    lowest = min(t.threshold for t in trials)
    return (
        f" Under every candidate the training loss ended higher than it began (the best, "
        f"{low.threshold:.3g}, averaged {low.loss:.4g} over its last quarter against "
        f"{low.start:.4g} at its first step): at this learning rate none of these thresholds "
        f"trains the model. Lower the learning rate, or sweep thresholds below "
        f"{lowest:.3g} (gradclip sweep)."
    )


def lowest_won(trials: list[Trial], best: Trial) -> str:
    """A hint (with its leading space) when ``best`` has the lowest threshold of several
    ``trials`` (failed ones included: a lower clip that diverged is no reason to look
    lower): the best clip may lie below every candidate; else ``""``.

    Example:
        >>> tried = [Trial("pascanu_mean", 5.0, 9.0, 10), Trial("pascanu_half", 2.5, 8.0, 10)]
        >>> lowest_won(tried, tried[1])[:33]
        ' The lowest candidate, 2.5, won: '
        >>> lowest_won(tried, tried[0])
        ''
    """
    if not _is_lowest(trials, best.threshold):
        return ""
    return (
        f" The lowest candidate, {best.threshold:.3g}, won: a lower threshold may train "
        f"better still, so sweep a few below it (gradclip sweep)."
    )


def explain(
    norms: list[float],
    rec: Rule,
    rules: list[Rule],
    diverged_at: int | None,
    what: str,
    exploded_at: int | None = None,
    measured_clip: float | None = None,
) -> str:
    """The plain sentences of a :class:`Suggestion`: the norms seen, what clipping does,
    the recommendation ``rec`` and Pascanu's range, and what happened on the way (an
    explosion, a re-measurement under ``measured_clip``, a divergence)."""
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
        recommended(rec),
        f"Pascanu et al. (2013) found that half to ten times the average norm "
        f"({0.5 * mean:.3g} to {10 * mean:.3g} here) can still converge.",
    ]
    if exploded_at is not None and measured_clip is not None:
        text.append(
            f"Without clipping, the norm jumped past {EventRules().explode_factor:g}× its "
            f"running median at step {exploded_at}: an exploding gradient. Norms measured "
            "after that describe a model the explosion had thrown off, so training started "
            f"again from the same weights with the gradient clipped at {measured_clip:.3g} "
            "(the smallest norm before the explosion, a step the model took safely), and "
            "the rules use the pre-clip norms of those steps."
        )
    elif exploded_at is not None:
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
    return " ".join(text) + fallback(rec, by["autoclip_p10"])


def fallback(rec: Rule, lower: Rule) -> str:
    """The explanation's closing sentence (with its leading space): the ``lower`` rule
    to try if training still spikes, or nothing when ``rec`` is not above it."""
    if not lower.threshold < rec.threshold:
        return ""
    return (
        f" If training still spikes or diverges, try a lower value such as "
        f"{lower.threshold:.3g} (AutoClip's 10th percentile, which clips about "
        f"{lower.clip_fraction:.0%} of steps)."
    )

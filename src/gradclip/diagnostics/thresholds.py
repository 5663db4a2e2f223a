r"""The threshold rules of ``gradclip suggest``: one implementation, used by
:func:`gradclip.suggest`, ``gradclip suggest RUN_DIR`` and the demo.

Each rule turns a sequence of observed, unclipped global gradient norms
:math:`n_1 \dots n_T` into one fixed threshold ``c``; the table also gives the
fraction of steps with :math:`n_t > c`, i.e. how often that ``max_norm`` would
have clipped on these steps.

=================  ====================================================  ==========================
rule               threshold                                             source
=================  ====================================================  ==========================
``pascanu_mean``   :math:`\bar n` (mean norm)                            Pascanu et al. 2013, §3.2
``pascanu_half``   :math:`\bar n / 2`  (low end of "half to ten times")  Pascanu et al. 2013, §3.2
``pascanu_10x``    :math:`10\,\bar n` (high end)                          Pascanu et al. 2013, §3.2
``autoclip_p10``   10th percentile of the norms                          Seetharaman et al. 2020
``zclip``          :math:`\mu + z\sigma` (EMA α = 0.97, z = 2.5,          Kumar et al. 2025
                   25 warm-up steps, spikes fed back clipped)
``median_x2``      :math:`k \cdot \mathrm{median}` (k = 2)               this project
=================  ====================================================  ==========================

References: Pascanu, Mikolov, Bengio, "On the difficulty of training recurrent
neural networks", ICML 2013 (arXiv:1211.5063): "values from half to ten times
this average can still yield convergence". Seetharaman, Wichern, Pardo, Le Roux,
"AutoClip: Adaptive Gradient Clipping for Source Separation Networks", MLSP
2020 (p = 10 recommended; about 90 % of steps clipped). Kumar, Owen, Roy
Chowdhury, Güra, "ZClip: Adaptive Spike Mitigation for LLM Pre-Training",
arXiv:2504.02507 (α = 0.97, z = 2.5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from gradclip.monitor import EventDetector, EventRules, percentile

__all__ = [
    "HALVED_RULES",
    "RULES",
    "ExplosionWatch",
    "Rule",
    "clip_fraction",
    "first_explosion",
    "halved_rule",
    "measured_clip_rule",
    "threshold_rules",
    "zclip_threshold",
]

RULES = ("pascanu_mean", "pascanu_half", "pascanu_10x", "autoclip_p10", "zclip", "median_x2")
# The rows trials add below a winning lowest candidate: half of it, then half again.
HALVED_RULES = ("half_lowest", "quarter_lowest")


@dataclass(frozen=True)
class Rule:
    """One row of the rules table.

    Attributes:
        name: the rule's key (see :data:`RULES`; ``measured_clip`` after an explosion,
            :data:`HALVED_RULES` after trials).
        threshold: the ``max_norm`` it gives on these norms.
        clip_fraction: fraction of the observed steps with norm > threshold.
        description: one line for the table.
    """

    name: str
    threshold: float
    clip_fraction: float
    description: str

    def as_dict(self) -> dict[str, float | str]:
        """The row as a plain dict."""
        return asdict(self)


def clip_fraction(norms: Sequence[float], threshold: float) -> float:
    """Fraction of ``norms`` strictly above ``threshold`` (torch clips when ``n > c``).

    Args:
        norms: finite norms.
        threshold: the candidate ``max_norm``.

    Returns:
        A fraction in ``[0, 1]`` (0 for no norms).

    Example:
        >>> clip_fraction([1.0, 2.0, 3.0, 4.0], 2.0)
        0.5
    """
    if not norms:
        return 0.0
    return sum(n > threshold for n in norms) / len(norms)


def zclip_threshold(
    norms: Sequence[float], *, alpha: float = 0.97, z: float = 2.5, warmup: int = 25
) -> float:
    r"""ZClip's final spike threshold :math:`\mu + z\sigma` on a norm sequence.

    The first ``warmup`` norms give the initial mean and variance; then
    :math:`\mu \leftarrow \alpha\mu + (1-\alpha)n`,
    :math:`\sigma^2 \leftarrow \alpha\sigma^2 + (1-\alpha)(n-\mu)^2`, where a norm
    with z-score above ``z`` is first replaced by the clipped value
    :math:`\mu + (z^2/z_t)\sigma`, as ZClip feeds its statistics.

    Args:
        norms: finite norms in step order.
        alpha: EMA rate.
        z: z-score threshold.
        warmup: norms used to initialise the statistics.

    Returns:
        The threshold in force after the last norm (NaN for no norms).

    Example:
        >>> zclip_threshold([1.0] * 30)
        1.0
    """
    if not norms:
        return math.nan
    head = list(norms[:warmup])
    mu = sum(head) / len(head)
    var = sum((n - mu) ** 2 for n in head) / len(head)
    for n in norms[warmup:]:
        sigma = math.sqrt(var)
        zt = (n - mu) / sigma if sigma > 0 else 0.0
        if zt > z:
            n = mu + (z * z / zt) * sigma
        mu = alpha * mu + (1 - alpha) * n
        var = alpha * var + (1 - alpha) * (n - mu) ** 2
    return mu + z * math.sqrt(var)


def threshold_rules(
    norms: Sequence[float],
    *,
    autoclip_percentile: float = 10.0,
    zclip_alpha: float = 0.97,
    zclip_z: float = 2.5,
    zclip_warmup: int = 25,
    median_k: float = 2.0,
) -> list[Rule]:
    """Every rule's threshold and clip fraction on ``norms`` (non-finite values dropped).

    Args:
        norms: the observed unclipped global norms, in step order.
        autoclip_percentile: AutoClip's ``p``.
        zclip_alpha: ZClip's EMA rate.
        zclip_z: ZClip's z-score threshold.
        zclip_warmup: ZClip's warm-up steps.
        median_k: ``k`` of the median rule.

    Returns:
        One :class:`Rule` per entry of :data:`RULES`, in that order.

    Raises:
        ValueError: when no norm is finite and positive.

    Example:
        >>> rows = threshold_rules([1.0, 2.0, 3.0, 4.0, 10.0])
        >>> [(r.name, r.threshold, r.clip_fraction) for r in rows][:3]
        [('pascanu_mean', 4.0, 0.2), ('pascanu_half', 2.0, 0.6), ('pascanu_10x', 40.0, 0.0)]
    """
    finite = [float(n) for n in norms if math.isfinite(n)]
    if not finite or max(finite) <= 0:
        raise ValueError("no finite, positive gradient norm to suggest a threshold from")
    ordered = sorted(finite)
    mean = sum(finite) / len(finite)
    median = percentile(ordered, 50)
    p = autoclip_percentile
    values = [
        (
            "pascanu_mean",
            mean,
            "mean norm (Pascanu et al. 2013: use statistics of the average norm)",
        ),
        ("pascanu_half", 0.5 * mean, "half the mean: low end of Pascanu's working range"),
        ("pascanu_10x", 10.0 * mean, "ten times the mean: high end of Pascanu's working range"),
        (
            "autoclip_p10",
            percentile(ordered, p),
            f"{p:g}th percentile (AutoClip, Seetharaman et al. 2020)",
        ),
        (
            "zclip",
            zclip_threshold(finite, alpha=zclip_alpha, z=zclip_z, warmup=zclip_warmup),
            f"EMA mean + {zclip_z:g} std, alpha {zclip_alpha:g} (ZClip, Kumar et al. 2025)",
        ),
        (f"median_x{median_k:g}", median_k * median, f"{median_k:g} x the median norm"),
    ]
    return [Rule(name, c, clip_fraction(finite, c), desc) for name, c, desc in values]


def measured_clip_rule(norms: Sequence[float], clip: float) -> Rule:
    """The ``measured_clip`` row: the clip ``norms`` were measured under after an
    explosion (the model trained safely under it), with its clip fraction.

    Example:
        >>> measured_clip_rule([1.0, 2.0, 3.0, float("nan")], 2.0).clip_fraction
        0.3333333333333333
    """
    finite = [float(n) for n in norms if math.isfinite(n)]
    desc = "the clip these norms were measured under, after the explosion"
    return Rule("measured_clip", clip, clip_fraction(finite, clip), desc)


def halved_rule(norms: Sequence[float], winner: Rule, depth: int) -> Rule:
    """The row :data:`HALVED_RULES` ``[depth]``: half of ``winner``, the lowest candidate,
    which won its trial (so the best clip may lie below every candidate), with its clip
    fraction on ``norms``.

    Example:
        >>> won = Rule("measured_clip", 4.0, 0.5, "")
        >>> row = halved_rule([1.0, 3.0, 5.0], won, 0)
        >>> row.name, row.threshold, round(row.clip_fraction, 3)
        ('half_lowest', 2.0, 0.667)
        >>> halved_rule([1.0, 3.0, 5.0], row, 1).threshold
        1.0
    """
    finite = [float(n) for n in norms if math.isfinite(n)]
    half = winner.threshold / 2
    desc = f"half of {winner.name}'s {winner.threshold:.3g}, the lowest candidate, which won"
    return Rule(HALVED_RULES[depth], half, clip_fraction(finite, half), desc)


class ExplosionWatch:
    """Norms fed one step at a time; :attr:`at` becomes the first exploding step.

    The rule of :class:`~gradclip.monitor.EventDetector`: ``n_t > k · median`` of the
    earlier finite norms (``k = 5``), after ``warmup`` of them; a non-finite norm after
    the first step counts too. :func:`first_explosion` is this over a whole sequence.

    Args:
        warmup: finite norms seen before the rule can fire.

    Example:
        >>> watch = ExplosionWatch()
        >>> [watch.update(n) for n in (2.6, 4.2, 12.5, 7.3, 114.0)]
        [False, False, False, False, True]
        >>> watch.at
        4
    """

    def __init__(self, *, warmup: int = 3) -> None:
        self._detector = EventDetector(EventRules(warmup=warmup))
        self._step = 0
        self.at: int | None = None

    def update(self, norm: float) -> bool:
        """Feed the next step's norm; True once an explosion has been seen."""
        step, self._step = self._step, self._step + 1
        if self.at is None:
            if not math.isfinite(norm):
                self.at = step if step > 0 else None
            elif any(e["event"] == "explosion" for e in self._detector.update(step, norm, {}, ())):
                self.at = step
        return self.at is not None


def first_explosion(norms: Sequence[float], *, warmup: int = 3) -> int | None:
    """The first step whose norm explodes, by :class:`ExplosionWatch`'s rule
    (``n_t > k · median`` of the earlier finite norms, after ``warmup`` of them),
    or the first non-finite norm; None if neither happens.

    Args:
        norms: global pre-clip norms in step order.
        warmup: finite norms seen before the rule can fire.

    Returns:
        The step index, or None.

    Example:
        >>> first_explosion([2.6, 4.2, 12.5, 7.3, 114.0, 324.0])
        4
        >>> first_explosion([1.0, 1.1, 0.9]) is None
        True
    """
    watch = ExplosionWatch(warmup=warmup)
    for norm in norms:
        if watch.update(norm):
            break
    return watch.at

"""How often would trials of k runs pick a threshold within 2 % of a sweep's best?

Replays ``suggest --trials`` on the cells of a finished ``gradclip sweep``: a sweep cell
at threshold c and seed s is a trial of c from seed s's initial weights (same batches,
same steps), and ``trial_score`` of its losses (the mean over the last quarter of its
steps) is that trial's score. For every set of k seeds, the candidate with the lowest
mean score is "picked" and judged by the sweep's mean validation perplexity over all seeds. With
``--margin F`` the pick replaces the mean norm (``pascanu_mean``) only if it beats it as
``gradclip.diagnostics.suggestion.beats`` decides for ``suggest(trial_margin=F)``: a score
lower by more than the fraction F, and lower for every seed of the set (default 0: the
lowest decides when it wins every seed). When the lowest candidate is picked, lower
thresholds are tried next as ``suggest`` does (``--measured C``, the clip ``suggest`` measured
under after an explosion, first; then half the winner), where the sweep has their cells.
``--tail T`` scores the last fraction T of the steps instead of the last quarter (0.25,
what ``suggest`` scores; 0.5, the second half, is what it scored before 2026-12-04), to
ask whether another window would rank the candidates better.

    python benchmarks/trial_repeats_from_sweep.py SWEEP_DIR --candidates 7.4,8.61,9.49,3.61 \
        --margin 0.003

Candidates are given in the order of ``TRIAL_RULES`` (the first is the mean norm,
``suggest``'s default) or as ``RULE=VALUE``; as in ``suggest``, one within 5 % of a
candidate before it is not tried. The selection is ``suggest``'s own
(``gradclip.diagnostics.trial_search.search_trials``). Prints, for k = 1 .. 4,
the mean distance of the pick from the best threshold and the share of seed sets whose
pick is within 2 %.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
from pathlib import Path

from gradclip.diagnostics.suggestion import RECOMMENDED_RULE, Suggestion
from gradclip.diagnostics.thresholds import Rule
from gradclip.diagnostics.trial_search import search_trials
from gradclip.diagnostics.trials import SCORED_FRACTION, TRIAL_RULES, Trial, trial_score


def read_cells(
    sweep: Path, tail: float = SCORED_FRACTION
) -> dict[tuple[float, int], tuple[float, float]]:
    """(threshold, seed) -> (validation perplexity, mean training loss of the last ``tail``)."""
    cells = {}
    for cell in sorted(sweep.glob("*/cell.json")):
        info = json.loads(cell.read_text())
        metrics = cell.parent / "metrics.jsonl"
        losses = [json.loads(line)["loss"] for line in metrics.read_text().splitlines()]
        cells[(float(info["threshold"]), int(info["seed"]))] = (
            info["valid_ppl"],
            trial_score(losses, tail),
        )
    if not cells:
        raise SystemExit(f"{sweep}: no cells (*/cell.json)")
    return cells


def replay(
    cells: dict[tuple[float, int], tuple[float, float]],
    thresholds: list[float],
    cands: list[tuple[str, float]],
    seeds: tuple[int, ...],
    margin: float,
    measured: float | None = None,
) -> float:
    """The threshold ``search_trials`` (``suggest``'s own selection) picks when its trials
    are the cells of ``seeds``: among ``cands`` (rule, threshold; ``pascanu_mean`` is the
    default), then lower while the lowest wins (the ``measured`` clip, then half the
    winner). A lower threshold the sweep has no cell for counts as a failed trial."""
    rules = [Rule(name, c, 0.0, "") for name, c in cands]
    rules += [Rule(n, math.nan, 0.0, "") for n in TRIAL_RULES if n not in dict(cands)]
    if measured is not None:
        rules.append(Rule("measured_clip", measured, 0.0, ""))
    found = Suggestion(math.nan, RECOMMENDED_RULE, rules, [], 0, None, "")

    def trial(rows: list[Rule]) -> list[Trial]:
        out = []
        for row in rows:
            near = [t for t in thresholds if abs(t - row.threshold) <= 0.01 * row.threshold]
            c = near[0] if near else row.threshold  # no cell: every run counts as failed
            runs = tuple(cells.get((c, s), (math.nan, math.inf))[1] for s in seeds)
            loss = statistics.fmean(runs) if all(map(math.isfinite, runs)) else math.inf
            out.append(Trial(row.name, c, loss, 0, runs))
        return out

    picked = search_trials(found, trial, margin=margin)
    return next(t.threshold for t in picked.trials if t.rule == picked.rule)  # the cell's


def nearest(thresholds: list[float], given: float, flag: str) -> float:
    """The sweep's threshold within 1 % of ``given`` (thresholds are printed to 3 digits)."""
    near = min(thresholds, key=lambda t: abs(t - given))
    if abs(near - given) > 0.01 * given:
        raise SystemExit(f"{flag}: no sweep threshold within 1 % of {given:g}")
    return near


def candidate(thresholds: list[float], given: str, i: int) -> tuple[str, float]:
    """``RULE=VALUE``, or a bare value for the ``i``-th of ``TRIAL_RULES``, as (rule, the
    sweep's threshold)."""
    name, _, value = given.rpartition("=")
    if not name and i >= len(TRIAL_RULES):
        raise SystemExit(f"--candidates: more than {len(TRIAL_RULES)} bare values; name them")
    name = name or TRIAL_RULES[i]
    if name not in TRIAL_RULES:
        raise SystemExit(f"--candidates: unknown rule {name!r} (one of {', '.join(TRIAL_RULES)})")
    return name, nearest(thresholds, float(value), "--candidates")


def percent(x: float) -> str:
    """A distance in percent: two decimals, or three significant digits past 10^4 %."""
    return f"{x:+.2f} %" if abs(x) < 1e4 else f"{x:+.3g} %"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument(
        "--candidates",
        required=True,
        help="comma-separated thresholds, RULE=VALUE or bare in the order of TRIAL_RULES",
    )
    p.add_argument("--margin", type=float, default=0.0, help="as suggest's trial_margin")
    p.add_argument("--measured", type=float, help="the measured clip, after an explosion")
    p.add_argument(
        "--tail", type=float, default=SCORED_FRACTION, help="fraction of the steps scored"
    )
    args = p.parse_args()
    try:
        cells = read_cells(args.sweep, args.tail)
    except ValueError as e:  # trial_score checks the fraction
        raise SystemExit(f"--tail: {e}") from None
    thresholds = sorted({t for t, _ in cells})
    # the seeds every threshold has (a sweep extended with more seeds on some thresholds)
    seeds = sorted(set.intersection(*({s for u, s in cells if u == t} for t in thresholds)))
    cands = [candidate(thresholds, c, i) for i, c in enumerate(args.candidates.split(","))]
    measured = None if args.measured is None else nearest(thresholds, args.measured, "--measured")
    valid = {t: statistics.fmean(cells[(t, s)][0] for s in seeds) for t in thresholds}
    best = min(valid.values())
    default = dict(cands)[RECOMMENDED_RULE]
    gap = 100 * (valid[default] / best - 1)
    where = f"the default {default:g} is {percent(gap)} from the best"
    print(f"{len(seeds)} seeds, margin {args.margin:g}, tail {args.tail:g}; {where}")
    print(" k  seed sets  mean distance of the pick  within 2 %")
    for k in range(1, 5):
        dist = []
        for combo in itertools.combinations(seeds, k):
            pick = replay(cells, thresholds, cands, combo, args.margin, measured)
            dist.append(100 * (valid[pick] / best - 1))
        inside = sum(d <= 2 for d in dist) / len(dist)
        print(f"{k:2d}  {len(dist):9d}  {percent(statistics.fmean(dist)):>26}  {inside:9.0%}")


if __name__ == "__main__":
    main()

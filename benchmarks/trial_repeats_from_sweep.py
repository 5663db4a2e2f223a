"""How often would trials of k runs pick a threshold within 2 % of a sweep's best?

Replays ``suggest --trials`` on the cells of a finished ``gradclip sweep``: a sweep cell
at threshold c and seed s is a trial of c from seed s's initial weights (same batches,
same steps), and ``trial_score`` of its losses (the mean over the last quarter of its
steps) is that trial's score. For every set of k seeds, the candidate with the lowest
mean score is "picked" and judged by the sweep's mean validation perplexity over all seeds. With
``--margin F`` the pick replaces the first candidate only if it beats it as
``gradclip.diagnostics.suggestion.beats`` decides for ``suggest(trial_margin=F)``: a score
lower by more than the fraction F, and lower for every seed of the set (default 0: the
lowest decides when it wins every seed). When the lowest candidate is picked and the sweep
has cells at half its threshold (and then a quarter), those are tried next, as ``suggest``
does.
``--tail T`` scores the last fraction T of the steps instead of the last quarter (0.25,
what ``suggest`` scores; 0.5, the second half, is what it scored before 2026-12-04), to
ask whether another window would rank the candidates better.

    python benchmarks/trial_repeats_from_sweep.py SWEEP_DIR --candidates 7.4,8.61,9.49,3.61 \
        --margin 0.003

The first candidate is ``suggest``'s default recommendation. Prints, for k = 1 .. 4,
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

from gradclip.diagnostics.suggestion import beats
from gradclip.diagnostics.thresholds import BELOW_RULES
from gradclip.diagnostics.trials import SCORED_FRACTION, Trial, trial_score


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
    cands: list[float],
    seeds: tuple[int, ...],
    margin: float,
) -> float:
    """The threshold trials from ``seeds`` pick among ``cands`` (the first is the default),
    then halving while the lowest wins and the sweep has the halved cells."""

    def trial(c: float) -> Trial:
        runs = tuple(cells[(c, s)][1] for s in seeds)
        loss = statistics.fmean(runs) if all(map(math.isfinite, runs)) else math.inf
        return Trial("", c, loss, 0, runs)

    tried = {c: trial(c) for c in cands}
    pick = min(cands, key=lambda c: tried[c].loss)
    if not beats(tried[pick], tried[cands[0]], margin):
        pick = cands[0]
    for _ in BELOW_RULES:
        half = [t for t in thresholds if abs(t - pick / 2) <= 0.01 * pick / 2]
        if pick > min(cands) or not half or not all((half[0], s) in cells for s in seeds):
            break
        cands = [*cands, half[0]]
        tried[half[0]] = trial(half[0])
        if not beats(tried[half[0]], tried[pick], margin):
            break
        pick = half[0]
    return pick


def percent(x: float) -> str:
    """A distance in percent: two decimals, or three significant digits past 10^4 %."""
    return f"{x:+.2f} %" if abs(x) < 1e4 else f"{x:+.3g} %"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--candidates", required=True, help="comma-separated thresholds")
    p.add_argument("--margin", type=float, default=0.0, help="as suggest's trial_margin")
    p.add_argument(
        "--tail", type=float, default=SCORED_FRACTION, help="fraction of the steps scored"
    )
    args = p.parse_args()
    try:
        cells = read_cells(args.sweep, args.tail)
    except ValueError as e:  # trial_score checks the fraction
        raise SystemExit(f"--tail: {e}") from None
    seeds = sorted({s for _, s in cells})
    thresholds = sorted({t for t, _ in cells})
    cands = []
    for given in (float(c) for c in args.candidates.split(",")):  # as printed, to 3 digits
        near = min(thresholds, key=lambda t: abs(t - given))
        if abs(near - given) > 0.01 * given:
            raise SystemExit(f"--candidates: no sweep threshold within 1 % of {given:g}")
        cands.append(near)
    valid = {t: statistics.fmean(cells[(t, s)][0] for s in seeds) for t in thresholds}
    best = min(valid.values())
    gap = 100 * (valid[cands[0]] / best - 1)
    where = f"the default {cands[0]:g} is {percent(gap)} from the best"
    print(f"{len(seeds)} seeds, margin {args.margin:g}, tail {args.tail:g}; {where}")
    print(" k  seed sets  mean distance of the pick  within 2 %")
    for k in range(1, 5):
        dist = []
        for combo in itertools.combinations(seeds, k):
            pick = replay(cells, thresholds, cands, combo, args.margin)
            dist.append(100 * (valid[pick] / best - 1))
        inside = sum(d <= 2 for d in dist) / len(dist)
        print(f"{k:2d}  {len(dist):9d}  {percent(statistics.fmean(dist)):>26}  {inside:9.0%}")


if __name__ == "__main__":
    main()

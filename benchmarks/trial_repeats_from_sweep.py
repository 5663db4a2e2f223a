"""How often would trials of k runs pick a threshold within 2 % of a sweep's best?

Replays ``suggest --trials`` on the cells of a finished ``gradclip sweep``: a sweep cell
at threshold c and seed s is a trial of c from seed s's initial weights (same batches,
same steps), and ``trial_score`` of its losses (the mean over the last quarter of its
steps) is that trial's score. For every set of k seeds, the candidate with the lowest
mean score is "picked" and judged by the sweep's mean validation perplexity over all seeds. With
``--margin F`` the pick replaces the first candidate only if it beats it as
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
from gradclip.diagnostics.thresholds import Rule
from gradclip.diagnostics.trials import (
    LOWER_STEPS,
    SCORED_FRACTION,
    Trial,
    lower_candidate,
    trial_score,
)


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
    measured: float | None = None,
) -> float:
    """The threshold trials from ``seeds`` pick among ``cands`` (the first is the default),
    then going lower while the lowest wins (``lower_candidate``: the ``measured`` clip,
    then half the winner), as long as the sweep has the cells."""

    def trial(c: float, name: str) -> Trial:
        runs = tuple(cells[(c, s)][1] for s in seeds)
        loss = statistics.fmean(runs) if all(map(math.isfinite, runs)) else math.inf
        return Trial(name, c, loss, 0, runs)

    tried = [trial(c, f"candidate{i}") for i, c in enumerate(cands)]
    pick = min(tried, key=lambda t: t.loss)
    if not beats(pick, tried[0], margin):
        pick = tried[0]
    rows = [Rule("measured_clip", measured, 0.0, "")] if measured is not None else []
    for _ in range(LOWER_STEPS):
        if pick.threshold > min(t.threshold for t in tried):
            break
        winner = Rule(pick.rule, pick.threshold, 0.0, "")
        row = lower_candidate(rows, winner, {t.rule for t in tried}, [])
        cell = [t for t in thresholds if abs(t - row.threshold) <= 0.01 * row.threshold]
        if not cell or not all((cell[0], s) in cells for s in seeds):
            break  # the sweep did not run it
        tried.append(trial(cell[0], row.name))
        if not beats(tried[-1], pick, margin):
            break
        pick = tried[-1]
    return pick.threshold


def nearest(thresholds: list[float], given: float, flag: str) -> float:
    """The sweep's threshold within 1 % of ``given`` (thresholds are printed to 3 digits)."""
    near = min(thresholds, key=lambda t: abs(t - given))
    if abs(near - given) > 0.01 * given:
        raise SystemExit(f"{flag}: no sweep threshold within 1 % of {given:g}")
    return near


def percent(x: float) -> str:
    """A distance in percent: two decimals, or three significant digits past 10^4 %."""
    return f"{x:+.2f} %" if abs(x) < 1e4 else f"{x:+.3g} %"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--candidates", required=True, help="comma-separated thresholds")
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
    cands = [nearest(thresholds, float(c), "--candidates") for c in args.candidates.split(",")]
    measured = None if args.measured is None else nearest(thresholds, args.measured, "--measured")
    valid = {t: statistics.fmean(cells[(t, s)][0] for s in seeds) for t in thresholds}
    best = min(valid.values())
    gap = 100 * (valid[cands[0]] / best - 1)
    where = f"the default {cands[0]:g} is {percent(gap)} from the best"
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

"""benchmarks/trial_repeats_from_sweep.py replays suggest's own selection on sweep cells.

Each case builds a tiny sweep directory (cell.json + metrics.jsonl per cell) whose losses
are chosen so that the rules give a known answer: the mean norm kept when a challenger
loses one seed, a lower threshold taken when the lowest candidate wins every seed, and the
search stopping at a threshold the sweep has no cell for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def replay_module(load_benchmark):
    return load_benchmark("trial_repeats_from_sweep")


def write_sweep(root: Path, scores: dict[float, list[float]]) -> Path:
    """One cell per (threshold, seed 1…n): four steps whose last-quarter loss is the score."""
    for threshold, per_seed in scores.items():
        for seed, score in enumerate(per_seed, start=1):
            cell = root / f"norm-t{threshold:g}-s{seed}"
            cell.mkdir(parents=True)
            info = {"threshold": threshold, "seed": seed, "valid_ppl": 100.0 + threshold}
            (cell / "cell.json").write_text(json.dumps(info))
            rows = [{"loss": 9.0}, {"loss": 9.0}, {"loss": 9.0}, {"loss": score}]
            (cell / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    return root


def pick(module, sweep: Path, cands: list[tuple[str, float]], measured=None) -> float:
    cells = module.read_cells(sweep)
    thresholds = sorted({t for t, _ in cells})
    return module.replay(cells, thresholds, cands, (1, 2, 3), 0.003, measured)


CANDS = [("pascanu_mean", 8.0), ("pascanu_half", 4.0)]


def test_a_challenger_that_loses_one_seed_does_not_replace_the_mean_norm(replay_module, tmp_path):
    sweep = write_sweep(tmp_path, {8.0: [5.0, 5.0, 5.0], 4.0: [4.0, 4.0, 5.1]})
    assert pick(replay_module, sweep, CANDS) == 8.0


def test_a_winning_lowest_candidate_leads_to_half_of_it(replay_module, tmp_path):
    scores = {8.0: [5.0] * 3, 4.0: [4.0] * 3, 2.0: [3.0] * 3, 1.0: [3.5] * 3}
    sweep = write_sweep(tmp_path, scores)
    assert pick(replay_module, sweep, CANDS) == 2.0  # 1.0 did not beat 2.0


def test_the_measured_clip_comes_before_halving(replay_module, tmp_path):
    scores = {8.0: [5.0] * 3, 4.0: [4.0] * 3, 3.0: [3.0] * 3, 1.5: [2.0] * 3, 2.0: [1.0] * 3}
    sweep = write_sweep(tmp_path, scores)
    # 4 wins, then the measured clip 3 beats it, then half of 3 (1.5) beats that;
    # 2.0, half of 4, is never tried
    assert pick(replay_module, sweep, CANDS, measured=3.0) == 1.5


def test_a_lower_threshold_without_cells_stops_the_search(replay_module, tmp_path):
    sweep = write_sweep(tmp_path, {8.0: [5.0] * 3, 4.0: [4.0] * 3})
    assert pick(replay_module, sweep, CANDS) == 4.0


def test_candidates_by_name_or_position(replay_module):
    thresholds = [2.0, 4.0, 8.0]
    assert replay_module.candidate(thresholds, "8.01", 0) == ("pascanu_mean", 8.0)
    assert replay_module.candidate(thresholds, "pascanu_half=4", 0) == ("pascanu_half", 4.0)
    with pytest.raises(SystemExit, match="unknown rule 'nope'"):
        replay_module.candidate(thresholds, "nope=4", 0)
    with pytest.raises(SystemExit, match="no sweep threshold within 1 % of 5"):
        replay_module.candidate(thresholds, "5", 1)

"""Event detection on synthetic norm sequences with known events."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradclip.monitor import EventDetector, EventRules


def run(
    norms: list[float], layers: list[dict[str, float]] | None = None, **rules: float
) -> list[dict]:
    det = EventDetector(EventRules(**rules))  # type: ignore[arg-type]
    out = []
    for step, n in enumerate(norms):
        out += det.update(step, n, layers[step] if layers else {}, ["x.weight"])
    return out


def steady(n: int, seed: int = 0, sigma: float = 0.3) -> list[float]:
    rng = random.Random(seed)
    return [math.exp(rng.gauss(0.0, sigma)) for _ in range(n)]


@pytest.mark.parametrize("seed", range(5))
def test_steady_noisy_sequence_has_no_event(seed):
    assert run(steady(2000, seed)) == []


@pytest.mark.parametrize("at", [25, 137, 999])
def test_explosion_at_a_known_step_is_detected(at):
    norms = steady(1000, seed=at)
    norms[at] = 40.0
    events = run(norms)
    assert [(e["event"], e["step"]) for e in events] == [("explosion", at)]
    ev = events[0]
    assert ev["value"] == 40.0 and 0.5 < ev["reference"] < 2.0
    assert "x the running median" in ev["message"]


def test_no_explosion_during_warmup_and_threshold_is_strict():
    norms = [1.0] * 30
    norms[5] = 100.0  # inside the warm-up: not judged
    norms[25] = 5.0  # exactly k x median: not above
    norms[26] = 5.01
    assert [e["step"] for e in run(norms, explode_factor=5.0, warmup=20)] == [26]


def test_slow_growth_is_not_an_explosion():
    norms = [1.01**t for t in range(1000)]  # x20000 overall, but smooth
    assert run(norms) == []


def test_vanishing_layer_below_floor_flagged_once_after_patience():
    layers = [{"rnn": 1.0, "out": 1.0} for _ in range(100)]
    for t in range(40, 80):
        layers[t]["rnn"] = 1e-12
    events = run([1.0] * 100, layers, vanish_patience=10)
    assert [(e["event"], e["step"], e["layer"]) for e in events] == [("vanishing", 49, "rnn")]
    assert "below the floor" in events[0]["message"]


def test_collapse_against_own_history_flagged():
    layers = [{"rnn": 0.5 * math.exp(0.1 * math.sin(t))} for t in range(200)]
    for t in range(120, 200):
        layers[t]["rnn"] = 1e-5  # above the floor, 5e4x below its history
    events = run([1.0] * 200, layers, vanish_patience=5, vanish_factor=1e3)
    assert [(e["event"], e["step"]) for e in events] == [("vanishing", 124)]
    assert 0.4 < events[0]["reference"] < 0.6


def test_brief_dip_is_not_vanishing():
    layers = [{"rnn": 1.0} for _ in range(100)]
    for t in range(50, 55):
        layers[t]["rnn"] = 0.0
    assert run([1.0] * 100, layers, vanish_patience=10) == []


def test_nonfinite_names_parameter_and_does_not_poison_the_median():
    norms = [1.0] * 50 + [math.nan, math.inf] + [1.0] * 50
    norms[80] = 20.0
    events = run(norms)
    assert [(e["event"], e["step"]) for e in events] == [
        ("nonfinite", 50),
        ("nonfinite", 51),
        ("explosion", 80),
    ]
    assert events[0]["parameter"] == "x.weight" and "NaN" in events[0]["message"]
    assert "inf" in events[1]["message"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.1, 10.0), min_size=1, max_size=300))
def test_median_matches_statistics(values):
    import statistics

    det = EventDetector(EventRules(window=37))
    for i, v in enumerate(values):
        det.update(i, v, {}, ())
        assert det.median() == pytest.approx(statistics.median(values[max(0, i - 36) : i + 1]))


def test_rules_validate():
    with pytest.raises(ValueError, match="window"):
        EventRules(window=0)
    with pytest.raises(ValueError, match="must not exceed window"):
        EventRules(warmup=50, window=20)
    with pytest.raises(ValueError, match="vanish"):
        EventRules(vanish_factor=0.5)

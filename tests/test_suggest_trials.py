"""gradclip.suggest(trials=True): candidates trained from one start, scored against
independent re-runs with torch's own clip, and the user's state untouched."""

from __future__ import annotations

import copy
import dataclasses
import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from gradclip.diagnostics.suggest import suggest, suggest_from_norms
from gradclip.diagnostics.suggestion import TRIAL_MARGIN, picked_lowest, with_trials
from gradclip.diagnostics.thresholds import HALVED_RULES, Rule, halved_rule
from gradclip.diagnostics.trials import (
    TRIAL_RULES,
    Trial,
    lower_candidate,
    run_trials,
    trial_candidates,
    trial_score,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch[0]), batch[1])


def overshooting_problem(seed: int = 0) -> tuple[nn.Linear, list[tuple[torch.Tensor, ...]]]:
    """Least squares with inputs ×3: SGD at lr 0.5 overshoots (curvature ≈ 18 > 2/lr)."""
    torch.manual_seed(seed)
    model = nn.Linear(4, 1)
    w = torch.randn(4, 1)
    data = []
    for _ in range(80):
        x = torch.randn(16, 4) * 3
        data.append((x, x @ w + 0.1 * torch.randn(16, 1)))
    return model, data


def reference_trial(model, data, lr, c, steps, start=0):
    """The trial by hand: a copy, SGD, torch.nn.utils.clip_grad_norm_ at c, on batches
    start .. start + steps - 1."""
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    losses = []
    for b in data[start : start + steps]:
        opt.zero_grad()
        loss = mse(ref, b)
        loss.backward()
        losses.append(float(loss.detach()))
        nn.utils.clip_grad_norm_(ref.parameters(), c)
        opt.step()
    last = losses[-math.ceil(steps / 4) :]  # the last quarter, rounded up
    return sum(last) / len(last)


def expected_pick(trials: list[Trial], margin: float = TRIAL_MARGIN) -> Trial:
    """The rule, restated: the lowest loss, unless it is not lower than the mean norm's by
    the margin or loses one of their paired runs; then each trial of a halved threshold in
    turn, while it wins against the pick the same way."""

    def wins(a: Trial, b: Trial) -> bool:
        runs = np.array(a.losses) < np.array(b.losses) if a.losses and b.losses else [True]
        return bool(a.loss < (1 - margin) * b.loss and np.all(runs))

    first = [t for t in trials if t.rule not in ("measured_clip", "half_lowest", "quarter_lowest")]
    lowest = min(first, key=lambda t: t.loss)
    mean = next(t for t in first if t.rule == "pascanu_mean")
    pick = lowest if wins(lowest, mean) else mean
    for t in trials[len(first) :]:
        if not wins(t, pick):
            break
        pick = t
    return pick


def rules(**thresholds: float) -> list[Rule]:
    return [Rule(name, t, 0.5, name) for name, t in thresholds.items()]


@given(st.lists(st.floats(0.01, 100.0), min_size=7, max_size=7))
def test_candidates_come_from_the_trial_rules_and_are_5_percent_apart(values):
    names = ["pascanu_mean", "pascanu_half", "pascanu_10x", "autoclip_p10", "zclip", "median_x2"]
    names.append("measured_clip")  # the row suggest adds after an explosion
    got = trial_candidates(rules(**dict(zip(names, values, strict=True))))
    assert [r.name for r in got] == [n for n in TRIAL_RULES if n in {r.name for r in got}]
    assert got[0].name == "pascanu_mean"  # always kept: it is the measured recommendation
    for i, a in enumerate(got):
        for b in got[:i]:
            assert abs(a.threshold - b.threshold) > 0.05 * b.threshold
    dropped = [n for n in TRIAL_RULES if n not in {r.name for r in got}]
    for name in dropped:  # each dropped rule is close to a kept one that precedes it
        t = dict(zip(names, values, strict=True))[name]
        assert any(abs(t - k.threshold) <= 0.05 * k.threshold for k in got)


def test_trial_losses_match_independent_runs_with_torchs_clip():
    model, data = overshooting_problem()
    cands = rules(pascanu_mean=5.0, pascanu_half=0.5)
    out = run_trials(
        model, mse, lambda: iter(data), torch.optim.SGD(model.parameters(), lr=0.5), cands,
        steps=40,
    )  # fmt: skip
    assert [(t.rule, t.threshold, t.steps) for t in out] == [
        ("pascanu_mean", 5.0, 40),
        ("pascanu_half", 0.5, 40),
    ]
    for t in out:
        assert t.loss == pytest.approx(reference_trial(model, data, 0.5, t.threshold, 40), rel=1e-5)


def test_repeats_train_each_candidate_on_consecutive_windows_and_average():
    model, data = overshooting_problem()
    cands = rules(pascanu_mean=5.0, pascanu_half=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = run_trials(model, mse, lambda: iter(data), opt, cands, steps=20, repeats=4)
    for t in out:
        by_hand = [reference_trial(model, data, 0.5, t.threshold, 20, 20 * r) for r in range(4)]
        assert t.losses == pytest.approx(by_hand, rel=1e-5) and t.steps == 20
        assert t.loss == pytest.approx(sum(by_hand) / 4, rel=1e-5)
    with pytest.raises(ValueError, match="repeat 5 needs batches 81-100, but the batches ran out"):
        run_trials(model, mse, lambda: iter(data), opt, cands, steps=20, repeats=5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="repeats must be a positive int"):
            run_trials(model, mse, lambda: iter(data), opt, cands, steps=20, repeats=bad)
        with pytest.raises(ValueError, match="trial_repeats must be a positive int"):
            suggest(model, mse, data, opt, steps=20, trials=True, trial_repeats=bad)


def reseeded(model: nn.Linear, r: int) -> None:
    """Trial init for repeat r: the weights nn.Linear draws under seed 100 + r."""
    torch.manual_seed(100 + r)
    model.reset_parameters()


def test_init_repeats_train_from_each_initialisation_on_the_same_batches():
    model, data = overshooting_problem()
    before = copy.deepcopy(model.state_dict())
    cands = rules(pascanu_mean=5.0, pascanu_half=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen: list[int] = []

    def init(m: nn.Module, r: int) -> None:
        assert m is not model  # a fresh copy, never the caller's model
        seen.append(r)
        reseeded(m, r)

    # 20 batches are enough for 3 repeats: every initialisation trains on the first 20
    out = run_trials(
        model, mse, lambda: iter(data[:20]), opt, cands, steps=20, repeats=3, init=init
    )
    assert seen == [0, 1, 2, 0, 1, 2]
    for t in out:
        by_hand = []
        for r in range(3):
            start = copy.deepcopy(model)
            reseeded(start, r)
            by_hand.append(reference_trial(start, data, 0.5, t.threshold, 20))
        assert t.losses == pytest.approx(by_hand, rel=1e-5) and t.steps == 20
        assert t.loss == pytest.approx(sum(by_hand) / 3, rel=1e-5)
        assert len(set(t.losses)) == 3  # three initialisations, three different runs
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_suggest_trial_init_names_the_initialisations_and_restores_the_rng():
    model, data = overshooting_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    s = suggest(model, mse, data, opt, steps=20, trials=True, trial_repeats=2, trial_init=reseeded)
    assert torch.equal(torch.get_rng_state(), rng)  # the init's manual_seed is undone
    assert all(len(t.losses) == 2 for t in s.trials)
    assert "from each of 2 initialisations on the same batches" in s.explanation
    assert "(averaged over them)" in s.explanation


def test_suggest_trial_repeats_counts_every_window_in_the_progress_total():
    model, data = overshooting_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    totals: list[int] = []
    ticks: list[int] = []
    s = suggest(
        model, mse, data, opt, steps=20, trials=True, trial_repeats=3, on_total=totals.append,
        progress=ticks.append,
    )  # fmt: skip
    assert totals[-1] == s.steps + 20 * 3 * len(s.trials) and ticks[-1] == totals[-1]
    assert totals == sorted(set(totals))  # each halved trial adds its steps to the bar
    assert all(len(t.losses) == 3 for t in s.trials)
    best = expected_pick(s.trials)
    assert (s.rule, s.threshold) == (best.rule, best.threshold)
    assert "on each of 3 windows of batches" in s.explanation


def test_trials_recommend_the_lowest_loss_and_leave_the_users_state_untouched():
    model, data = overshooting_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    params = copy.deepcopy(model.state_dict())
    torch.manual_seed(11)
    random.seed(3)
    np.random.seed(4)
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    totals: list[int] = []
    ticks: list[int] = []
    plain = suggest(model, mse, data, opt, steps=40)
    s = suggest(
        model, mse, data, opt, steps=40, trials=True, on_total=totals.append,
        progress=ticks.append,
    )  # fmt: skip
    assert torch.equal(torch.get_rng_state(), rng[0]) and random.getstate() == rng[1]
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), rng[2], strict=True))
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    # the measurement is the same; the trials are the candidates, each scored by hand
    n = len(trial_candidates(plain.rules))
    assert s.norms == plain.norms and s.rules[: len(plain.rules)] == plain.rules
    assert [t.rule for t in s.trials[:n]] == [r.name for r in trial_candidates(plain.rules)]
    for t in s.trials:
        assert t.loss == pytest.approx(reference_trial(model, data, 0.5, t.threshold, 40), rel=1e-5)
    best = min(s.trials[:n], key=lambda t: t.loss)  # and it beats the mean norm's by the margin
    assert best.loss < (1 - TRIAL_MARGIN) * s.trials[0].loss
    assert (s.rule, s.threshold) == (
        expected_pick(s.trials).rule,
        expected_pick(s.trials).threshold,
    )
    # on this overshooting problem a tighter clip (a shorter step) trains better
    assert s.threshold < plain.threshold and s.rule != plain.rule
    assert totals[-1] == s.steps + 40 * len(s.trials) and ticks[-1] == totals[-1]
    assert f"max_norm = {s.threshold:.3g}" in s.explanation and "Trials:" in s.explanation
    assert f"max_norm = {plain.threshold:.3g} (" not in s.explanation
    assert "trial loss" in s.table().splitlines()[0] and f"* {s.rule}" in s.table()
    assert s.as_dict()["trials"][0] == dataclasses.asdict(s.trials[0])


def test_every_trial_failing_keeps_the_measured_recommendation():
    model, data = overshooting_problem()
    found = suggest(model, mse, data, torch.optim.SGD(model.parameters(), lr=0.5), steps=20)
    failed = [Trial("pascanu_mean", found.threshold, math.inf, 3)]
    kept = with_trials(found, failed)
    assert (kept.rule, kept.threshold) == (found.rule, found.threshold)
    assert kept.trials == failed and "stays as measured" in kept.explanation


def test_a_lower_trial_loss_replaces_the_mean_norm_only_beyond_the_margin():
    model, data = overshooting_problem()
    found = suggest(model, mse, data, torch.optim.SGD(model.parameters(), lr=0.5), steps=20)
    half = next(r for r in found.rules if r.name == "pascanu_half")

    def trials(mean_loss: float, half_loss: float) -> list[Trial]:
        return [
            Trial("pascanu_mean", found.threshold, mean_loss, 3),
            Trial("pascanu_half", half.threshold, half_loss, 3),
        ]

    close = with_trials(found, trials(100.0, 99.8))  # 0.2 % lower: within 0.3 %
    assert close.rule == "pascanu_mean" and "lower by only 0.20%" in close.explanation
    assert f"max_norm = {found.threshold:.3g} (" in close.explanation
    far = with_trials(found, trials(100.0, 99.6))  # 0.4 % lower
    assert (far.rule, far.threshold) == ("pascanu_half", half.threshold)
    assert with_trials(found, trials(100.0, 99.8), margin=0.0).rule == "pascanu_half"
    assert with_trials(found, trials(math.inf, 500.0)).rule == "pascanu_half"  # mean failed
    for t in (trials(100.0, 99.8), trials(100.0, 99.6)):
        assert with_trials(found, t).rule == expected_pick(t).rule
    for bad in (-0.1, 1.0, math.nan, True):
        with pytest.raises((ValueError, TypeError), match="trial_margin must be"):
            suggest(
                model,
                mse,
                data,
                torch.optim.SGD(model.parameters(), lr=0.5),
                steps=5,
                trials=True,
                trial_margin=bad,
            )


def test_the_advice_to_go_lower_follows_the_recommendation():
    found = suggest_from_norms([float(n) for n in range(1, 21)])  # mean 10.5, p10 2.9
    p10 = next(r for r in found.rules if r.name == "autoclip_p10")
    lower = f"try a lower value such as {p10.threshold:.3g}"
    assert found.explanation.count(lower) == 1 and p10.threshold < found.threshold
    trials = [
        Trial("pascanu_mean", found.threshold, 100.0, 3),
        Trial("autoclip_p10", p10.threshold, 50.0, 3),
    ]
    picked = with_trials(found, trials)
    assert picked.rule == "autoclip_p10" and lower not in picked.explanation
    assert picked.explanation.count(f"max_norm = {p10.threshold:.3g} (") == 1
    assert "  " not in picked.explanation


@pytest.mark.parametrize(("lr", "backwards"), [(0.5, True), (0.05, False)])
def test_trials_warn_when_every_candidates_loss_ended_above_its_start(lr, backwards):
    model, data = overshooting_problem()
    with torch.no_grad():
        first = float(mse(model, data[0]))  # the loss before any update, by hand
    found = suggest(
        model, mse, data, torch.optim.SGD(model.parameters(), lr=lr), steps=20, trials=True
    )
    assert all(t.start == pytest.approx(first, rel=1e-6) for t in found.trials)
    went_up = [t.loss > first for t in found.trials]
    assert all(went_up) is backwards
    low = min(found.trials, key=lambda t: t.loss)
    warned = f"(the best, {low.threshold:.3g}, averaged {low.loss:.4g}" in found.explanation
    assert warned is backwards and ("ended higher than it began" in found.explanation) is backwards


def test_no_start_loss_makes_no_backwards_claim():
    found = suggest_from_norms([4.0, 5.0, 6.0, 5.0])
    up = [Trial("pascanu_mean", 5.0, 100.0, 10, (100.0,), 10.0)]
    assert "ended higher" in with_trials(found, up).explanation
    unknown = [Trial("pascanu_mean", 5.0, 100.0, 10)]  # start NaN
    assert "ended higher" not in with_trials(found, unknown).explanation


def test_a_win_by_the_lowest_candidate_says_the_best_may_lie_lower():
    found = suggest_from_norms([float(n) for n in range(1, 21)])  # mean 10.5, p10 2.9
    by = {r.name: r for r in found.rules}
    lowest = min(r.threshold for r in found.rules)
    assert by["autoclip_p10"].threshold == lowest

    def tried(**losses: float) -> list[Trial]:  # every loss below its start of 200
        return [Trial(n, by[n].threshold, x, 3, (x,), 200.0) for n, x in losses.items()]

    hint = "won: a lower threshold may train better still"
    low = with_trials(found, tried(pascanu_mean=100.0, pascanu_half=90.0, autoclip_p10=50.0))
    assert low.rule == "autoclip_p10" and f"candidate, {lowest:.3g}, {hint}" in low.explanation
    mid = with_trials(found, tried(pascanu_mean=100.0, pascanu_half=50.0, autoclip_p10=90.0))
    assert mid.rule == "pascanu_half" and hint not in mid.explanation
    # when every candidate went backwards, that warning speaks instead
    up = [Trial(t.rule, t.threshold, t.loss, 3, (t.loss,), 10.0) for t in low.trials]
    assert hint not in with_trials(found, up).explanation


def test_when_the_lowest_candidate_wins_lower_thresholds_are_tried():
    model, data = overshooting_problem()  # at lr 0.5 the shortest step trains best
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    plain = suggest(model, mse, data, opt, steps=40)
    s = suggest(model, mse, data, opt, steps=40, trials=True)
    clip = next(r for r in plain.rules if r.name == "measured_clip")  # it exploded
    first = trial_candidates(plain.rules)
    assert "measured_clip" not in {r.name for r in first}  # tried only below a winner
    n = len(first)
    lower = s.trials[n:]
    assert 1 <= len(lower) <= 2
    for k, t in enumerate(lower):  # each goes below a winner that was the lowest so far
        before = s.trials[: n + k]
        winner = expected_pick(before)
        assert winner.threshold == min(x.threshold for x in before)
        if clip.threshold < 0.95 * winner.threshold and "measured_clip" not in {
            x.rule for x in before
        }:
            assert (t.rule, t.threshold) == ("measured_clip", clip.threshold)
        else:
            halved = sum(x.rule in HALVED_RULES for x in before)
            assert (t.rule, t.threshold) == (HALVED_RULES[halved], winner.threshold / 2)
        row = next(r for r in s.rules if r.name == t.rule)
        assert row.threshold == t.threshold
        assert row.clip_fraction == sum(x > t.threshold for x in s.norms) / len(s.norms)
    assert [t.rule for t in lower][:1] == ["measured_clip"]  # 28.3, below every rule here
    pick = expected_pick(s.trials)
    assert (s.rule, s.threshold) == (pick.rule, pick.threshold)
    if len(lower) < 2:  # going lower stopped because the lower one lost
        assert pick is not lower[-1]
    assert s.explanation.count("so a lower one was tried") == len(lower)


def test_a_halved_trial_replaces_the_winner_only_beyond_the_margin():
    found = suggest_from_norms([float(n) for n in range(1, 21)])  # mean 10.5
    by = {r.name: r for r in found.rules}
    half = halved_rule(found.norms, by["autoclip_p10"], 0)
    quarter = halved_rule(found.norms, half, 1)
    found = dataclasses.replace(found, rules=[*found.rules, half, quarter])

    def tried(*losses: float) -> list[Trial]:  # mean, p10 (the lowest), then the halved
        rows = [by["pascanu_mean"], by["autoclip_p10"], half, quarter][: len(losses)]
        return [
            Trial(r.name, r.threshold, x, 3, (x,), 200.0) for r, x in zip(rows, losses, strict=True)
        ]

    hint = "won: a lower threshold may train better still"
    close = with_trials(found, tried(100.0, 90.0, 89.8))  # 0.2 % lower than p10: noise
    assert close.rule == "autoclip_p10" and "did not train better" in close.explanation
    assert hint not in close.explanation and not picked_lowest(close)
    down = with_trials(found, tried(100.0, 90.0, 80.0))
    assert down.rule == "half_lowest" and "replaces it" in down.explanation
    assert picked_lowest(down) and f"candidate, {half.threshold:.3g}, {hint}" in down.explanation
    both = with_trials(found, tried(100.0, 90.0, 80.0, 70.0))
    assert (both.rule, both.threshold) == ("quarter_lowest", quarter.threshold)
    failed = with_trials(found, tried(100.0, 90.0, math.inf))  # a lower clip that diverged
    assert failed.rule == "autoclip_p10" and hint not in failed.explanation
    assert not picked_lowest(failed)
    for t in (tried(100.0, 90.0, 89.8), tried(100.0, 90.0, 80.0, 70.0)):
        assert with_trials(found, t).rule == expected_pick(t).rule


def test_a_candidate_must_also_win_every_paired_run():
    found = suggest_from_norms([4.0, 5.0, 6.0, 5.0])  # the mean norm: 5
    half = next(r for r in found.rules if r.name == "pascanu_half")
    mean = Trial("pascanu_mean", 5.0, 100.0, 10, (101.0, 99.0, 100.0))
    lost_one = Trial("pascanu_half", half.threshold, 99.0, 10, (98.0, 98.0, 101.0))
    kept = with_trials(found, [mean, lost_one])  # 1 % lower on average, but not in run 3
    assert kept.rule == "pascanu_mean" and "not in every run" in kept.explanation
    assert "lower in every run" in kept.explanation
    won_all = Trial("pascanu_half", half.threshold, 99.0, 10, (100.5, 98.0, 98.5))
    assert with_trials(found, [mean, won_all]).rule == "pascanu_half"
    assert with_trials(found, [mean, lost_one], margin=0).rule == "pascanu_mean"
    for t in ([mean, lost_one], [mean, won_all]):
        assert with_trials(found, t).rule == expected_pick(t).rule


@given(st.lists(st.floats(50.0, 150.0), min_size=6, max_size=6), st.sampled_from([0.0, 0.003]))
def test_the_pick_follows_the_margin_and_every_run_rule(runs, margin):
    found = suggest_from_norms([4.0, 5.0, 6.0, 5.0])
    by = {r.name: r for r in found.rules}
    trials = [
        Trial(name, by[name].threshold, float(np.mean(x)), 10, tuple(x))
        for name, x in (("pascanu_mean", runs[:3]), ("pascanu_half", runs[3:]))
    ]
    assert with_trials(found, trials, margin=margin).rule == expected_pick(trials, margin).rule


@given(st.floats(0.01, 100.0), st.floats(0.01, 100.0))
def test_the_next_lower_threshold_is_the_measured_clip_if_clearly_below_else_half(w, c):
    winner, clip = Rule("pascanu_half", w, 0.5, ""), Rule("measured_clip", c, 0.9, "")
    norms = [0.5, 2.0, 8.0, 30.0]
    got = lower_candidate([winner, clip], winner, {"pascanu_half"}, norms)
    if c < 0.95 * w:
        assert got == clip
    else:  # too close to the winner (or above it): half of the winner instead
        assert (got.name, got.threshold) == ("half_lowest", w / 2)
        assert got.clip_fraction == sum(n > w / 2 for n in norms) / 4
    # once the clip was tried, the next is half of the winner, then a quarter's name
    after = lower_candidate([winner, clip], winner, {"pascanu_half", "measured_clip"}, norms)
    assert (after.name, after.threshold) == ("half_lowest", w / 2)
    again = lower_candidate([winner], after, {"pascanu_half", "half_lowest"}, norms)
    assert (again.name, again.threshold) == ("quarter_lowest", w / 4)


def test_no_optimizer_runs_no_trials():
    model, data = overshooting_problem()
    s = suggest(model, mse, data, None, steps=10, trials=True)
    assert s.trials == [] and s.rule == "pascanu_mean"


@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60),
    st.floats(0.01, 1.0),
)
def test_the_trial_score_is_the_mean_of_the_last_fraction(losses, fraction):
    m = math.ceil(fraction * len(losses))
    assert trial_score(losses, fraction) == pytest.approx(
        float(np.mean(np.array(losses[len(losses) - m :], dtype=np.float64))), rel=1e-9, abs=1e-9
    )


def test_the_trial_score_is_inf_without_finite_losses_in_its_window():
    assert trial_score([]) == math.inf
    assert trial_score([1.0, 2.0, 3.0, math.nan]) == math.inf
    assert trial_score([math.inf, 2.0, 3.0, 4.0]) == 4.0  # outside the last quarter
    with pytest.raises(ValueError, match="fraction"):
        trial_score([1.0], 0.0)

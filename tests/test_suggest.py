"""gradclip.suggest: rules against independent computations, the user's state untouched."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from gradclip.diagnostics.suggest import plot_norm_histogram, suggest, suggest_from_norms
from gradclip.diagnostics.thresholds import threshold_rules, zclip_threshold
from gradclip.diagnostics.trials import lower_candidate, trial_candidates

pytestmark = pytest.mark.usefixtures("one_thread")


class TinyRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(13, 8)
        self.rnn = nn.LSTM(8, 8)
        self.out = nn.Linear(8, 13)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.emb(x))[0])


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    drop = nn.functional.dropout(model(x), 0.1)  # uses the torch RNG
    return nn.functional.cross_entropy(drop.reshape(-1, 13), y.reshape(-1))


def batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, 13, (6, 4), generator=g), torch.randint(0, 13, (6, 4), generator=g))
        for _ in range(n)
    ]


def trained() -> tuple[TinyRNN, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = TinyRNN()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for b in batches(3, seed=9):
        opt.zero_grad()
        loss_fn(model, b).backward()
        opt.step()
    return model, opt


def test_user_model_optimizer_and_rng_are_bit_identical():
    model, opt = trained()
    params = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    s = suggest(model, loss_fn, batches(20), opt, steps=20)
    assert s.steps == 20 and s.diverged_at is None
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert random.getstate() == rng[1]
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), rng[2], strict=True))
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n
    now = opt.state_dict()
    assert now["param_groups"] == opt_state["param_groups"]
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            assert torch.equal(now["state"][i][k], v), (i, k)
    assert all(
        p is q for p, q in zip(opt.param_groups[0]["params"], model.parameters(), strict=True)
    )


def test_norms_are_those_of_an_unclipped_run_of_the_same_optimizer():
    model, opt = trained()
    ref_model, ref_opt = copy.deepcopy(model), None
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=0.01)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    torch.manual_seed(42)
    s = suggest(model, loss_fn, batches(15), opt, steps=15)
    torch.manual_seed(42)
    want = []
    for b in batches(15):
        ref_opt.zero_grad()
        loss_fn(ref_model, b).backward()
        grads = torch.cat([p.grad.double().flatten() for p in ref_model.parameters()])
        want.append(float(grads.norm()))
        ref_opt.step()
    assert s.norms == pytest.approx(want, rel=1e-5)
    assert len(set(s.norms)) == 15  # the copy really trained


def test_optimizer_none_and_factory():
    model, _ = trained()
    s = suggest(model, loss_fn, batches(5), None, steps=50)
    assert s.steps == 5  # the batches ran out first
    f = suggest(model, loss_fn, batches(5), lambda ps: torch.optim.SGD(ps, lr=0.1), steps=5)
    assert f.steps == 5 and f.norms[0] == pytest.approx(s.norms[0], rel=1e-6)
    with pytest.raises(ValueError, match="steps"):
        suggest(model, loss_fn, batches(5), steps=0)
    with pytest.raises(ValueError, match="nothing"):
        suggest(model, loss_fn, [], steps=3)


def test_an_explosion_is_measured_again_under_a_clip():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = [(torch.randn(8, 4) * 10, torch.randn(8, 1)) for _ in range(200)]
    mse = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])  # noqa: E731
    s = suggest(model, mse, data, torch.optim.SGD(model.parameters(), lr=1.0), steps=60)
    # lr 1 on inputs ×10 overshoots: the unclipped norm grows ~100× per step
    assert s.exploded_at == 3 and len(s.probe_norms) == 4 and s.steps == 60
    assert s.measured_clip == min(s.probe_norms[:3]) == s.probe_norms[0]
    # phase 2 is an independent clipped run from the same weights on the same batches
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=1.0)
    want = []
    for b in data[:56]:
        opt.zero_grad()
        mse(ref, b).backward()
        want.append(float(nn.utils.clip_grad_norm_(ref.parameters(), s.measured_clip)))
        opt.step()
    assert s.norms == pytest.approx(want, rel=1e-5)
    assert s.rules[0].threshold == pytest.approx(float(np.mean(want)), rel=1e-6)
    # the clip it trained under safely is a row, tried only below a winning lowest candidate
    safe = s.rules[-1]
    assert (safe.name, safe.threshold) == ("measured_clip", s.measured_clip)
    assert safe.clip_fraction == sum(n > s.measured_clip for n in want) / len(want)
    assert "measured_clip" not in [r.name for r in trial_candidates(s.rules)]
    lowest = min(trial_candidates(s.rules), key=lambda r: r.threshold)
    assert lower_candidate(s.rules, lowest, {lowest.name}, s.norms) == safe
    assert "clipped at" in s.explanation
    # clipped, this quadratic still oscillates far above c0: the lr is the problem
    assert float(np.median(want)) > 5 * s.measured_clip
    assert "stayed far above it" in s.explanation and "learning rate" in s.explanation


def test_no_optimizer_never_re_measures():
    model = nn.Linear(4, 1)
    data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(10)]
    mse = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])  # noqa: E731
    s = suggest(model, mse, data, None, steps=10)
    assert s.measured_clip is None and s.probe_norms == [] and s.steps == 10


def test_rules_against_numpy():
    rng = np.random.default_rng(0)
    norms = list(np.exp(rng.normal(0, 0.5, 300)))
    norms[100] = 50.0
    rows = {r.name: r for r in threshold_rules([*norms, math.nan, math.inf])}
    arr = np.array(norms)
    assert rows["pascanu_mean"].threshold == pytest.approx(arr.mean())
    assert rows["pascanu_half"].threshold == pytest.approx(arr.mean() / 2)
    assert rows["pascanu_10x"].threshold == pytest.approx(arr.mean() * 10)
    assert rows["autoclip_p10"].threshold == pytest.approx(np.percentile(arr, 10))
    assert rows["median_x2"].threshold == pytest.approx(2 * np.median(arr))
    for r in rows.values():
        assert r.clip_fraction == pytest.approx(float((arr > r.threshold).mean()))
    assert rows["autoclip_p10"].clip_fraction == pytest.approx(0.9, abs=0.01)


def test_zclip_threshold_by_hand():
    assert zclip_threshold([2.0] * 40) == pytest.approx(2.0)
    # warm-up [1, 3]: mu 2, var 1; then n = 2: mu = 2, var = 0.97
    assert zclip_threshold([1.0, 3.0, 2.0], warmup=2, alpha=0.97, z=2.5) == pytest.approx(
        2 + 2.5 * math.sqrt(0.97)
    )
    # a spike (z = 98) is fed back clipped to mu + (z_thr^2 / z) sigma
    mu, var = 2.0, 1.0
    z = (100 - mu) / 1.0
    fed = mu + (2.5**2 / z) * 1.0
    mu2 = 0.97 * mu + 0.03 * fed
    var2 = 0.97 * var + 0.03 * (fed - mu2) ** 2
    assert zclip_threshold([1.0, 3.0, 100.0], warmup=2) == pytest.approx(
        mu2 + 2.5 * math.sqrt(var2)
    )


def test_recommendation_is_pascanus_mean_and_explains():
    norms = [1.0] * 50 + [30.0] * 3
    s = suggest_from_norms(norms)
    assert s.rule == "pascanu_mean" and s.threshold == pytest.approx(float(np.mean(norms)))
    assert "clipped 6% of these steps" in s.explanation  # the 3 spikes of 53
    assert "half to ten times the average norm" in s.explanation
    d = s.as_dict()
    assert d["rule"] == "pascanu_mean" and len(d["rules"]) == 6 and d["norm"]["max"] == 30.0
    assert "* pascanu_mean" in s.table()
    with pytest.raises(ValueError, match="no finite"):
        suggest_from_norms([math.nan, None])


def test_histogram_png(tmp_path):
    s = suggest_from_norms(list(np.exp(np.random.default_rng(1).normal(0, 1, 200))))
    path = plot_norm_histogram(s, tmp_path / "h.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_first_explosion_finds_the_jump_past_five_times_the_median() -> None:
    from gradclip.diagnostics.suggest import first_explosion

    rng = np.random.default_rng(3)
    steady = list(1.0 + 0.1 * rng.standard_normal(60))
    assert first_explosion(steady) is None
    spiked = [*steady[:30], 40.0, *steady[30:]]
    assert first_explosion(spiked) == 30
    assert first_explosion([1.0, 1.0, float("nan"), 1.0]) == 2
    # a jump within the first three steps has no median to compare with yet
    assert first_explosion([1.0, 50.0, 1.0, 1.0]) is None


def test_healthy_only_uses_the_norms_before_the_explosion() -> None:
    # The PTB small config without clipping: 2.6, 4.2, 12.5, 7.3, then it blows up.
    norms = [2.6, 4.2, 12.5, 7.3, 114.0, 324.0, 966.0, 700.0, 800.0]
    s = suggest_from_norms(norms, healthy_only=True)
    assert s.exploded_at == 4
    assert s.threshold == s.rules[0].threshold == pytest.approx(float(np.mean(norms[:4])))
    assert "step 4" in s.explanation
    everything = suggest_from_norms(norms)
    assert everything.exploded_at is None and everything.threshold > 10 * s.threshold

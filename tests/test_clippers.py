"""Clippers against independent float64/NumPy re-computations of each published rule."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradclip import CLIPPER_NAMES, Clipper, ClipStats, make_clipper, make_clipper_from_spec
from gradclip.clippers import AGC

POLICIES = ("propagate", "error", "skip")
# Small warm-ups so that every clipper is past its warm-up within a few steps; the
# table reads the registry, so a new clipper is tested with its defaults unless listed.
_FAST_OPTIONS: dict[str, dict[str, object]] = {
    "none": {},
    "norm": {"max_norm": 1.0},
    "value": {"clip_value": 0.05},
    "tensor-norm": {"max_norm": 0.5},
    "autoclip": {"percentile": 10, "window": 8},
    "zclip": {"warmup": 3},
    "agc": {},
    "warmup-mean": {"warmup_steps": 3, "factor": 0.5},
}
FAST = {name: _FAST_OPTIONS.get(name, {}) for name in CLIPPER_NAMES}


def fresh(name: str, **kw: object) -> Clipper:
    return make_clipper(name, **{**FAST[name], **kw})


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- references
def np_norm(arrays: list[np.ndarray], p: float = 2.0) -> float:
    flat = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    if p == math.inf:
        return float(np.abs(flat).max())
    return float((np.abs(flat) ** p).sum() ** (1 / p))


def ref_autoclip(norms: list[float], p: float, window: int) -> list[float]:
    """AutoClip (Seetharaman et al. 2020): append the current norm, then percentile."""
    history: list[float] = []
    thresholds = []
    for n in norms:
        if math.isfinite(n):
            history.append(n)
        recent = history[-window:]
        thresholds.append(float(np.percentile(recent, p)) if recent else math.nan)
    return thresholds


def ref_zclip(norms: list[float], z_thr: float, alpha: float, warmup: int) -> list[float]:
    """ZClip (arXiv:2504.02507): returns the clipped norm n* of each step (nan if skipped)."""
    buf: list[float] = []
    mu = var = 0.0
    out = []
    for n in norms:
        if not math.isfinite(n):
            out.append(math.nan)
            continue
        if len(buf) < warmup:
            buf.append(n)
            out.append(n)
            if len(buf) == warmup:
                mu, var = float(np.mean(buf)), float(np.var(buf))
            continue
        sigma = math.sqrt(var)
        z = (n - mu) / sigma
        n_c = mu + z_thr**2 / z * sigma if z > z_thr else n
        out.append(n_c)
        mu = alpha * mu + (1 - alpha) * n_c
        var = alpha * var + (1 - alpha) * (n_c - mu) ** 2
    return out


def ref_warmup_mean(norms: list[float], steps: int, factor: float, cap: float) -> list[float]:
    """Pascanu's heuristic: threshold per step (inf while measuring, unless capped)."""
    seen: list[float] = []
    out = []
    for n in norms:
        if len(seen) < steps:
            thr = cap * float(np.mean(seen)) if seen else math.inf
            out.append(thr)
            if math.isfinite(n):
                seen.append(min(n, thr))
        else:
            out.append(factor * float(np.mean(seen)))
    return out


def ref_agc(param: np.ndarray, grad: np.ndarray, lam: float, eps: float) -> np.ndarray:
    """AGC (Brock et al. 2021) unit by unit, output unit = row of the torch layout."""
    w = np.asarray(param, np.float64)
    g = np.asarray(grad, np.float64).copy()
    if g.ndim <= 1:
        w, g_units = w.reshape(1, -1), g.reshape(1, -1)
    else:
        w, g_units = w.reshape(w.shape[0], -1), g.reshape(g.shape[0], -1)
    for i in range(g_units.shape[0]):
        bound = lam * max(np.linalg.norm(w[i]), eps)
        gn = np.linalg.norm(g_units[i])
        if gn > bound:
            g_units[i] = g_units[i] * bound / gn
    return g_units.reshape(grad.shape)


def random_grads(rng: np.random.Generator, scale: float) -> list[torch.Tensor]:
    shapes = [(7, 5), (5,), (3, 2, 2)]
    return [torch.tensor(rng.standard_normal(s) * scale, dtype=torch.float32) for s in shapes]


def norm_sequence(rng: np.random.Generator, steps: int) -> list[float]:
    scales = np.exp(rng.standard_normal(steps))
    scales[rng.integers(0, steps, 3)] *= 50  # spikes
    return [float(s) for s in scales]


# --------------------------------------------------------------------------- factory
def test_names_and_factory() -> None:
    assert CLIPPER_NAMES == (
        "none",
        "norm",
        "value",
        "tensor-norm",
        "autoclip",
        "zclip",
        "agc",
        "warmup-mean",
    )
    for name in CLIPPER_NAMES:
        c = make_clipper(name)
        assert isinstance(c, Clipper) and c.name == name
        assert repr(c).startswith(type(c).__name__ + "(")
    assert make_clipper("Tensor_Norm").name == "tensor-norm"


def test_factory_errors_name_the_culprit() -> None:
    with pytest.raises(ValueError, match="'autoclipp'"):
        make_clipper("autoclipp")
    with pytest.raises(ValueError, match="'window_size'"):
        make_clipper("autoclip", window_size=3)
    with pytest.raises(ValueError, match="'bogus'"):
        make_clipper_from_spec("zclip:bogus=1")
    with pytest.raises(ValueError, match="'nope'"):
        make_clipper_from_spec("nope:max_norm=1")
    with pytest.raises(ValueError, match="window"):
        make_clipper_from_spec("autoclip:window=ten")
    with pytest.raises(ValueError, match="nonfinite"):
        make_clipper("norm", nonfinite="ignore")
    with pytest.raises(ValueError, match="half to ten"):
        make_clipper("warmup-mean", factor=20)


def test_spec_parses_with_option_types() -> None:
    c = make_clipper_from_spec("autoclip:percentile=25,window=64,nonfinite=skip")
    assert (c.percentile, c.window, c.nonfinite) == (25.0, 64, "skip")  # type: ignore[attr-defined]
    z = make_clipper_from_spec("zclip: z_threshold=3, warmup=5, warmup_max_norm=none")
    assert (z.z_threshold, z.warmup, z.warmup_max_norm) == (3.0, 5, None)  # type: ignore[attr-defined]
    n = make_clipper_from_spec("norm:max_norm=0.25,norm_type=inf")
    assert (n.max_norm, n.norm_type) == (0.25, math.inf)  # type: ignore[attr-defined]
    a = make_clipper_from_spec("agc:clip_factor=0.02,exclude=fc+head")
    assert isinstance(a, AGC) and a.exclude == ("fc", "head") and a.clip_factor == 0.02
    assert make_clipper_from_spec("none").name == "none"


def test_stats_are_zero_dim_tensors() -> None:
    for name in CLIPPER_NAMES:
        lin = torch.nn.Linear(3, 2)
        lin(torch.randn(4, 3)).sum().backward()
        stats = fresh(name).clip(lin.parameters())
        assert isinstance(stats, ClipStats)
        for field in ("norm", "threshold", "scale", "clipped_norm", "clipped", "finite"):
            t = getattr(stats, field)
            assert isinstance(t, torch.Tensor) and t.dim() == 0, (name, field)
        assert stats.clipped.dtype == torch.bool and stats.finite.dtype == torch.bool


# --------------------------------------------------------------------------- norm, value
@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3, width=32), min_size=2, max_size=30),
    st.floats(1e-3, 1e3),
    st.sampled_from([1.0, 2.0, 3.0, math.inf]),
)
def test_norm_matches_pascanu_algorithm_1(values: list[float], c: float, p: float) -> None:
    g = torch.tensor(values, dtype=torch.float32)
    parts = [g[: len(values) // 2].clone(), g[len(values) // 2 :].clone()]
    ref = [x.double().numpy() for x in parts]
    n = np_norm(ref, p)
    stats = make_clipper("norm", max_norm=c, norm_type=p).clip(parts)
    expected_scale = c / n if n > c else 1.0  # g ← g·c/n when n > c (exact, no epsilon)
    assert float(stats.norm) == pytest.approx(n, rel=1e-5, abs=1e-30)
    assert float(stats.scale) == pytest.approx(expected_scale, rel=1e-5)
    assert float(stats.clipped_norm) == pytest.approx(min(n, c), rel=1e-5)
    assert bool(stats.clipped) == bool(stats.norm > stats.threshold)
    for got, want in zip(parts, ref, strict=True):
        np.testing.assert_allclose(got.numpy(), want * expected_scale, rtol=1e-5, atol=1e-30)


def test_norm_unclipped_grads_are_bitwise_unchanged_and_agree_with_torch() -> None:
    rng = np.random.default_rng(0)
    grads = random_grads(rng, 0.01)
    before = [g.clone() for g in grads]
    make_clipper("norm", max_norm=10.0).clip(grads)
    assert all(torch.equal(a, b) for a, b in zip(grads, before, strict=True))
    # clipped: torch's clip_grad_norm_ gives c·n/(n+1e-6), i.e. the same to ~1e-6 relative
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in before]
    for p, g in zip(params, before, strict=True):
        p.grad = g * 1000
    ours = [g * 1000 for g in before]
    make_clipper("norm", max_norm=1.0).clip(ours)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    for p, g in zip(params, ours, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=0)


def test_norm_zero_threshold_and_zero_grads_give_no_nan() -> None:
    # A numeric 0 is rejected (issue 8); a 0-d tensor threshold is taken unchecked.
    g = [torch.zeros(3)]
    stats = make_clipper("norm", max_norm=torch.tensor(0.0)).clip(g)
    assert float(stats.scale) == 1.0 and torch.equal(g[0], torch.zeros(3))
    g = [torch.ones(3)]
    make_clipper("norm", max_norm=torch.tensor(0.0)).clip(g)
    assert torch.equal(g[0], torch.zeros(3))


def test_value_matches_keras_clipvalue() -> None:
    rng = np.random.default_rng(1)
    grads = random_grads(rng, 1.0)
    ref = [g.double().numpy() for g in grads]
    stats = make_clipper("value", clip_value=0.5).clip(grads)
    clipped = [np.clip(r, -0.5, 0.5) for r in ref]
    for g, want in zip(grads, clipped, strict=True):
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-6)
    assert float(stats.norm) == pytest.approx(np_norm(ref), rel=1e-5)
    assert float(stats.clipped_norm) == pytest.approx(np_norm(clipped), rel=1e-5)
    assert bool(stats.clipped)


@pytest.mark.parametrize("p", [1.0, 3.0, math.inf])
def test_value_stats_use_the_chosen_norm_order(p: float) -> None:
    # Both norms in the stats are p-norms (the post-clamp one was once always L2).
    rng = np.random.default_rng(7)
    grads = random_grads(rng, 1.0)
    flat = np.concatenate([g.double().numpy().ravel() for g in grads])
    stats = make_clipper("value", clip_value=0.5, norm_type=p).clip(grads)
    want_pre = np.linalg.norm(flat, ord=p)
    want_post = np.linalg.norm(np.clip(flat, -0.5, 0.5), ord=p)
    assert float(stats.norm) == pytest.approx(want_pre, rel=1e-5)
    assert float(stats.clipped_norm) == pytest.approx(want_post, rel=1e-5)


def test_tensor_norm_matches_keras_clipnorm() -> None:
    rng = np.random.default_rng(2)
    grads = random_grads(rng, 1.0)
    grads.append(torch.zeros(4))
    # mixed sizes and dtypes: large tensors take another norm kernel than small ones
    grads.insert(1, torch.tensor(rng.standard_normal((300, 200)) * 0.001, dtype=torch.float32))
    grads.append(torch.tensor(rng.standard_normal(70_000), dtype=torch.float64))
    ref = [g.double().numpy().copy() for g in grads]
    stats = make_clipper("tensor-norm", max_norm=1.5).clip(grads)
    want = []
    for r in ref:
        n = np.linalg.norm(r)
        want.append(r * 1.5 / max(n, 1.5))  # tf.clip_by_norm on each variable
    for g, w in zip(grads, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-12)
    assert float(stats.clipped_norm) == pytest.approx(np_norm(want), rel=1e-5)
    assert float(stats.norm) == pytest.approx(np_norm(ref), rel=1e-5)


def test_none_measures_and_never_writes() -> None:
    grads = [torch.tensor([3.0, 4.0])]
    ptr = grads[0].data_ptr()
    stats = make_clipper("none").clip(grads)
    assert float(stats.norm) == 5.0 and not bool(stats.clipped)
    assert grads[0].data_ptr() == ptr and torch.equal(grads[0], torch.tensor([3.0, 4.0]))


# --------------------------------------------------------------------------- adaptive
def run_sequence(
    clipper: Clipper, rng: np.random.Generator, scales: list[float]
) -> tuple[list[float], list[float], list[ClipStats]]:
    norms, clipped_norms, all_stats = [], [], []
    for s in scales:
        grads = random_grads(rng, s)
        if not math.isfinite(s):
            grads = random_grads(rng, 1.0)
            grads[1][2] = s
        ref = [g.double().numpy() for g in grads]
        n = np_norm(ref) if math.isfinite(s) else s
        stats = clipper.clip(grads)
        norms.append(n)
        clipped_norms.append(np_norm([g.numpy() for g in grads]))
        all_stats.append(stats)
    return norms, clipped_norms, all_stats


@pytest.mark.parametrize(("p", "window"), [(10, 1000), (10, 7), (50, 5), (0, 1000), (100, 20)])
def test_autoclip_matches_reference(p: float, window: int) -> None:
    rng = np.random.default_rng(3)
    scales = norm_sequence(rng, 60)
    scales[17] = math.nan  # non-finite norms never enter the history (nonfinite="skip")
    scales[40] = math.inf
    clipper = make_clipper("autoclip", percentile=p, window=window, nonfinite="skip")
    norms, clipped_norms, stats = run_sequence(clipper, rng, scales)
    thresholds = ref_autoclip(norms, p, window)
    for i, (n, thr, st_, cn) in enumerate(
        zip(norms, thresholds, stats, clipped_norms, strict=True)
    ):
        if not math.isfinite(n):
            assert not bool(st_.finite)
            continue
        assert float(st_.threshold) == pytest.approx(thr, rel=1e-5), i
        assert cn == pytest.approx(min(n, thr), rel=1e-5), i
    assert not bool(stats[0].clipped)  # the current norm is in the history: step 1 never clips


def test_autoclip_includes_current_norm_before_percentile() -> None:
    # history [1, 2, 3] then a spike of 100: with p=50 the paper clips at median(1,2,3,100)=2.5
    clipper = make_clipper("autoclip", percentile=50)
    for n in (1.0, 2.0, 3.0):
        clipper.clip([torch.tensor([n])])
    stats = clipper.clip([torch.tensor([100.0])])
    assert float(stats.threshold) == pytest.approx(2.5)


@pytest.mark.parametrize(("z_thr", "alpha", "warmup"), [(2.5, 0.97, 25), (1.5, 0.9, 5)])
def test_zclip_matches_reference(z_thr: float, alpha: float, warmup: int) -> None:
    rng = np.random.default_rng(4)
    scales = norm_sequence(rng, 120)
    scales[3] = math.nan
    scales[70] = math.inf
    clipper = make_clipper("zclip", z_threshold=z_thr, alpha=alpha, warmup=warmup, nonfinite="skip")
    norms, clipped_norms, stats = run_sequence(clipper, rng, scales)
    expected = ref_zclip(norms, z_thr, alpha, warmup)
    n_clipped = 0
    for i, (want, got, st_) in enumerate(zip(expected, clipped_norms, stats, strict=True)):
        if math.isnan(want):
            assert not bool(st_.finite)
            continue
        assert got == pytest.approx(want, rel=1e-4), i
        assert float(st_.clipped_norm) == pytest.approx(want, rel=1e-4), i
        n_clipped += bool(st_.clipped)
    assert n_clipped >= 2  # the spikes were clipped


def test_zclip_warmup_max_norm_and_flat_history() -> None:
    clipper = make_clipper("zclip", warmup=3, warmup_max_norm=2.0)
    stats = clipper.clip([torch.tensor([5.0])])
    assert float(stats.clipped_norm) == pytest.approx(2.0)
    flat = make_clipper("zclip", warmup=2)
    for _ in range(2):
        flat.clip([torch.tensor([1.0])])  # sigma = 0
    same = flat.clip([torch.tensor([1.0])])
    spike = flat.clip([torch.tensor([5.0])])
    assert not bool(same.clipped) and float(same.scale) == 1.0
    assert bool(spike.clipped) and float(spike.clipped_norm) == pytest.approx(1.0)
    assert torch.isfinite(flat._mean) and torch.isfinite(flat._var)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("steps", "factor", "cap"), [(10, 5.0, 10.0), (4, 0.5, 2.0)])
def test_warmup_mean_matches_reference(steps: int, factor: float, cap: float) -> None:
    rng = np.random.default_rng(5)
    scales = norm_sequence(rng, 40)
    scales[2] = math.nan
    clipper = make_clipper(
        "warmup-mean", warmup_steps=steps, factor=factor, warmup_cap=cap, nonfinite="skip"
    )
    norms, clipped_norms, stats = run_sequence(clipper, rng, scales)
    thresholds = ref_warmup_mean(norms, steps, factor, cap)
    for i, (n, thr, st_, cn) in enumerate(
        zip(norms, thresholds, stats, clipped_norms, strict=True)
    ):
        if not math.isfinite(n):
            continue
        assert float(st_.threshold) == pytest.approx(thr, rel=1e-5), i
        assert cn == pytest.approx(min(n, thr), rel=1e-5), i


# --------------------------------------------------------------------------- AGC
def agc_modules() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [
        torch.nn.Linear(6, 4),
        torch.nn.Conv2d(3, 5, kernel_size=3),
        torch.nn.Conv1d(2, 3, kernel_size=2),
        torch.nn.LSTM(4, 3, num_layers=2),
        torch.nn.GRU(3, 2),
        torch.nn.Embedding(7, 3),
    ]


@pytest.mark.parametrize("module", agc_modules(), ids=lambda m: type(m).__name__)
def test_agc_unit_axes_match_reference(module: torch.nn.Module) -> None:
    params = list(module.parameters())
    for p in params:  # gradients of mixed size: some units clipped, some not
        p.grad = (
            torch.randn_like(p)
            * torch.rand(p.shape[0] if p.dim() else 1).view(-1, *([1] * (p.dim() - 1)))
            * (0.02 if p.dim() > 1 else 0.001)
        )
    ref = [
        ref_agc(p.detach().numpy(), p.grad.numpy(), 0.01, 1e-3)  # type: ignore[union-attr]
        for p in params
    ]
    stats = make_clipper("agc").clip(params)
    assert bool(stats.clipped)
    for p, want in zip(params, ref, strict=True):
        np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-5, atol=1e-9)  # type: ignore[union-attr]
    assert float(stats.clipped_norm) == pytest.approx(np_norm(ref), rel=1e-5)


def test_agc_uses_rows_not_columns_of_linear_weights() -> None:
    lin = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.01]]))
    lin.weight.grad = torch.tensor([[0.05, 0.05], [0.05, 0.05]])
    make_clipper("agc", clip_factor=0.01, eps=1e-3).clip(lin.parameters())
    # row 0: bound 0.1 > ‖(0.05, 0.05)‖ = 0.0707 -> kept; row 1: bound 1e-4 -> clipped to 1e-4
    torch.testing.assert_close(lin.weight.grad[0], torch.tensor([0.05, 0.05]))
    assert float(lin.weight.grad[1].norm()) == pytest.approx(1e-4, rel=1e-5)


def test_agc_leaves_small_unit_gradients_alone() -> None:
    p = torch.nn.Parameter(torch.ones(1, 4))
    p.grad = torch.full((1, 4), 1e-5)  # norm 2e-5, bound 0.02: unchanged (not normalised)
    make_clipper("agc").clip([p])
    assert torch.equal(p.grad, torch.full((1, 4), 1e-5))


def test_agc_excludes_head_by_name_or_tensor() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    head = [p.grad.clone() for p in model[1].parameters()]  # type: ignore[union-attr]
    make_clipper("agc", exclude=("1",)).clip(model.named_parameters())
    assert all(torch.equal(p.grad, h) for p, h in zip(model[1].parameters(), head, strict=True))
    assert not torch.equal(model[0].weight.grad, torch.ones(3, 3))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    make_clipper("agc", exclude=list(model[1].parameters())).clip(model.parameters())
    assert all(torch.equal(p.grad, h) for p, h in zip(model[1].parameters(), head, strict=True))
    with pytest.raises(ValueError, match="named_parameters"):
        make_clipper("agc", exclude=("1",)).clip(model.parameters())
    with pytest.raises(TypeError, match="parameters"):
        make_clipper("agc").clip([torch.ones(3)])


# --------------------------------------------------------------------------- non-finite
def model_and_grads(seed: int, bad: float | None = None) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = [
        torch.nn.Parameter(torch.randn(4, 3, generator=gen)),
        torch.nn.Parameter(torch.randn(4, generator=gen)),
    ]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 0.3
    if bad is not None:
        params[0].grad[1, 2] = bad  # type: ignore[index]
    return params


def state_equal(a: dict[str, object], b: dict[str, object]) -> bool:
    sa, sb = a["state"], b["state"]
    assert isinstance(sa, dict) and isinstance(sb, dict)
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k].nan_to_num(7.0), sb[k].nan_to_num(7.0)) for k in sa
    )


@pytest.mark.parametrize("name", CLIPPER_NAMES)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_policies(name: str, policy: str, bad: float) -> None:
    clipper = fresh(name, nonfinite=policy)
    for seed in range(5):
        clipper.clip(model_and_grads(seed))
    saved = clipper.state_dict()
    params = model_and_grads(99, bad)
    before = [p.grad.clone() for p in params]  # type: ignore[union-attr]
    if policy == "error":
        with pytest.raises(FloatingPointError, match=r"norm is (nan|inf)"):
            clipper.clip(params)
        stats = None
    else:
        stats = clipper.clip(params)
        assert not bool(stats.finite) and not bool(stats.clipped)
    assert state_equal(clipper.state_dict(), saved), "statistics were poisoned"
    grads = [p.grad for p in params]
    if policy in ("error", "skip") or name == "none":
        for g, b in zip(grads, before, strict=True):  # untouched, NaN for NaN
            torch.testing.assert_close(g, b, rtol=0, atol=0, equal_nan=True)
    elif name == "value":
        entry = float(grads[0][1, 2])  # type: ignore[index]
        assert (
            math.isnan(entry)
            if math.isnan(bad)
            else entry == pytest.approx(math.copysign(0.05, bad))
        )
    elif name == "tensor-norm":
        assert torch.isnan(grads[0]).all() and torch.isfinite(grads[1]).all()  # type: ignore[arg-type]
    elif name == "agc":
        assert torch.isnan(grads[0][1]).all() and torch.isfinite(grads[0][0]).all()  # type: ignore[index]
    else:  # TensorFlow: a non-finite global norm turns every gradient into NaN
        assert all(torch.isnan(g).all() for g in grads)  # type: ignore[arg-type]
        assert stats is not None and math.isnan(float(stats.scale))
    after = clipper.clip(model_and_grads(100))  # and the clipper carries on unharmed
    assert bool(after.finite) and math.isfinite(float(after.clipped_norm))


@pytest.mark.parametrize("name", CLIPPER_NAMES)
def test_random_nonfinite_steps_are_invisible_under_skip(name: str) -> None:
    """A run with NaN/inf injected at random steps equals the run without those steps."""
    rng = np.random.default_rng(7)
    bad_steps = set(rng.choice(40, size=8, replace=False).tolist())
    with_bad, without = fresh(name, nonfinite="skip"), fresh(name, nonfinite="skip")
    for step in range(40):
        if step in bad_steps:
            stats = with_bad.clip(model_and_grads(step, float(rng.choice([np.nan, np.inf]))))
            assert not bool(stats.finite)
            continue
        a, b = model_and_grads(step), model_and_grads(step)
        sa, sb = with_bad.clip(a), without.clip(b)
        for f in ("norm", "threshold", "scale", "clipped_norm", "clipped"):
            assert torch.equal(getattr(sa, f), getattr(sb, f)), (step, f)
        assert all(torch.equal(x.grad, y.grad) for x, y in zip(a, b, strict=True))
    assert state_equal(with_bad.state_dict(), without.state_dict())


# --------------------------------------------------------------------------- state
@pytest.mark.parametrize("name", CLIPPER_NAMES)
def test_state_dict_round_trip_continues_bit_for_bit(name: str) -> None:
    whole = fresh(name)
    first = fresh(name)
    for seed in range(6):
        whole.clip(model_and_grads(seed))
        first.clip(model_and_grads(seed))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = fresh(name)
    resumed.load_state_dict(torch.load(buf))
    for seed in range(6, 14):
        a, b = model_and_grads(seed), model_and_grads(seed)
        sa, sb = whole.clip(a), resumed.clip(b)
        for f in ("norm", "threshold", "scale", "clipped_norm", "clipped", "finite"):
            assert torch.equal(getattr(sa, f), getattr(sb, f)), (seed, f)
        assert all(torch.equal(x.grad, y.grad) for x, y in zip(a, b, strict=True))


def test_load_state_dict_checks_name_and_shape() -> None:
    with pytest.raises(ValueError, match="zclip"):
        make_clipper("autoclip").load_state_dict(make_clipper("zclip").state_dict())
    with pytest.raises(ValueError, match="shape"):
        make_clipper("autoclip", window=5).load_state_dict(
            make_clipper("autoclip", window=6).state_dict()
        )


def test_accepts_parameters_generators_grads_and_named_pairs() -> None:
    lin = torch.nn.Linear(2, 2)
    lin.weight.grad = torch.full((2, 2), 3.0)  # bias has no grad: skipped
    assert float(make_clipper("none").clip(lin.parameters()).norm) == 6.0
    assert float(make_clipper("none").clip(lin.named_parameters()).norm) == 6.0
    assert float(make_clipper("none").clip(torch.full((4,), 3.0)).norm) == 6.0
    with pytest.warns(UserWarning, match="empty generator"):
        stats = make_clipper("norm").clip([])
    assert float(stats.norm) == 0.0 and bool(stats.finite)


def test_sparse_gradients_clip_like_dense() -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 1, 4])).sum().backward()
    dense = emb.weight.grad.to_dense()  # type: ignore[union-attr]
    stats = make_clipper("norm", max_norm=1.0).clip(emb.parameters())
    assert float(stats.norm) == pytest.approx(float(dense.norm()), rel=1e-6)
    torch.testing.assert_close(
        emb.weight.grad.to_dense(),  # type: ignore[union-attr]
        dense / dense.norm(),
    )

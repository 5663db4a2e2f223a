"""ClippedOptimizer: fused path, skipping, checkpoints, GradScaler order, no host syncs."""

from __future__ import annotations

import contextlib
import copy
import io
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from gradclip import CLIPPER_NAMES, ClippedOptimizer, ClipStats, clipped_step, make_clipper
from gradclip.optim import is_fused

# Read from the registry: a new clipper runs with its defaults unless listed here.
_FAST_OPTIONS: dict[str, dict[str, Any]] = {
    "none": {},
    "norm": {"max_norm": 0.5},
    "value": {"clip_value": 0.02},
    "tensor-norm": {"max_norm": 0.2},
    "autoclip": {"percentile": 10, "window": 16},
    "zclip": {"warmup": 3, "z_threshold": 1.0},
    "agc": {"clip_factor": 0.05},
    "warmup-mean": {"warmup_steps": 3, "factor": 0.5},
}
FAST = {name: _FAST_OPTIONS.get(name, {}) for name in CLIPPER_NAMES}
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda ps, **kw: torch.optim.SGD(ps, lr=0.1, momentum=0.9, **kw),
    # plain SGD: the fused path folds the clip scale into a tensor learning rate
    "sgd-plain": lambda ps, **kw: torch.optim.SGD(ps, lr=0.1, **kw),
    "sgd-damp": lambda ps, **kw: torch.optim.SGD(
        ps, lr=0.1, momentum=0.9, dampening=0.1, nesterov=False, **kw
    ),
    "adam": lambda ps, **kw: torch.optim.Adam(ps, lr=0.01, **kw),
    "adamw": lambda ps, **kw: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, **kw),
}


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(11, 4)
        self.rnn = torch.nn.LSTM(4, 5)
        self.head = torch.nn.Linear(5, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.emb(x))
        return self.head(out)


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def backward(
    net: Net,
    step: int,
    bad: float | None = None,
    scale: float = 1.0,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randint(0, 11, (6, 3), generator=gen)
    y = torch.randint(0, 11, (6, 3), generator=gen)
    loss = torch.nn.functional.cross_entropy(net(x).reshape(-1, 11), y.reshape(-1))
    spike = 10.0 if step % 7 == 6 else 1.0
    total = loss * (1 + step % 3) * spike * scale
    (scaler.scale(total) if scaler is not None else total).backward()
    if bad is not None:
        net.rnn.weight_hh_l0.grad[0, 0] = bad  # type: ignore[index]


def train(
    opt_name: str,
    clipper_name: str,
    steps: range,
    *,
    fused: bool,
    policy: str = "propagate",
    bad_steps: dict[int, float] | None = None,
    net: Net | None = None,
    wrapped: ClippedOptimizer | None = None,
) -> tuple[Net, ClippedOptimizer, list[ClipStats]]:
    net = net or make_net()
    if wrapped is None:
        opt = OPTIMIZERS[opt_name](net.parameters(), fused=fused)
        wrapped = ClippedOptimizer(
            opt, make_clipper(clipper_name, nonfinite=policy, **FAST[clipper_name])
        )
    stats = []
    for step in steps:
        wrapped.zero_grad()
        backward(net, step, (bad_steps or {}).get(step))
        stats.append(wrapped.step())
    return net, wrapped, stats


def params_of(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def opt_state(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        v.detach().clone()
        for s in opt.state_dict()["state"].values()
        for v in s.values()
        if isinstance(v, torch.Tensor)
    ]


def all_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- fused path
@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("clipper_name", CLIPPER_NAMES)
def test_fused_clip_equals_unfused_clip_then_step(opt_name: str, clipper_name: str) -> None:
    steps = range(8)
    fused_net, fused_opt, fused_stats = train(opt_name, clipper_name, steps, fused=True)
    plain_net, _, plain_stats = train(opt_name, clipper_name, steps, fused=False)
    assert is_fused(fused_opt.optimizer)
    for a, b in zip(fused_net.parameters(), plain_net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)  # kernel writes back
    assert any(bool(s.clipped) for s in plain_stats) or clipper_name == "none"
    assert [bool(s.clipped) for s in fused_stats] == [bool(s.clipped) for s in plain_stats]


def test_fused_path_does_not_write_grads_before_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fused optimizer the clip is the kernel's grad_scale: no foreach multiply."""
    import gradclip.clippers.base

    calls: list[int] = []
    monkeypatch.setattr(gradclip.clippers.base, "scale_", lambda ts, f: calls.append(1))
    net = make_net()
    seen: dict[str, Any] = {}
    opt = torch.optim.Adam(net.parameters(), lr=0.01, fused=True)
    original = opt.step

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen["grad_scale"] = getattr(opt, "grad_scale", None)
        seen["found_inf"] = getattr(opt, "found_inf", None)
        return original(*args, **kwargs)

    monkeypatch.setattr(opt, "step", spy)
    wrapped = ClippedOptimizer(opt, make_clipper("norm", max_norm=0.1, nonfinite="skip"))
    backward(net, 0)
    stats = wrapped.step()
    assert calls == []
    assert torch.equal(seen["grad_scale"], 1 / stats.scale)
    assert float(seen["found_inf"]) == 0.0
    assert not hasattr(opt, "grad_scale") and not hasattr(opt, "found_inf")


# --------------------------------------------------------------------------- skipping
SKIP_CASES = [
    # every optimizer, fused and not, with a global, an adaptive and a unit-wise clipper ...
    *(
        (clipper, opt, fused)
        for clipper in ("norm", "zclip", "agc")
        for opt in OPTIMIZERS
        for fused in (False, True)
    ),
    # ... and every other clipper with fused Adam and with the default SGD with momentum
    *(
        (clipper, opt, fused)
        for clipper in CLIPPER_NAMES
        if clipper not in ("norm", "zclip", "agc")
        for opt, fused in (("adam", True), ("sgd", False))
    ),
]


@pytest.mark.parametrize(("clipper_name", "opt_name", "fused"), SKIP_CASES)
def test_skipped_steps_leave_params_moments_and_counters_untouched(
    opt_name: str, fused: bool, clipper_name: str
) -> None:
    """NaN/inf at random steps (the first included) == a run that never saw those steps."""
    bad = {0: math.nan, 3: math.inf, 7: -math.inf}
    good = [s for s in range(10) if s not in bad]
    net_a, opt_a, stats_a = train(
        opt_name, clipper_name, range(10), fused=fused, policy="skip", bad_steps=bad
    )
    net_b, opt_b = make_net(), None
    opt_b = ClippedOptimizer(
        OPTIMIZERS[opt_name](net_b.parameters(), fused=fused),
        make_clipper(clipper_name, nonfinite="skip", **FAST[clipper_name]),
    )
    for step in good:
        opt_b.zero_grad()
        backward(net_b, step)
        opt_b.step()
    assert all_equal(params_of(net_a), params_of(net_b))
    assert all_equal(opt_state(opt_a.optimizer), opt_state(opt_b.optimizer))
    assert all(torch.isfinite(p).all() for p in net_a.parameters())
    assert opt_a.clipper.state_dict()["state"].keys() == opt_b.clipper.state_dict()["state"].keys()
    for k, v in opt_a.clipper.state_dict()["state"].items():
        assert torch.equal(v.nan_to_num(), opt_b.clipper.state_dict()["state"][k].nan_to_num())
    assert int(opt_a.skip_count) == 3 and opt_a.steps == 10
    assert [bool(s.finite) for s in stats_a] == [s not in bad for s in range(10)]


@pytest.mark.parametrize("opt_name", ["sgd", "sgd-damp"])
def test_fused_sgd_momentum_prefill_is_bit_exact(opt_name: str) -> None:
    net_a, _, _ = train(opt_name, "norm", range(6), fused=True, policy="skip")
    net_b, _, _ = train(opt_name, "norm", range(6), fused=True, policy="propagate")
    assert all_equal(params_of(net_a), params_of(net_b))


def test_error_policy_raises_and_leaves_everything() -> None:
    net = make_net()
    wrapped = ClippedOptimizer(
        torch.optim.Adam(net.parameters(), fused=True), make_clipper("norm", nonfinite="error")
    )
    backward(net, 0, bad=math.nan)
    before, grads = params_of(net), [p.grad.clone() for p in net.parameters()]  # type: ignore[union-attr]
    with pytest.raises(FloatingPointError, match="nonfinite='skip'"):
        wrapped.step()
    assert all_equal(params_of(net), before) and wrapped.optimizer.state == {}
    for p, g in zip(net.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0, equal_nan=True)


def test_propagate_lets_nan_through_like_tensorflow() -> None:
    net, _, stats = train("sgd", "norm", range(1), fused=True, bad_steps={0: math.inf})
    assert not bool(stats[0].finite) and math.isnan(float(stats[0].scale))
    assert all(torch.isnan(p).all() for p in net.parameters())


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("clipper_name", CLIPPER_NAMES)
@pytest.mark.parametrize(("opt_name", "fused"), [("adam", True), ("sgd", False)])
def test_checkpoint_resume_is_bit_exact(clipper_name: str, opt_name: str, fused: bool) -> None:
    bad = {2: math.nan, 7: math.inf}
    whole_net, _, whole_stats = train(
        opt_name, clipper_name, range(10), fused=fused, policy="skip", bad_steps=bad
    )
    net, wrapped, first_stats = train(
        opt_name, clipper_name, range(5), fused=fused, policy="skip", bad_steps=bad
    )
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "opt": wrapped.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf)
    new_net = make_net(seed=123)  # different init: everything must come from the checkpoint
    new_net.load_state_dict(saved["model"])
    new_opt = ClippedOptimizer(
        OPTIMIZERS[opt_name](new_net.parameters(), fused=fused),
        make_clipper(clipper_name, nonfinite="skip", **FAST[clipper_name]),
    )
    new_opt.load_state_dict(saved["opt"])
    _, resumed, rest_stats = train(
        opt_name, clipper_name, range(5, 10), fused=fused, bad_steps=bad, net=new_net,
        wrapped=new_opt,
    )  # fmt: skip
    assert all_equal(params_of(whole_net), params_of(new_net))
    for a, b in zip(whole_stats, first_stats + rest_stats, strict=True):
        for f in ("norm", "threshold", "scale", "clipped_norm", "clipped", "finite"):
            assert torch.equal(getattr(a, f).nan_to_num(), getattr(b, f).nan_to_num()), f
    assert resumed.steps == 10 and int(resumed.skip_count) == 2


# --------------------------------------------------------------------------- GradScaler
@pytest.mark.parametrize(("opt_name", "fused"), [("adam", True), ("sgd", False), ("sgd", True)])
def test_grad_scaler_unscales_before_clipping(opt_name: str, fused: bool) -> None:
    """The threshold applies to true gradients: the loss scale (2**16) does not shrink it."""
    max_norm = 0.1
    ref_net = make_net()
    ref = ClippedOptimizer(
        OPTIMIZERS[opt_name](ref_net.parameters(), fused=fused),
        make_clipper("norm", max_norm=max_norm),
    )
    backward(ref_net, 0)
    ref_stats = ref.step()

    net = make_net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    opt = ClippedOptimizer(
        OPTIMIZERS[opt_name](net.parameters(), fused=fused), make_clipper("norm", max_norm=max_norm)
    )
    backward(net, 0, scaler=scaler)
    stats = opt.step(scaler=scaler)
    scaler.update()
    assert float(stats.norm) == pytest.approx(float(ref_stats.norm), rel=1e-5)
    assert float(stats.norm) > max_norm and bool(stats.clipped)
    assert float(stats.clipped_norm) == pytest.approx(max_norm, rel=1e-6)
    for a, b in zip(net.parameters(), ref_net.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)

    # the wrong order (clip the scaled gradients, then unscale) clips at max_norm / 2**16
    wrong_net = make_net()
    backward(wrong_net, 0, scale=2.0**16)
    make_clipper("norm", max_norm=max_norm).clip(wrong_net.parameters())
    wrong_norm = math.sqrt(sum(float(p.grad.square().sum()) for p in wrong_net.parameters()))  # type: ignore[union-attr]
    assert wrong_norm / 2.0**16 == pytest.approx(max_norm / 2.0**16, rel=1e-5)


def test_grad_scaler_overflow_skips_without_poisoning_the_clipper() -> None:
    net = make_net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    opt = ClippedOptimizer(
        torch.optim.Adam(net.parameters(), fused=True),
        make_clipper("zclip", warmup=2, nonfinite="error"),  # overflow is the scaler's business
    )
    backward(net, 0, bad=math.inf, scaler=scaler)
    before = params_of(net)
    stats = opt.step(scaler=scaler)
    scaler.update()
    assert not bool(stats.finite) and all_equal(params_of(net), before)
    assert float(scaler.get_scale()) == 2.0**15  # the scaler saw the overflow and backed off
    assert int(opt.clipper.state_dict()["state"]["count"]) == 0
    assert int(opt.skip_count) == 1


def test_already_unscaled_is_not_unscaled_twice() -> None:
    net = make_net()
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    opt = ClippedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), make_clipper("none"))
    backward(net, 0, scaler=scaler)
    scaler.unscale_(opt.optimizer)
    ref_net = make_net()
    backward(ref_net, 0)
    stats = opt.step(scaler=scaler)
    ref_norm = math.sqrt(sum(float(p.grad.square().sum()) for p in ref_net.parameters()))  # type: ignore[union-attr]
    assert float(stats.norm) == pytest.approx(ref_norm, rel=1e-5)


# --------------------------------------------------------------------------- facade
def test_clip_rate_history_lr_and_zero_grad() -> None:
    net = make_net()
    opt = ClippedOptimizer(
        torch.optim.SGD(net.parameters(), lr=0.1), make_clipper("norm", max_norm=1e9), history=3
    )
    for step in range(4):
        opt.zero_grad(set_to_none=True)
        backward(net, step)
        opt.step()
    assert float(opt.clip_rate) == 0.0 and len(opt.history) == 3
    assert opt.last_stats is opt.history[-1]
    opt.clipper.max_norm = 1e-9  # type: ignore[attr-defined]
    opt.zero_grad()
    backward(net, 9)
    opt.step()
    assert float(opt.clip_rate) == pytest.approx(1 / 5)
    for group in opt.param_groups:
        group["lr"] = 0.0
    before = params_of(net)
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    backward(net, 10)
    opt.step()
    assert all_equal(params_of(net), before)
    assert "ClippedOptimizer(SGD, NormClip(" in repr(opt)


def test_agc_exclude_by_name_through_named_optimizer() -> None:
    net = make_net()
    opt = ClippedOptimizer(
        torch.optim.SGD(net.named_parameters(), lr=1.0), make_clipper("agc", exclude=("head",))
    )
    backward(net, 0)
    head_grads = [p.grad.clone() for p in net.head.parameters()]  # type: ignore[union-attr]
    other = net.rnn.weight_hh_l0.grad.clone()  # type: ignore[union-attr]
    opt.step()
    assert all_equal([p.grad for p in net.head.parameters()], head_grads)  # type: ignore[misc]
    assert not torch.equal(net.rnn.weight_hh_l0.grad, other)


def test_clipped_step_function() -> None:
    net = make_net()
    opt = torch.optim.AdamW(net.parameters(), fused=True)
    backward(net, 0)
    stats = clipped_step(opt, make_clipper("norm", max_norm=0.1))
    assert bool(stats.clipped)
    assert opt.state  # stepped


def test_closure_is_evaluated_first() -> None:
    net = make_net()
    opt = ClippedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), make_clipper("none"))

    def closure() -> None:
        opt.zero_grad()
        backward(net, 0)

    assert float(opt.step(closure).norm) > 0


# --------------------------------------------------------------------------- host syncs
class SyncSpy:
    """Records host reads of tensor values made from gradclip's clippers/optim modules."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @contextlib.contextmanager
    def watch(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        for attr in ("__bool__", "__float__", "__int__", "item", "tolist", "__index__"):
            original = getattr(torch.Tensor, attr)
            monkeypatch.setattr(torch.Tensor, attr, self._wrap(attr, original))
        yield
        monkeypatch.undo()

    def _wrap(self, attr: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(t: torch.Tensor, *args: Any) -> Any:
            caller = sys._getframe(1).f_code.co_filename
            if "/gradclip/clippers/" in caller or "/gradclip/optim/" in caller:
                self.calls.append(f"{attr} from {caller}:{sys._getframe(1).f_lineno}")
            return original(t, *args)

        return wrapper


@pytest.mark.parametrize("clipper_name", CLIPPER_NAMES)
@pytest.mark.parametrize(
    ("fused", "policy", "syncs_per_step"),
    [(True, "propagate", 0), (True, "skip", 0), (False, "propagate", 0), (False, "skip", 1)],
)
def test_host_syncs(
    monkeypatch: pytest.MonkeyPatch,
    clipper_name: str,
    fused: bool,
    policy: str,
    syncs_per_step: int,
) -> None:
    net = make_net()
    opt_name = "adam"
    wrapped = ClippedOptimizer(
        OPTIMIZERS[opt_name](net.parameters(), fused=fused),
        make_clipper(clipper_name, nonfinite=policy, **FAST[clipper_name]),
    )
    spy = SyncSpy()
    with spy.watch(monkeypatch):
        for step in range(4):
            wrapped.zero_grad()
            backward(net, step)
            wrapped.step()
            _ = wrapped.clip_rate
    assert len(spy.calls) == 4 * syncs_per_step, spy.calls


def test_deepcopy_and_state_dict_shape() -> None:
    net = make_net()
    opt = ClippedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), make_clipper("autoclip"))
    backward(net, 0)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd) == {"optimizer", "clipper", "steps", "clipped", "skipped"}
    assert sd["clipper"]["name"] == "autoclip"
    with pytest.raises(ValueError, match="missing"):
        opt.load_state_dict(sd["optimizer"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("clipper_name", CLIPPER_NAMES)
@pytest.mark.parametrize("policy", ["propagate", "skip"])
def test_cuda_fused_step_never_syncs(clipper_name: str, policy: str) -> None:
    """torch's own sync detector: no device-to-host wait in clip + fused step."""
    net = make_net().cuda()
    wrapped = ClippedOptimizer(
        torch.optim.Adam(net.parameters(), fused=True),
        make_clipper(clipper_name, nonfinite=policy, **FAST[clipper_name]),
    )
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 11, (6, 3), generator=gen).cuda() for _ in range(5)]

    def one_step(x: torch.Tensor) -> None:
        wrapped.zero_grad()
        net(x).square().mean().backward()
        wrapped.step()

    one_step(batches[0])  # first step: state moves to the device, lazily
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x in batches[1:]:
            one_step(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(torch.stack([p.detach().sum() for p in net.parameters()])).all()


def test_fused_plain_sgd_folds_the_scale_into_the_lr_and_restores_it() -> None:
    net = make_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, fused=True)
    wrapped = ClippedOptimizer(opt, make_clipper("norm", max_norm=0.01))
    backward(net, 0)
    raw = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    before = params_of(net)
    stats = wrapped.step()
    assert bool(stats.clipped)
    assert opt.param_groups[0]["lr"] == 0.1 and isinstance(opt.param_groups[0]["lr"], float)
    assert all_equal([p.grad for p in net.parameters() if p.grad is not None], raw)
    for b, a, g in zip(before, params_of(net), raw, strict=True):
        torch.testing.assert_close(b - a, 0.1 * float(stats.scale) * g)

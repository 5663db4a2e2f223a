"""The observer seam of ClippedOptimizer, and what .grad holds after step()."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch

from gradclip import CLIPPER_NAMES, ClippedOptimizer, StepObservation, StepObserver, make_clipper
from gradclip.optim import ClippedOptimizer as OptimClippedOptimizer

pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(StepObserver):
    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = params
        self.events: list[tuple[str, StepObservation, list[torch.Tensor]]] = []

    def before_step(self, obs: StepObservation) -> None:
        self.events.append(("before", obs, [p.detach().clone() for p in self.params]))

    def after_step(self, obs: StepObservation) -> None:
        self.events.append(("after", obs, [p.detach().clone() for p in self.params]))


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def backward(model: torch.nn.Module, scale: float = 1.0) -> None:
    model.zero_grad()
    (scale * model(torch.randn(5, 3)).square().sum()).backward()


@pytest.mark.parametrize("name", CLIPPER_NAMES)
@pytest.mark.parametrize("named", [True, False])
def test_observer_gets_pre_clip_per_tensor_norms_in_order_with_names(
    name: str, named: bool
) -> None:
    model = net()
    params = list(model.parameters())
    source: Any = model.named_parameters() if named else model.parameters()
    opt = ClippedOptimizer(torch.optim.SGD(source, lr=0.1), make_clipper(name))
    rec = Recorder(params)
    opt.add_observer(rec)
    backward(model, 10.0)
    pre_clip = [p.grad.clone() for p in params]  # type: ignore[union-attr]
    opt.step()
    (_, obs, _), _ = rec.events
    p_norm = 2.0 if name == "agc" else opt.clipper.norm_type
    expected = torch.stack([torch.linalg.vector_norm(g, p_norm) for g in pre_clip])
    assert obs.tensor_norms is not None
    torch.testing.assert_close(obs.tensor_norms, expected, rtol=1e-5, atol=0)
    want = [n for n, _ in model.named_parameters()] if named else [f"param{i}" for i in range(4)]
    assert obs.names == tuple(want)
    assert all(a is b for a, b in zip(obs.params, params, strict=True))
    assert all(g is p.grad for g, p in zip(obs.grads, params, strict=True))
    assert obs.step == 0 and obs.stats is opt.last_stats


def test_inf_norm_and_several_observers_and_removal() -> None:
    model = net()
    params = list(model.parameters())
    opt = ClippedOptimizer(
        torch.optim.SGD(params, lr=0.1), make_clipper("norm", max_norm=0.1, norm_type="inf")
    )
    first, second = Recorder(params), Recorder(params)
    handle = opt.add_observer(first)
    opt.add_observer(second)
    backward(model)
    grads = [p.grad.clone() for p in params]  # type: ignore[union-attr]
    opt.step()
    obs = first.events[0][1]
    assert obs.tensor_norms is not None
    assert obs.tensor_norms.tolist() == [float(g.abs().max()) for g in grads]
    handle.remove()
    backward(model)
    opt.step()
    assert len(first.events) == 2 and len(second.events) == 4
    assert [e[1].step for e in second.events] == [0, 0, 1, 1]


@pytest.mark.parametrize("fused", [False, True])
def test_before_sees_old_parameters_and_after_sees_new(fused: bool) -> None:
    model = net()
    params = list(model.parameters())
    opt = ClippedOptimizer(torch.optim.Adam(params, lr=0.1, fused=fused), make_clipper("norm"))
    rec = Recorder(params)
    opt.add_observer(rec)
    old = [p.detach().clone() for p in params]
    backward(model)
    opt.step()
    (when_b, obs_b, seen_b), (when_a, obs_a, seen_a) = rec.events
    assert (when_b, when_a) == ("before", "after")
    assert obs_a.stats is obs_b.stats and obs_a.grads is obs_b.grads and obs_a.step == obs_b.step
    assert obs_b.skipped is None and obs_a.skipped is not None and not bool(obs_a.skipped)
    assert all(torch.equal(a, b) for a, b in zip(seen_b, old, strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(seen_a, old, strict=True))
    assert all(torch.equal(a, p.detach()) for a, p in zip(seen_a, params, strict=True))


def test_duck_typed_observer_and_no_cost_without_observers(monkeypatch: pytest.MonkeyPatch) -> None:
    model = net()
    opt = ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), make_clipper("agc"))

    def boom(*_: Any) -> None:
        raise AssertionError("an observation was built with no observer attached")

    monkeypatch.setattr(OptimClippedOptimizer, "_observe", boom)
    backward(model)
    opt.step()  # no observer: nothing is built
    monkeypatch.undo()

    class Duck:
        steps: ClassVar[list[int]] = []

        def before_step(self, obs: StepObservation) -> None:
            self.steps.append(obs.step)

        def after_step(self, obs: StepObservation) -> None:
            pass

    opt.add_observer(Duck())  # type: ignore[arg-type]
    backward(model)
    opt.step()
    assert Duck.steps == [1]


# --------------------------------------------------------------------------- skipped
#: path -> (fused, momentum, nonfinite policy, GradScaler, bad gradient value or None)
PATHS: dict[str, tuple[bool, float, str, bool, float | None]] = {
    "normal": (False, 0.0, "skip", False, None),
    "skip-nan": (False, 0.0, "skip", False, math.nan),
    "propagate-nan": (False, 0.0, "propagate", False, math.nan),  # steps: parameters go NaN
    "fused-sgd": (True, 0.0, "skip", False, None),
    "fused-sgd-skip-nan": (True, 0.0, "skip", False, math.nan),
    "fused-sgd-momentum-skip-inf": (True, 0.9, "skip", False, math.inf),
    "scaler": (False, 0.0, "propagate", True, None),
    "scaler-inf-propagate": (False, 0.0, "propagate", True, math.inf),
    "fused-sgd-scaler-inf-propagate": (True, 0.0, "propagate", True, math.inf),
}


def step_on_path(
    path: str, opt: ClippedOptimizer, model: torch.nn.Module, scaler: torch.amp.GradScaler | None
) -> bool:
    """One backward + step on ``path``; whether the parameters stayed bit-identical."""
    bad = PATHS[path][4]
    params = list(model.parameters())
    model.zero_grad()
    loss = model(torch.randn(5, 3)).square().sum()
    (loss if scaler is None else scaler.scale(loss)).backward()
    if bad is not None:
        params[2].grad[1, 0] = bad  # type: ignore[index]
    old = [p.detach().clone() for p in params]
    opt.step(scaler=scaler)
    if scaler is not None:
        scaler.update()
    return all(torch.equal(o, p.detach()) for o, p in zip(old, params, strict=True))


def make_path(path: str) -> tuple[torch.nn.Module, ClippedOptimizer, torch.amp.GradScaler | None]:
    fused, momentum, policy, amp, _ = PATHS[path]
    model = net()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum, fused=fused)
    opt = ClippedOptimizer(sgd, make_clipper("norm", max_norm=0.5, nonfinite=policy))
    return model, opt, torch.amp.GradScaler("cpu", init_scale=256.0) if amp else None


@pytest.mark.parametrize("path", PATHS)
def test_after_step_says_whether_the_update_was_skipped(path: str) -> None:
    model, opt, scaler = make_path(path)
    rec = Recorder(list(model.parameters()))
    opt.add_observer(rec)
    unchanged = step_on_path(path, opt, model, scaler)
    (_, before, _), (_, after, _) = rec.events
    assert before.skipped is None
    assert isinstance(after.skipped, torch.Tensor) and after.skipped.dtype == torch.bool
    assert after.skipped.shape == () and bool(after.skipped) == unchanged
    assert unchanged == (PATHS[path][4] is not None and path != "propagate-nan")
    assert int(opt.skip_count) == int(unchanged)


# --------------------------------------------------------------------------- .grad after step
def grads_after(optimizer: str, fused: bool, skip_nan: bool = False) -> tuple[list, list]:  # type: ignore[type-arg]
    model = net()
    params = list(model.parameters())
    kinds = {
        "adam": lambda: torch.optim.Adam(params, lr=0.1, fused=fused),
        "sgd-plain": lambda: torch.optim.SGD(params, lr=0.1, fused=fused),
        "sgd-momentum": lambda: torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=fused),
    }
    opt = ClippedOptimizer(
        kinds[optimizer](), make_clipper("norm", max_norm=0.01, nonfinite="skip")
    )
    backward(model)
    if skip_nan:
        params[0].grad[0, 0] = float("nan")  # type: ignore[index]
    raw = [p.grad.clone() for p in params]  # type: ignore[union-attr]
    stats = opt.step()
    clipped = [g * stats.scale for g in raw]
    return [p.grad for p in params], [raw, clipped]


@pytest.mark.parametrize(
    ("optimizer", "fused", "holds"),
    [
        ("adam", True, "clipped"),  # grad_scale: the kernel writes the clipped gradient back
        ("sgd-momentum", True, "clipped"),
        ("sgd-plain", True, "unclipped"),  # the scale is folded into the learning rate
        ("adam", False, "clipped"),  # the foreach multiply
        ("sgd-plain", False, "clipped"),
    ],
)
def test_documented_grad_after_step(optimizer: str, fused: bool, holds: str) -> None:
    after, (raw, clipped) = grads_after(optimizer, fused)
    want = clipped if holds == "clipped" else raw
    for a, w in zip(after, want, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("optimizer", "fused"), [("adam", True), ("adam", False)])
def test_skipped_step_leaves_grad_as_the_clipper_saw_it(optimizer: str, fused: bool) -> None:
    after, (raw, _) = grads_after(optimizer, fused, skip_nan=True)
    for a, r in zip(after, raw, strict=True):
        torch.testing.assert_close(a, r, rtol=0, atol=0, equal_nan=True)

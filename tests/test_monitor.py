"""GradMonitor: per-layer norms against torch, update ratios, guards, no host sync."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from gradclip.clippers import ClipStats
from gradclip.monitor import GradMonitor, GradMonitorWarning, default_group_by
from gradclip.optim import StepObservation

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.rnn = nn.LSTM(6, 5, num_layers=2)
        self.out = nn.Linear(5, 11)

    def forward(self, x: Tensor) -> Tensor:
        h, _ = self.rnn(self.emb(x))
        return self.out(h)


def backward(model: Net, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 11, (7, 3), generator=g)
    y = torch.randint(0, 11, (7, 3), generator=g)
    model.zero_grad()
    nn.functional.cross_entropy(model(x).reshape(-1, 11), y.reshape(-1)).backward()


def reference_layers(
    model: nn.Module, p: float, group_by: Any = default_group_by
) -> dict[str, float]:
    groups: dict[str, list[Tensor]] = {}
    for name, param in model.named_parameters():
        groups.setdefault(group_by(name), []).append(param.grad.detach().double().flatten())
    return {k: float(torch.linalg.vector_norm(torch.cat(v), p)) for k, v in groups.items()}


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, math.inf])
def test_layer_and_global_norms_match_torch_float64(p):
    torch.manual_seed(0)
    model = Net()
    mon = GradMonitor(model, norm_type=p)
    backward(model)
    mon.observe()
    mon.flush()
    (rec,) = mon.records
    want = reference_layers(model, p)
    assert list(rec["layers"]) == ["emb", "rnn", "out"]
    for layer, value in want.items():
        assert rec["layers"][layer] == pytest.approx(value, rel=1e-5)
    everything = torch.cat([q.grad.double().flatten() for q in model.parameters()])
    assert rec["norm"] == pytest.approx(float(torch.linalg.vector_norm(everything, p)), rel=1e-5)
    assert rec["clip_coef"] == 1.0 and not rec["clipped"]


def test_custom_group_by_and_max_norm_follow_torch_clip():
    torch.manual_seed(1)
    model = Net()
    by_kind = lambda name: name.rpartition(".")[2].split("_")[0]  # noqa: E731
    mon = GradMonitor(model, group_by=by_kind)
    backward(model)
    mon.observe(max_norm=0.1)
    mon.flush()
    rec = mon.records[0]
    assert set(rec["layers"]) == {"weight", "bias"}
    for layer, value in reference_layers(model, 2.0, by_kind).items():
        assert rec["layers"][layer] == pytest.approx(value, rel=1e-5)
    total = float(nn.utils.clip_grad_norm_(model.parameters(), 0.1))
    clipped = float(nn.utils.get_total_norm([q.grad for q in model.parameters()]))
    assert rec["norm"] == pytest.approx(total, rel=1e-5)
    assert rec["clipped"] and rec["clipped_norm"] == pytest.approx(clipped, rel=1e-5)


def test_update_ratio_matches_direct_computation():
    torch.manual_seed(2)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    mon = GradMonitor(model, update_ratio_every=2, flush_every=3)
    want = {}
    for step in range(5):
        backward(model, seed=step)
        mon.observe()
        before = {n: q.detach().clone().double() for n, q in model.named_parameters()}
        opt.step()
        if step % 2 == 0:
            num: dict[str, float] = {}
            den: dict[str, float] = {}
            for n, q in model.named_parameters():
                k = default_group_by(n)
                num[k] = num.get(k, 0.0) + float(((q.detach().double() - before[n]) ** 2).sum())
                den[k] = den.get(k, 0.0) + float((before[n] ** 2).sum())
            want[step] = {k: math.sqrt(num[k] / den[k]) for k in num}
    mon.flush()
    got = {r["step"]: r.get("update_ratio") for r in mon.records}
    assert [s for s, v in got.items() if v is not None] == [0, 2, 4]
    for step, ratios in want.items():
        for k, v in ratios.items():
            assert got[step][k] == pytest.approx(v, rel=1e-4)


def test_guards_warn_on_exhausted_generator_and_on_gradients_as_parameters():
    model = Net()
    backward(model)
    params = model.parameters()
    list(params)  # exhausted
    mon = GradMonitor(model)
    with pytest.warns(GradMonitorWarning, match="exhausted generator"):
        mon.observe(params)
    with pytest.warns(GradMonitorWarning, match="none of the .* has a .grad"):
        mon.observe([q.grad for q in model.parameters()])
    mon.flush()
    assert mon.records == []


def test_nonfinite_names_the_first_bad_parameter():
    model = Net()
    backward(model)
    names = [n for n, _ in model.named_parameters()]
    grads = dict(model.named_parameters())
    grads["out.weight"].grad[0, 0] = math.inf
    grads["rnn.weight_hh_l1"].grad[1, 1] = math.nan
    mon = GradMonitor(model)
    mon.observe()
    with pytest.warns(GradMonitorWarning, match="rnn.weight_hh_l1"):
        mon.flush()
    (ev,) = [r for r in mon.records if r["kind"] == "event"]
    assert ev["event"] == "nonfinite" and ev["parameter"] == "rnn.weight_hh_l1"
    assert names.index("rnn.weight_hh_l1") < names.index("out.weight")
    assert mon.summary()["nonfinite_steps"] == 1


def test_warnings_are_rate_limited():
    model = nn.Linear(2, 1)
    mon = GradMonitor(model, warmup=3, warn_every=10, update_ratio_every=0)
    for step in range(30):
        model.weight.grad = torch.full((1, 2), 1e3 if step % 2 and step > 5 else 1.0)
        model.bias.grad = torch.ones(1)
        mon.observe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon.flush()
    explosions = [e for e in mon.events if e["event"] == "explosion"]
    assert len(explosions) >= 10  # every spike is recorded ...
    assert len(caught) == 3  # ... but warned at steps 7, 17, 27 only
    assert mon.summary()["events"]["explosion"] == len(explosions)


def meta_observation(step: int, params: list[Tensor]) -> StepObservation:
    def z(dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.empty((), device="meta", dtype=dtype)

    stats = ClipStats(z(), z(), z(), z(), z(torch.bool), z(torch.bool))
    norms = torch.empty(len(params), device="meta")
    grads = tuple(torch.empty_like(p) for p in params)
    return StepObservation(step, ("a.w", "a.b", "b.w"), tuple(params), grads, norms, stats)


def test_no_host_read_between_flushes_on_a_device():
    """On the meta device every host read raises, as a sync would stall an accelerator."""
    params = [
        torch.empty(4, 3, device="meta"),
        torch.empty(4, device="meta"),
        torch.empty(2, 4, device="meta"),
    ]
    named = list(zip(("a.w", "a.b", "b.w"), params, strict=True))
    for p in params:
        p.grad = torch.empty_like(p)
    mon = GradMonitor(named, flush_every=1000, update_ratio_every=2)
    for step in range(6):  # the seam path (norms given) and the plain path (norms computed)
        obs = meta_observation(step, params)
        mon.before_step(obs)
        mon.after_step(
            dataclasses.replace(obs, skipped=torch.empty((), dtype=torch.bool, device="meta"))
        )
        mon.observe()
    assert len(mon._rows) == 12
    with pytest.raises((RuntimeError, NotImplementedError)):
        mon.flush()  # the one place that reads the device


def test_seam_path_reads_the_given_norms_without_sync(monkeypatch):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model(torch.randn(5, 3)).sum().backward()
    names = tuple(n for n, _ in model.named_parameters())
    params = tuple(model.parameters())
    grads = tuple(q.grad for q in params)
    norms = torch.stack([g.norm() for g in grads])
    total = norms.norm()
    stats = ClipStats(
        total,
        torch.tensor(1.0),
        1 / total,
        torch.tensor(1.0),
        torch.tensor(True),
        torch.tensor(True),
    )
    mon = GradMonitor(update_ratio_every=0)  # the update-ratio path: the meta test above

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("host read during a step")

    with monkeypatch.context() as m:
        for attr in ("item", "tolist", "__float__", "__bool__", "__int__", "__index__"):
            m.setattr(Tensor, attr, boom)
        obs = StepObservation(7, names, params, grads, norms, stats)
        mon.before_step(obs)
        mon.after_step(dataclasses.replace(obs, skipped=torch.tensor(True)))  # as the seam does
    mon.flush()
    (rec,) = mon.records
    assert rec["step"] == 7 and rec["clipped"] and rec["threshold"] == 1.0 and rec["skipped"]
    assert rec["norm"] == pytest.approx(float(total), rel=1e-6)
    assert rec["layers"]["0"] == pytest.approx(float(norms[:2].norm()), rel=1e-6)
    assert "update_ratio" not in rec


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="flush_every"):
        GradMonitor(flush_every=0)
    with pytest.raises(ValueError, match="explode_factor"):
        GradMonitor(explode_factor=1.0)
    with pytest.raises(TypeError, match="group_by"):
        GradMonitor(group_by="rnn")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name, parameter"):
        GradMonitor().observe([3])

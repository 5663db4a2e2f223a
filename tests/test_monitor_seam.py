"""GradMonitor attached to ClippedOptimizer: free norms, unscaled AMP norms, skips."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from gradclip import ClippedOptimizer, make_clipper
from gradclip.monitor import GradMonitor

pytestmark = pytest.mark.usefixtures("one_thread")


def model_and_batch(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    return model, torch.randn(16, 5), torch.randn(16, 3)


def layer_norms(model: nn.Module, p: float) -> dict[str, float]:
    out = {}
    for prefix in ("0", "2"):
        g = torch.cat(
            [q.grad.double().flatten() for n, q in model.named_parameters() if n[0] == prefix]
        )
        out[prefix] = float(torch.linalg.vector_norm(g, p))
    return out


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("p", [2.0, math.inf])
def test_attached_monitor_records_the_clip_and_layer_norms(fused, p):
    model, x, y = model_and_batch()
    sgd = torch.optim.SGD(model.named_parameters(), lr=0.1, fused=fused)
    opt = ClippedOptimizer(sgd, make_clipper("norm", max_norm=0.05, norm_type=p))
    mon = GradMonitor(norm_type=p, update_ratio_every=1)
    handle = mon.attach(opt)
    want = []
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        want.append(layer_norms(model, p))
        before = {n: q.detach().clone().double() for n, q in model.named_parameters()}
        stats = opt.step()
        delta = {n: q.detach().double() - before[n] for n, q in model.named_parameters()}
        want[-1]["stats"] = stats.to_dict()
        want[-1]["ratio0"] = float(
            torch.cat([delta[n].flatten() for n in ("0.weight", "0.bias")]).norm()
            / torch.cat([before[n].flatten() for n in ("0.weight", "0.bias")]).norm()
        )
    handle.remove()
    mon.flush()
    recs = [r for r in mon.records if r["kind"] == "step"]
    assert [r["step"] for r in recs] == [0, 1, 2]
    for r, w in zip(recs, want, strict=True):
        assert r["layers"]["0"] == pytest.approx(w["0"], rel=1e-5)
        assert r["layers"]["2"] == pytest.approx(w["2"], rel=1e-5)
        assert r["norm"] == pytest.approx(w["stats"]["norm"], rel=1e-6)
        assert r["clipped_norm"] == pytest.approx(w["stats"]["clipped_norm"], rel=1e-5)
        assert r["clip_coef"] == pytest.approx(w["stats"]["scale"], rel=1e-5)
        assert r["clipped"] and r["threshold"] == pytest.approx(0.05)
        assert r["update_ratio"]["0"] == pytest.approx(w["ratio0"], rel=1e-4)


def test_monitor_under_gradscaler_logs_the_unscaled_norm():
    model, x, y = model_and_batch(1)
    ref = copy.deepcopy(model)
    nn.functional.mse_loss(ref(x), y).backward()
    true_norm = float(torch.cat([q.grad.double().flatten() for q in ref.parameters()]).norm())
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    opt = ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=0.1), make_clipper("norm", max_norm=1e9)
    )
    mon = GradMonitor(model)
    mon.attach(opt)
    scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
    raw = float(torch.cat([q.grad.double().flatten() for q in model.parameters()]).norm())
    opt.step(scaler=scaler)
    scaler.update()
    mon.flush()
    (rec,) = mon.records
    assert raw == pytest.approx(true_norm * 2.0**12, rel=1e-5)  # what wandb.watch would log
    assert rec["norm"] == pytest.approx(true_norm, rel=1e-5)
    assert rec["layers"]["0"] == pytest.approx(layer_norms(ref, 2.0)["0"], rel=1e-5)


def test_skip_policy_records_skipped_step_and_names_the_parameter():
    model, x, y = model_and_batch(2)
    opt = ClippedOptimizer(
        torch.optim.SGD(model.named_parameters(), lr=0.1),
        make_clipper("norm", max_norm=1.0, nonfinite="skip"),
    )
    mon = GradMonitor(model, warn=False)
    mon.attach(opt)
    nn.functional.mse_loss(model(x), y).backward()
    model[2].weight.grad[0, 0] = math.nan
    opt.step()
    mon.close()
    step, event = mon.records
    assert step["skipped"] and not step["finite"]
    assert event["event"] == "nonfinite" and event["parameter"] == "2.weight"
    assert mon.summary()["skip_rate"] == 1.0


@pytest.mark.parametrize(
    ("path", "fused", "policy", "amp"),
    [
        ("normal", False, "propagate", False),
        ("skip-nan", False, "skip", False),
        ("fused-sgd-skip-nan", True, "skip", False),
        ("scaler-inf-propagate", False, "propagate", True),
        ("fused-sgd-scaler-inf-propagate", True, "propagate", True),
    ],
)
def test_skipped_flag_matches_what_happened_to_the_parameters(path, fused, policy, amp):
    """Steps 1 and 3 get a non-finite gradient (NaN, or inf under GradScaler)
    except on the normal path; each record's ``skipped`` must say whether the
    parameters stayed bit-identical, and the summary's skip rate count them."""
    model, x, y = model_and_batch(3)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, fused=fused)
    opt = ClippedOptimizer(sgd, make_clipper("norm", max_norm=1.0, nonfinite=policy))
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0) if amp else None
    mon = GradMonitor(model, warn=False, update_ratio_every=0)
    mon.attach(opt)
    unchanged = []
    for step in range(4):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        (loss if scaler is None else scaler.scale(loss)).backward()
        if step % 2 and path != "normal":
            model[0].bias.grad[1] = math.inf if amp else math.nan
        old = [q.detach().clone() for q in model.parameters()]
        opt.step(scaler=scaler)
        if scaler is not None:
            scaler.update()
        unchanged.append(
            all(torch.equal(o, q) for o, q in zip(old, model.parameters(), strict=True))
        )
    mon.flush()
    steps = [r for r in mon.records if r["kind"] == "step"]
    assert [r["skipped"] for r in steps] == unchanged
    assert unchanged == [False, path != "normal", False, path != "normal"]
    assert mon.summary()["skip_rate"] == sum(unchanged) / 4

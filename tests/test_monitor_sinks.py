"""Sinks round-trip: strict JSONL, TensorBoard scalars, in-memory."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from gradclip.monitor import GradMonitor, JsonlSink, MemorySink, TensorBoardSink


def reject_constant(name: str) -> float:
    raise ValueError(f"non-strict JSON literal {name}")


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))


def training(mon: GradMonitor, model: nn.Sequential, steps: int = 30, nan_at: int = 25) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(steps):
        model.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        if step == nan_at:
            model[2].bias.grad.fill_(math.nan)
        if step == 22:
            model[0].weight.grad.mul_(1e4)
        mon.observe(max_norm=1.0)
        opt.step()
    mon.flush()


def test_jsonl_is_strict_and_round_trips(tmp_path):
    path = tmp_path / "sub" / "grad.jsonl"
    mem = MemorySink()
    model = make_model()
    mon = GradMonitor(model, sinks=[mem, JsonlSink(path)], flush_every=7, warmup=10, warn=False)
    training(mon, model)
    mon.close()
    lines = path.read_text().splitlines()
    parsed = [json.loads(line, parse_constant=reject_constant) for line in lines]
    assert len(parsed) == len(mem.records)
    kinds = [(r["kind"], r.get("event")) for r in parsed]
    assert ("event", "nonfinite") in kinds and ("event", "explosion") in kinds
    nan_step = next(r for r in parsed if r["kind"] == "step" and r["step"] == 25)
    assert nan_step["norm"] is None and nan_step["finite"] is False
    assert nan_step["layers"]["2"] is None and nan_step["layers"]["0"] > 0
    for got, want in zip(parsed, mem.records, strict=True):
        if want["kind"] == "step" and want["finite"]:
            assert got == json.loads(json.dumps(want))
    steps = [r["step"] for r in parsed if r["kind"] == "step"]
    assert steps == list(range(30))


def test_jsonl_mode_w_truncates(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text("old\n")
    sink = JsonlSink(path, mode="w")
    sink.write([{"a": 1}])
    sink.close()
    assert path.read_text() == '{"a": 1}\n'
    with pytest.raises(ValueError, match="mode"):
        JsonlSink(path, mode="r")


def test_tensorboard_scalars_round_trip(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mem = MemorySink()
    model = make_model()
    mon = GradMonitor(
        model, sinks=[mem, TensorBoardSink(tmp_path)], warn=False, warmup=10, update_ratio_every=10
    )
    training(mon, model, steps=12, nan_at=-1)
    mon.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {
        "grad/norm",
        "grad/clipped_norm",
        "grad/clip_coef",
        "grad_layer/0",
        "grad_layer/2",
    } <= set(tags)
    got = [e.value for e in acc.Scalars("grad/norm")]
    want = [r["norm"] for r in mem.records if r["kind"] == "step"]
    assert got == pytest.approx(want, rel=1e-6)
    ratios = [e.step for e in acc.Scalars("update_ratio/0")]
    assert ratios == [0, 10]

"""gradclip train's GradMonitor: per-layer norms checked against torch, events in the
step's metrics row (printed once), numbering like metrics.jsonl, and a replayed
history that detects exactly as an uninterrupted one."""

from __future__ import annotations

import io
import json

import pytest
import torch

from gradclip import ClippedOptimizer, make_clipper
from gradclip.cli import main
from gradclip.lm import read_run
from gradclip.lm.reporting import LoopMonitor, MetricsLog


class Two(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(3, 2)
        self.b = torch.nn.Linear(2, 1)


def run_steps(scales: list[float], path, replay: list[dict] | None = None, first: int = 0):
    """Steps with gradients of known size (scale × a fixed pattern); returns the rows."""
    torch.manual_seed(0)
    model = Two()
    opt = ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.0), make_clipper("none"))
    opt.load_state_dict({**opt.state_dict(), "steps": first})
    monitor = LoopMonitor(model, opt, update_ratio_every=0)
    if replay:
        monitor.replay(replay)
    out = io.StringIO()
    log = MetricsLog(path, None, flush_every=7, monitor=monitor, events_to=out)
    for k, scale in enumerate(scales, start=first + 1):
        for i, p in enumerate(model.parameters()):
            p.grad = torch.full_like(p, scale * (i + 1))
        stats = opt.step()
        zero = torch.zeros(())
        log.add(k, 0, 0.0, (zero, stats.norm, stats.clipped_norm, stats.threshold, stats.clipped))
    log.close()
    return [json.loads(line) for line in path.read_text().splitlines()], out.getvalue()


def test_layer_norms_match_torch_and_events_land_in_their_row(tmp_path):
    scales = [1.0] * 30 + [100.0] + [1.0] * 5
    rows, printed = run_steps(scales, tmp_path / "m.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 37))
    model = Two()
    for r, scale in zip(rows, scales, strict=True):
        grads = {n: torch.full_like(p, scale * (i + 1)) for i, (n, p) in
                 enumerate(model.named_parameters())}  # fmt: skip
        for layer in ("a", "b"):
            want = torch.linalg.vector_norm(
                torch.cat([g.flatten() for n, g in grads.items() if n.startswith(layer + ".")])
            )
            assert r["layers"][layer] == pytest.approx(float(want), rel=1e-6)
        assert r["skipped"] is False
    with_events = [r for r in rows if "events" in r]
    assert [r["step"] for r in with_events] == [31]
    event = with_events[0]["events"][0]
    assert event["event"] == "explosion" and event["step"] == 31
    assert printed.count("gradclip train: step 31: gradient norm") == 1


def test_replayed_history_detects_like_an_uninterrupted_run(tmp_path):
    scales = [1.0] * 15 + [1.1] * 10 + [40.0] + [1.0] * 4
    full, _ = run_steps(scales, tmp_path / "full.jsonl")
    head, _ = run_steps(scales[:18], tmp_path / "part.jsonl")
    tail, _ = run_steps(scales[18:], tmp_path / "part.jsonl", replay=head, first=18)
    assert head + tail[18:] == full  # the file was appended to: tail holds head too
    assert [r["step"] for r in full if "events" in r] == [26]


def test_train_records_layers_and_gradient_summary(corpus, tmp_path, capsys):
    run = tmp_path / "r"
    args = ["train", "--config", "test", "--no-progress", "--threads", "1", "--data", str(corpus)]
    assert main([*args, "--run-dir", str(run), "--max-max-epoch", "3"]) == 0
    done = read_run(run)
    rows = done.metrics()
    assert all(set(r["layers"]) == {"embedding", "rnn", "decoder"} for r in rows)
    assert [r["step"] for r in rows if "update_ratio" in r] == [100, 200]
    assert done.summary is not None
    grads = done.summary["gradients"]
    assert grads["steps"] == len(rows)
    assert grads["norm_percentiles"]["max"] == pytest.approx(max(r["norm"] for r in rows))
    assert main([*args, "--run-dir", str(tmp_path / "off"), "--no-monitor"]) == 0
    assert "layers" not in read_run(tmp_path / "off").metrics()[0]

"""``gradclip train / evaluate / generate`` end to end on tiny generated corpora."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradclip.cli import main

WORDS = [f"w{i}" for i in range(40)]


TINY = ["--config", "test", "--no-progress", "--threads", "1"]


def train(corpus: Path, run_dir: Path, *extra: str) -> int:
    return main(["train", *TINY, "--data", str(corpus), "--run-dir", str(run_dir), *extra])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- the cycle
def test_train_writes_a_complete_run_directory(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(corpus, run, "--max-max-epoch", "3") == 0
    out = capsys.readouterr().out
    assert "epoch 3/3" in out and "test ppl" in out
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "run.json", "vocab.txt", "metrics.jsonl", "checkpoint.pt"} <= names
    assert "summary.json" in names
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

    info = json.loads((run / "run.json").read_text())
    steps = (info["tokens_per_split"]["train"] // 20 - 1) // 2  # ⌊(⌊N/B⌋ − 1)/T⌋
    rows = read_jsonl(run / "metrics.jsonl")
    assert len(rows) == 3 * steps
    assert [r["step"] for r in rows] == list(range(1, 3 * steps + 1))
    assert set(rows[0]) >= {"loss", "norm", "clipped_norm", "threshold", "clipped", "lr"}
    for r in rows:
        assert r["threshold"] == 1.0  # the test config's max_grad_norm
        assert r["clipped"] == (r["norm"] > r["threshold"])
        assert r["clipped_norm"] == pytest.approx(min(r["norm"], r["threshold"]), rel=1e-6)
    # lr 1.0 in epoch 1 (max_epoch = 1), then 0.5, 0.25
    assert {r["epoch"]: r["lr"] for r in rows} == {1: 1.0, 2: 0.5, 3: 0.25}

    summary = json.loads((run / "summary.json").read_text())
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2, 3]
    assert summary["finished"] and summary["test_ppl"] > 1
    # train ppl of an epoch = exp(Σ loss / (steps · T)), loss being the TF cost
    epoch1 = [r["loss"] for r in rows if r["epoch"] == 1]
    assert summary["epochs"][0]["train_ppl"] == pytest.approx(
        math.exp(sum(epoch1) / (steps * 2)), rel=1e-5
    )

    assert main(["evaluate", str(run), "--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["valid_ppl"] == pytest.approx(summary["epochs"][-1]["valid_ppl"], rel=1e-9)
    assert result["test_ppl"] == pytest.approx(summary["test_ppl"], rel=1e-9)

    assert main(["generate", str(run), "--length", "30", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert 20 <= len(text.split()) <= 30  # <eos> becomes a line break
    assert set(text.split()) <= set(WORDS)


@pytest.mark.parametrize("stop_after", [30, 74, 100])
def test_resume_continues_exactly(corpus, tmp_path, capsys, stop_after):
    """Stopped mid-epoch or at an epoch boundary, then resumed: the same metrics,
    bit for bit, as an uninterrupted run (with dropout on, so the RNG state counts)."""
    opts = ["--max-max-epoch", "3", "--num-layers", "2", "--keep-prob", "0.6", "--hidden-size", "8"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(corpus, full, *opts) == 0
    assert train(corpus, part, *opts, "--stop-after", str(stop_after)) == 0
    assert "stopped after" in capsys.readouterr().out
    assert len(read_jsonl(part / "metrics.jsonl")) == stop_after
    assert not json.loads((part / "summary.json").read_text())["finished"]
    assert main(["train", "--resume", str(part), "--no-progress", "--threads", "1"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert (part / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((part / "summary.json").read_text())
    strip = ("seconds", "wps")
    assert [{k: v for k, v in e.items() if k not in strip} for e in a["epochs"]] == [
        {k: v for k, v in e.items() if k not in strip} for e in b["epochs"]
    ]
    assert a["test_ppl"] == b["test_ppl"]


def test_resume_drops_metrics_written_after_the_checkpoint(corpus, tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(corpus, full, "--max-max-epoch", "2") == 0
    assert train(corpus, part, "--max-max-epoch", "2", "--stop-after", "50") == 0
    with open(part / "metrics.jsonl", "a") as fh:  # a crash after a flush, before a checkpoint
        fh.write('{"step": 51, "loss": 0}\n{"step": 52, "lo')
    assert main(["train", "--resume", str(part), "--no-progress"]) == 0
    assert (part / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()


def test_other_clippers_and_cells(corpus, tmp_path, capsys):
    run = tmp_path / "auto"
    assert train(corpus, run, "--clip", "autoclip:percentile=50", "--cell", "gru") == 0
    info = json.loads((run / "run.json").read_text())
    assert info["clip"] == "autoclip:percentile=50"
    rows = read_jsonl(run / "metrics.jsonl")
    assert any(r["clipped"] for r in rows) and not all(r["clipped"] for r in rows)
    assert train(corpus, tmp_path / "inf", "--clip", "norm:norm_type=inf") == 0
    rows = read_jsonl(tmp_path / "inf" / "metrics.jsonl")
    assert rows[0]["threshold"] == 1.0  # bare norm takes max_grad_norm


def test_character_level_plain_corpus(tmp_path, capsys):
    root = tmp_path / "chars"
    root.mkdir()
    rng = random.Random(1)
    for name, n in (("train", 4000), ("valid", 800), ("test", 300)):
        text = "".join(rng.choice("abc de\n") for _ in range(n))
        (root / f"{name}.txt").write_text(text, encoding="utf-8")
    assert train(root, tmp_path / "run", "--tokens", "char") == 0
    vocab = (tmp_path / "run" / "vocab.txt").read_text().split("\n")[:-1]
    assert sorted(vocab) == sorted([" ", "<eos>", "a", "b", "c", "d", "e"])
    assert main(["generate", str(tmp_path / "run"), "--length", "20"]) == 0


@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("tensorboard"), reason="tensorboard not installed"
)
def test_tensorboard_event_files(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(corpus, run) == 0
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    assert train(corpus, tmp_path / "notb", "--no-tensorboard") == 0
    assert not (tmp_path / "notb" / "tb").exists()


def test_ctrl_c_saves_and_resume_finishes(corpus, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "GRADCLIP_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "gradclip", "train", *TINY, "--data", str(corpus)]
    cmd += ["--run-dir", str(run), "--max-max-epoch", "1000", "--flush-every", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        m = run / "metrics.jsonl"
        if m.exists() and m.stat().st_size > 0:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in out
    blob = torch.load(run / "checkpoint.pt", weights_only=True)
    assert blob["global_step"] == len(read_jsonl(run / "metrics.jsonl")) > 0
    assert not blob["finished"]


# --------------------------------------------------------------------------- bad input
def _bad(tmp_path: Path, name: str, make_corpus) -> tuple[list[str], str]:
    data = make_corpus(tmp_path / "data")
    if name == "missing dir":
        return ["--data", str(tmp_path / "nope")], "data directory not found"
    if name == "missing file":
        (data / "ptb.valid.txt").unlink()
        return ["--data", str(data)], "valid file not found"
    if name == "empty file":
        (data / "ptb.test.txt").write_bytes(b"")
        return ["--data", str(data)], "test file is empty"
    if name == "non-utf8":
        (data / "ptb.train.txt").write_bytes(b" a b \n caf\xe9 \n")
        return ["--data", str(data)], r"ptb\.train\.txt: invalid UTF-8 at byte offset 10"
    if name == "unknown config":
        return ["--data", str(data), "--config", "huge"], "unknown config 'huge'"
    if name == "negative lr":
        return ["--data", str(data), "--lr", "-1"], "learning_rate must be positive"
    if name == "bad clip":
        return ["--data", str(data), "--clip", "nope"], "--clip nope"
    if name == "bad clip option":
        return ["--data", str(data), "--clip", "norm:max_nrm=1"], "no option 'max_nrm'"
    if name == "too small":
        return ["--data", str(data), "--batch-size", "2000"], "decrease batch_size or num_steps"
    if name == "no data":
        return [], "--data DIR is required"
    raise AssertionError(name)


@pytest.mark.parametrize(
    "case",
    [
        "missing dir",
        "missing file",
        "empty file",
        "non-utf8",
        "unknown config",
        "negative lr",
        "bad clip",
        "bad clip option",
        "too small",
        "no data",
    ],
)
def test_bad_input_one_line_exit_2_no_run_dir(case, tmp_path, capsys, make_corpus):
    args, message = _bad(tmp_path, case, make_corpus)
    runs = tmp_path / "runs"
    code = main(["train", "--no-progress", *args, "--run-dir", str(runs / "r")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradclip train: error: "), err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not runs.exists() or not any(runs.iterdir())


def test_existing_run_dir_is_refused(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(corpus, run) == 0
    before = sorted(os.listdir(run))
    assert train(corpus, run) == 2
    assert "run directory exists" in capsys.readouterr().err
    assert sorted(os.listdir(run)) == before


def test_bad_resume_and_evaluate_inputs(corpus, tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a gradclip run directory" in capsys.readouterr().err
    run = tmp_path / "run"
    assert train(corpus, run, "--stop-after", "5") == 0
    assert main(["train", "--resume", str(run), "--lr", "2"]) == 2
    assert "cannot be combined with --resume" in capsys.readouterr().err
    assert main(["generate", str(run), "--temperature", "0"]) == 2
    assert "--temperature must be positive" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_step_loop_has_no_host_sync(tmp_path):
    """With metrics and the gradient monitor on (flushed later) and no progress bar,
    training steps never sync."""
    from gradclip.lm.batches import Batches
    from gradclip.lm.config import load_config
    from gradclip.lm.loop import train_step
    from gradclip.lm.model import PTBModel
    from gradclip.lm.reporting import LoopMonitor, MetricsLog
    from gradclip.lm.session import make_optimizer

    cfg, _ = load_config("test")
    dev = torch.device("cuda")
    model = PTBModel.from_config(cfg, 50).to(dev)
    opt = make_optimizer(model, cfg)
    ids = torch.randint(0, 50, (2000,))
    batches = Batches(ids, cfg.batch_size, cfg.num_steps).to(dev)
    monitor = LoopMonitor(model, opt, update_ratio_every=10)  # as in gradclip train
    metrics = MetricsLog(tmp_path / "m.jsonl", None, flush_every=10**6, monitor=monitor)
    cost = torch.zeros((), device=dev)
    state = model.init_state(cfg.batch_size)

    def steps(r):
        nonlocal state, cost
        for i in r:
            loss, stats, state = train_step(model, opt, *batches[i], state)
            cost += loss
            values = (loss, stats.norm, stats.clipped_norm, stats.threshold, stats.clipped)
            metrics.add(i + 1, 0, 1.0, values)

    steps(range(3))  # warm-up (lazy init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        steps(range(3, 40))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    metrics.close()
    rows = read_jsonl(tmp_path / "m.jsonl")
    assert len(rows) == 40 and all("layers" in r for r in rows)

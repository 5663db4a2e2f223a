"""``gradclip train --distributed ddp|fsdp`` under ``torchrun --nproc-per-node 2`` (gloo, CPU).

Each rank trains on half of every batch's rows; the gradient the wrappers
average is the full batch's, so the loss, norm and clip sequence in
``metrics.jsonl`` must follow a one-process run on the full batch (float
reduction order aside): DDP with the ``norm`` clipper, FSDP2 with ``zclip``
(adaptive state). Only rank 0 writes. An FSDP2 run stopped after 30 steps
(DCP checkpoint) and resumed by a new pair of processes must write exactly
the metrics of the uninterrupted FSDP2 run (ZClip's EMAs included).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from gradclip.cli import main
from gradclip.lm.evaluation import evaluate
from gradclip.lm.session import load_run_corpus, open_trained

#: The ``test`` config (batch 20, 84 steps on the generated corpus) with a threshold
#: that clips about half of the steps, so that clipping decisions are compared too.
FLAGS = ["--config", "test", "--max-grad-norm", "0.3", "--no-progress"]
#: Under FSDP2: ZClip, whose EMAs must also come back exactly from a checkpoint.
ZCLIP = ["--config", "test", "--clip", "zclip", "--no-progress", "--no-tensorboard"]
STEPS = 84
pytestmark = pytest.mark.usefixtures("one_thread")


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, "-m", "gradclip", "train", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _column(rows: list[dict[str, Any]], key: str) -> torch.Tensor:
    return torch.tensor([float(r[key]) for r in rows], dtype=torch.float64)


_RUNS: dict[str, Any] = {}  # made once for the module (make_corpus is function-scoped)


@pytest.fixture
def runs(make_corpus: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process (norm, zclip); DDP (norm); FSDP2 (zclip) uninterrupted, and stopped
    after 30 steps and resumed."""
    if not _RUNS:
        _RUNS.update(_make_runs(make_corpus, tmp_path_factory.mktemp("dist")))
    return _RUNS


def _make_runs(make_corpus: Any, root: Path) -> dict[str, Any]:
    data = make_corpus(root / "data")
    out: dict[str, Any] = {"root": root, "data": data}
    assert main(["train", *FLAGS, "--data", str(data), "--run-dir", str(root / "one"),
                 "--no-tensorboard"]) == 0  # fmt: skip
    assert main(["train", *ZCLIP, "--data", str(data), "--run-dir", str(root / "one-zclip")]) == 0
    ddp = ["--data", str(data), "--run-dir", str(root / "ddp"), "--distributed", "ddp"]
    out["ddp"] = _torchrun(*FLAGS, *ddp, cwd=root)
    fsdp = [*ZCLIP, "--data", str(data), "--distributed", "fsdp"]
    out["fsdp"] = _torchrun(*fsdp, "--run-dir", str(root / "fsdp"), cwd=root)
    out["head"] = _torchrun(*fsdp, "--run-dir", str(root / "cut"), "--stop-after", "30", cwd=root)
    out["tail"] = _torchrun("--resume", str(root / "cut"), *ZCLIP[-2:], cwd=root)
    return out


def _same_as_one_process(rows: list[dict[str, Any]], ref: list[dict[str, Any]]) -> None:
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # one line per step
    for key in ("loss", "norm", "clipped_norm"):
        torch.testing.assert_close(_column(rows, key), _column(ref, key), rtol=1e-5, atol=1e-6)
    clipped = [r["clipped"] for r in ref]
    assert 0 < sum(clipped) < STEPS  # the threshold bites on some steps only
    assert [r["clipped"] for r in rows] == clipped
    for a, b in zip(rows, ref, strict=True):  # the monitor's per-layer norms are global too
        assert a["layers"].keys() == b["layers"].keys()
        for name in a["layers"]:
            assert a["layers"][name] == pytest.approx(b["layers"][name], rel=1e-5)


def test_ddp_follows_one_process_and_only_rank_0_writes(runs):
    proc, root = runs["ddp"], runs["root"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows, ref = _metrics(root / "ddp"), _metrics(root / "one")
    _same_as_one_process(rows, ref)
    summary = json.loads((root / "ddp" / "summary.json").read_text())
    ref_summary = json.loads((root / "one" / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["test_ppl"] == pytest.approx(ref_summary["test_ppl"], rel=1e-5)
    assert proc.stdout.count("done: train ppl") == 1  # one rank speaks
    assert len(list((root / "ddp" / "tb").iterdir())) == 1  # one event file
    info = json.loads((root / "ddp" / "run.json").read_text())
    assert (info["distributed"], info["world_size"]) == ("ddp", 2)
    names = {p.name for p in (root / "ddp").iterdir()}
    assert names == {p.name for p in (root / "one").iterdir()} | {"tb"}
    blob = torch.load(root / "ddp" / "checkpoint.pt", weights_only=True)
    assert blob["rng_ranks"].shape[0] == 2 and "model" in blob  # a plain, full checkpoint


def test_fsdp_follows_one_process(runs):
    proc, root = runs["fsdp"], runs["root"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_as_one_process(_metrics(root / "fsdp"), _metrics(root / "one-zclip"))
    assert proc.stdout.count("done: train ppl") == 1
    blob = torch.load(root / "fsdp" / "checkpoint.pt", weights_only=True)
    assert "model" not in blob
    folder = root / "fsdp" / blob["dcp"]
    assert folder.parent == root / "fsdp" / "dcp" and list(folder.parent.iterdir()) == [folder]
    assert {p.name for p in folder.iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    # one process reads the sharded weights back: the same validation perplexity
    run, model, _ = open_trained(root / "fsdp", torch.device("cpu"))
    summary = json.loads((root / "fsdp" / "summary.json").read_text())
    ppl = evaluate(model, load_run_corpus(run).valid, run.config.batch_size, run.config.num_steps)
    assert ppl == pytest.approx(summary["epochs"][0]["valid_ppl"], rel=1e-5)


def test_fsdp_stop_and_resume_is_exact(runs):
    head, tail, root = runs["head"], runs["tail"], runs["root"]
    assert head.returncode == 0, head.stderr[-3000:]
    assert tail.returncode == 0, tail.stderr[-3000:]
    assert "resuming" in tail.stdout
    assert _metrics(root / "cut") == _metrics(root / "fsdp")  # bit for bit
    a = json.loads((root / "cut" / "summary.json").read_text())
    b = json.loads((root / "fsdp" / "summary.json").read_text())
    assert (
        a["test_ppl"] == b["test_ppl"]
        and a["epochs"][0]["train_ppl"] == b["epochs"][0]["train_ppl"]
    )
    assert len(list((root / "cut" / "dcp").iterdir())) == 1  # the step-30 folder was removed


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("gradclip train: error:"), err
    for word in words:
        assert word in err


def test_without_torchrun_is_a_one_line_error(runs, tmp_path, monkeypatch, capsys):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    args = ["train", *FLAGS, "--data", str(runs["data"]), "--run-dir", str(tmp_path / "r")]
    assert main([*args, "--distributed", "fsdp"]) == 2
    _one_line_error(capsys, "torchrun", "RANK")
    assert not (tmp_path / "r").exists()
    assert main(["train", "--resume", str(runs["root"] / "ddp")]) == 2  # a DDP run needs torchrun
    _one_line_error(capsys, "torchrun")
    assert main(["train", "--resume", str(runs["root"] / "ddp"), "--distributed", "fsdp"]) == 2
    _one_line_error(capsys, "--distributed ddp")
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun, but no --distributed
    assert main(args) == 2
    _one_line_error(capsys, "--distributed ddp or fsdp")
    assert not (tmp_path / "r").exists()


def test_batch_size_not_divisible_by_world_size(runs, tmp_path, monkeypatch, capsys):
    env = {"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for var, value in {**env, "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(var, value)  # checked before any process group is made
    args = ["train", *FLAGS, "--data", str(runs["data"]), "--run-dir", str(tmp_path / "r")]
    assert main([*args, "--distributed", "ddp"]) == 2
    _one_line_error(capsys, "batch_size 20", "3 processes")
    assert not (tmp_path / "r").exists()

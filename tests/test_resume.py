"""A training run survives anything: kill -9 anywhere, SIGTERM, divergence, a moved
corpus; and a resumed run is bit for bit the uninterrupted one.

The runs use the ``test`` config on a tiny generated corpus (84 steps per epoch,
a checkpoint every 20 steps and at step 0), with dropout on so that the RNG
state matters."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradclip.cli import main
from gradclip.lm.rundir import read_metrics, read_run

OPTS = ["--max-max-epoch", "3", "--keep-prob", "0.6", "--hidden-size", "8"]
TINY = ["--config", "test", "--no-progress", "--threads", "1"]
STEPS_PER_EPOCH = 84


def train(corpus: Path, run: Path, *extra: str) -> int:
    return main(["train", *TINY, "--data", str(corpus), "--run-dir", str(run), *OPTS, *extra])


def resume(run: Path, *extra: str) -> int:
    return main(["train", "--resume", str(run), "--no-progress", "--threads", "1", *extra])


def start(corpus: Path, run: Path, *extra: str) -> subprocess.Popen[str]:
    """``gradclip train`` in a subprocess writing metrics every step."""
    cmd = [sys.executable, "-m", "gradclip", "train", *TINY, "--data", str(corpus)]
    cmd += ["--run-dir", str(run), *OPTS, "--flush-every", "1", *extra]
    return subprocess.Popen(
        cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_step(run: Path, step: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(read_metrics(run / "metrics.jsonl")) >= step:
            return
        time.sleep(0.002)
    raise AssertionError(f"the run ended or stalled before step {step}: {proc.poll()}")


def same_results(a: Path, b: Path) -> None:
    """metrics.jsonl identical (per-layer norms and events included), epoch records
    identical but for timings, same test ppl and gradient summary."""
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
    strip = ("seconds", "wps")
    assert [{k: v for k, v in e.items() if k not in strip} for e in sa["epochs"]] == [
        {k: v for k, v in e.items() if k not in strip} for e in sb["epochs"]
    ]
    assert sa["test_ppl"] == sb["test_ppl"] and sa["status"] == sb["status"] == "finished"
    assert sa["gradients"] == sb["gradients"]  # the monitor's summary, rebuilt on resume


@pytest.fixture
def reference(corpus, tmp_path, capsys) -> Path:
    """The uninterrupted run."""
    run = tmp_path / "full"
    assert train(corpus, run) == 0
    capsys.readouterr()
    return run


@pytest.mark.parametrize("where", ["first epoch", "anywhere"])
def test_kill_9_then_resume_is_identical(corpus, reference, tmp_path, capsys, where):
    rng = random.Random(where)
    last = STEPS_PER_EPOCH if where == "first epoch" else 3 * STEPS_PER_EPOCH - 5
    kill_at = rng.randint(1, last)
    run = tmp_path / "killed"
    proc = start(corpus, run)
    wait_for_step(run, kill_at, proc)
    proc.kill()  # SIGKILL: nothing is saved on the way out
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert read_run(run).status in ("running", "stopped")
    assert resume(run) == 0
    assert "resuming" in capsys.readouterr().out
    same_results(reference, run)


def test_kill_before_the_first_step_can_be_resumed(corpus, reference, tmp_path, capsys):
    """The directory exists only with its step-0 checkpoint: always resumable."""
    run = tmp_path / "r"
    assert train(corpus, run, "--stop-after", "1") == 0
    shutil.copy(reference / "checkpoint.pt", tmp_path / "unused.pt")  # (reference untouched)
    part = tmp_path / "fresh"
    proc = start(corpus, part)
    deadline = time.time() + 60
    while not (part / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.002)
    proc.kill()
    proc.communicate(timeout=60)
    assert {"config.toml", "run.json", "vocab.txt", "checkpoint.pt"} <= set(os.listdir(part))
    assert resume(part) == 0
    same_results(reference, part)


def test_sigterm_saves_exits_143_and_resumes_identically(corpus, reference, tmp_path, capsys):
    run = tmp_path / "term"
    proc = start(corpus, run)
    wait_for_step(run, 30, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and "checkpoint saved" in out
    done = read_run(run)
    assert done.status == "stopped"
    assert done.summary is not None
    assert done.summary["global_step"] == len(done.metrics()) >= 30
    assert resume(run) == 0
    same_results(reference, run)


def test_stale_temporary_files_are_removed_on_resume(corpus, tmp_path, capsys):
    run = tmp_path / "r"
    assert train(corpus, run, "--stop-after", "10") == 0
    (run / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    assert resume(run, "--stop-after", "20") == 0
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]


def test_divergence_is_recorded_exit_3_and_evaluates_to_inf(corpus, tmp_path, capsys):
    run = tmp_path / "div"
    diverging = ["--clip", "none", "--lr", "1e6", "--max-max-epoch", "3"]
    code = main(["train", *TINY, "--data", str(corpus), "--run-dir", str(run), *diverging])
    out = capsys.readouterr().out
    assert code == 3
    done = read_run(run)
    summary = done.summary
    assert summary is not None and summary["status"] == "diverged" and not summary["finished"]
    step = summary["diverged_step"]
    assert f"diverged at step {step}" in out
    rows = done.metrics()
    first_bad = next(r["step"] for r in rows if r["loss"] is None or r["loss"] / 2 > 709)
    assert step == first_bad
    text = (run / "metrics.jsonl").read_text() + (run / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["valid_ppl"] is None and result["test_ppl"] is None  # inf, as strict JSON
    assert main(["evaluate", str(run)]) == 0
    assert "valid ppl inf  test ppl inf" in capsys.readouterr().out
    assert resume(run) == 3  # nothing to continue; still diverged


def test_moved_corpus_with_same_hashes_resumes_with_data(corpus, tmp_path, capsys):
    run = tmp_path / "r"
    assert train(corpus, run, "--stop-after", "10") == 0
    moved = tmp_path / "moved"
    shutil.move(str(corpus), moved)
    assert resume(run) == 2
    assert "data directory not found" in capsys.readouterr().err
    assert resume(run, "--data", str(moved), "--stop-after", "20") == 0
    assert read_run(run).info["data"] == str(moved.resolve())
    assert resume(run, "--stop-after", "30") == 0  # the new place is remembered


def test_changed_corpus_is_refused_on_resume_and_evaluate(corpus, tmp_path, capsys):
    run = tmp_path / "r"
    assert train(corpus, run, "--stop-after", "10") == 0
    with open(corpus / "ptb.valid.txt", "a") as fh:
        fh.write(" w1 w2 \n")
    before = (run / "checkpoint.pt").read_bytes()
    for argv in (["train", "--resume", str(run)], ["evaluate", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "valid file changed" in err, err
    assert (run / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("flag", [["--config", "small"], ["--tokens", "char"], ["--lr", "2"],
                                  ["--data-prefix", "x."], ["--run-dir", "elsewhere"]])  # fmt: skip
def test_resume_refuses_every_run_defining_flag(corpus, tmp_path, capsys, flag):
    run = tmp_path / "r"
    assert train(corpus, run, "--stop-after", "5") == 0
    capsys.readouterr()
    assert resume(run, *flag) == 2
    err = capsys.readouterr().err
    name = "--learning-rate" if flag[0] == "--lr" else flag[0]
    assert f"{name} cannot be combined with --resume" in err


def test_checkpoint_of_another_config_is_refused(corpus, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train(corpus, a, "--stop-after", "5") == 0
    assert train(corpus, b, "--stop-after", "5", "--num-layers", "2") == 0
    shutil.copy(b / "checkpoint.pt", a / "checkpoint.pt")
    capsys.readouterr()
    for argv in (["train", "--resume", str(a)], ["evaluate", str(a)], ["generate", str(a)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"gradclip {argv[0]}: error: checkpoint ")
        assert "num_layers = 2 there, 1 in" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [("empty", "is empty"), ("truncated", "truncated"), ("random", "truncated")],
)
def test_damaged_checkpoint_one_line(corpus, tmp_path, capsys, damage, message):
    run = tmp_path / "r"
    assert train(corpus, run, "--stop-after", "5") == 0
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    payload = {"empty": b"", "truncated": data[:1000], "random": os.urandom(5000)}[damage]
    ckpt.write_bytes(payload)
    capsys.readouterr()
    for argv in (["train", "--resume", str(run)], ["evaluate", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and str(ckpt) in err, err


def test_corrupt_run_json_names_the_file(corpus, tmp_path, capsys):
    run = tmp_path / "r"
    assert train(corpus, run, "--stop-after", "5") == 0
    (run / "run.json").write_text('{"data": ')
    capsys.readouterr()
    assert resume(run) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{run / 'run.json'} is corrupt" in err


def test_crlf_character_corpus_trains_evaluates_and_resumes(tmp_path, capsys):
    root = tmp_path / "crlf"
    root.mkdir()
    rng = random.Random(2)
    for name, n in (("train", 4000), ("valid", 800), ("test", 300)):
        lines = [
            "".join(rng.choice("abc d") for _ in range(rng.randint(3, 20))) for _ in range(n // 10)
        ]
        (root / f"{name}.txt").write_bytes("\r\n".join(lines).encode())
    run = tmp_path / "run"
    args = ["train", *TINY, "--data", str(root), "--tokens", "char", "--run-dir", str(run)]
    assert main([*args, "--stop-after", "30"]) == 0
    vocab = read_run(run).vocab
    assert "\r" in vocab and "<eos>" in vocab
    assert main(["evaluate", str(run)]) == 0
    assert resume(run) == 0
    assert main(["generate", str(run), "--length", "20"]) == 0


def test_a_run_in_use_is_not_resumed_twice(corpus, reference, tmp_path, capsys):
    run = tmp_path / "busy"
    proc = start(corpus, run)
    wait_for_step(run, 5, proc)
    assert resume(run) == 2
    err = capsys.readouterr().err
    assert "is in use by another gradclip process" in err and len(err.strip().splitlines()) == 1
    proc.kill()  # the lock dies with its process
    proc.communicate(timeout=60)
    assert resume(run) == 0
    same_results(reference, run)

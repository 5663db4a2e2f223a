"""The CLI's contract: one-line errors with exit 2 for bad input (and only for bad
input), defaults in --help, commands discovered from modules, quiet broken pipes,
progress lines without a terminal, TensorBoard purged on resume."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gradclip.cli
from gradclip.cli import build_parser, command_modules, main
from gradclip.lm.rundir import read_run

TINY = ["--config", "test", "--no-progress", "--threads", "1"]


def train(corpus: Path, run: Path, *extra: str) -> int:
    return main(["train", *TINY, "--data", str(corpus), "--run-dir", str(run), *extra])


def one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gradclip {command}: error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--clip", "norm:max_norm=0"], "max_norm must be positive"),
        (["--clip", "value:clip_value=0"], "clip_value must be positive"),
        (["--clip", "norm:max_norm=nan"], "max_norm"),
        (["--clip", "nrom"], "did you mean 'norm'"),
        (["--clip", "autoclip:percentil=5"], "did you mean 'percentile'"),
        (["--clip", "autoclip", "--max-grad-norm", "3"], "names 'autoclip'"),
        (["--clip", "norm:max_norm=2", "--max-grad-norm", "3"], "sets max_norm itself"),
        (["--max-grad-norm", "0"], "max_grad_norm must be positive"),
        (["--hidden-size", "300000"], "out of memory building the model"),
        (["--refresh-every", "0"], "--refresh-every must be a positive integer"),
        (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else
         ["--threads", "-1"], "--"),
    ],
)  # fmt: skip
def test_bad_flags_one_line_exit_2_nothing_written(corpus, tmp_path, capsys, flags, message):
    runs = tmp_path / "runs"
    assert train(corpus, runs / "r", *flags) == 2
    assert message in one_error_line(capsys, "train")
    assert not runs.exists() or not any(runs.iterdir())


def test_max_grad_norm_still_sets_the_default_clipper(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path / "r", "--max-grad-norm", "0.5", "--stop-after", "3") == 0
    assert read_run(tmp_path / "r").info["clip_spec"] == "norm:max_norm=0.5"
    assert {r["threshold"] for r in read_run(tmp_path / "r").metrics()} == {0.5}


def test_a_library_bug_keeps_its_traceback(corpus, tmp_path, monkeypatch):
    import gradclip.cli.evaluate as evaluate_cmd

    def broken(*args: object, **kwargs: object) -> float:
        raise ValueError("a bug, not the user's fault")

    assert train(corpus, tmp_path / "r", "--stop-after", "3") == 0
    monkeypatch.setattr(evaluate_cmd, "evaluate", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["evaluate", str(tmp_path / "r")])


def test_help_shows_defaults_and_what_is_required(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for shown in (
        "(required: --data, unless --resume)",
        "(default: small)",
        "(default: word)",
        "--refresh-every N progress update period in steps (each reads the device) (default: 50)",
        "(default: the config's; small 5, medium 5, large 10, test 1)",
        "names: none, norm,",
        "3 diverged",
    ):
        assert shown in text, shown
    assert main(["generate", "--help"]) == 0
    assert "(default: 100)" in capsys.readouterr().out


def test_usage_errors_are_one_line(capsys):
    assert main(["generate"]) == 2
    assert "the following arguments are required: RUN_DIR" in one_error_line(capsys, "generate")
    assert main(["demo", "--steps", "x"]) == 2
    assert "--steps must be an integer, got 'x'" in one_error_line(capsys, "demo")


def test_commands_are_discovered_from_modules(tmp_path, monkeypatch, capsys):
    names = [m.__name__.rsplit(".", 1)[1] for m in command_modules()]
    assert {"train", "evaluate", "generate", "demo"} <= set(names)
    assert "flags" not in names  # helpers without register() are not commands
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "hello.py").write_text(
        "def register(subparsers):\n"
        "    p = subparsers.add_parser('hello', help='say hello')\n"
        "    p.set_defaults(func=lambda args: print('hello') or 0)\n"
    )
    monkeypatch.setattr(gradclip.cli, "__path__", [*gradclip.cli.__path__, str(extra)])
    assert "hello" in build_parser().format_help()
    assert main(["hello"]) == 0 and capsys.readouterr().out == "hello\n"
    sys.modules.pop("gradclip.cli.hello", None)


def test_default_run_dirs_do_not_collide(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert main(["train", *TINY, "--data", str(corpus), "--stop-after", "1"]) == 0
    runs = sorted(os.listdir(tmp_path / "runs"))
    assert len(runs) == 2 and all(r.startswith("test-") for r in runs)


def test_progress_lines_without_a_terminal(corpus, tmp_path, capsys):
    args = ["train", "--config", "test", "--threads", "1", "--data", str(corpus)]
    args += ["--run-dir", str(tmp_path / "r"), "--refresh-every", "10", "--progress-seconds", "0"]
    assert main(args) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("epoch 1/1 step ")]
    n = (read_run(tmp_path / "r").info["tokens_per_split"]["train"] // 20 - 1) // 2
    assert [line.split()[3] for line in lines] == [f"{k}/{n}" for k in range(10, n, 10)]
    assert all("wps=" in line and "ppl=" in line and "clip=" in line for line in lines)


def test_broken_pipe_is_quiet_and_the_run_finishes(corpus, tmp_path):
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "gradclip", "train", *TINY, "--data", str(corpus)]
    cmd += ["--run-dir", str(run), "--max-max-epoch", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()  # like `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert "Broken pipe" not in err and "Exception ignored" not in err, err
    assert read_run(run).status == "finished"


@pytest.mark.skipif(not importlib.util.find_spec("tensorboard"), reason="needs tensorboard")
def test_tensorboard_is_purged_back_to_the_checkpoint_on_resume(corpus, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tb_steps(run: Path) -> list[int]:
        acc = EventAccumulator(str(run / "tb"))
        acc.Reload()
        return [e.step for e in acc.Scalars("train/loss")]

    full, part = tmp_path / "full", tmp_path / "part"
    assert train(corpus, full, "--max-max-epoch", "2") == 0
    assert train(corpus, part, "--max-max-epoch", "2", "--stop-after", "40") == 0
    shutil.copy(part / "checkpoint.pt", tmp_path / "at40.pt")
    resume = ["train", "--resume", str(part), "--no-progress", "--threads", "1"]
    assert main([*resume, "--stop-after", "90"]) == 0
    # a kill after TensorBoard got steps 41..90 but before their checkpoint:
    shutil.copy(tmp_path / "at40.pt", part / "checkpoint.pt")
    assert main(resume) == 0
    steps = tb_steps(part)
    assert steps == tb_steps(full) == sorted(set(steps))
    assert (part / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()

"""gradclip suggest on the command line: from a run directory, from a config, bad input."""

from __future__ import annotations

import io
import json
import math

import pytest

from gradclip.cli import main
from gradclip.diagnostics.suggest import suggest_from_norms
from gradclip.lm import RunOptions, read_run, train

pytestmark = pytest.mark.usefixtures("one_thread")


def strict(text: str) -> dict:
    def reject(name: str) -> float:
        raise ValueError(name)

    out: dict = json.loads(text, parse_constant=reject)
    return out


def tiny_run(corpus, run_dir, metrics: bool = True):
    from gradclip.lm import load_config

    cfg, _ = load_config("test", {"hidden_size": "8", "max_grad_norm": "0.3"})
    opts = RunOptions(
        device="cpu", tensorboard=False, progress=False, metrics=metrics, stop_after=40,
        handle_signals=False, out=io.StringIO(),
    )  # fmt: skip
    return train(cfg, corpus, run_dir, options=opts)


def test_from_run_dir_uses_the_recorded_norms(corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    tiny_run(corpus, run_dir)
    assert main(["suggest", str(run_dir), "--json", "--out", str(tmp_path / "o")]) == 0
    got = strict(capsys.readouterr().out)
    norms = [r["norm"] for r in read_run(run_dir).metrics()]
    want = suggest_from_norms(norms)
    assert got["threshold"] == pytest.approx(want.threshold)
    assert got["norms"] == pytest.approx(norms) and len(norms) == 40
    assert [r["name"] for r in got["rules"]][:2] == ["pascanu_mean", "pascanu_half"]
    assert "clipped on" in got["source"]  # the run clipped at 0.3: said so
    assert (tmp_path / "o" / "suggest.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["suggest", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert "Recommended max_norm" in text and "* pascanu_mean" in text


def test_from_config_trains_unclipped(corpus, tmp_path, capsys):
    argv = ["suggest", "--config", "test", "--data", str(corpus), "--steps", "30"]
    assert main([*argv, "--set", "hidden_size=8", "--json", "--no-progress", "--threads", "1"]) == 0
    got = strict(capsys.readouterr().out)
    assert got["steps"] == 30 and got["diverged_at"] is None
    assert all(isinstance(n, float) and math.isfinite(n) for n in got["norms"])
    assert got["explanation"].startswith("Over 30 training steps without clipping")


def test_trials_from_config_print_and_record_each_candidate(corpus, capsys):
    argv = ["suggest", "--config", "test", "--data", str(corpus), "--steps", "12", "--trials"]
    flags = ["--set", "hidden_size=8", "--no-progress", "--threads", "1", "--trial-margin", "0"]
    assert main([*argv, *flags, "--json"]) == 0
    got = strict(capsys.readouterr().out)
    trials = got["trials"]
    assert trials and all(t["steps"] == 12 for t in trials)
    assert trials[0]["rule"] == "pascanu_mean"
    best = min(trials, key=lambda t: t["loss"])  # margin 0: the lowest decides
    assert (got["rule"], got["threshold"]) == (best["rule"], best["threshold"])
    assert main([*argv, *flags]) == 0
    text = capsys.readouterr().out
    assert "trial loss" in text and f"* {best['rule']}" in text and "Trials:" in text
    # a margin wider than every gap keeps the mean norm
    assert main([*argv, *flags[:-1], "0.99", "--json"]) == 0
    kept = strict(capsys.readouterr().out)
    assert kept["rule"] == "pascanu_mean" and kept["trials"] == trials


@pytest.mark.parametrize(
    ("flag", "wording"),
    [
        ("--trial-repeats", "on each of 2 windows of batches"),
        ("--trial-seeds", "from each of 2 initialisations on the same batches"),
    ],
)
def test_two_runs_per_trial_start_with_the_single_trial_and_average(corpus, capsys, flag, wording):
    argv = ["suggest", "--config", "test", "--data", str(corpus), "--steps", "6", "--trials"]
    flags = ["--set", "hidden_size=8", "--no-progress", "--threads", "1", "--json"]
    assert main([*argv, *flags]) == 0
    one = strict(capsys.readouterr().out)["trials"]
    assert main([*argv, *flags, flag, "2"]) == 0
    two = strict(capsys.readouterr().out)
    # run 1 (window 1; the config's own seed) is the single trial, bit for bit; run 2 (the
    # next window; seed + 1's weights) is another run; the score is their mean
    for a, b in zip(one, two["trials"], strict=True):
        assert b["losses"][0] == a["loss"] and len(b["losses"]) == 2
        assert b["losses"][1] != b["losses"][0]
        assert b["loss"] == pytest.approx(sum(b["losses"]) / 2, rel=1e-12)
    assert wording in two["explanation"]


FRESH = "suggest --config test --data {data}"  # measure a fresh model of the test config


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        (None, "suggest {tmp}/nope", "run directory not found"),
        ("nometrics", "suggest {tmp}/run", "no metrics"),
        ("empty", "suggest {tmp}/run", "no metrics"),
        (None, "suggest", "give a RUN_DIR"),
        (None, "suggest --config test", "needs --data"),
        ("nometrics", "suggest {tmp}/run --config test", "not both"),
        (None, f"{FRESH} --set lr", "KEY=VALUE"),
        (None, f"{FRESH} --set hidden=2", "did you mean"),
        (None, f"{FRESH} --steps 0", "--steps"),
        ("nometrics", "suggest {tmp}/run --trials", "--trials trains"),
        (None, f"{FRESH} --trial-repeats 2", "needs --trials"),
        (None, f"{FRESH} --trials --trial-repeats 100000", "training batches; the corpus has"),
        (None, f"{FRESH} --trial-repeats 0", "--trial-repeats must be a positive"),
        (None, f"{FRESH} --trial-seeds 2", "--trial-seeds needs --trials"),
        (None, f"{FRESH} --trial-margin 0.01", "--trial-margin needs --trials"),
        (None, f"{FRESH} --trials --trial-margin 1", "--trial-margin must be a fraction in [0, 1)"),
        (None, f"{FRESH} --trial-seeds -1", "--trial-seeds must be a positive"),
        (None, f"{FRESH} --trials --trial-seeds 2 --trial-repeats 2", "not both"),
    ],
)
def test_bad_input_one_line_exit_2(corpus, tmp_path, capsys, make, argv, message):
    if make:
        tiny_run(corpus, tmp_path / "run", metrics=make != "nometrics")
        if make == "empty":
            (tmp_path / "run" / "metrics.jsonl").write_text("")
    argv = [a.format(tmp=tmp_path, data=corpus) for a in argv.split()]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err

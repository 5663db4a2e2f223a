"""gradclip sweep: tiny budgets end to end, resume after an interruption, bad input."""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from gradclip.cli import main
from gradclip.diagnostics.sweep import SweepResult, make_cells, run_sweep
from gradclip.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"hidden_size": "8"}


def strict(text: str) -> object:
    def reject(name: str) -> float:
        raise ValueError(name)

    return json.loads(text, parse_constant=reject)


def sweep(corpus: Path, root: Path, **kw: object):
    args = dict(methods=["none", "norm"], thresholds=[0.01, 10.0], seeds=[1], steps=8, threads=1)
    args.update(kw)
    return run_sweep(root, "test", corpus, overrides=SMALL, **args)  # type: ignore[arg-type]


def test_end_to_end_rows_files_and_clip_rates(corpus, tmp_path):
    seen = []
    r = sweep(corpus, tmp_path / "sw", progress=lambda d, t: seen.append((d, t)))
    assert [row["run_dir"] for row in r.rows] == ["none-s1", "norm-t0.01-s1", "norm-t10-s1"]
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    by = {row["run_dir"]: row for row in r.rows}
    assert by["none-s1"]["clip_rate"] == 0.0 and by["norm-t0.01-s1"]["clip_rate"] == 1.0
    assert by["norm-t10-s1"]["clip_rate"] == 0.0
    # a threshold that never clips trains exactly as no clipping
    assert by["norm-t10-s1"]["valid_ppl"] == by["none-s1"]["valid_ppl"]
    assert by["norm-t0.01-s1"]["valid_ppl"] != by["none-s1"]["valid_ppl"]
    for row in r.rows:
        assert row["steps"] == 8 and row["status"] == "stopped" and not row["diverged"]
        assert 1 < row["valid_ppl"] < 100
    data = strict((tmp_path / "sw" / "sweep.json").read_text())
    assert data == {"rows": r.rows}
    with open(tmp_path / "sw" / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [x["run_dir"] for x in rows] == list(by)
    assert (tmp_path / "sw" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert r.best()["valid_ppl"] == min(row["valid_ppl"] for row in r.rows)  # one seed


def test_means_average_finite_seeds_and_best_compares_means(tmp_path):
    def row(method, t, seed, ppl):
        return {"method": method, "threshold": t, "seed": seed, "valid_ppl": ppl}

    rows = [
        row("norm", 1.0, 1, 500.0), row("norm", 1.0, 2, 530.0),
        row("norm", 5.0, 1, 450.0), row("norm", 5.0, 2, 610.0),  # luckiest cell, worse mean
        row("norm", 9.0, 1, math.inf), row("norm", 9.0, 2, 400.0),  # one seed diverged
        row("none", None, 1, math.inf), row("none", None, 2, math.inf),
    ]  # fmt: skip
    r = SweepResult(tmp_path, rows, trained=[])
    got = {(m["method"], m["threshold"]): m for m in r.means()}
    assert got[("norm", 1.0)]["valid_ppl"] == 515.0 and got[("norm", 5.0)]["valid_ppl"] == 530.0
    assert got[("norm", 9.0)]["valid_ppl"] == 400.0 and got[("norm", 9.0)]["diverged"] == 1
    assert math.isnan(got[("none", None)]["valid_ppl"]) and got[("none", None)]["seeds"] == 2
    best = r.best()  # not 5.0 (its seed 1 is the best cell) nor 9.0 (a seed diverged)
    assert (best["method"], best["threshold"]) == ("norm", 1.0)
    r.plot(tmp_path / "p.png")  # a method whose every seed diverged still draws
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("blown_up", [1e3, 1e22])
def test_the_chart_goes_logarithmic_when_perplexities_span_orders_of_magnitude(tmp_path, blown_up):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from gradclip.diagnostics.plots import LOG_Y_SPAN, sweep_axes

    ppl = {2.0: (600.0, 640.0), 8.0: (700.0, blown_up), 30.0: (blown_up, 2 * blown_up)}
    rows = [
        {"method": "norm", "threshold": t, "seed": s + 1, "valid_ppl": v}
        for t, pair in ppl.items()
        for s, v in enumerate(pair)
    ]
    fig, ax = plt.subplots()
    sweep_axes(ax, SweepResult(tmp_path, rows, trained=[]))
    spans = 2 * blown_up > LOG_Y_SPAN * 600.0
    assert (ax.get_yscale() == "log") is spans
    lo, hi = ax.get_ylim()
    means = [sum(pair) / 2 for pair in ppl.values()]
    assert lo <= min(means) and max(means) < hi  # no mean pinned to the edge
    assert ("off the scale" in ax.get_title()) is not spans  # ^ marks only on linear
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["2", "8", "30"]
    plt.close(fig)


def test_train_ppl_is_the_mean_loss_of_the_last_tenth_of_the_steps(corpus, tmp_path):
    root = tmp_path / "sw"
    r = sweep(corpus, root, methods=["norm"], thresholds=[0.01, 10.0], steps=20)
    for row in r.rows:
        run = root / row["run_dir"]
        losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").open()]
        num_steps = tomllib.loads((run / "config.toml").read_text())["num_steps"]
        assert len(losses) == 20
        want = math.exp(statistics.fmean(losses[-2:]) / num_steps)  # the last tenth: 2 steps
        assert row["train_ppl"] == pytest.approx(want, rel=1e-12)
    means = {m["threshold"]: m["train_ppl"] for m in r.means()}
    assert means == {row["threshold"]: row["train_ppl"] for row in r.rows}  # one seed
    assert "train ppl" in r.table().splitlines()[0]
    # a cell.json written before the column gains it on resume, without retraining
    path = root / "norm-t10-s1" / "cell.json"
    old = json.loads(path.read_text())
    want = old.pop("train_ppl")
    path.write_text(json.dumps(old))
    again = sweep(corpus, root, methods=["norm"], thresholds=[0.01, 10.0], steps=20)
    assert again.trained == [] and again.rows[1]["train_ppl"] == want


def test_interrupted_sweep_resumes_only_the_missing_cell(corpus, tmp_path):
    root = tmp_path / "sw"
    first = sweep(corpus, root)
    assert len(first.trained) == 3
    kept = {c: (root / c / "cell.json").stat().st_mtime_ns for c in ("none-s1", "norm-t10-s1")}
    (root / "norm-t0.01-s1" / "cell.json").unlink()  # as if killed before the cell finished
    (root / "norm-t0.01-s1" / "checkpoint.pt").write_bytes(b"partial")
    again = sweep(corpus, root)
    assert again.trained == ["norm-t0.01-s1"]
    assert again.rows == [
        {**a, "wall_seconds": b["wall_seconds"]}
        for a, b in zip(first.rows, again.rows, strict=True)
    ]  # retrained deterministically
    for c, t in kept.items():
        assert (root / c / "cell.json").stat().st_mtime_ns == t
    third = sweep(corpus, root, thresholds=[0.01, 10.0, 1.0])  # a grown grid: only the new cell
    assert third.trained == ["norm-t1-s1"]


def test_methods_without_threshold_and_divergence(corpus, tmp_path):
    r = run_sweep(
        tmp_path / "sw", "test", corpus, methods=["none", "norm", "zclip"], thresholds=[1.0],
        seeds=[1], steps=30, overrides={"hidden_size": "8", "learning_rate": "1e6"}, threads=1,
    )  # fmt: skip
    by = {row["run_dir"]: row for row in r.rows}
    assert set(by) == {"none-s1", "norm-t1-s1", "zclip-s1"}
    assert by["none-s1"]["diverged"] and by["none-s1"]["valid_ppl"] == math.inf
    assert by["none-s1"]["status"] == "diverged" and by["none-s1"]["train_ppl"] == math.inf
    assert strict((tmp_path / "sw" / "sweep.json").read_text())["rows"][0]["valid_ppl"] is None
    assert "yes" in r.table().splitlines()[1]


def test_make_cells_validates():
    with pytest.raises(UserError, match="empty sweep grid"):
        make_cells([], [1.0], [1])
    with pytest.raises(UserError, match="did you mean 'norm'"):
        make_cells(["nrom"], [1.0], [1])
    with pytest.raises(UserError, match="needs --thresholds"):
        make_cells(["norm"], [], [1])
    with pytest.raises(UserError, match="positive finite"):
        make_cells(["norm"], [0.0], [1])
    with pytest.raises(UserError, match="duplicate"):
        make_cells(["norm", "norm"], [1.0], [1])
    cells = make_cells(["autoclip:percentile=25", "value"], [0.5], [1, 2])
    assert [c.spec for c in cells] == [
        "autoclip:percentile=25.0", "autoclip:percentile=25.0",
        "value:clip_value=0.5", "value:clip_value=0.5",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "nrom", "--thresholds", "1", "--steps", "2"], "did you mean 'norm'"),
        (["--methods", "", "--steps", "2"], "empty sweep grid"),
        (["--methods", "norm", "--steps", "2"], "needs --thresholds"),
        (["--methods", "none", "--seeds", "", "--steps", "2"], "empty sweep grid"),
        (["--methods", "none", "--steps", "2", "--set", "nope=1"], "nope"),
    ],
)
def test_cli_bad_input_one_line_exit_2(corpus, tmp_path, capsys, extra, message):
    argv = ["sweep", "--config", "test", "--data", str(corpus), "--sweep-dir", str(tmp_path / "s")]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "s").exists()


def test_cli_runs_and_prints_table(corpus, tmp_path, capsys):
    argv = ["sweep", "--config", "test", "--data", str(corpus), "--sweep-dir", str(tmp_path / "s")]
    flags = [
        "--methods",
        "none,norm",
        "--thresholds",
        "0.01",
        "--steps",
        "4",
        "--set",
        "hidden_size=8",
    ]
    assert main([*argv, *flags, "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 cell(s) trained, 0 already done" in out and "best:" in out
    assert "mean over seeds" not in out  # one seed: the rows are the means
    assert main([*argv, *flags, "--no-progress", "--seeds", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "2 cell(s) trained, 2 already done" in out
    means = out.split("mean over seeds:\n")[1].splitlines()
    assert "vs best" in means[0] and means[1].split()[:3] == ["none", "-", "2"]
    assert "+0.0%" in out
    assert main([*argv, *flags, "--no-progress", "--json"]) == 0
    rows = strict(capsys.readouterr().out)["rows"]
    assert [r["run_dir"] for r in rows] == ["none-s1", "norm-t0.01-s1"]


def test_jobs_run_cells_in_processes_with_the_same_results(corpus, tmp_path):
    kw = dict(methods=["norm"], thresholds=[0.01, 10.0])
    pool = sweep(corpus, tmp_path / "pool", jobs=2, threads=2, **kw)  # 1 thread per process
    serial = sweep(corpus, tmp_path / "serial", **kw)
    assert pool.trained == serial.trained == ["norm-t0.01-s1", "norm-t10-s1"]
    for a, b in zip(pool.rows, serial.rows, strict=True):
        assert {**a, "wall_seconds": 0} == {**b, "wall_seconds": 0}


def test_epoch_budget_reports_the_epochs_validation_perplexity(corpus, tmp_path):
    from gradclip.lm import read_run

    r = sweep(corpus, tmp_path / "sw", methods=["norm"], thresholds=[1.0], steps=None, epochs=1)
    (row,) = r.rows
    assert row["status"] == "finished" and row["steps"] > 8
    summary = read_run(tmp_path / "sw" / row["run_dir"]).summary
    assert summary is not None
    assert row["valid_ppl"] == pytest.approx(summary["epochs"][-1]["valid_ppl"])
    with pytest.raises(UserError, match="exactly one budget"):
        sweep(corpus, tmp_path / "x", steps=3, epochs=1)


def test_the_means_table_writes_blown_up_perplexities_and_gaps_readably():
    from gradclip.cli.sweep import _means_table

    means = [
        {"method": "norm", "threshold": 2.0, "seeds": 2, "valid_ppl": 600.0,
         "train_ppl": 580.0, "diverged": 0},
        {"method": "norm", "threshold": 3.0, "seeds": 2, "valid_ppl": 660.0,
         "train_ppl": 640.0, "diverged": 0},
        {"method": "norm", "threshold": 8.0, "seeds": 2, "valid_ppl": 6e22,
         "train_ppl": 1.5e12, "diverged": 0},
    ]  # fmt: skip
    rows = _means_table(means, best=600.0).splitlines()[2:]
    assert rows[1].split()[3:5] == ["660.00", "+10.0%"]
    assert rows[2].split()[3:6] == ["6e+22", "1e+20x", "1.5e+12"]  # 6e22 / 600 = 1e20
    assert max(map(len, rows)) == min(map(len, rows))  # still aligned

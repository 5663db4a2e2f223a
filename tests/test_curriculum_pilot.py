"""benchmarks/temporal_order_curriculum.py: stages carry one model, each is judged by the
paper's criterion at its own length, and the first unsolved stage ends the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gradclip.diagnostics.tasks.criteria import evaluate


@pytest.fixture(scope="module")
def pilot(load_benchmark):
    return load_benchmark("temporal_order_curriculum")


def test_short_lengths_are_solved_in_turn_by_one_model(pilot) -> None:
    torch.set_num_threads(1)
    model, stages = pilot.run_curriculum(1, [10, 12, 14], stage_steps=1500, eval_size=1000)
    assert [s["length"] for s in stages] == [10, 12, 14]
    assert all(s["solved"] and s["error"] < 0.01 for s in stages)
    running = 0
    for s in stages:
        running += s["updates"]
        assert s["total_updates"] == running
    # The last stage's recorded error is the returned model's, recomputed independently.
    model.eval()
    assert stages[-1]["error"] == evaluate(model, "torder", 14, 1000)


def test_an_unsolved_stage_ends_the_run(pilot) -> None:
    model, stages = pilot.run_curriculum(0, [10, 12], stage_steps=2, eval_size=500)
    assert len(stages) == 1
    (stage,) = stages
    assert not stage["solved"] and stage["updates"] == 2 and 0 <= stage["clip_rate"] <= 1
    model.eval()
    assert stage["error"] == evaluate(model, "torder", 10, 500) >= 0.01


def test_main_writes_every_stage(pilot, tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.json"
    pilot.main(
        [
            "--seeds",
            "0",
            "--lengths",
            "10,12",
            "--stage-steps",
            "2",
            "--eval-size",
            "100",
            "--out",
            str(out),
        ]
    )
    data = json.loads(out.read_text())
    assert [s["length"] for s in data["stages"]] == [10]
    assert data["args"]["method"] == "norm:max_norm=1"
    assert "FAILED" in capsys.readouterr().out
    png = tmp_path / "c.png"
    pilot.main(["--plot", str(png), f"{out},{out}"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pilot._arm_label(data["args"]) == "clip (norm:max_norm=1) + Ω (α=2)"


@pytest.mark.parametrize(
    "flags",
    [
        ["--lengths", "5,10"],
        ["--lengths", "50,40"],
        ["--alpha", "nan"],
        ["--lr", "-1"],
        ["--stage-steps", "0"],
        ["--method", "bogus"],
        ["--method-after", "norm:max_norm=-1"],
    ],
)
def test_bad_input_exits_2_and_writes_nothing(pilot, tmp_path: Path, flags, capsys) -> None:
    out = tmp_path / "c.json"
    with pytest.raises(SystemExit) as stop:
        pilot.main([*flags, "--out", str(out)])
    assert stop.value.code == 2 and not out.exists()
    assert "error:" in capsys.readouterr().err.strip().splitlines()[-1]


def test_plot_of_an_empty_file_exits_2(pilot, tmp_path: Path) -> None:
    empty, png = tmp_path / "e.json", tmp_path / "p.png"
    empty.write_text("")
    with pytest.raises(SystemExit) as stop:
        pilot.main(["--plot", str(png), str(empty)])
    assert stop.value.code == 2 and not png.exists()

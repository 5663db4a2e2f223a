"""``gradclip demo`` end to end on a tiny budget (``--quick``), and its bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradclip.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_quick_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("no clipping", "fixed threshold", "adaptive (ZClip)"):
        assert label in text
    assert "Suggested threshold: max_norm = " in text
    assert f"Report: {out / 'report.html'}" in text
    doc = json.loads((out / "tasks" / "tasks.json").read_text())
    methods = [r["config"]["method"] for r in doc["results"]]
    assert methods[:3] == ["none", "norm:max_norm=1", "zclip"]
    assert methods[3].startswith("norm:max_norm=")  # the check at the suggested threshold
    assert all(r["steps_run"] <= 100 for r in doc["results"])
    # the unclipped run is never clipped; the clipped runs are, sometimes
    assert doc["results"][0]["clip_rate"] == 0 and doc["results"][1]["clip_rate"] > 0
    for png in ("cliff.png", "norms.png", "profiles.png"):
        assert (out / "figures" / png).read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 5 and "<script" not in page


def test_demo_library_result(tmp_path: Path) -> None:
    from gradclip.diagnostics.demo import run_demo

    lines: list[str] = []
    res = run_demo(tmp_path / "d", quick=True, progress=False, say=lines.append)
    assert [label for label, _ in res.runs] == [
        "no clipping",
        "fixed threshold",
        "adaptive (ZClip)",
    ]
    assert res.threshold > 0 and res.report.is_file() and len(res.figures) == 3
    assert res.check.config.method == f"norm:max_norm={res.threshold:.6g}"
    assert any(res.reason in line for line in lines)


def test_demo_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "0"]) == 2
    assert main(["demo", "--seed", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("gradclip demo: error:") for line in err)

"""``gradclip profile / cliff / tasks / report`` end to end on tiny budgets, and bad input."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradclip.cli import main
from gradclip.diagnostics.profile import TemporalProfile
from gradclip.diagnostics.report import read_view
from gradclip.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

PNG = b"\x89PNG\r\n\x1a\n"


def write_corpus(root: Path) -> Path:
    """A tiny PTB-style corpus: 40 words, a seeded random text per split."""
    import random

    rng = random.Random(0)
    root.mkdir(parents=True)
    for name, n in (("train", 3000), ("valid", 600), ("test", 400)):
        words = [f"w{rng.randrange(40)}" for _ in range(n)]
        lines = [" ".join(words[i : i + 12]) for i in range(0, n, 12)]
        (root / f"ptb.{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """One train run (test config), one profile, one tasks folder: the report's inputs."""
    root = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADCLIP_CACHE_DIR", str(root / "cache"))  # never ~/.cache
        yield _make_outputs(root)


def _make_outputs(root: Path) -> dict[str, Path]:
    corpus = write_corpus(root / "data")
    run = root / "train-run"
    args = ["--config", "test", "--no-progress", "--threads", "1", "--data", str(corpus)]
    assert main(["train", *args, "--run-dir", str(run)]) == 0
    # a monitor-style record: per-layer norms on each step and one event
    metrics = run / "metrics.jsonl"
    lines = [json.loads(x) for x in metrics.read_text().splitlines()]
    for i, rec in enumerate(lines):
        rec["layers"] = {"rnn": 0.5 + i, "decoder": 1.0}
    lines.append({"kind": "event", "step": 3, "event": "explosion", "message": "norm 9 > 5×1"})
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    prof = root / "prof"
    assert main(["profile", "--config", "test", "--data", str(corpus), "--out", str(prof)]) == 0
    tasks = root / "tasks"
    argv = ["tasks", "--tasks", "add,torder", "--lengths", "10", "--seeds", "2", "--steps", "3"]
    assert main([*argv, "--eval-size", "20", "--out", str(tasks), "--no-progress"]) == 0
    return {"train": run, "profile": prof, "tasks": tasks, "root": root}


def test_profile_command(outputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    prof = outputs["profile"]
    assert (prof / "profile.png").read_bytes().startswith(PNG)
    doc = json.loads((prof / "profile.json").read_text())
    p = TemporalProfile.from_dict(doc["profile"])
    assert p.verdict in {"exploding", "vanishing", "stable"}
    assert len(p.grad_norms) == 3  # the test config unrolls T = 2 steps: h_2, h_1, h_0
    # a trained run directory works too and prints its verdict
    assert main(["profile", str(outputs["train"]), "--out", str(outputs["root"] / "p2")]) == 0
    assert "λ₁" in capsys.readouterr().out


def test_cliff_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.png"
    assert main(["cliff", "--steps", "100", "--grid", "30", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG)
    text = capsys.readouterr().out
    longest = [float(m) for m in re.findall(r"longest step ([0-9.e+-]+)", text)]
    assert longest[1] <= 0.5 * 1.0 + 1e-9 < longest[0]  # clipped ≤ lr·c < unclipped


def test_tasks_folder(outputs: dict[str, Path]) -> None:
    doc = json.loads((outputs["tasks"] / "tasks.json").read_text())
    assert doc["kind"] == "tasks" and len(doc["results"]) == 2 * 2 * 2  # tasks×methods×seeds
    assert {r["config"]["method"] for r in doc["results"]} == {"none", "norm:max_norm=1"}


def test_report_overlays_every_kind(outputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    dirs = [str(outputs[k]) for k in ("train", "profile", "tasks")]
    assert main(["report", *dirs, str(outputs["train"]), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    srcs = re.findall(r'<img src="([^"]+)"', page)
    # overview + train (loss, norm, clip rate, heat-map, perplexity) ×2 + profile + tasks
    assert len(srcs) == 1 + 5 * 2 + 1 + 1
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "explosion" in page
    assert "vanishing guaranteed" in page or "exploding possible" in page
    assert not list(tmp_path.glob(".*tmp"))
    # two profiles are overlaid in one more figure
    two = tmp_path / "two.html"
    assert main(["report", str(outputs["profile"]), str(outputs["profile"]), "-o", str(two)]) == 0
    assert "Temporal profiles overlaid." in two.read_text(encoding="utf-8")
    view = read_view(outputs["train"])
    assert view.kind == "train" and set(view.layers) == {"rnn", "decoder"}
    assert view.events == [(3, "explosion", "norm 9 > 5×1")]
    assert len(view.norm) == len(view.steps) == len(view.layers["rnn"]) > 0
    assert view.epochs and "valid_ppl" in view.epochs[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["tasks", "--tasks", "nope"],
        ["tasks", "--lengths", "0"],
        ["tasks", "--lengths", "-5", "--tasks", "perm"],
        ["tasks", "--method", "bogus"],
        ["cliff", "--w0", "nan"],
        ["demo", "--out", "FILE"],
        ["profile", "--config", "test", "--out", "FILE"],
        ["tasks", "--steps", "1", "--out", "no/such/parent/x"],
    ],
)
def test_bad_input_exits_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "FILE").write_text("a file, not a folder")
    argv = [str(tmp_path / a) if a in ("FILE", "no/such/parent/x") else a for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gradclip {argv[0]}: error:") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_report_bad_dirs_write_nothing(
    outputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    out = tmp_path / "r.html"
    for bad, words in ((empty, "empty"), (tmp_path / "missing", "not found"), (junk, "nothing")):
        assert main(["report", str(outputs["profile"]), str(bad), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1
        assert not out.exists()
    assert main(["report", str(outputs["profile"]), "-o", str(tmp_path / "no" / "r.html")]) == 2


def test_report_reads_sweep_suggest_and_figure_folders(tmp_path: Path) -> None:
    from gradclip.diagnostics import plots
    from gradclip.diagnostics.report import write_report

    fig, ax = plots.figure(2, 2)
    ax.plot([0, 1], [1, 0])
    sweep, sugg, figs = tmp_path / "sweep", tmp_path / "suggest", tmp_path / "figs"
    for d, png in ((sweep, "sweep.png"), (sugg, "suggest.png"), (figs, "any.png")):
        d.mkdir()
        plots.save(fig, d / png)
    rows = [{"method": "norm", "threshold": 1.0, "valid_ppl": None, "diverged": False}]
    (sweep / "sweep.json").write_text(json.dumps({"rows": rows}))
    views = {p.name: read_view(p) for p in (sweep, sugg, figs)}
    assert [v.kind for v in views.values()] == ["sweep", "suggest", "figures"]
    assert views["sweep"].tables[0][1] == ["method", "threshold", "valid_ppl", "diverged"]
    assert views["sweep"].tables[0][2] == [["norm", "1", "—", "False"]]
    page = write_report([sweep, sugg, figs], tmp_path / "r.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 3
    (figs / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="not a PNG"):
        read_view(figs)

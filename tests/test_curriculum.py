"""Curricula on Pascanu's tasks: one model carried through the stages (checked against a
loop written here with torch's own clip), the stage rules, the tables against hand counts,
the files, ``gradclip tasks --curriculum`` end to end and its bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gradclip.cli import main
from gradclip.diagnostics.report import read_view
from gradclip.diagnostics.tasks import TASKS, TaskConfig, TaskResult, generate, train_task
from gradclip.diagnostics.tasks.criteria import screened_error, task_loss
from gradclip.diagnostics.tasks.curriculum import (
    CurriculumConfig,
    CurriculumResult,
    curriculum_lengths,
    run_curriculum,
)
from gradclip.diagnostics.tasks.curriculum_summary import climb_table, curriculum_table
from gradclip.diagnostics.tasks.grid import read_curricula, write_results
from gradclip.diagnostics.tasks.train import TaskRNN

pytestmark = pytest.mark.usefixtures("one_thread")

PNG = b"\x89PNG\r\n\x1a\n"


def by_hand(cfg: CurriculumConfig) -> list[tuple[int, bool, int, list[float]]]:
    """The curriculum restated with torch only: ``clip_grad_norm_`` and ``p -= lr·g``, the
    same model kept across stages, the lr changed after the first; per stage its length,
    success, updates and every loss."""
    torch.manual_seed(cfg.seed)
    model = TaskRNN(TASKS[cfg.task], cfg.hidden, cfg.init)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    max_norm = float(cfg.method.split("=")[1])
    out, total = [], 0
    for index, length in enumerate(cfg.lengths):
        lr = cfg.lr if index == 0 or cfg.lr_after is None else cfg.lr_after
        losses, solved, step = [], False, 0
        for step in range(1, cfg.stage_steps + 1):
            batch = generate(cfg.task, length, cfg.batch, gen)
            loss = task_loss(model.spec, model(batch.inputs), batch.targets)
            model.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad
            losses.append(float(loss.detach()))
            if step % cfg.check_every == 0 or step == cfg.stage_steps:
                model.eval()
                error = screened_error(model, cfg.task, length, cfg.eval_size, total + step)
                model.train()
                if error is not None and error < 0.01:
                    solved = True
                    break
        total += step
        out.append((length, solved, step, losses))
        if not solved:
            break
    return out


def test_stages_carry_one_model_as_a_loop_with_torchs_clip_does() -> None:
    cfg = CurriculumConfig(
        "torder", (10, 12, 14), seed=1, lr=0.1, lr_after=0.05, stage_steps=1500,
        eval_size=1000, init="smart_tanh",
    )  # fmt: skip
    run = run_curriculum(cfg)
    ref = by_hand(cfg)
    assert [(s.config.length, s.success, s.steps_run) for s in run.stages] == [
        (n, ok, k) for n, ok, k, _ in ref
    ]
    assert run.solved_lengths == [10, 12, 14] and run.longest_solved == 14
    for stage, (_, _, _, losses) in zip(run.stages, ref, strict=True):
        kept = [losses[k - 1] for k in stage.curve_steps]  # curves keep a subsample
        assert stage.losses == pytest.approx(kept, rel=1e-4)
    assert [run.updates_to_solve(n) for n in (10, 12, 14)] == [
        sum(k for _, _, k, _ in ref[: i + 1]) for i in range(3)
    ]
    assert run.updates == sum(k for _, _, k, _ in ref)
    assert [s.config.lr for s in run.stages] == [0.1, 0.05, 0.05]


def test_a_one_stage_curriculum_is_a_run_from_scratch() -> None:
    cfg = CurriculumConfig("add", (12,), seed=3, method="norm:max_norm=0.5", alpha=2.0,
                           stage_steps=30, eval_size=200, check_every=10)  # fmt: skip
    (stage,) = run_curriculum(cfg).stages
    alone = train_task(cfg.stage(0), max_points=25)
    assert stage.losses == alone.losses and stage.norms == alone.norms
    assert (stage.error, stage.steps_run, stage.omega_last) == (
        alone.error,
        alone.steps_run,
        alone.omega_last,
    )


def test_an_unsolved_stage_ends_the_run_and_later_stages_change_the_clip() -> None:
    cfg = CurriculumConfig("torder", (10, 12), seed=0, method_after="none", stage_steps=2,
                           eval_size=300)  # fmt: skip
    run = run_curriculum(cfg)
    (stage,) = run.stages
    assert not stage.success and stage.steps_run == 2 and run.longest_solved is None
    assert run.updates_to_solve(10) is None and run.updates_to_solve(12) is None
    assert cfg.stage(0).method == "norm:max_norm=1" and cfg.stage(1).method == "none"
    assert cfg.method_label == "norm:max_norm=1, then none"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"lengths": ()}, "at least one length"),
        ({"lengths": (20, 20)}, "must increase"),
        ({"lengths": (30, 25)}, "must increase"),
        ({"lengths": (5, 10)}, "needs L ≥"),
        ({"task": "nope"}, "unknown task"),
        ({"alpha": math.nan}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"stage_steps": 0}, "stage_steps"),
    ],
)
def test_bad_configs_are_refused(kwargs: dict[str, object], words: str) -> None:
    args: dict[str, object] = {"task": "torder", "lengths": (20, 25), "seed": 0} | kwargs
    with pytest.raises(ValueError, match=words):
        CurriculumConfig(**args)  # type: ignore[arg-type]


def test_curriculum_lengths() -> None:
    assert curriculum_lengths(50, 200, 5) == tuple(range(50, 201, 5))
    assert len(curriculum_lengths(50, 200, 5)) == 31
    assert curriculum_lengths(50, 52, 5) == (50,)
    with pytest.raises(ValueError):
        curriculum_lengths(60, 50, 5)


def fake(seed: int, method: str, outcomes: list[tuple[int, bool, int]]) -> CurriculumResult:
    """A curriculum result with given (length, solved, updates) stages."""
    cfg = CurriculumConfig("torder", (50, 55, 60, 65), seed=seed, method=method)
    stages = [
        TaskResult(
            config=TaskConfig("torder", n, seed, method=method),
            error=0.0 if ok else 0.5,
            success=ok,
            diverged=False,
            steps_run=k,
            final_loss=0.1,
            norm_mean=1.0,
            norm_max=float(10 * (seed + 1)),
            clip_rate=0.5,
            wall_s=1.0,
        )
        for n, ok, k in outcomes
    ]
    return CurriculumResult(cfg, stages)


def test_tables_count_every_run_of_an_arm() -> None:
    runs = [
        fake(0, "norm", [(50, True, 100), (55, True, 300), (60, True, 200), (65, True, 100)]),
        fake(1, "norm", [(50, True, 500), (55, False, 800)]),
        fake(2, "none", [(50, False, 900)]),
    ]
    rows = curriculum_table(runs).splitlines()[2:]
    assert rows == [
        "| temporal order | norm | 50 | 2/2 | 300 |",  # (100 + 500) / 2
        "| temporal order | norm | 55–65 | 1/2 | 400 → 700 |",  # seed 0 only
        "| temporal order | none | 50–65 | 0/1 | — |",
    ]
    climb = climb_table(runs).splitlines()[2:]
    assert climb[0].startswith("| temporal order | norm | 0: 65, 1: 50 | 55 (50 %) | 700–1,300 |")
    assert climb[1].startswith("| temporal order | none | 2: — | 50 (50 %) | 900 | 50 % | 30 |")


def test_files_keep_the_curricula(tmp_path: Path) -> None:
    cfg = CurriculumConfig("torder", (10, 12), seed=0, stage_steps=3, eval_size=100)
    run = run_curriculum(cfg)
    write_results(tmp_path, [], {"curriculum": True}, [run])
    (back,) = read_curricula(tmp_path)
    assert back.config == cfg and back.updates == run.updates
    assert [s.to_dict() for s in back.stages] == [s.to_dict() for s in run.stages]
    assert (tmp_path / "success.png").read_bytes().startswith(PNG)
    assert read_curricula(write_results(tmp_path / "plain", [], {})) == []


def test_cli_curriculum_end_to_end_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c"
    argv = ["tasks", "--curriculum", "10:12:2", "--method", "none", "--method", "norm:max_norm=1"]
    argv += ["--alpha", "0,2", "--seeds", "2", "--steps", "4", "--eval-size", "50"]
    assert main([*argv, "--lr-after", "0.005", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| lengths | solved |" in printed and "longest solved, by seed" in printed
    doc = json.loads((out / "tasks.json").read_text())
    assert doc["results"] == [] and len(doc["curricula"]) == 2 * 2 * 2  # methods × α × seeds
    assert doc["settings"]["lr_after"] == 0.005 and doc["settings"]["curriculum"] == "10:12:2"
    labels = {c["config"]["method"] + str(c["config"]["alpha"]) for c in doc["curricula"]}
    assert labels == {"none0.0", "none2.0", "norm:max_norm=10.0", "norm:max_norm=12.0"}
    assert (out / "success.png").read_bytes().startswith(PNG)
    view = read_view(out)
    assert view.kind == "tasks" and len(view.curricula) == 8
    assert view.tables[0][0] == "Curriculum runs"
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Curriculum: runs that solved each length" in page
    assert "Curricula of every folder overlaid" not in page
    again = tmp_path / "c2"
    argv = ["tasks", "--curriculum", "10:12:2", "--seeds", "1", "--steps", "2"]
    assert main([*argv, "--eval-size", "50", "--out", str(again), "--no-progress"]) == 0
    assert main(["report", str(out), str(again), "-o", str(tmp_path / "r2.html")]) == 0
    page = (tmp_path / "r2.html").read_text()
    assert "Curricula of every folder overlaid" in page
    assert page.count('alt="Curriculum: runs that solved each length') == 2  # one per folder


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--curriculum", "5:10:1"], "--curriculum: torder needs L ≥ 10"),
        (["--curriculum", "50:40:5"], "--curriculum must be START:STOP:STEP"),
        (["--curriculum", "50:60"], "--curriculum must be"),
        (["--curriculum", "50:60:0"], "--curriculum must be"),
        (["--curriculum", "50:60:5", "--lengths", "20"], "--lengths and --curriculum"),
        (["--lr-after", "0.1"], "--lr-after and --method-after need --curriculum"),
        (["--method-after", "none"], "--lr-after and --method-after need --curriculum"),
        (["--curriculum", "50:60:5", "--method-after", "bogus"], "--method-after 'bogus'"),
        (["--curriculum", "50:60:5", "--lr-after", "nan"], "--lr-after must be"),
        (["--alpha", "1,nan"], "--alpha must be"),
        (["--alpha", "-1"], "--alpha must be"),
    ],
)
def test_bad_curriculum_input_exits_2_and_writes_nothing(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tasks", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gradclip tasks: error: {named}") and "\n" not in err
    assert not (tmp_path / "o").exists()

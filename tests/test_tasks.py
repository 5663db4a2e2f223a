"""Pascanu's task generators against their definitions, the criteria, and tiny runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gradclip.diagnostics.tasks import (
    TASKS,
    TaskConfig,
    count_errors,
    generate,
    task_loss,
    train_task,
)
from gradclip.diagnostics.tasks.grid import (
    grid_configs,
    read_results,
    run_grid,
    success_table,
    write_results,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def symbols_of(inputs: torch.Tensor) -> torch.Tensor:
    assert bool(((inputs == 0) | (inputs == 1)).all())
    assert bool((inputs.sum(-1) == 1).all()), "one-hot at every step"
    return inputs.argmax(-1)


def within(sample: torch.Tensor, mean: float, var: float, k: float = 5.0) -> None:
    """Sample mean within k standard errors of the distribution's mean."""
    n = sample.numel()
    assert abs(float(sample.double().mean()) - mean) < k * math.sqrt(var / n)


@pytest.mark.parametrize(
    ("task", "fractions"), [("torder", (0.1, 0.5)), ("torder3", (0.1, 0.3, 0.6))]
)
@pytest.mark.parametrize("length", [10, 57, 120])
def test_temporal_order(task: str, fractions: tuple[float, ...], length: int) -> None:
    b = generate(task, length, 400, gen(length))
    assert b.inputs.shape == (length, 400, 6) and b.targets.shape == (400,)
    sym = symbols_of(b.inputs)
    tenth = int(0.1 * length)
    for col in range(400):
        pos = (sym[:, col] < 2).nonzero().flatten().tolist()
        assert len(pos) == len(fractions)
        cls = 0
        for j, (p, f) in enumerate(zip(pos, fractions, strict=True)):
            assert int(f * length) <= p <= int(f * length) + tenth - 1
            cls += int(sym[p, col]) << j  # A (0) → bit 0, B (1) → bit 1
        assert int(b.targets[col]) == cls
    # distractors uniform over channels 2–5: each count within 5 binomial sd of n/4
    d = sym[sym >= 2]
    for c in range(2, 6):
        n, k = d.numel(), int((d == c).sum())
        assert abs(k - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75)
    # classes uniform over 2^bits
    within(b.targets, (2 ** len(fractions) - 1) / 2, (4 ** len(fractions) - 1) / 12)


@pytest.mark.parametrize("task", ["add", "mul"])
def test_addition_multiplication(task: str) -> None:
    length = 60
    lengths = set()
    for seed in range(20):
        b = generate(task, length, 200, gen(seed))
        l_act = b.inputs.shape[0]
        lengths.add(l_act)
        assert length <= l_act <= length + int(0.1 * length) - 1
        marker, values = b.inputs[..., 0], b.inputs[..., 1]
        assert bool(((values >= 0) & (values < 1)).all())
        assert bool((marker.sum(0) == 2).all()) and bool(((marker == 0) | (marker == 1)).all())
        first = int(0.1 * l_act)
        for col in range(200):
            p0, p1 = marker[:, col].nonzero().flatten().tolist()
            assert 0 <= p0 <= first - 1
            assert first <= p1 <= first + int(0.4 * l_act) - 1
            a, c = float(values[p0, col]), float(values[p1, col])
            want = a * c if task == "mul" else (a + c) / 2
            assert float(b.targets[col, 0]) == pytest.approx(want, rel=1e-6)
    assert len(lengths) > 1  # the actual length is drawn per minibatch
    within(values, 0.5, 1 / 12)


def test_permutation() -> None:
    b = generate("perm", 30, 500, gen(3))
    sym = symbols_of(b.inputs)
    assert b.inputs.shape == (30, 500, 100)
    assert torch.equal(sym[0], b.targets) and bool((b.targets < 2).all())
    rest = sym[1:]
    assert int(rest.min()) >= 2 and int(rest.max()) <= 99
    assert rest.unique().numel() == 98
    within(rest, (2 + 99) / 2, (98**2 - 1) / 12)
    within(b.targets, 0.5, 0.25)


@pytest.mark.parametrize("length", [1, 40])
def test_memorization(length: int) -> None:
    b = generate("mem", length, 300, gen(4))
    total = length + 20
    assert b.inputs.shape == (total, 300, 7) and b.targets.shape == (total, 300)
    sym = symbols_of(b.inputs)
    pattern = sym[:10]
    assert int(pattern.max()) <= 4
    after = sym[10:]
    trigger_at = length + 10
    assert bool((sym[trigger_at] == 6).all())
    mask = torch.ones(total - 10, dtype=torch.bool)
    mask[trigger_at - 10] = False
    assert bool((after[mask] == 5).all())
    assert bool((b.targets[:trigger_at] == 5).all())
    assert torch.equal(b.targets[trigger_at:], pattern)
    within(pattern, 2.0, (25 - 1) / 12)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        generate("nope", 10, 1, gen())
    with pytest.raises(ValueError, match="length"):
        generate("torder", 9, 1, gen())
    with pytest.raises(ValueError, match="length"):
        generate("perm", 0, 1, gen())


def test_criteria_and_losses() -> None:
    lin = TASKS["add"]
    out, tgt = torch.tensor([[0.5], [0.5], [0.3]]), torch.tensor([[0.75], [0.69], [0.3]])
    assert count_errors(lin, out, tgt) == 1  # 0.25² > 0.04; 0.19² is not
    assert float(task_loss(lin, out, tgt)) == pytest.approx((0.25**2 + 0.19**2) / 3)
    soft = TASKS["torder"]
    logits = torch.tensor([[2.0, 0, 0, 0], [0, 0, 3.0, 0]])
    assert count_errors(soft, logits, torch.tensor([0, 1])) == 1
    assert float(task_loss(soft, logits, torch.tensor([0, 1]))) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])))
    )
    mem = TASKS["mem"]
    seq = torch.zeros(3, 2, 6)
    seq[:, :, 5] = 1.0
    seq[2, 1, 5], seq[2, 1, 0] = 0.0, 1.0  # sequence 1 wrong at its last step only
    assert count_errors(mem, seq, torch.full((3, 2), 5)) == 1


def test_clipping_solves_short_temporal_order_where_sgd_blows_up() -> None:
    """At L = 20 and lr 0.5 (the paper's threshold 1), clipped SGD meets the paper's
    criterion on fresh sequences; plain SGD's norms explode and it stays at chance."""
    base = {"task": "torder", "length": 20, "seed": 0, "lr": 0.5, "steps": 1500}
    clipped = train_task(TaskConfig(method="norm:max_norm=1", eval_size=2000, **base))
    assert clipped.success and clipped.error < 0.01 and clipped.clip_rate > 0
    plain = train_task(
        TaskConfig(
            method="none",
            eval_size=1000,
            steps=300,
            **{k: v for k, v in base.items() if k != "steps"},
        )
    )
    assert not plain.success and plain.norm_max > 10 * 1.0


def test_grid_jobs_table_and_roundtrip(tmp_path: Path) -> None:
    cfgs = grid_configs(["add"], [10], [0, 1], ["none"], steps=3, eval_size=50)
    serial = run_grid(train_task, cfgs, jobs=1, progress=False)
    parallel = run_grid(train_task, cfgs, jobs=2, progress=False)
    assert [r.config for r in parallel] == cfgs
    assert [r.error for r in parallel] == [r.error for r in serial]  # same seeds, same runs
    table = success_table(serial)
    assert "| addition | none | 10 | 0/2 |" in table
    mean_loss = sum(r.final_loss for r in serial) / 2
    assert f"| {mean_loss:.3g} | 3 |" in table
    write_results(tmp_path, serial, {"steps": 3})
    back, settings = read_results(tmp_path)
    assert settings == {"steps": 3}
    assert [r.to_dict() for r in back] == [r.to_dict() for r in serial]
    assert (tmp_path / "success.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains_end_to_end(task: str) -> None:
    r = train_task(TaskConfig(task, 10, 0, "norm:max_norm=1", steps=3, eval_size=20))
    assert r.steps_run == 3 and 0.0 <= r.error <= 1.0
    assert math.isfinite(r.final_loss) and len(r.norms) == 3

"""MSGD-CR: the norm-preserving regulariser Ω against float64 references (autograd on an
explicit loop, per-step Jacobians, gradcheck), its place in training, and random lengths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import gradclip.diagnostics.tasks.criteria as criteria_mod
import gradclip.diagnostics.tasks.train as train_mod
from gradclip import ClippedOptimizer, make_clipper_from_spec
from gradclip.cli import main
from gradclip.diagnostics.tasks import (
    TASKS,
    TaskConfig,
    TaskRNN,
    add_penalty_gradient,
    evaluate,
    generate,
    hidden_state_gradients,
    norm_preservation_penalty,
    sample_length,
    task_loss,
    train_model,
    train_task,
)
from gradclip.diagnostics.tasks.grid import grid_configs, success_table

pytestmark = pytest.mark.usefixtures("one_thread")

T, B, N_IN, H = 7, 3, 2, 5


def readout_loss(states: Tensor) -> Tensor:
    """A loss that reads steps 1, 4 and 6 (0-based) nonlinearly."""
    w = torch.linspace(-1.0, 1.0, H, dtype=torch.float64)
    return sum((torch.sin(states[k] @ w) * (k + 1)).sum() for k in (1, 4, 6))  # type: ignore[return-value]


def rnn_and_loop() -> tuple[nn.RNN, Tensor, list[Tensor], Tensor]:
    """An ``nn.RNN`` in float64 (weights large enough to matter), its outputs, and the
    same recurrence as an explicit Python loop whose ``h_k`` keep their gradients."""
    torch.manual_seed(0)
    rnn = nn.RNN(N_IN, H, nonlinearity="tanh").double()
    with torch.no_grad():
        for p in rnn.parameters():
            p.normal_(0.0, 0.7)
    x = torch.randn(T, B, N_IN, dtype=torch.float64)
    states, _ = rnn(x)
    h = torch.zeros(B, H, dtype=torch.float64)
    hs = []
    for k in range(T):
        h = torch.tanh(
            x[k] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        )
        h.retain_grad()
        hs.append(h)
    readout_loss(torch.stack(hs)).backward()
    return rnn, x, hs, states.detach()


def direct_grad(states: Tensor) -> Tensor:
    leaf = states.detach().requires_grad_()
    (g,) = torch.autograd.grad(readout_loss(leaf), leaf)
    return g


def test_hidden_state_gradients_equal_autograd_totals() -> None:
    rnn, _, hs, states = rnn_and_loop()
    assert torch.allclose(states, torch.stack([h.detach() for h in hs]), atol=1e-12)
    total = hidden_state_gradients(states, direct_grad(states), rnn.weight_hh_l0)
    want = torch.stack([h.grad for h in hs if h.grad is not None])
    assert want.shape == total.shape and not total.requires_grad
    assert torch.allclose(total, want, rtol=1e-10, atol=1e-12)
    # the last step's total is its direct part; an earlier one is not
    assert not torch.allclose(total[0], torch.zeros_like(total[0]))


def jacobian_omega(rnn: nn.RNN, x: Tensor, states: Tensor, total: Tensor) -> float:
    """Ω from explicit per-step Jacobians ∂h_k/∂h_{k−1} (h_0 = 0), skipping ‖d_k‖² < 1e-20."""
    terms = []
    for k in range(T):
        for b in range(B):
            d = total[k, b]
            y = float(d @ d)
            if y < 1e-20:
                continue
            prev = states[k - 1, b] if k > 0 else torch.zeros(H, dtype=torch.float64)

            def step(h: Tensor, k: int = k, b: int = b) -> Tensor:
                pre = x[k, b] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T
                return torch.tanh(pre + rnn.bias_hh_l0)

            jac = torch.autograd.functional.jacobian(step, prev)  # [H_out, H_in]
            back = d @ jac
            terms.append((float(back @ back) / y - 1.0) ** 2)
    return sum(terms) / len(terms) if terms else 0.0


def test_omega_equals_per_step_jacobian_recomputation() -> None:
    rnn, x, hs, states = rnn_and_loop()
    total = torch.stack([h.grad for h in hs if h.grad is not None])
    total[2, 1] = 0.0  # an excluded (k, b): zero total gradient
    total[5, 0] = 1e-11  # ‖d‖² = H·1e-22 < 1e-20: excluded too
    with torch.no_grad():
        omega = float(norm_preservation_penalty(states, total, rnn.weight_hh_l0))
        want = jacobian_omega(rnn, x, states, total)
        assert omega == pytest.approx(want, rel=1e-10)
        assert want > 0
        # a different bound keeps the tiny term (and changes Ω)
        loose = float(norm_preservation_penalty(states, total, rnn.weight_hh_l0, bound=0.0))
        assert loose != pytest.approx(omega, rel=1e-6)
        assert float(norm_preservation_penalty(states, 0 * total, rnn.weight_hh_l0)) == 0.0


def test_omega_gradcheck_in_w_hh() -> None:
    rnn, _, hs, states = rnn_and_loop()
    total = torch.stack([h.grad for h in hs if h.grad is not None])
    total[3, 2] = 0.0
    w = rnn.weight_hh_l0.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda w: norm_preservation_penalty(states, total, w), (w,))


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[T, B, H\]"):
        hidden_state_gradients(torch.zeros(3, 2, 4), torch.zeros(3, 4), torch.eye(4))
    with pytest.raises(ValueError, match="w_hh"):
        norm_preservation_penalty(torch.zeros(3, 2, 4), torch.zeros(3, 2, 4), torch.eye(3))
    with pytest.raises(ValueError, match="tanh"):
        add_penalty_gradient(
            nn.RNN(2, 3, num_layers=2), torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), 1
        )
    with pytest.raises(ValueError, match="alpha"):
        TaskConfig("torder", 20, 0, alpha=float("nan"))
    with pytest.raises(ValueError, match="max_length"):
        TaskConfig("torder", 20, 0, max_length=20)


def test_penalty_gradient_changes_w_hh_only_by_alpha_domega() -> None:
    torch.manual_seed(1)
    model = TaskRNN(TASKS["torder"], hidden=8)
    batch = generate("torder", 20, 4, torch.Generator().manual_seed(2))
    states, out = model.forward_states(batch.inputs)
    states.retain_grad()
    task_loss(TASKS["torder"], out, batch.targets).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert states.grad is not None
    direct = states.grad.clone()
    omega = add_penalty_gradient(model.rnn, states, direct, alpha=3.0)
    # independent: Ω's gradient by autograd through an explicit-Jacobian float64 Ω
    w = model.rnn.weight_hh_l0.detach().double().requires_grad_()
    s64, d64 = states.detach().double(), direct.double()
    total = hidden_state_gradients(s64, d64, w.detach())
    ref = norm_preservation_penalty(s64, total, w)
    (g_ref,) = torch.autograd.grad(ref, w)
    assert float(omega) == pytest.approx(float(ref.detach()), rel=1e-4)
    for name, p in model.named_parameters():
        assert p.grad is not None
        if name == "rnn.weight_hh_l0":
            assert torch.allclose((p.grad - before[name]).double(), 3.0 * g_ref, atol=1e-6)
            assert not torch.equal(p.grad, before[name])
        else:
            assert torch.equal(p.grad, before[name])


def old_loop(cfg: TaskConfig) -> tuple[list[float], list[float]]:
    """Training as it was before the regulariser and random lengths (the reference)."""
    spec = TASKS[cfg.task]
    torch.manual_seed(cfg.seed)
    model = TaskRNN(spec, cfg.hidden, cfg.init)
    opt = ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=cfg.lr), make_clipper_from_spec(cfg.method)
    )
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses, norms = [], []
    for _ in range(cfg.steps):
        batch = generate(cfg.task, cfg.length, cfg.batch, gen)
        loss = task_loss(spec, model(batch.inputs), batch.targets)
        opt.zero_grad()
        loss.backward()
        norms.append(float(opt.step().norm))
        losses.append(float(loss.detach()))
    return losses, norms


def test_alpha_zero_is_bit_identical_to_the_plain_loop() -> None:
    cfg = TaskConfig("torder", 12, 3, "norm:max_norm=1", steps=6, lr=0.5, eval_size=10)
    r = train_task(cfg, max_points=100)
    losses, norms = old_loop(cfg)
    assert r.losses == losses and r.norms == norms  # exact, not approx
    assert r.omega_mean != r.omega_mean  # NaN: no regulariser ran


def test_one_msgd_cr_step_adds_alpha_domega_before_the_clip() -> None:
    alpha, lr = 2.0, 0.1
    cfg = TaskConfig("add", 10, 4, "norm:max_norm=0.5", steps=1, lr=lr, alpha=alpha, eval_size=10)
    model, r = train_model(cfg)
    # reference: the same first minibatch, gradients + α∂Ω/∂W_hh, clipped jointly, one SGD step
    torch.manual_seed(cfg.seed)
    ref = TaskRNN(TASKS["add"])
    batch = generate("add", 10, cfg.batch, torch.Generator().manual_seed(cfg.seed + 1))
    states, out = ref.forward_states(batch.inputs)
    loss = task_loss(TASKS["add"], out, batch.targets)
    params = list(ref.parameters())
    grads = list(torch.autograd.grad(loss, [states, *params]))
    w = ref.rnn.weight_hh_l0
    total = hidden_state_gradients(states, grads[0], w)
    wd = w.detach().requires_grad_()
    omega = norm_preservation_penalty(states, total, wd)
    (g_omega,) = torch.autograd.grad(omega, wd)
    names = [n for n, _ in ref.named_parameters()]
    grads = grads[1:]
    grads[names.index("rnn.weight_hh_l0")] += alpha * g_omega
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert r.norms[0] == pytest.approx(float(norm), rel=1e-5)
    assert float(norm) > 0.5  # the clip acts
    scale = 0.5 / float(norm)
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        want = dict(ref.named_parameters())[name].detach() - lr * scale * g
        assert torch.allclose(p.detach(), want, atol=1e-6), name
    assert r.omega_last == pytest.approx(float(omega.detach()), rel=1e-5) == r.omega_mean


def test_sample_length_range_variety_and_seed() -> None:
    def draws(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return [sample_length(50, 60, g) for _ in range(300)]

    a = draws(0)
    assert min(a) == 50 and max(a) == 59  # [lo, hi): every value, never hi
    assert a == draws(0) and a != draws(1)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert sample_length(50, None, g) == 50 and torch.equal(g.get_state(), state)


def recorded_lengths(monkeypatch: pytest.MonkeyPatch, module: object) -> list[int]:
    seen: list[int] = []
    real = generate

    def spy(task: str, length: int, batch: int, gen: torch.Generator):  # type: ignore[no-untyped-def]
        seen.append(length)
        return real(task, length, batch, gen)

    monkeypatch.setattr(module, "generate", spy)
    return seen


def test_training_and_validation_draw_random_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    train_seen = recorded_lengths(monkeypatch, train_mod)
    eval_seen = recorded_lengths(monkeypatch, criteria_mod)
    cfg = TaskConfig("torder", 10, 0, steps=40, eval_size=5000, check_every=10**6, max_length=15)
    train_task(cfg)
    assert len(train_seen) == 40 and set(train_seen) <= set(range(10, 15))
    assert len(set(train_seen)) >= 3
    # one per chunk: the last step's check (1,000) then the final 5,000 in chunks of 1,000
    assert len(eval_seen) == 6 and set(eval_seen) <= set(range(10, 15))
    first = list(train_seen)
    train_seen.clear()
    train_task(cfg)
    assert train_seen == first  # reproducible per seed
    train_seen.clear()
    train_task(TaskConfig("torder", 10, 1, steps=40, eval_size=10, max_length=15))
    assert train_seen != first
    eval_seen.clear()
    evaluate(TaskRNN(TASKS["torder"]), "torder", 12, n=3000)
    assert eval_seen == [12, 12, 12]


def test_grid_labels_a_range_cell() -> None:
    cfgs = grid_configs(["add"], [10, (10, 14)], [0], ["none"], steps=2, eval_size=10, alpha=1.0)
    assert [(c.length, c.max_length) for c in cfgs] == [(10, None), (10, 14)]
    table = success_table([train_task(c) for c in cfgs])
    assert "| addition | none + Ω(α=1) | 10 | 0/1 |" in table
    assert "| addition | none + Ω(α=1) | 10–14 | 0/1 |" in table


def test_cli_random_lengths_and_alpha_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "t"
    argv = ["tasks", "--lengths", "10-14", "--seeds", "1", "--steps", "3", "--alpha", "2"]
    assert main([*argv, "--eval-size", "20", "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "tasks.json").read_text())
    assert doc["settings"]["alpha"] == [2.0] and doc["settings"]["lengths"] == ["10-14"]
    configs = [r["config"] for r in doc["results"]]
    assert {(c["length"], c["max_length"], c["alpha"]) for c in configs} == {(10, 14, 2.0)}
    assert all(r["omega_last"] is not None and r["omega_last"] >= 0 for r in doc["results"])
    assert (out / "success.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "extra",
    [
        ["--lengths", "50-20"],
        ["--lengths", "0-10"],
        ["--lengths", "a-b"],
        ["--lengths", "20,10-10"],
        ["--alpha", "-1"],
        ["--alpha", "nan"],
        ["--alpha", "inf"],
    ],
)
def test_cli_bad_ranges_and_alpha_exit_2(
    extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    assert main(["tasks", *extra, "--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradclip tasks: error:") and "\n" not in err
    assert not out.exists()


def test_cli_several_alphas_make_one_grid(tmp_path: Path) -> None:
    out = tmp_path / "t"
    argv = ["tasks", "--tasks", "add", "--lengths", "10", "--seeds", "2", "--steps", "2"]
    argv += ["--alpha", "0,2,0", "--method", "none"]
    assert main([*argv, "--eval-size", "20", "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "tasks.json").read_text())
    assert doc["settings"]["alpha"] == [0.0, 2.0]  # repeats dropped
    cells = sorted((r["config"]["alpha"], r["config"]["seed"]) for r in doc["results"])
    assert cells == [(0.0, 0), (0.0, 1), (2.0, 0), (2.0, 1)]
    omegas = {r["config"]["alpha"]: r["omega_last"] for r in doc["results"]}
    assert omegas[0.0] is None and omegas[2.0] >= 0  # Ω is computed only with α > 0

"""The 50-unit tanh RNN of Pascanu et al. (2013) §4.1, its SGD training and the paper's criteria.

* model: ``h_t = tanh(W_in u_t + W_rec h_{t−1} + b)``, a linear readout; the paper's
  "basic tanh" init (every weight N(0, 0.1), biases 0) or "smart tanh" (N(0, 0.01),
  W_rec sparse with 15 non-zeros per row, rescaled to spectral radius 0.95);
* training: minibatches of 20, plain SGD ``θ ← θ − lr·g`` (lr 0.01 in the paper), with
  a gradclip clipper in front (``norm:max_norm=1`` is Algorithm 1 with the paper's
  threshold 1);
* MSGD-CR: with ``alpha > 0`` the norm-preserving regulariser's ``α·∂Ω/∂W_rec`` joins
  ``W_rec``'s gradient before the clip (eq. 9–10, :mod:`.regularizer`);
* lengths: fixed, or (``max_length``) one uniform over ``[length, max_length)`` per
  minibatch and per validation chunk, as in the official code;
* costs, criteria and validation: :mod:`.criteria` (success: fewer than 1 % wrong out
  of 10,000 fresh sequences).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gradclip import ClippedOptimizer, ClipStats, make_clipper_from_spec
from gradclip.diagnostics.tasks.criteria import (
    SUCCESS_ERROR,
    evaluate,
    sample_length,
    screened_error,
    task_loss,
)
from gradclip.diagnostics.tasks.generators import TASKS, Batch, TaskSpec, generate
from gradclip.diagnostics.tasks.regularizer import add_penalty_gradient
from gradclip.diagnostics.tasks.results import TaskConfig, TaskResult

__all__ = [
    "TaskConfig",
    "TaskRNN",
    "TaskResult",
    "new_run",
    "sgd_step",
    "train_model",
    "train_steps",
    "train_task",
]


class TaskRNN(nn.Module):
    """A one-layer tanh RNN (``rnn``) with a linear readout (``decoder``).

    ``h_t = tanh(W_ih u_t + W_hh h_{t−1} + b)``, ``y = W_out h + b_out`` (Pascanu et al.
    2013, §4.1). ``forward(x [T, B, n_in])`` returns ``[B, n_out]`` (the last step) or
    ``[T, B, n_out]`` when ``every_step``. The attribute names let
    :func:`gradclip.diagnostics.temporal_profile` read the model.

    Args:
        spec: the task's :class:`~gradclip.diagnostics.tasks.generators.TaskSpec`.
        hidden: hidden units (50 in the paper).
        init: ``basic_tanh`` or ``smart_tanh``.

    Example:
        >>> from gradclip.diagnostics.tasks.generators import TASKS
        >>> TaskRNN(TASKS["mem"])(torch.zeros(30, 2, 7)).shape
        torch.Size([30, 2, 6])
    """

    def __init__(self, spec: TaskSpec, hidden: int = 50, init: str = "basic_tanh") -> None:
        super().__init__()
        self.spec = spec
        self.every_step = spec.output == "every_softmax"
        self.rnn = nn.RNN(spec.n_in, hidden, nonlinearity="tanh")
        self.decoder = nn.Linear(hidden, spec.n_out)
        self.reset(init)

    def reset(self, init: str) -> None:
        """Re-initialise with ``basic_tanh`` or ``smart_tanh`` (the paper's §4.1 names)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "bias" in name:
                    p.zero_()
                elif init == "basic_tanh":
                    p.normal_(0.0, 0.1)
                elif init == "smart_tanh":
                    p.normal_(0.0, 0.01)
                else:
                    raise ValueError(f"init must be basic_tanh or smart_tanh, got {init!r}")
            if init == "smart_tanh":
                w = self.rnn.get_parameter("weight_hh_l0")
                n = int(w.shape[0])
                keep = torch.zeros_like(w, dtype=torch.bool)
                for row in range(n):
                    keep[row, torch.randperm(n)[: min(15, n)]] = True
                w.mul_(keep)
                radius = torch.linalg.eigvals(w).abs().max()
                w.mul_(0.95 / radius.clamp_min(1e-12))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_states(x)[1]

    def forward_states(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(states [T, B, hidden], output)``: the hidden states ``h_1 … h_T`` as well."""
        states, _ = self.rnn(x)
        return states, self.decoder(states if self.every_step else states[-1])


def train_task(cfg: TaskConfig, max_points: int = 200) -> TaskResult:
    """Train one run (see :func:`train_model`) and return only its result (picklable).

    Args:
        cfg: the run's :class:`TaskConfig`.
        max_points: the most curve points kept.

    Returns:
        A :class:`TaskResult`.

    Example:
        >>> r = train_task(TaskConfig("add", 10, seed=0, steps=2, eval_size=10))
        >>> r.steps_run, r.success
        (2, False)
    """
    return train_model(cfg, max_points)[1]


def train_model(
    cfg: TaskConfig,
    max_points: int = 200,
    *,
    monitor: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> tuple[TaskRNN, TaskResult]:
    """Train :class:`TaskRNN` on ``cfg.task`` from scratch with plain SGD behind
    ``cfg.method``'s clipper (see :func:`new_run` and :func:`train_steps`).

    Args:
        cfg: the run's :class:`TaskConfig`.
        max_points: the most curve points kept.
        monitor: attach a :class:`gradclip.monitor.GradMonitor` and keep its events
            (explosion, vanishing, non-finite) as ``(step, kind)``.
        on_step: called with the step number after every update (a progress bar).

    Returns:
        The trained model and its :class:`TaskResult`.
    """
    model, opt, gen = new_run(cfg)
    watcher = None
    if monitor:
        from gradclip.monitor import GradMonitor

        watcher = GradMonitor(model, warn=False)
        watcher.attach(opt)
    result = train_steps(model, opt, cfg, gen, max_points=max_points, on_step=on_step)
    if watcher is not None:
        watcher.flush()
        result.events = [(int(e["step"]), str(e["event"])) for e in watcher.events]
        watcher.close()
    return model, result


def new_run(cfg: TaskConfig) -> tuple[TaskRNN, ClippedOptimizer, torch.Generator]:
    """The model (seeded by ``cfg.seed``), plain SGD at ``cfg.lr`` behind ``cfg.method``'s
    clipper, and the data's generator (seeded by ``cfg.seed + 1``) of one run.

    Example:
        >>> model, opt, gen = new_run(TaskConfig("add", 10, seed=0, hidden=8))
        >>> model.rnn.hidden_size, opt.param_groups[0]["lr"]
        (8, 0.01)
    """
    torch.manual_seed(cfg.seed)
    model = TaskRNN(TASKS[cfg.task], cfg.hidden, cfg.init)
    opt = ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=cfg.lr), make_clipper_from_spec(cfg.method)
    )
    return model, opt, torch.Generator().manual_seed(cfg.seed + 1)


def train_steps(
    model: TaskRNN,
    opt: ClippedOptimizer,
    cfg: TaskConfig,
    gen: torch.Generator,
    *,
    updates_before: int = 0,
    max_points: int = 200,
    on_step: Callable[[int], None] | None = None,
) -> TaskResult:
    """Train ``model`` for at most ``cfg.steps`` updates at ``cfg.length`` (or random
    lengths up to ``cfg.max_length``) and judge it by the paper's criterion.

    Every ``check_every`` steps 1,000 fresh sequences are checked; below 1 % wrong the
    full ``eval_size`` set decides, and a success stops the run early (the paper also
    stops on its criterion). A non-finite loss, norm or weight stops it as diverged.
    ``cfg.seed``, ``cfg.method`` and ``cfg.lr`` are not read: ``model``, ``opt`` and ``gen``
    carry them, so a model can be trained on in stages (a curriculum).

    Args:
        model: the model, trained in place.
        opt: its :class:`gradclip.ClippedOptimizer` (``cfg.alpha`` adds Ω before the clip).
        cfg: the lengths, budget, minibatch, regulariser and evaluation.
        gen: the data's random generator.
        updates_before: updates the model had before; the fresh check sequences are drawn
            with seed ``updates_before + step``, so every check of a run is new.
        max_points: the most curve points kept.
        on_step: called with the step number after every update (a progress bar).

    Returns:
        The :class:`TaskResult`; ``steps_run`` counts this call's updates only.
    """
    every = max(1, cfg.steps // max_points)
    t0 = time.perf_counter()
    losses: list[float] = []
    norms: list[float] = []
    curve: tuple[list[int], list[float], list[float]] = ([], [], [])
    omegas: list[float] = []
    clipped = 0
    error, success, diverged, step = 1.0, False, False, 0
    for step in range(1, cfg.steps + 1):
        length = sample_length(cfg.length, cfg.max_length, gen)
        batch = generate(cfg.task, length, cfg.batch, gen)
        loss, stats, omega = sgd_step(model, opt, batch, cfg.alpha)
        if omega is not None:
            omegas.append(float(omega))
        lv, nv = float(loss), float(stats.norm)
        losses.append(lv)
        norms.append(nv)
        clipped += bool(stats.clipped)
        if on_step is not None:
            on_step(step)
        if step % every == 0 or step == 1:
            curve[0].append(step)
            curve[1].append(lv)
            curve[2].append(nv)
        if not (math.isfinite(lv) and math.isfinite(nv)) or not _params_finite(model):
            diverged = True
            break
        if step % cfg.check_every == 0 or step == cfg.steps:
            model.eval()
            full = screened_error(
                model,
                cfg.task,
                cfg.length,
                cfg.eval_size,
                updates_before + step,
                max_length=cfg.max_length,
            )
            if full is not None:
                error, success = full, full < SUCCESS_ERROR
            model.train()
            if success:
                break
    if not diverged and not success:
        model.eval()
        error = evaluate(model, cfg.task, cfg.length, cfg.eval_size, max_length=cfg.max_length)
        model.train()
    finite = [n for n in norms if math.isfinite(n)]
    tail = losses[-min(len(losses), 50) :]
    return TaskResult(
        config=cfg,
        error=error,
        success=success,
        diverged=diverged,
        steps_run=step,
        final_loss=sum(tail) / len(tail) if tail else math.nan,
        norm_mean=sum(finite) / len(finite) if finite else math.nan,
        norm_max=max(norms, key=lambda n: n if math.isfinite(n) else math.inf)
        if norms
        else math.nan,
        clip_rate=clipped / max(1, len(norms)),
        wall_s=time.perf_counter() - t0,
        curve_steps=curve[0],
        losses=curve[1],
        norms=curve[2],
        omega_mean=sum(omegas) / len(omegas) if omegas else math.nan,
        omega_last=omegas[-1] if omegas else math.nan,
    )


def sgd_step(
    model: TaskRNN, opt: ClippedOptimizer, batch: Batch, alpha: float = 0.0
) -> tuple[Tensor, ClipStats, Tensor | None]:
    """One update of :func:`train_model`: forward, the task's loss, backward, with
    ``alpha > 0`` the regulariser's gradient added to ``W_rec``'s, then the clipped step.

    Args:
        model: the :class:`TaskRNN`.
        opt: its :class:`gradclip.ClippedOptimizer`.
        batch: one minibatch (:func:`.generate`).
        alpha: the weight of Ω (0: none).

    Returns:
        The loss (detached), the step's :class:`gradclip.ClipStats` and Ω (``None`` without it).

    Example:
        >>> torch.manual_seed(0) and None
        >>> model = TaskRNN(TASKS["add"], 8, "basic_tanh")
        >>> opt = ClippedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
        ...                        make_clipper_from_spec("norm:max_norm=1"))
        >>> batch = generate("add", 10, 4, torch.Generator().manual_seed(1))
        >>> loss, stats, omega = sgd_step(model, opt, batch, alpha=2.0)
        >>> bool(stats.norm > 0), bool(omega >= 0)
        (True, True)
    """
    states, out = model.forward_states(batch.inputs)
    if alpha > 0:
        states.retain_grad()
    loss = task_loss(model.spec, out, batch.targets)
    opt.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    omega = None
    if alpha > 0:
        direct = states.grad if states.grad is not None else torch.zeros_like(states)
        omega = add_penalty_gradient(model.rnn, states, direct, alpha)
    return loss.detach(), opt.step(), omega


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())

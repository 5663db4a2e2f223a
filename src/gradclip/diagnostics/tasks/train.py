"""The 50-unit tanh RNN of Pascanu et al. (2013) §4.1, its SGD training and the paper's criteria.

* model: ``h_t = tanh(W_in u_t + W_rec h_{t−1} + b)``, a linear readout; the paper's
  "basic tanh" init (every weight N(0, 0.1), biases 0) or "smart tanh" (N(0, 0.01),
  W_rec sparse with 15 non-zeros per row, rescaled to spectral radius 0.95);
* training: minibatches of 20, plain SGD ``θ ← θ − lr·g`` (lr 0.01 in the paper), with
  a gradclip clipper in front (``norm:max_norm=1`` is Algorithm 1 with the paper's
  threshold 1);
* cost: cross-entropy at the last step, cross-entropy averaged over every
  time×batch row (memorization), or squared error summed over outputs (batch mean);
* a sequence is wrong when the last-step argmax differs, when the squared error is
  > 0.04 (addition, multiplication), or when any step's argmax differs (memorization);
  a run **succeeds** with fewer than 1 % wrong out of 10,000 fresh sequences, drawn in
  chunks of 1,000 (the paper's criterion).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradclip import ClippedOptimizer, make_clipper_from_spec
from gradclip.diagnostics.tasks.generators import TASKS, TaskSpec, generate

__all__ = [
    "TaskConfig",
    "TaskRNN",
    "TaskResult",
    "count_errors",
    "evaluate",
    "task_loss",
    "train_model",
    "train_task",
]

SUCCESS_ERROR = 0.01  # the paper: < 1 % of 10,000 fresh sequences wrong
LINEAR_TOLERANCE = 0.04  # squared error above this is "misclassified"


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
        out, _ = self.rnn(x)
        return self.decoder(out if self.every_step else out[-1])


def task_loss(spec: TaskSpec, out: Tensor, targets: Tensor) -> Tensor:
    """The training cost (batch mean), as in the official code.

    Cross-entropy at the last step; cross-entropy averaged over every time×batch row
    (memorization); squared error summed over outputs (addition, multiplication).

    Args:
        spec: the task's interface.
        out: the model's output.
        targets: the batch's targets.

    Returns:
        A scalar tensor.

    Example:
        >>> from gradclip.diagnostics.tasks.generators import TASKS
        >>> round(float(task_loss(TASKS["add"], torch.tensor([[0.5]]), torch.tensor([[0.7]]))), 4)
        0.04
    """
    if spec.output == "last_linear":
        return ((out - targets) ** 2).sum(dim=1).mean()
    if spec.output == "every_softmax":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1))
    return F.cross_entropy(out, targets)


def count_errors(spec: TaskSpec, out: Tensor, targets: Tensor) -> int:
    """Wrong sequences in a batch, by the paper's criteria (see the module docstring).

    Example:
        >>> from gradclip.diagnostics.tasks.generators import TASKS
        >>> count_errors(TASKS["add"], torch.tensor([[0.5], [0.5]]), torch.tensor([[0.6], [0.8]]))
        1
    """
    if spec.output == "last_linear":
        wrong = ((out - targets) ** 2).sum(dim=1) > LINEAR_TOLERANCE
    elif spec.output == "every_softmax":
        wrong = (out.argmax(dim=-1) != targets).any(dim=0)
    else:
        wrong = out.argmax(dim=-1) != targets
    return int(wrong.sum())


@torch.no_grad()
def evaluate(
    model: TaskRNN, task: str, length: int, n: int = 10_000, seed: int = 10_000, chunk: int = 1000
) -> float:
    """Fraction of ``n`` fresh sequences (chunks of ``chunk``) the model gets wrong.

    Args:
        model: the trained model (put it in ``eval()`` mode first).
        task: the task key.
        length: ``L``.
        n: fresh sequences (10,000 in the paper).
        seed: the generator's seed (fixed, so every model sees the same sequences).
        chunk: sequences per batch (1,000 in the official code).

    Returns:
        The error rate in [0, 1].

    Example:
        >>> from gradclip.diagnostics.tasks.generators import TASKS
        >>> 0.0 <= evaluate(TaskRNN(TASKS["perm"]), "perm", 5, n=10) <= 1.0
        True
    """
    spec = TASKS[task]
    gen = torch.Generator().manual_seed(seed)
    wrong = done = 0
    while done < n:
        size = min(chunk, n - done)
        batch = generate(task, length, size, gen)
        wrong += count_errors(spec, model(batch.inputs), batch.targets)
        done += size
    return wrong / n


@dataclass(frozen=True)
class TaskConfig:
    """One training run. ``method`` is a clipper spec (``none``, ``norm:max_norm=1``, …)."""

    task: str
    length: int
    seed: int
    method: str = "none"
    steps: int = 2000
    lr: float = 0.01
    batch: int = 20
    hidden: int = 50
    init: str = "basic_tanh"
    eval_size: int = 10_000
    check_every: int = 250


@dataclass
class TaskResult:
    """What one run ended with: the paper's error and success, divergence, norm statistics,
    and subsampled curves (``curve_steps``, ``losses``, ``norms``)."""

    config: TaskConfig
    error: float
    success: bool
    diverged: bool
    steps_run: int
    final_loss: float
    norm_mean: float
    norm_max: float
    clip_rate: float
    wall_s: float
    curve_steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    norms: list[float] = field(default_factory=list)
    events: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become ``None``)."""
        from gradclip.lm.rundir import strict_json

        return strict_json(asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        """Inverse of :meth:`to_dict` (``None`` reads back as NaN)."""
        d = {k: _unfinite(v) for k, v in data.items()}
        d["config"] = TaskConfig(**data["config"])
        d["events"] = [(int(s), str(k)) for s, k in data.get("events", [])]
        return cls(**d)


def _unfinite(v: Any) -> Any:
    if v is None:
        return math.nan
    if isinstance(v, list):
        return [math.nan if x is None else x for x in v]
    return v


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
    """Train :class:`TaskRNN` on ``cfg.task`` with plain SGD behind ``cfg.method``'s clipper.

    Every ``check_every`` steps 1,000 fresh sequences are checked; below 1 % wrong the
    full ``eval_size`` set decides, and a success stops the run early (the paper also
    stops on its criterion). A non-finite loss stops the run as diverged.

    Args:
        cfg: the run's :class:`TaskConfig`.
        max_points: the most curve points kept.
        monitor: attach a :class:`gradclip.monitor.GradMonitor` and keep its events
            (explosion, vanishing, non-finite) as ``(step, kind)``.
        on_step: called with the step number after every update (a progress bar).

    Returns:
        The trained model and its :class:`TaskResult`.
    """
    spec = TASKS[cfg.task]
    torch.manual_seed(cfg.seed)
    model = TaskRNN(spec, cfg.hidden, cfg.init)
    opt = ClippedOptimizer(
        torch.optim.SGD(model.parameters(), lr=cfg.lr), make_clipper_from_spec(cfg.method)
    )
    watcher = None
    if monitor:
        from gradclip.monitor import GradMonitor

        watcher = GradMonitor(model, warn=False)
        watcher.attach(opt)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    every = max(1, cfg.steps // max_points)
    t0 = time.perf_counter()
    losses: list[float] = []
    norms: list[float] = []
    curve: tuple[list[int], list[float], list[float]] = ([], [], [])
    clipped = 0
    error, success, diverged, step = 1.0, False, False, 0
    for step in range(1, cfg.steps + 1):
        batch = generate(cfg.task, cfg.length, cfg.batch, gen)
        loss = task_loss(spec, model(batch.inputs), batch.targets)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        stats = opt.step()
        lv, nv = float(loss.detach()), float(stats.norm)
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
            if evaluate(model, cfg.task, cfg.length, min(1000, cfg.eval_size), seed=step) < (
                SUCCESS_ERROR
            ):
                error = evaluate(model, cfg.task, cfg.length, cfg.eval_size)
                success = error < SUCCESS_ERROR
            model.train()
            if success:
                break
    if not diverged and not success:
        model.eval()
        error = evaluate(model, cfg.task, cfg.length, cfg.eval_size)
    events: list[tuple[int, str]] = []
    if watcher is not None:
        watcher.flush()
        events = [(int(e["step"]), str(e["event"])) for e in watcher.events]
        watcher.close()
    finite = [n for n in norms if math.isfinite(n)]
    tail = losses[-min(len(losses), 50) :]
    return model, TaskResult(
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
        events=events,
    )


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())

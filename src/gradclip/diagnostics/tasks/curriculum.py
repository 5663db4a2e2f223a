"""A curriculum on Pascanu's tasks: one model, lengthened in stages.

Pascanu et al. (2013, §4.1) train every length from scratch, with up to 5 million
updates. A curriculum trains one model at the first length until it meets the paper's
criterion there (fewer than 1 % of 10,000 fresh sequences wrong), then at the next length
with the same weights, optimizer and data stream, and so on; the first stage not solved
within its budget ends the run. The learning rate may drop after the first stage
(``lr_after``) and the clipper may change (``method_after``: ``none`` takes the clip away
from a model that solved the first length).

A length L counts as solved by a run when its stage at L met the criterion; a run that
stopped earlier did not solve L. So the success rate at L is over every run of an arm.

Example:
    >>> cfg = CurriculumConfig("torder", (10, 12), seed=0, stage_steps=2, eval_size=100)
    >>> run = run_curriculum(cfg)
    >>> [s.config.length for s in run.stages], run.longest_solved
    ([10], None)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gradclip import ClippedOptimizer, make_clipper_from_spec
from gradclip.diagnostics.tasks.generators import TASKS, min_length
from gradclip.diagnostics.tasks.results import TaskConfig, TaskResult
from gradclip.diagnostics.tasks.train import new_run, train_steps

__all__ = [
    "CurriculumConfig",
    "CurriculumResult",
    "curriculum_configs",
    "curriculum_lengths",
    "run_curriculum",
]

STAGE_POINTS = 25  # curve points kept per stage


@dataclass(frozen=True)
class CurriculumConfig:
    """One curriculum run.

    Args:
        task: a key of :data:`TASKS`.
        lengths: the stage lengths, increasing, each at least the task's minimum.
        seed: seeds the model (``seed``) and the data (``seed + 1``), as a plain run.
        method: the clipper spec of the first stage (and of the rest unless
            ``method_after``).
        method_after: the clipper spec from the second stage on (``None``: ``method``).
        alpha: the weight of the regulariser Ω (0: none).
        lr: the learning rate of the first stage.
        lr_after: the learning rate from the second stage on (``None``: ``lr``).
        stage_steps: the most updates a stage may take.
        batch, hidden, init, eval_size, check_every: as :class:`TaskConfig`.
    """

    task: str
    lengths: tuple[int, ...]
    seed: int
    method: str = "norm:max_norm=1"
    method_after: str | None = None
    alpha: float = 0.0
    lr: float = 0.01
    lr_after: float | None = None
    stage_steps: int = 8000
    batch: int = 20
    hidden: int = 50
    init: str = "basic_tanh"
    eval_size: int = 10_000
    check_every: int = 250

    def __post_init__(self) -> None:
        object.__setattr__(self, "lengths", tuple(self.lengths))
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        if not self.lengths:
            raise ValueError("a curriculum needs at least one length")
        if any(b <= a for a, b in itertools.pairwise(self.lengths)):
            raise ValueError(f"curriculum lengths must increase, got {list(self.lengths)}")
        if self.lengths[0] < min_length(self.task):
            raise ValueError(
                f"{self.task} needs L ≥ {min_length(self.task)}, got {self.lengths[0]}"
            )
        if self.stage_steps < 1:
            raise ValueError(f"stage_steps must be ≥ 1, got {self.stage_steps}")
        self.stage(0)  # alpha and the other shared fields are checked by TaskConfig

    def stage(self, index: int) -> TaskConfig:
        """The :class:`TaskConfig` of stage ``index`` (its length, method and lr)."""
        later = index > 0
        return TaskConfig(
            task=self.task,
            length=self.lengths[index],
            seed=self.seed,
            method=(self.method_after or self.method) if later else self.method,
            steps=self.stage_steps,
            lr=(self.lr_after or self.lr) if later else self.lr,
            batch=self.batch,
            hidden=self.hidden,
            init=self.init,
            eval_size=self.eval_size,
            check_every=self.check_every,
            alpha=self.alpha,
        )

    @property
    def length_label(self) -> str:
        """``"50…200"``: the first and last stage lengths."""
        return f"{self.lengths[0]}…{self.lengths[-1]}"

    @property
    def method_label(self) -> str:
        """The arm's name: ``norm:max_norm=1``, ``norm:max_norm=1, then none``, with
        ``" + Ω(α=2)"`` when the regulariser is on."""
        label = self.method
        if self.method_after is not None and self.method_after != self.method:
            label += f", then {self.method_after}"
        return label if self.alpha == 0 else f"{label} + Ω(α={self.alpha:g})"


@dataclass
class CurriculumResult:
    """A curriculum run: its config and one :class:`TaskResult` per stage it reached (the
    last one unsolved unless the run solved every length)."""

    config: CurriculumConfig
    stages: list[TaskResult] = field(default_factory=list)

    @property
    def solved_lengths(self) -> list[int]:
        """The lengths whose stage met the criterion, in order."""
        return [s.config.length for s in self.stages if s.success]

    @property
    def longest_solved(self) -> int | None:
        """The longest length solved, or ``None``."""
        solved = self.solved_lengths
        return solved[-1] if solved else None

    @property
    def updates(self) -> int:
        """Updates over every stage."""
        return sum(s.steps_run for s in self.stages)

    @property
    def wall_s(self) -> float:
        """Seconds over every stage."""
        return sum(s.wall_s for s in self.stages)

    @property
    def clip_rate(self) -> float:
        """The fraction of all updates that were clipped."""
        clipped = sum(s.clip_rate * s.steps_run for s in self.stages)
        return clipped / max(1, self.updates)

    def updates_to_solve(self, length: int) -> int | None:
        """Updates from the start until ``length`` was solved, or ``None``."""
        total = 0
        for s in self.stages:
            total += s.steps_run
            if s.config.length == length:
                return total if s.success else None
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite numbers become ``None``)."""
        return {"config": asdict(self.config), "stages": [s.to_dict() for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurriculumResult:
        """Inverse of :meth:`to_dict`."""
        config = dict(data["config"])
        config["lengths"] = tuple(config["lengths"])
        return cls(CurriculumConfig(**config), [TaskResult.from_dict(s) for s in data["stages"]])


def curriculum_lengths(start: int, stop: int, step: int) -> tuple[int, ...]:
    """``start, start + step, …`` up to and including ``stop``.

    Example:
        >>> curriculum_lengths(50, 70, 5)
        (50, 55, 60, 65, 70)
    """
    if step < 1 or stop < start:
        raise ValueError(f"need START ≤ STOP and STEP ≥ 1, got {start}:{stop}:{step}")
    return tuple(range(start, stop + 1, step))


def run_curriculum(
    cfg: CurriculumConfig, on_stage: Callable[[TaskResult], None] | None = None
) -> CurriculumResult:
    """Train one model through ``cfg.lengths`` (see the module's text).

    Each stage is :func:`~gradclip.diagnostics.tasks.train.train_steps` on the same
    model, optimizer and data generator; after the first stage the learning rate becomes
    ``lr_after`` and, with ``method_after``, the clipper is replaced (plain SGD keeps no
    state, so nothing else changes).

    Args:
        cfg: the run.
        on_stage: called with each stage's result as it ends.

    Returns:
        The :class:`CurriculumResult`.

    Example:
        >>> cfg = CurriculumConfig("torder", (10, 12, 14), seed=1, lr=0.1, stage_steps=1500,
        ...                        eval_size=1000, init="smart_tanh")
        >>> run = run_curriculum(cfg)
        >>> run.solved_lengths, run.updates == sum(s.steps_run for s in run.stages)
        ([10, 12, 14], True)
    """
    first = cfg.stage(0)
    model, opt, gen = new_run(first)
    result = CurriculumResult(cfg)
    for index in range(len(cfg.lengths)):
        stage = cfg.stage(index)
        if index == 1:
            for group in opt.param_groups:
                group["lr"] = stage.lr
            if stage.method != first.method:
                opt = ClippedOptimizer(opt.optimizer, make_clipper_from_spec(stage.method))
        done = train_steps(
            model, opt, stage, gen, updates_before=result.updates, max_points=STAGE_POINTS
        )
        result.stages.append(done)
        if on_stage is not None:
            on_stage(done)
        if not done.success:
            break
    return result


def curriculum_configs(
    tasks: Sequence[str],
    lengths: Sequence[int],
    seeds: Sequence[int],
    methods: Sequence[str],
    alphas: Sequence[float] = (0.0,),
    **options: Any,
) -> list[CurriculumConfig]:
    """Every (task, method, α, seed) combination as a :class:`CurriculumConfig`.

    Example:
        >>> len(curriculum_configs(["torder"], [50, 55], [0, 1], ["none", "norm"], [0, 2]))
        8
    """
    return [
        CurriculumConfig(task=t, lengths=tuple(lengths), seed=s, method=m, alpha=a, **options)
        for t in tasks
        for m in methods
        for a in alphas
        for s in seeds
    ]

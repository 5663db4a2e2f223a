"""Pascanu et al. (2013)'s six long-range tasks: generators, the 50-unit tanh RNN,
SGD training with and without clipping (and the norm-preserving regulariser, MSGD-CR),
fixed or random lengths, the paper's success criterion, grids, and curricula (one model
lengthened in stages).

Example:
    >>> import torch
    >>> from gradclip.diagnostics.tasks import generate
    >>> generate("torder", 20, 3, torch.Generator().manual_seed(0)).inputs.shape
    torch.Size([20, 3, 6])
"""

from gradclip.diagnostics.tasks.criteria import (
    count_errors,
    evaluate,
    sample_length,
    screened_error,
    task_loss,
)
from gradclip.diagnostics.tasks.curriculum import (
    CurriculumConfig,
    CurriculumResult,
    run_curriculum,
)
from gradclip.diagnostics.tasks.generators import TASKS, Batch, TaskSpec, generate, min_length
from gradclip.diagnostics.tasks.regularizer import (
    add_penalty_gradient,
    hidden_state_gradients,
    norm_preservation_penalty,
)
from gradclip.diagnostics.tasks.results import TaskConfig, TaskResult
from gradclip.diagnostics.tasks.train import (
    TaskRNN,
    new_run,
    sgd_step,
    train_model,
    train_steps,
    train_task,
)

__all__ = [
    "TASKS",
    "Batch",
    "CurriculumConfig",
    "CurriculumResult",
    "TaskConfig",
    "TaskRNN",
    "TaskResult",
    "TaskSpec",
    "add_penalty_gradient",
    "count_errors",
    "evaluate",
    "generate",
    "hidden_state_gradients",
    "min_length",
    "new_run",
    "norm_preservation_penalty",
    "run_curriculum",
    "sample_length",
    "screened_error",
    "sgd_step",
    "task_loss",
    "train_model",
    "train_steps",
    "train_task",
]

"""Pascanu et al. (2013)'s six long-range tasks: generators, the 50-unit tanh RNN,
SGD training with and without clipping, the paper's success criterion, and grids.

Example:
    >>> import torch
    >>> from gradclip.diagnostics.tasks import generate
    >>> generate("torder", 20, 3, torch.Generator().manual_seed(0)).inputs.shape
    torch.Size([20, 3, 6])
"""

from gradclip.diagnostics.tasks.generators import TASKS, Batch, TaskSpec, generate, min_length
from gradclip.diagnostics.tasks.train import (
    TaskConfig,
    TaskResult,
    TaskRNN,
    count_errors,
    evaluate,
    task_loss,
    train_model,
    train_task,
)

__all__ = [
    "TASKS",
    "Batch",
    "TaskConfig",
    "TaskRNN",
    "TaskResult",
    "TaskSpec",
    "count_errors",
    "evaluate",
    "generate",
    "min_length",
    "task_loss",
    "train_model",
    "train_task",
]

"""Pascanu et al. (2013)'s training costs, error criteria and validation, and the code's
random sequence lengths.

* cost: cross-entropy at the last step, cross-entropy averaged over every
  time×batch row (memorization), or squared error summed over outputs (batch mean);
* a sequence is wrong when the last-step argmax differs, when the squared error is
  > 0.04 (addition, multiplication), or when any step's argmax differs (memorization);
  a run **succeeds** with fewer than 1 % wrong out of 10,000 fresh sequences, drawn in
  chunks of 1,000 (the paper's criterion);
* random lengths: the official code (github.com/pascanur/trainingRNNs) draws one length
  per minibatch, ``min_length + randint(max_length − min_length)``, i.e. uniform over
  ``[min_length, max_length)``, and one per validation chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradclip.diagnostics.tasks.generators import TASKS, TaskSpec, generate

__all__ = [
    "LINEAR_TOLERANCE",
    "SUCCESS_ERROR",
    "count_errors",
    "evaluate",
    "sample_length",
    "task_loss",
]

SUCCESS_ERROR = 0.01  # the paper: < 1 % of 10,000 fresh sequences wrong
LINEAR_TOLERANCE = 0.04  # squared error above this is "misclassified"


def sample_length(length: int, max_length: int | None, gen: torch.Generator) -> int:
    """``length`` itself, or one length uniform over ``[length, max_length)`` (the code's
    ``min_length + rng.randint(max_length − min_length)``) drawn from ``gen``.

    Args:
        length: the fixed length, or the range's lower end.
        max_length: the range's (exclusive) upper end, or ``None`` for a fixed length
            (then ``gen`` is not touched).
        gen: the random generator.

    Returns:
        The length.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_length(50, None, g), 50 <= sample_length(50, 200, g) < 200
        (50, True)
    """
    if max_length is None:
        return length
    if max_length <= length:
        raise ValueError(f"max_length must be > length, got [{length}, {max_length})")
    return int(torch.randint(length, max_length, (1,), generator=gen))


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
    model: nn.Module,
    task: str,
    length: int,
    n: int = 10_000,
    seed: int = 10_000,
    chunk: int = 1000,
    max_length: int | None = None,
) -> float:
    """Fraction of ``n`` fresh sequences (chunks of ``chunk``) the model gets wrong.

    Args:
        model: the trained model (put it in ``eval()`` mode first).
        task: the task key.
        length: ``L``, or the lower end of the range with ``max_length``.
        n: fresh sequences (10,000 in the paper).
        seed: the generator's seed (fixed, so every model sees the same sequences).
        chunk: sequences per batch (1,000 in the official code).
        max_length: when set, each chunk draws its own length from
            ``[length, max_length)`` (:func:`sample_length`; the code's validation).

    Returns:
        The error rate in [0, 1].

    Example:
        >>> from gradclip.diagnostics.tasks.generators import TASKS
        >>> from gradclip.diagnostics.tasks import TaskRNN
        >>> 0.0 <= evaluate(TaskRNN(TASKS["perm"]), "perm", 5, n=10, max_length=9) <= 1.0
        True
    """
    spec = TASKS[task]
    gen = torch.Generator().manual_seed(seed)
    wrong = done = 0
    while done < n:
        size = min(chunk, n - done)
        batch = generate(task, sample_length(length, max_length, gen), size, gen)
        wrong += count_errors(spec, model(batch.inputs), batch.targets)
        done += size
    return wrong / n


def screened_error(
    model: nn.Module,
    task: str,
    length: int,
    eval_size: int,
    seed: int,
    max_length: int | None = None,
    screen: int = 1000,
) -> float | None:
    """The paper's test, screened: ``screen`` fresh sequences first (seeded by ``seed``),
    and only when fewer than 1 % of them are wrong the full ``eval_size`` fixed set.

    Args:
        model: the model, in ``eval()`` mode.
        task: the task key.
        length: ``L`` (or the lower end of the range with ``max_length``).
        eval_size: sequences in the deciding set (10,000 in the paper).
        seed: the screen's seed (a new one at every check: fresh sequences).
        max_length: random lengths in ``[length, max_length)``, as :func:`evaluate`.
        screen: sequences in the screen.

    Returns:
        The full set's error rate, or ``None`` when the screen already failed.

    Example:
        >>> from gradclip.diagnostics.tasks import TaskRNN
        >>> screened_error(TaskRNN(TASKS["torder"]), "torder", 10, 100, seed=1) is None
        True
    """
    if evaluate(model, task, length, min(screen, eval_size), seed=seed, max_length=max_length) >= (
        SUCCESS_ERROR
    ):
        return None
    return evaluate(model, task, length, eval_size, max_length=max_length)

"""Pascanu's six synthetic long-range tasks, exactly as coded in pascanur/trainingRNNs.

Pascanu, Mikolov & Bengio (2013), §4.1 and the official code's ``tempOrder.py``,
``tempOrder3bit.py``, ``addition.py``, ``multiplication.py``, ``permutation.py`` and
``memorization.py``. Arrays are ``[time, batch, channels]``, positions 0-based and
``⌊x⌋`` is Python's ``int()``. ``U{0, …, n−1}`` draws one integer per sequence.

The code draws one length ``L`` per minibatch from ``[min_length, max_length)``;
here ``L`` is given (the paper's Fig. 7 fixes it per experiment). Addition and
multiplication still draw their actual length ``l = L + U{0, …, ⌊0.1L⌋ − 1}`` once
per minibatch, as the code does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TASKS", "Batch", "TaskSpec", "generate", "min_length"]


@dataclass(frozen=True)
class TaskSpec:
    """One task's interface: input channels, output size and output kind.

    ``output`` is ``"last_softmax"`` (class at the last step), ``"last_linear"`` (one real
    value at the last step) or ``"every_softmax"`` (a class at every step).
    """

    key: str
    title: str
    n_in: int
    n_out: int
    output: str


TASKS: dict[str, TaskSpec] = {
    t.key: t
    for t in (
        TaskSpec("torder", "temporal order", 6, 4, "last_softmax"),
        TaskSpec("torder3", "3-bit temporal order", 6, 8, "last_softmax"),
        TaskSpec("add", "addition", 2, 1, "last_linear"),
        TaskSpec("mul", "multiplication", 2, 1, "last_linear"),
        TaskSpec("perm", "random permutation", 100, 100, "last_softmax"),
        TaskSpec("mem", "noiseless memorization", 7, 6, "every_softmax"),
    )
}

N_VALUES, N_POS = 5, 10  # memorization defaults of the code


@dataclass(frozen=True)
class Batch:
    """``inputs [T, B, n_in]`` float32; ``targets`` ``[B]`` int64 (last-step softmax),
    ``[B, 1]`` float32 (linear) or ``[T, B]`` int64 (every-step softmax)."""

    inputs: Tensor
    targets: Tensor


def min_length(task: str) -> int:
    """The shortest ``L`` whose position ranges are non-empty (``⌊0.1L⌋ ≥ 1``).

    Example:
        >>> min_length("torder"), min_length("perm")
        (10, 1)
    """
    return {"perm": 1, "mem": 1}.get(_spec(task).key, 10)


def _spec(task: str) -> TaskSpec:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    return TASKS[task]


def _randint(high: int, batch: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, high, (batch,), generator=gen)


def _temporal_order(
    length: int, batch: int, gen: torch.Generator, fractions: tuple[float, ...]
) -> Batch:
    tenth = int(0.1 * length)
    # distractors: uniform over channels 2–5 at every step, then A/B written over them
    symbols = 2 + torch.randint(0, 4, (length, batch), generator=gen)
    cls = torch.zeros(batch, dtype=torch.int64)
    cols = torch.arange(batch)
    for j, f in enumerate(fractions):
        pos = int(f * length) + _randint(tenth, batch, gen)
        v = torch.randint(0, 2, (batch,), generator=gen)
        symbols[pos, cols] = v  # channel 0 = A (v = 0), 1 = B (v = 1)
        cls += v << j
    return Batch(torch.nn.functional.one_hot(symbols, 6).float(), cls)


def _add_mul(length: int, batch: int, gen: torch.Generator, multiply: bool) -> Batch:
    l_act = length + int(_randint(int(0.1 * length), 1, gen))  # one per minibatch
    values = torch.rand(l_act, batch, generator=gen)
    p0 = _randint(int(0.1 * l_act), batch, gen)
    p1 = int(0.1 * l_act) + _randint(int(0.4 * l_act), batch, gen)
    marker = torch.zeros(l_act, batch)
    cols = torch.arange(batch)
    marker[p0, cols] = 1.0
    marker[p1, cols] = 1.0
    a, b = values[p0, cols], values[p1, cols]
    target = a * b if multiply else (a + b) / 2
    return Batch(torch.stack([marker, values], dim=2), target[:, None])


def _permutation(length: int, batch: int, gen: torch.Generator) -> Batch:
    symbols = 2 + torch.randint(0, 98, (length, batch), generator=gen)
    first = torch.randint(0, 2, (batch,), generator=gen)
    symbols[0] = first
    return Batch(torch.nn.functional.one_hot(symbols, 100).float(), first)


def _memorization(length: int, batch: int, gen: torch.Generator) -> Batch:
    total = length + 2 * N_POS
    blank, trigger = N_VALUES, N_VALUES + 1
    # base-5 digits (least significant first) of a uniform integer in [0, 5^10)
    number = torch.randint(0, N_VALUES**N_POS, (batch,), generator=gen)
    digits = torch.stack([(number // N_VALUES**i) % N_VALUES for i in range(N_POS)])
    symbols = torch.full((total, batch), blank, dtype=torch.int64)
    symbols[:N_POS] = digits
    symbols[length + N_POS] = trigger
    targets = torch.full((total, batch), blank, dtype=torch.int64)
    targets[length + N_POS :] = digits
    return Batch(torch.nn.functional.one_hot(symbols, N_VALUES + 2).float(), targets)


def generate(task: str, length: int, batch: int, gen: torch.Generator) -> Batch:
    """Draw one minibatch of ``task`` at sequence length ``L = length``.

    ====================  ============================================================
    ``torder``            6 one-hot channels (0 = A, 1 = B, 2–5 distractors); A/B at
                          ``p₀ = ⌊0.1L⌋ + U{0..⌊0.1L⌋−1}``, ``p₁ = ⌊0.5L⌋ + U{…}``;
                          class ``v₀ + 2v₁``
    ``torder3``           as above at ``⌊fL⌋ + U{…}``, f = 0.1, 0.3, 0.6; class
                          ``v₀ + 2v₁ + 4v₂``
    ``add`` / ``mul``     ``l = L + U{0..⌊0.1L⌋−1}`` per minibatch; channel 0 marks
                          ``p₀ = U{0..⌊0.1l⌋−1}`` and ``p₁ = ⌊0.1l⌋ + U{0..⌊0.4l⌋−1}``,
                          channel 1 carries U[0, 1); target ``(x_p₀ + x_p₁)/2`` or
                          ``x_p₀·x_p₁``
    ``perm``              100 one-hot; first symbol ``s ∈ {0, 1}``, the rest uniform
                          over 2–99; class ``s``
    ``mem``               ``L + 20`` steps: a 10-digit base-5 pattern, blanks, a
                          trigger at step ``L + 10``; targets blank (class 5) until
                          the trigger, then the pattern
    ====================  ============================================================

    Args:
        task: ``torder``, ``torder3``, ``add``, ``mul``, ``perm`` or ``mem``.
        length: ``L`` (at least :func:`min_length`).
        batch: sequences in the minibatch (≥ 1).
        gen: the random generator (CPU).

    Returns:
        A :class:`Batch`.

    Example:
        >>> b = generate("add", 50, 4, torch.Generator().manual_seed(0))
        >>> b.inputs.shape[1:], b.targets.shape
        (torch.Size([4, 2]), torch.Size([4, 1]))
    """
    spec = _spec(task)
    if length < min_length(task):
        raise ValueError(f"length for task {task!r} must be ≥ {min_length(task)}, got {length}")
    if batch < 1:
        raise ValueError(f"batch must be ≥ 1, got {batch}")
    if spec.key == "torder":
        return _temporal_order(length, batch, gen, (0.1, 0.5))
    if spec.key == "torder3":
        return _temporal_order(length, batch, gen, (0.1, 0.3, 0.6))
    if spec.key in ("add", "mul"):
        return _add_mul(length, batch, gen, spec.key == "mul")
    if spec.key == "perm":
        return _permutation(length, batch, gen)
    return _memorization(length, batch, gen)

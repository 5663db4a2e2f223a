"""Perplexity: the tutorial's evaluation passes, non-finite results reported as ``inf``.

A diverged model (NaN or huge weights) evaluates to ``inf`` rather than raising
``OverflowError``: :func:`perplexity` maps a non-finite or overflowing mean
cross-entropy to ``inf``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gradclip.lm.batches import Batches
from gradclip.lm.model import PTBModel

__all__ = ["evaluate", "evaluate_stream", "perplexity"]


def perplexity(mean_nll: float) -> float:
    """``exp(mean_nll)``, or ``inf`` when that overflows or ``mean_nll`` is not finite.

    Args:
        mean_nll: mean cross-entropy per token, in nats.

    Returns:
        The perplexity; ``inf`` for a diverged model (NaN included: no finite
        perplexity describes it).

    Example:
        >>> perplexity(0.0), perplexity(1e6), perplexity(float("nan"))
        (1.0, inf, inf)
    """
    if not math.isfinite(mean_nll) or mean_nll > 709.0:
        return math.inf
    return math.exp(mean_nll)


@torch.no_grad()
def evaluate(model: PTBModel, ids: Tensor, batch_size: int, num_steps: int) -> float:
    """The tutorial's eval ``run_epoch``: zero state, batches of ``[B, T]``, no dropout.

    .. math:: \\mathrm{ppl} = \\exp\\Big(\\frac{1}{N}\\sum_i -\\log p(y_i)\\Big)

    Args:
        model: the language model.
        ids: the token stream.
        batch_size: B.
        num_steps: T.

    Returns:
        exp(mean cross-entropy per predicted token), ``inf`` if not finite.

    Example:
        >>> model = PTBModel(vocab_size=5, hidden_size=3, num_layers=1)
        >>> _ = torch.nn.init.zeros_(model.decoder.weight), torch.nn.init.zeros_(model.decoder.bias)
        >>> round(evaluate(model, torch.arange(100) % 5, batch_size=2, num_steps=4), 6)  # = V
        5.0
    """
    device = model.embedding.weight.device
    batches = Batches(ids, batch_size, num_steps).to(device)
    if len(batches) == 0:
        raise ValueError(
            f"evaluation split too small for batch_size {batch_size} and num_steps {num_steps}"
        )
    was_training = model.training
    model.eval()
    state = model.init_state(batch_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in batches:
        logits, state = model(x, state)
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
        )
    model.train(was_training)
    tokens = len(batches) * num_steps * batch_size
    return perplexity(total.item() / tokens)


@torch.no_grad()
def evaluate_stream(model: PTBModel, ids: Tensor, chunk: int = 100) -> float:
    """Test perplexity as the tutorial computes it (batch 1, num_steps 1), in chunks.

    With batch 1, the state carried and dropout off, feeding the stream ``chunk``
    tokens at a time computes the same function as one token at a time: all
    N − 1 next-token predictions, each conditioned on the whole prefix. Only the
    rounding of the recurrent matmuls may differ (the tests check agreement).

    Args:
        model: the language model.
        ids: the token stream (at least 2 tokens).
        chunk: tokens per forward call.

    Returns:
        exp(mean cross-entropy of the N − 1 predictions), ``inf`` if not finite.

    Example:
        >>> model = PTBModel(vocab_size=5, hidden_size=3, num_layers=1)
        >>> ids = torch.arange(50) % 5
        >>> a, b = evaluate_stream(model, ids, chunk=7), evaluate_stream(model, ids, chunk=1)
        >>> abs(a - b) / b < 1e-5  # the same predictions; only float32 rounding differs
        True
    """
    device = model.embedding.weight.device
    stream = ids.long().to(device)
    n = stream.numel() - 1
    if n < 1:
        raise ValueError("test split needs at least 2 tokens")
    was_training = model.training
    model.eval()
    state = model.init_state(1)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        x = stream[start:stop].unsqueeze(1)
        y = stream[start + 1 : stop + 1]
        logits, state = model(x, state)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y, reduction="sum")
    model.train(was_training)
    return perplexity(total.item() / n)

"""Batching: the tutorial's ``ptb_producer`` (``batchify`` into ``[B, N]`` rows, then
``[B, T]`` windows with targets shifted by one) and the epoch-size checks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from gradclip.lm.data import Corpus, DataError


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """``[B, batch_len]`` with row b a contiguous stripe; trailing ids dropped.

    Args:
        ids: the id stream.
        batch_size: B.

    Returns:
        The ``[B, ⌊N/B⌋]`` matrix.

    Example:
        >>> batchify(torch.arange(10), 3)
        tensor([[0, 1, 2],
                [3, 4, 5],
                [6, 7, 8]])
    """
    batch_len = ids.numel() // batch_size
    return ids[: batch_size * batch_len].reshape(batch_size, batch_len)


def epoch_size(num_tokens: int, batch_size: int, num_steps: int) -> int:
    """Steps per epoch of ``ptb_producer``: ⌊(⌊N/B⌋ − 1)/T⌋ (may be 0).

    Args:
        num_tokens: N.
        batch_size: B.
        num_steps: T.

    Returns:
        The number of ``[T, B]`` batches.

    Example:
        >>> epoch_size(929_589, 20, 20)  # PTB train, small config
            2323
    """
    return max((num_tokens // batch_size - 1) // num_steps, 0)


def check_epoch_size(split: str, num_tokens: int, batch_size: int, num_steps: int) -> int:
    """:func:`epoch_size`, raising :class:`DataError` (naming ``split``) when it is 0.

    Args:
        split: the split's name, for the message.
        num_tokens: N.
        batch_size: B.
        num_steps: T.

    Returns:
        The epoch size (≥ 1).
    """
    n = epoch_size(num_tokens, batch_size, num_steps)
    if n == 0:
        raise DataError(
            f"{split} split is too small: {num_tokens} tokens give epoch_size 0 with "
            f"batch_size {batch_size} and num_steps {num_steps}; "
            "decrease batch_size or num_steps"
        )
    return n


def check_corpus(corpus: Corpus, batch_size: int, num_steps: int) -> None:
    """Raise :class:`DataError` unless train and valid give at least one ``[B, T]``
    batch and test holds at least 2 tokens.

    Args:
        corpus: the corpus.
        batch_size: B.
        num_steps: T.
    """
    check_epoch_size("train", corpus.train.numel(), batch_size, num_steps)
    check_epoch_size("valid", corpus.valid.numel(), batch_size, num_steps)
    if corpus.test.numel() < 2:
        raise DataError(f"test split is too small: {corpus.test.numel()} token(s); need 2")


class Batches:
    """``reader.ptb_producer``: step i gives x = data[:, iT:(i+1)T], y shifted by one.

    The stream is stored time-major (``[batch_len, B]``) so that each step's
    ``x`` and ``y`` are contiguous ``[T, B]`` slices.

    >>> b = Batches(torch.arange(10), batch_size=2, num_steps=2)
    >>> len(b)
    2
    >>> x, y = b[0]
    >>> x.t().tolist(), y.t().tolist()
    ([[0, 1], [5, 6]], [[1, 2], [6, 7]])
    >>> [t.t().tolist() for t in b[1]]
    [[[2, 3], [7, 8]], [[3, 4], [8, 9]]]
    """

    def __init__(self, ids: Tensor, batch_size: int, num_steps: int) -> None:
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.data = batchify(ids.long(), batch_size).t().contiguous()  # [batch_len, B]
        self.epoch_size = max((self.data.shape[0] - 1) // num_steps, 0)

    def to(self, device: torch.device | str) -> Batches:
        """Move the stream to ``device`` (in place); returns ``self``."""
        self.data = self.data.to(device)
        return self

    def __len__(self) -> int:
        return self.epoch_size

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < self.epoch_size:
            raise IndexError(i)
        t = self.num_steps
        return self.data[i * t : (i + 1) * t], self.data[i * t + 1 : (i + 1) * t + 1]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(self.epoch_size):
            yield self[i]

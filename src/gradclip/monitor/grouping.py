r"""Per-layer grouping: which parameters form a "layer", and the layer's norm.

A layer is a module prefix: ``rnn.weight_hh_l0`` and ``rnn.bias_ih_l0`` both
belong to ``rnn``. The layer norm combines the per-tensor norms the clipper
already computed (no second pass over the gradients):

.. math:: \lVert g_L \rVert_p = \Big(\sum_{i \in L} \lVert g_i \rVert_p^p\Big)^{1/p},
          \qquad \lVert g_L \rVert_\infty = \max_{i \in L} \lVert g_i \rVert_\infty

through :func:`gradclip.ops.reduce.combine_partial_norms`, the one place where
gradclip adds norms up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from gradclip.ops.reduce import combine_partial_norms

__all__ = ["GroupBy", "Grouping", "default_group_by", "named_tensors"]

GroupBy = Callable[[str], str]


def default_group_by(name: str) -> str:
    """The module prefix of a parameter name: everything before the last dot.

    ``rnn.weight_hh_l0`` → ``rnn``; a top-level parameter (no dot) is its own group.

    Args:
        name: a name from ``Module.named_parameters()``.

    Returns:
        The group (layer) name.

    Example:
        >>> [default_group_by(n) for n in ("rnn.weight_hh_l0", "decoder.0.bias", "w")]
        ['rnn', 'decoder.0', 'w']
    """
    head, dot, _ = name.rpartition(".")
    return head if dot else name


class Grouping:
    """The layers of one list of parameter names, in first-seen order.

    Args:
        names: the parameter names, in the order of the per-tensor norms.
        group_by: maps a parameter name to its layer name.

    Example:
        >>> g = Grouping(("emb.weight", "rnn.w", "rnn.b"), default_group_by)
        >>> g.layers, g.members
        (('emb', 'rnn'), ((0,), (1, 2)))
        >>> g.combine(torch.tensor([[1.0, 3.0, 4.0]], dtype=torch.float64), 2.0)
        [[1.0, 5.0]]
    """

    def __init__(self, names: Sequence[str], group_by: GroupBy):
        order: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            layer = group_by(name)
            if not isinstance(layer, str):
                raise TypeError(
                    f"group_by must return a str, got {type(layer).__name__} for {name!r}"
                )
            order.setdefault(layer, []).append(i)
        self.names = tuple(names)
        self.layers = tuple(order)
        self.members = tuple(tuple(idx) for idx in order.values())
        self._index = [torch.tensor(idx, dtype=torch.long) for idx in self.members]

    def combine(self, norms: Tensor, norm_type: float) -> list[list[float]]:
        """Layer norms of a ``steps × tensors`` matrix of per-tensor norms (host values).

        Args:
            norms: ``(steps, len(names))`` per-tensor norms, on the CPU.
            norm_type: the order ``p`` of the norms.

        Returns:
            ``steps`` lists of ``len(layers)`` floats.
        """
        out = []
        for row in norms:
            values = row.tolist()
            out.append(
                [
                    values[m[0]]
                    if len(m) == 1  # a one-tensor layer: its norm as is
                    else float(combine_partial_norms(row.index_select(0, idx), norm_type))
                    for m, idx in zip(self.members, self._index, strict=True)
                ]
            )
        return out


def named_tensors(items: Iterable[Any]) -> list[tuple[str, Tensor]]:
    """Parameters or ``(name, parameter)`` pairs as pairs; bare tensors become ``param{i}``.

    Example:
        >>> [n for n, _ in named_tensors([torch.zeros(1), ("rnn.w", torch.zeros(1))])]
        ['param0', 'rnn.w']
    """
    out: list[tuple[str, Tensor]] = []
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            out.append((item[0], item[1]))
        elif isinstance(item, Tensor):
            out.append((f"param{i}", item))
        else:
            raise TypeError(
                f"expected parameters or (name, parameter) pairs, got {type(item).__name__}"
            )
    return out

"""Exact per-step state Jacobians of a recurrent module and the norms of their products.

Backpropagation through time multiplies one Jacobian ``∂s_t/∂s_{t−1}`` per step
(Pascanu, Mikolov & Bengio 2013, §2); :func:`jacobian_product_norms` builds them
exactly and reports the spectral norm of each product, for
:func:`gradclip.diagnostics.profile.temporal_profile`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["jacobian_product_norms", "state_parts"]


def state_parts(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A recurrent state as a tuple: ``h`` → ``(h,)``, an LSTM's ``(h, c)`` unchanged.

    Example:
        >>> import torch
        >>> len(state_parts(torch.zeros(1))), len(state_parts((torch.zeros(1), torch.zeros(1))))
        (1, 2)
    """
    return state if isinstance(state, tuple) else (state,)


def jacobian_product_norms(
    rnn: nn.RNNBase, encoded: list[Tensor], states: list[tuple[Tensor, ...]], max_dim: int
) -> list[float] | None:
    """Spectral norms of ``∂s_T/∂s_{T−k}`` for k = 0 … T, batch element 0.

    Builds each exact per-step state Jacobian ``J_t = ∂s_t/∂s_{t−1}`` with
    ``torch.func.jacrev`` and multiplies them in float64 (Pascanu et al. 2013, §2).

    Args:
        rnn: the recurrent module.
        encoded: the T per-step inputs to ``rnn``.
        states: the T + 1 states ``s_0 … s_T`` as tuples of tensors.
        max_dim: the largest state size for which the Jacobians are built.

    Returns:
        ``[1.0, ‖J_T‖₂, ‖J_T J_{T−1}‖₂, …]``, or None when the state is larger than ``max_dim``.
    """
    shapes = [p[:, :1].shape for p in states[0]]
    sizes = [math.prod(sh) for sh in shapes]
    dim = sum(sizes)
    if dim > max_dim:
        return None

    def step(x: Tensor) -> Callable[[Tensor], Tensor]:
        def f(flat: Tensor) -> Tensor:
            pieces = torch.split(flat, sizes)
            st = tuple(p.reshape(sh) for p, sh in zip(pieces, shapes, strict=True))
            _, new = rnn(x, st if len(st) == 2 else st[0])
            return torch.cat([p.reshape(-1) for p in state_parts(new)])

        return f

    out = [1.0]
    prod: Tensor | None = None
    # mkldnn's RNN backward has no vmap rule and leaves torch unable to run its own
    # backward afterwards (torch 2.x), so the Jacobians use the native kernels.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration")
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            for t in range(len(encoded), 0, -1):  # J_t = ∂s_t/∂s_{t−1}
                s_prev = torch.cat([p[:, :1].detach().reshape(-1) for p in states[t - 1]])
                x = encoded[t - 1]
                x = x[:1] if rnn.batch_first else x[:, :1]
                jac = torch.func.jacrev(step(x.detach()))(s_prev).double()
                prod = jac if prod is None else prod @ jac
                out.append(float(torch.linalg.matrix_norm(prod, ord=2)))
    return out

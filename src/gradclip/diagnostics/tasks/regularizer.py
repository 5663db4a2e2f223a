"""Pascanu et al. (2013)'s norm-preserving regulariser Ω (eq. 9–10), as the official code
computes it, for a one-layer tanh ``nn.RNN``.

With ``h_k = tanh(W_ih u_k + b_ih + W_hh h_{k−1} + b_hh)`` (PyTorch's convention, batch as
rows) and ``d_k = ∂E/∂h_k`` the *total* gradient reaching step k, the gradient carried
one step back is ``d_k (∂h_k/∂h_{k−1}) = (d_k ⊙ (1 − h_k²)) W_hh``, and

    Ω = mean over valid (k, b) of ( ‖(d_k ⊙ (1 − h_k²)) W_hh‖² / ‖d_k‖² − 1 )²,

a (k, b) being valid when ``‖d_k‖² ≥ bound`` (1e-20). Ω pulls every one-step Jacobian
towards preserving the norm of the error signal flowing back through it. Only its
*immediate* derivative with respect to ``W_hh`` is used: ``h`` and ``d`` are constants.
MSGD-CR (clipping + regulariser) adds ``α·∂Ω/∂W_hh`` to ``W_hh``'s gradient *before* the
clip, so the clip sees the total (Pascanu, Mikolov & Bengio, "On the difficulty of
training Recurrent Neural Networks", ICML 2013, eq. 9–10; the code:
https://github.com/pascanur/trainingRNNs, ``RNN.py``). Unlike eq. (9), the code works in
h-space (the Jacobian of ``h_k`` in ``h_{k−1}``, not of ``x_{k+1}`` in ``x_k``), takes the
ratio of *squared* norms (as eq. 10), skips terms with ``‖d_k‖² < 1e-20`` and averages
over the valid terms instead of summing; this module does the same.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["add_penalty_gradient", "hidden_state_gradients", "norm_preservation_penalty"]

BOUND = 1e-20  # the code's ``state['bound']``


def _check(states: Tensor, other: Tensor, w_hh: Tensor) -> None:
    if states.dim() != 3 or other.shape != states.shape:
        raise ValueError(
            f"states and gradients must both be [T, B, H], got {tuple(states.shape)} "
            f"and {tuple(other.shape)}"
        )
    h = states.shape[-1]
    if tuple(w_hh.shape) != (h, h):
        raise ValueError(f"w_hh must be [{h}, {h}], got {tuple(w_hh.shape)}")


def hidden_state_gradients(states: Tensor, direct: Tensor, w_hh: Tensor) -> Tensor:
    """The total gradients ``d_k = ∂E/∂h_k`` of a one-layer tanh RNN, k = 1 … T.

    Backward recurrence (BPTT in h-space): ``d_T = direct_T`` and
    ``d_{k−1} = direct_{k−1} + (d_k ⊙ (1 − h_k²)) W_hh``, where ``direct_k = ∂⁺E/∂h_k`` is
    the gradient reaching output k through the readout only. No autograd graph is built.

    Args:
        states: the RNN's outputs ``h_1 … h_T``, ``[T, B, H]``.
        direct: ``∂⁺E/∂h_k``, ``[T, B, H]`` (e.g. ``torch.autograd.grad(loss, states)``).
        w_hh: the recurrent weight ``[H, H]`` (``nn.RNN.weight_hh_l0``).

    Returns:
        ``[T, B, H]``, detached.

    Example:
        >>> h = torch.zeros(3, 1, 2)  # tanh' = 1 everywhere
        >>> direct = torch.tensor([[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 0.0]]])
        >>> hidden_state_gradients(h, direct, 2 * torch.eye(2))[:, 0, 0]
        tensor([4., 2., 1.])
    """
    _check(states, direct, w_hh)
    with torch.no_grad():
        states, direct, w_hh = states.detach(), direct.detach(), w_hh.detach()
        total = torch.empty_like(direct)
        d = direct[-1]
        total[-1] = d
        for k in range(states.shape[0] - 1, 0, -1):
            d = direct[k - 1] + (d * (1 - states[k] ** 2)) @ w_hh
            total[k - 1] = d
    return total


def norm_preservation_penalty(
    states: Tensor, total: Tensor, w_hh: Tensor, bound: float = BOUND
) -> Tensor:
    """Ω (see the module docstring), differentiable in ``w_hh`` only.

    Args:
        states: ``h_1 … h_T``, ``[T, B, H]`` (a constant).
        total: the total gradients ``∂E/∂h_k`` (:func:`hidden_state_gradients`), a constant.
        w_hh: the recurrent weight ``[H, H]``; Ω's graph reaches it.
        bound: terms with ``‖d_k‖² < bound`` are skipped (1e-20 in the code).

    Returns:
        A scalar: Ω over the valid (k, b), or 0 when none is valid.

    Example:
        >>> h, d = torch.zeros(1, 1, 2), torch.tensor([[[1.0, 0.0]]])
        >>> norm_preservation_penalty(h, d, 2 * torch.eye(2))  # (4/1 − 1)²
        tensor(9.)
        >>> norm_preservation_penalty(h, 0 * d, 2 * torch.eye(2))  # nothing valid
        tensor(0.)
    """
    _check(states, total, w_hh)
    states, total = states.detach(), total.detach()
    y = total.pow(2).sum(-1)  # ‖d_k‖², [T, B]
    x = ((total * (1 - states**2)) @ w_hh).pow(2).sum(-1)  # ‖d_k ∂h_k/∂h_{k−1}‖²
    valid = y >= bound
    # the divisor is 1 where invalid, so that no inf/NaN reaches the gradient through where
    terms = torch.where(valid, x / torch.where(valid, y, torch.ones_like(y)) - 1, 0.0) ** 2
    return terms.sum() / valid.sum().clamp_min(1)


def add_penalty_gradient(rnn: nn.RNN, states: Tensor, direct: Tensor, alpha: float) -> Tensor:
    """MSGD-CR's step: add ``α·∂Ω/∂W_hh`` into ``rnn.weight_hh_l0.grad`` (call it after
    ``loss.backward()`` and before the clip).

    Args:
        rnn: a one-layer, unidirectional tanh ``nn.RNN`` (time-major ``states``).
        states: its outputs ``h_1 … h_T``, ``[T, B, H]``.
        direct: ``∂⁺E/∂h_k`` (the readout's gradient on ``states``).
        alpha: the regulariser's weight α ≥ 0 (4 in the paper's temporal order, 2 in the code).

    Returns:
        Ω's value (a detached scalar tensor).

    Example:
        >>> rnn = nn.RNN(1, 2)
        >>> states, _ = rnn(torch.randn(4, 3, 1))
        >>> omega = add_penalty_gradient(rnn, states, torch.ones_like(states), alpha=2.0)
        >>> bool(omega >= 0), rnn.weight_hh_l0.grad.shape
        (True, torch.Size([2, 2]))
    """
    if rnn.num_layers != 1 or rnn.bidirectional or rnn.nonlinearity != "tanh":
        raise ValueError("the regulariser needs a one-layer, unidirectional tanh nn.RNN")
    if not alpha >= 0:
        raise ValueError(f"alpha must be ≥ 0, got {alpha}")
    param = rnn.get_parameter("weight_hh_l0")
    total = hidden_state_gradients(states, direct, param)
    w = param.detach().requires_grad_()
    with torch.enable_grad():
        omega = norm_preservation_penalty(states, total, w)
        (grad,) = torch.autograd.grad(omega, w)
    if param.grad is None:
        param.grad = alpha * grad
    else:
        param.grad.add_(grad, alpha=alpha)
    return omega.detach()

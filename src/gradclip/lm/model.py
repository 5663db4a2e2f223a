"""The tutorial's language model (``PTBModel``) in PyTorch, and its loss.

* embedding ``[V, H]`` (embedding size = hidden size), untied from the softmax;
* an L-layer LSTM (or GRU / tanh RNN) with hidden size H;
* dropout with p = 1 − keep_prob on the embedding output and on the output of
  **every** layer, the top one included (L + 1 sites, no recurrent dropout).
  ``nn.RNNBase(dropout=p)`` drops the outputs of all layers but the last; the
  two explicit :class:`~torch.nn.Dropout` modules add the embedding and the top
  layer, which is exactly the tutorial's ``DropoutWrapper(output_keep_prob)``
  on every cell plus ``tf.nn.dropout`` on the inputs;
* softmax ``W [H, V]`` and ``b [V]`` (an ``nn.Linear``);
* every weight U(−init_scale, init_scale), embedding and softmax bias included;
  both recurrent bias vectors 0 (``LSTMBlockCell``'s zero bias, ``forget_bias=0``).
"""

from __future__ import annotations

from typing import TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradclip.lm.config import LMConfig

State: TypeAlias = Tensor | tuple[Tensor, Tensor]


class PTBModel(nn.Module):
    """Embedding → dropout → L-layer RNN (dropout after every layer) → softmax.

    The TensorFlow tutorial's ``PTBModel`` (Zaremba et al. 2014, arXiv:1409.2329):
    see the module docstring for the layer-by-layer correspondence.

    Args:
        vocab_size: V.
        hidden_size: H (also the embedding size).
        num_layers: L.
        keep_prob: dropout keep probability (1: no dropout).
        init_scale: every weight U(−init_scale, init_scale).
        cell: ``lstm``, ``gru`` or ``rnn_tanh``.

    Example:
        >>> import torch
        >>> m = PTBModel(vocab_size=10, hidden_size=4, num_layers=2)
        >>> logits, state = m(torch.zeros(3, 2, dtype=torch.long), m.init_state(2))
        >>> tuple(logits.shape), tuple(state[0].shape)
        ((3, 2, 10), (2, 2, 4))
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int,
        keep_prob: float = 1.0,
        init_scale: float = 0.1,
        cell: str = "lstm",
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        p = 1.0 - keep_prob
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.input_dropout: nn.Module = nn.Dropout(p) if p > 0 else nn.Identity()
        rnn_cls: type[nn.RNNBase]
        kwargs: dict[str, object] = {}
        if cell == "lstm":
            rnn_cls = nn.LSTM
        elif cell == "gru":
            rnn_cls = nn.GRU
        elif cell == "rnn_tanh":
            rnn_cls = nn.RNN
            kwargs["nonlinearity"] = "tanh"
        else:
            raise ValueError(f"cell must be one of lstm, gru, rnn_tanh, got {cell!r}")
        self.rnn = rnn_cls(
            hidden_size, hidden_size, num_layers, dropout=p if num_layers > 1 else 0.0, **kwargs
        )
        self.output_dropout: nn.Module = nn.Dropout(p) if p > 0 else nn.Identity()
        self.decoder = nn.Linear(hidden_size, vocab_size)
        self.reset_parameters(init_scale)

    @classmethod
    def from_config(cls, cfg: LMConfig, vocab_size: int) -> PTBModel:
        """The model of ``cfg`` for a vocabulary of ``vocab_size``.

        Args:
            cfg: hidden size, layers, keep_prob, init_scale and cell.
            vocab_size: V.

        Returns:
            A new, initialised model (on the CPU).
        """
        return cls(
            vocab_size,
            cfg.hidden_size,
            cfg.num_layers,
            keep_prob=cfg.keep_prob,
            init_scale=cfg.init_scale,
            cell=cfg.cell,
        )

    def reset_parameters(self, init_scale: float) -> None:
        """All weights U(±init_scale); the recurrent biases 0 (both vectors, so the sum is 0).

        Args:
            init_scale: the half-width of the uniform initialisation.
        """
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.startswith("rnn.bias_"):
                    param.zero_()
                else:
                    param.uniform_(-init_scale, init_scale)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        """The zero state: ``(h, c)`` for the LSTM, ``h`` otherwise; ``[L, B, H]`` each.

        Args:
            batch_size: B.
            device: where (default: the model's).

        Returns:
            The state.
        """
        dev = device if device is not None else self.embedding.weight.device
        dtype = self.embedding.weight.dtype
        shape = (self.num_layers, batch_size, self.hidden_size)
        h = torch.zeros(shape, device=dev, dtype=dtype)
        if self.cell == "lstm":
            return (h, torch.zeros(shape, device=dev, dtype=dtype))
        return h

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """``x [T, B]`` ids → logits ``[T, B, V]`` and the final state.

        Args:
            x: token ids, time-major.
            state: the initial state (see :meth:`init_state`).

        Returns:
            ``(logits, final state)``.
        """
        emb = self.input_dropout(self.embedding(x))
        out, new_state = self.rnn(emb, state)
        logits = self.decoder(self.output_dropout(out))
        return logits, new_state


def detach_state(state: State) -> State:
    """Cut the graph between batches (truncated BPTT).

    Args:
        state: ``h`` or ``(h, c)``.

    Returns:
        The same values, detached.

    Example:
        >>> h = torch.ones(1, requires_grad=True) * 2
        >>> detach_state((h, h))[0].requires_grad
        False
    """
    if isinstance(state, tuple):
        return (state[0].detach(), state[1].detach())
    return state.detach()


def tf_cost(logits: Tensor, targets: Tensor) -> Tensor:
    r"""The tutorial's cost: Σ over time steps of the batch-mean cross-entropy.

    ``logits [T, B, V]``, ``targets [T, B]``. Equals ``T ×`` the per-token mean,
    i.e. ``sequence_loss(average_across_timesteps=False, average_across_batch=True)``
    summed, so that ``learning_rate`` and ``max_grad_norm`` keep their TF meaning.

    .. math:: \mathrm{cost} = \sum_{t=1}^{T} \frac{1}{B} \sum_{b=1}^{B} \mathrm{CE}(b, t)

    Args:
        logits: ``[T, B, V]``.
        targets: ``[T, B]`` ids.

    Returns:
        The 0-d cost.

    Example:
        >>> T, B, V = 3, 2, 5
        >>> float(tf_cost(torch.zeros(T, B, V), torch.zeros(T, B, dtype=torch.long)))  # T·ln V
        4.828313...
    """
    batch = targets.shape[1]
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
    )
    return total / batch


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (elements) of ``model``.

    Args:
        model: any module.

    Returns:
        Σ numel over its parameters.

    Example:
        >>> count_parameters(torch.nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in model.parameters())

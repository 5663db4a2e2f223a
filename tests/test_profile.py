"""The temporal profile against closed forms and torch's own full-sequence autograd."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from gradclip.diagnostics import temporal_profile
from gradclip.diagnostics.profile import TemporalProfile

pytestmark = pytest.mark.usefixtures("one_thread")


class LinearRNN(nn.RNN):
    """h_t = W h_{t−1} + U x_t (identity activation), through nn.RNN's call contract."""

    def forward(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        assert hx is not None
        h = hx[0]
        outs = []
        for t in range(x.shape[0]):
            h = h @ self.weight_hh_l0.T + x[t] @ self.weight_ih_l0.T
            outs.append(h)
        return torch.stack(outs), h.unsqueeze(0)


def orthogonal(n: int, seed: int) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed)))
    return q


def linear_rnn(w: Tensor, n_in: int = 3) -> LinearRNN:
    rnn = LinearRNN(n_in, w.shape[0], bias=False)
    with torch.no_grad():
        rnn.weight_hh_l0.copy_(w)
    return rnn


def test_linear_rnn_matches_powers_of_w() -> None:
    torch.manual_seed(0)
    h, T, B = 6, 9, 4
    w = 0.9 * torch.randn(h, h) / math.sqrt(h)
    rnn = linear_rnn(w)
    x = torch.randn(T, B, 3)
    target = torch.randn(B, h)
    prof = temporal_profile(rnn, x, lambda y: ((y - target) ** 2).sum())
    # closed form in float64: g_T = 2 (h_T − target); ∂L/∂h_{T−k} = (Wᵀ)^k g_T
    wd = w.double()
    hs = torch.zeros(B, h, dtype=torch.float64)
    for t in range(T):
        hs = hs @ wd.T + x[t].double() @ rnn.weight_ih_l0.detach().double().T
    g = 2 * (hs - target.double())  # [B, h], row vectors: (Wᵀ)^k g as g @ W^k
    for k in range(T + 1):
        want = torch.linalg.vector_norm(g @ torch.linalg.matrix_power(wd, k))
        assert prof.grad_norms[k] == pytest.approx(float(want), rel=1e-4)
        assert prof.layer_grad_norms[k][0] == pytest.approx(float(want), rel=1e-4)
        assert prof.jacobian_norms is not None
        jk = torch.linalg.matrix_norm(torch.linalg.matrix_power(wd, k), ord=2)
        assert prof.jacobian_norms[k] == pytest.approx(float(jk), rel=1e-4)
    assert prof.weights[0].sigma_max == pytest.approx(
        float(torch.linalg.matrix_norm(wd, ord=2)), rel=1e-6
    )


@pytest.mark.parametrize(("gain", "verdict"), [(2.0, "exploding"), (0.5, "vanishing")])
def test_verdict_on_scaled_orthogonal(gain: float, verdict: str) -> None:
    rnn = linear_rnn(gain * orthogonal(5, 1))
    prof = temporal_profile(rnn, torch.randn(12, 2, 3, generator=torch.Generator().manual_seed(2)))
    assert prof.verdict == verdict
    # an orthogonal W scales every vector by exactly `gain` per step
    assert prof.growth_per_step == pytest.approx(gain, rel=1e-4)
    assert prof.weights[0].condition == (
        "exploding possible" if gain > 1 else "vanishing guaranteed"
    )


def test_identity_is_stable() -> None:
    rnn = linear_rnn(orthogonal(4, 3))
    prof = temporal_profile(rnn, torch.randn(10, 2, 3))
    assert prof.verdict == "stable"


def _states(cls: type[nn.RNNBase], layers: int, b: int, h: int) -> Tensor | tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(5)
    if cls is nn.LSTM:
        return (torch.randn(layers, b, h, generator=g), torch.randn(layers, b, h, generator=g))
    return torch.randn(layers, b, h, generator=g)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_initial_state_gradient_matches_full_sequence_autograd(cls: type[nn.RNNBase]) -> None:
    """k = T (the initial state) against torch's own full-sequence forward and backward."""
    torch.manual_seed(0)
    layers, T, B, H = 2, 7, 3, 5
    rnn = cls(4, H, layers, batch_first=True)
    x = torch.randn(B, T, 4)
    s0 = _states(cls, layers, B, H)
    prof = temporal_profile(rnn, x, state=s0)
    parts = [p.clone().requires_grad_(True) for p in (s0 if isinstance(s0, tuple) else (s0,))]
    out, _ = rnn(x, tuple(parts) if len(parts) == 2 else parts[0])
    loss = out[:, -1].sum() / B
    grads = torch.autograd.grad(loss, parts)
    want = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
    assert prof.grad_norms[T] == pytest.approx(want, rel=1e-5)
    # batch_first=False with the same weights and transposed inputs gives the same profile
    rnn_tm = cls(4, H, layers)
    rnn_tm.load_state_dict(rnn.state_dict())
    prof_tm = temporal_profile(rnn_tm, x.transpose(0, 1), state=s0)
    assert prof_tm.grad_norms == pytest.approx(prof.grad_norms, rel=1e-6)
    # the full Jacobian ∂s_T/∂s_0 of batch element 0, by torch.autograd.functional
    sizes = [p[:, :1].numel() for p in parts]

    def final_state(flat: Tensor) -> Tensor:
        st = [q.reshape(layers, 1, -1) for q in torch.split(flat, sizes)]
        _, new = rnn(x[:1], tuple(st) if len(st) == 2 else st[0])
        return torch.cat([q.reshape(-1) for q in (new if isinstance(new, tuple) else (new,))])

    flat0 = torch.cat([p[:, :1].detach().reshape(-1) for p in parts])
    jac = torch.autograd.functional.jacobian(final_state, flat0, vectorize=True)
    assert prof.jacobian_norms is not None
    assert prof.jacobian_norms[T] == pytest.approx(
        float(torch.linalg.matrix_norm(jac.double(), ord=2)), rel=1e-4
    )
    assert [w.name for w in prof.weights] == ["weight_hh_l0", "weight_hh_l1"]
    assert len(prof.layer_grad_norms[0]) == layers


def test_ptb_model_and_roundtrip() -> None:
    from gradclip.lm.model import PTBModel

    torch.manual_seed(0)
    model = PTBModel(30, 8, 2, keep_prob=0.5, cell="lstm")
    model.train()
    x = torch.randint(0, 30, (6, 3))
    y = torch.randint(0, 30, (6, 3))
    prof = temporal_profile(model, x, targets=y)
    assert model.training  # restored
    assert all(p.grad is None for p in model.parameters())  # .grad untouched
    assert len(prof.grad_norms) == 7 and prof.cell == "lstm"
    assert [w.name for w in prof.weights] == ["rnn.weight_hh_l0", "rnn.weight_hh_l1"]
    back = TemporalProfile.from_dict(prof.to_dict())
    assert back == prof


def test_unbatched_input_is_a_batch_of_one() -> None:
    torch.manual_seed(0)
    gru = nn.GRU(3, 5, batch_first=True)
    x = torch.randn(9, 3)
    assert temporal_profile(gru, x).grad_norms == pytest.approx(
        temporal_profile(gru, x.unsqueeze(0)).grad_norms, rel=1e-6
    )


def test_rejects_bidirectional_and_other_modules() -> None:
    with pytest.raises(ValueError, match="unidirectional"):
        temporal_profile(nn.GRU(2, 3, bidirectional=True), torch.randn(4, 1, 2))
    with pytest.raises(TypeError, match=r"nn\.RNN"):
        temporal_profile(nn.Linear(2, 2), torch.randn(4, 1, 2))


def test_tanh_rnn_vanishes_below_gain_one_and_grows_above() -> None:
    """A tanh RNN whose W_rec is ``gain`` × orthogonal, small inputs, E = ‖h_T‖²
    (moved from the old demo's test): the profile vanishes at 0.9 and grows at 1.3."""
    profiles = {}
    for gain in (0.9, 1.3):
        rnn = nn.RNN(16, 16, bias=False)
        with torch.no_grad():
            rnn.weight_hh_l0.copy_(gain * orthogonal(16, 0))
            rnn.weight_ih_l0.copy_(torch.eye(16))
        x = 0.1 * torch.randn(40, 1, 16, generator=torch.Generator().manual_seed(0))
        profiles[gain] = temporal_profile(rnn, x, lambda y: (y**2).sum())
    vanish, explode = profiles[0.9].grad_norms, profiles[1.3].grad_norms
    assert vanish[-1] < 0.01 * vanish[0]
    assert explode[-1] > explode[0]
    assert profiles[0.9].verdict == "vanishing"

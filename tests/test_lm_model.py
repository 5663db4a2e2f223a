"""Model and recipe: parameter counts, initialisation, dropout sites, loss scale,
learning-rate schedule, evaluation and perplexity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradclip.lm.config import load_config
from gradclip.lm.evaluation import evaluate, evaluate_stream
from gradclip.lm.model import PTBModel, count_parameters, tf_cost


@pytest.mark.parametrize(
    ("name", "expected"),
    [("small", 4_653_200), ("medium", 19_780_400), ("large", 66_034_000), ("test", 50_048)],
)
def test_parameter_counts_match_the_reference(name, expected):
    cfg, _ = load_config(name)
    with torch.device("meta"):
        model = PTBModel.from_config(cfg, vocab_size=10_000)
    assert count_parameters(model) == expected
    # TF has one bias per gate: 4H fewer per layer.
    tf = expected - cfg.num_layers * 4 * cfg.hidden_size
    h, v, n = cfg.hidden_size, 10_000, cfg.num_layers
    assert tf == v * h + n * (4 * h * (2 * h) + 4 * h) + h * v + v


def test_initialisation_uniform_and_zero_lstm_biases():
    torch.manual_seed(0)
    model = PTBModel(500, 16, 2, init_scale=0.05)
    names = dict(model.named_parameters())
    for name, p in names.items():
        if name.startswith("rnn.bias"):
            assert torch.count_nonzero(p) == 0, name  # b_ih + b_hh = 0: no forget offset
        else:
            assert p.abs().max() <= 0.05, name
            assert p.abs().max() > 0.04, name  # uniform over the whole range, not PyTorch's
    # untied: embedding and softmax weights are different tensors
    assert model.embedding.weight.data_ptr() != model.decoder.weight.data_ptr()
    assert model.decoder.weight.shape == (500, 16) and model.decoder.bias.shape == (500,)


def test_dropout_on_embedding_and_after_every_layer():
    model = PTBModel(50, 8, 3, keep_prob=0.35)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [pytest.approx(0.65)] * 2  # embedding output, top output
    assert model.rnn.dropout == pytest.approx(0.65)  # between layers 1-2 and 2-3
    assert model.rnn.num_layers == 3
    # L + 1 = 4 sites: count the zeroed activations of an identity-like check
    no_drop = PTBModel(50, 8, 2, keep_prob=1.0)
    assert not any(isinstance(m, nn.Dropout) for m in no_drop.modules())
    assert no_drop.rnn.dropout == 0


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = PTBModel(50, 8, 2, keep_prob=0.5)
    x = torch.randint(0, 50, (5, 3))
    model.eval()
    a, _ = model(x, model.init_state(3))
    b, _ = model(x, model.init_state(3))
    assert torch.equal(a, b)
    model.train()
    c, _ = model(x, model.init_state(3))
    assert not torch.allclose(a, c)


def test_loss_is_sum_over_time_of_batch_mean_cross_entropy():
    torch.manual_seed(0)
    T, B, V = 5, 3, 7
    logits = torch.randn(T, B, V, dtype=torch.float64)
    y = torch.randint(0, V, (T, B))
    # The tutorial's definition, term by term: Σ_t (1/B) Σ_b −log softmax(logits[t, b])[y]
    expected = 0.0
    for t in range(T):
        batch = 0.0
        for b in range(B):
            lp = logits[t, b] - torch.logsumexp(logits[t, b], 0)
            batch += -float(lp[y[t, b]])
        expected += batch / B
    assert float(tf_cost(logits, y)) == pytest.approx(expected, rel=1e-12)
    # = T × the PyTorch mean loss, so its gradient is T times nn.CrossEntropyLoss's
    mean = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    assert float(tf_cost(logits, y)) == pytest.approx(T * float(mean), rel=1e-12)


def test_gradient_scale_is_T_times_the_mean_loss_gradient():
    torch.manual_seed(0)
    model = PTBModel(20, 4, 1).double()
    x, y = torch.randint(0, 20, (6, 2)), torch.randint(0, 20, (6, 2))
    logits, _ = model(x, model.init_state(2))
    tf_cost(logits, y).backward()
    g_tf = model.decoder.weight.grad.clone()
    model.zero_grad()
    logits, _ = model(x, model.init_state(2))
    F.cross_entropy(logits.reshape(-1, 20), y.reshape(-1)).backward()
    torch.testing.assert_close(g_tf, 6 * model.decoder.weight.grad)


def test_learning_rate_schedule():
    small, _ = load_config("small")
    lrs = [small.lr_at(i) for i in range(13)]
    assert lrs[:4] == [1.0] * 4
    assert lrs[4] == 0.5 and lrs[5] == 0.25
    assert lrs[12] == pytest.approx(0.5**9)
    medium, _ = load_config("medium")
    assert medium.lr_at(5) == 1.0 and medium.lr_at(6) == pytest.approx(0.8)
    assert medium.lr_at(38) == pytest.approx(0.8**33)
    large, _ = load_config("large")
    assert large.lr_at(13) == 1.0 and large.lr_at(14) == pytest.approx(1 / 1.15)
    assert large.lr_at(54) == pytest.approx(1.15**-41)


def _uniform_model(vocab: int) -> PTBModel:
    model = PTBModel(vocab, 8, 2)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
    return model


def test_uniform_model_perplexity_equals_vocab_size():
    torch.manual_seed(0)
    V = 37
    ids = torch.randint(0, V, (500,))
    model = _uniform_model(V)
    assert evaluate(model, ids, batch_size=4, num_steps=5) == pytest.approx(V, rel=1e-6)
    assert evaluate_stream(model, ids, chunk=13) == pytest.approx(V, rel=1e-6)


def test_untrained_model_is_close_to_uniform():
    torch.manual_seed(0)
    V = 1000
    model = PTBModel(V, 16, 2, init_scale=0.1)
    ppl = evaluate(model, torch.randint(0, V, (2000,)), 4, 10)
    assert abs(ppl - V) / V < 0.05


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_test_pass_in_chunks_equals_batch_one_step_one(cell):
    """Batch 1 with the state carried: chunks of any length = the tutorial's T = 1."""
    torch.manual_seed(0)
    model = PTBModel(30, 6, 2, keep_prob=0.5, init_scale=0.3, cell=cell).double()
    ids = torch.randint(0, 30, (200,))
    step_one = evaluate(model, ids, batch_size=1, num_steps=1)  # 199 steps, 199 predictions
    for chunk in (1, 7, 64, 500):
        assert evaluate_stream(model, ids, chunk=chunk) == pytest.approx(step_one, rel=1e-12)


def test_perplexity_is_exp_of_mean_token_cross_entropy():
    torch.manual_seed(0)
    model = PTBModel(11, 4, 1, init_scale=0.5)
    ids = torch.randint(0, 11, (41,))
    with torch.no_grad():
        logits, _ = model(ids[:-1].unsqueeze(1), model.init_state(1))
        ce = F.cross_entropy(logits.squeeze(1), ids[1:])
    assert evaluate_stream(model, ids) == pytest.approx(math.exp(float(ce)), rel=1e-5)


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh"])
def test_other_cells_run(cell):
    model = PTBModel(20, 4, 2, cell=cell)
    logits, state = model(torch.randint(0, 20, (3, 2)), model.init_state(2))
    assert logits.shape == (3, 2, 20)
    assert isinstance(state, torch.Tensor) and state.shape == (2, 2, 4)

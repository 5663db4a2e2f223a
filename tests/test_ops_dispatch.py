"""The dispatch helper and the silent-failure guards of the ops."""

from __future__ import annotations

import warnings

import pytest
import torch

import gradclip
from gradclip.ops import dispatch
from gradclip.ops.reduce import combine_partial_norms


def mixed_tensors() -> list[torch.Tensor]:
    """Interleaved dtypes, a sparse tensor, and the same tensor twice."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, generator=gen)
    sparse = torch.sparse_coo_tensor(
        torch.tensor([[0, 2, 2]]), torch.tensor([1.0, 2.0, 3.0]), (4,), check_invariants=True
    )
    return [
        a,
        torch.randn(3, generator=gen, dtype=torch.float64),
        sparse,
        torch.randn(2, 2, generator=gen, dtype=torch.float16),
        torch.randn(7, generator=gen),
        a,
        torch.randn(1, generator=gen, dtype=torch.float64),
    ]


def test_group_tensors_keeps_indices_and_picks_paths() -> None:
    tensors = mixed_tensors()
    groups = dispatch.group_tensors(tensors)
    assert sorted(i for g in groups for i in g.indices) == list(range(len(tensors)))
    for g in groups:
        assert all(tensors[i] is t for i, t in zip(g.indices, g.tensors, strict=True))
        assert all(t.dtype == g.dtype and t.device == g.device for t in g.tensors)
    assert [g.dtype for g in groups] == [torch.float32, torch.float64, torch.float16]
    assert len(groups[0].dense) == len(groups[0].tensors) - 1  # the sparse one is left out
    assert all(not g.foreach for g in dispatch.group_tensors(tensors, foreach=False))


def test_foreach_true_is_refused_where_unsupported() -> None:
    class Sub(torch.Tensor):
        pass

    odd = torch.ones(2).as_subclass(Sub)
    with pytest.raises(RuntimeError, match="foreach=True"):
        dispatch.group_tensors([odd], foreach=True)
    assert not dispatch.group_tensors([odd])[0].foreach


@pytest.mark.parametrize("foreach", [None, False])
def test_mul_in_place_matches_per_tensor_torch(foreach: bool | None) -> None:
    ours = [t.clone() for t in mixed_tensors()]
    ours[5] = ours[0]  # keep the duplicate: it is scaled twice, like a Python loop would
    expected = [t.clone().to_dense() for t in mixed_tensors()]
    dispatch.mul_(ours, torch.tensor(0.5), foreach=foreach)
    for k, (o, e) in enumerate(zip(ours, expected, strict=True)):
        factor = 0.25 if k in (0, 5) else 0.5
        torch.testing.assert_close(o.to_dense(), e * factor, rtol=0, atol=0)


def test_mul_per_tensor_factors_follow_input_order() -> None:
    ts = [torch.ones(2), torch.ones(3, dtype=torch.float64), torch.ones(1)]
    dispatch.mul_(ts, torch.tensor([2.0, 3.0, 4.0]))
    assert [t.tolist() for t in ts] == [[2.0, 2.0], [3.0, 3.0, 3.0], [4.0]]


def test_mul_out_of_place_keeps_order_and_inputs() -> None:
    tensors = mixed_tensors()
    before = [t.clone().to_dense() for t in tensors]
    out = dispatch.mul(tensors, torch.tensor(3.0))
    for t, o, b in zip(tensors, out, before, strict=True):
        assert o.dtype == t.dtype and o.layout == t.layout
        torch.testing.assert_close(o.to_dense(), b * 3.0, rtol=0, atol=0)
        torch.testing.assert_close(t.to_dense(), b, rtol=0, atol=0)


def test_tensor_norms_mixed_devices_dtypes_sparse_in_input_order() -> None:
    tensors = mixed_tensors()
    if torch.cuda.is_available():
        tensors.insert(1, torch.randn(4, device="cuda"))
    norms = gradclip.tensor_norms(tensors)
    for n, t in zip(norms.tolist(), tensors, strict=True):
        ref = torch.linalg.vector_norm(t.to_dense(), dtype=torch.float64)  # duplicates summed
        assert n == pytest.approx(float(ref), rel=1e-3)


def test_clamp_matches_torch_clamp() -> None:
    tensors = [t for t in mixed_tensors() if not t.is_sparse]
    expected = [t.clamp(-0.3, 0.3) for t in tensors]
    dispatch.clamp_(list({id(t): t for t in tensors}.values()), 0.3)
    for t, e in zip(tensors, expected, strict=True):
        torch.testing.assert_close(t, e, rtol=0, atol=0)


def test_combine_partial_norms_is_the_p_norm_of_the_partials() -> None:
    partials = torch.tensor([3.0, 4.0, 12.0], dtype=torch.float64)
    for p in (1.0, 2.0, 3.0, float("inf")):
        expected = torch.linalg.vector_norm(partials, p)
        torch.testing.assert_close(combine_partial_norms(partials, p), expected)
    huge = torch.tensor([3e30, 4e30])
    assert float(combine_partial_norms(huge, 2.0)) == pytest.approx(5e30, rel=1e-6)
    assert float(combine_partial_norms(torch.zeros(0), 2.0)) == 0.0


# --------------------------------------------------------------------------- guards
DROP_INS = [
    lambda ps: gradclip.clip_grad_norm_(ps, 1.0),
    lambda ps: gradclip.clip_grad_value_(ps, 1.0),
    lambda ps: gradclip.make_clipper("norm").clip(ps),
]


@pytest.mark.parametrize("clip", DROP_INS)
def test_exhausted_generator_warns(clip) -> None:  # type: ignore[no-untyped-def]
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    params = model.parameters()
    list(params)  # consumed once
    with pytest.warns(UserWarning, match="exhausted generator, e.g. model.parameters"):
        clip(params)


@pytest.mark.parametrize("clip", DROP_INS)
def test_parameters_without_grad_warn(clip) -> None:  # type: ignore[no-untyped-def]
    model = torch.nn.Linear(2, 2)  # no backward
    with pytest.warns(UserWarning, match=r"no parameter has \.grad: were gradients passed"):
        clip(model.parameters())


@pytest.mark.parametrize("clip", DROP_INS)
def test_normal_use_does_not_warn(clip) -> None:  # type: ignore[no-untyped-def]
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip(model.parameters())


def test_gradients_passed_as_parameters_warn_in_drop_ins_only() -> None:
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    with pytest.warns(UserWarning, match="no parameter has"):
        assert gradclip.clip_grad_norm_(grads, 1.0).item() == 0.0  # torch's return value
    with warnings.catch_warnings():  # bare gradients are valid clipper input
        warnings.simplefilter("error")
        stats = gradclip.make_clipper("norm", max_norm=1e-3).clip(grads)
    assert bool(stats.clipped)


def test_empty_input_keeps_torchs_return_values() -> None:
    with pytest.warns(UserWarning):
        assert torch.equal(gradclip.clip_grad_norm_([], 1.0), torch.tensor(0.0))
    with pytest.warns(UserWarning):
        assert gradclip.clip_grad_value_([], 1.0) is None

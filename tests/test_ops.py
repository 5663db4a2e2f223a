"""Tests for gradclip.ops against hand-computed values, float64 references and torch."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gradclip
from gradclip import ops
from gradclip.ops import norms as ops_norms

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SCALES = [0.0, 1e-30, 1.0, 1e30, math.inf, math.nan]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- strategies
@st.composite
def tensor_lists(draw, dtypes=DTYPES, scales=SCALES, allow_none=True, min_size=0):
    """Lists of random tensors (and Nones) with one dtype and one scale each."""
    shapes = draw(
        st.lists(
            st.one_of(
                st.none() if allow_none else st.nothing(),
                st.lists(st.integers(1, 6), min_size=0, max_size=3),
            ),
            min_size=min_size,
            max_size=5,
        )
    )
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        if shape is None:
            out.append(None)
            continue
        scale = draw(st.sampled_from(scales))
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        if math.isfinite(scale):
            x = x * scale
        else:  # plant one non-finite entry among ordinary values
            x.view(-1)[0] = scale
        out.append(x.to(dtype))
    return out


def reference_norm(tensors, p=2.0):
    """The global p-norm in float64 with NumPy, from the tensors' exact values."""
    values = [t.detach().to(torch.float64).numpy().ravel() for t in tensors if t is not None]
    if not values:
        return 0.0
    flat = np.concatenate(values)
    if flat.size == 0:
        return 0.0
    if np.isnan(flat).any():
        return math.nan
    if p == math.inf:
        return float(np.abs(flat).max())
    m = float(np.abs(flat).max())
    if m == 0 or math.isinf(m):
        return m
    return m * float(np.sum(np.abs(flat / m) ** p) ** (1 / p))


def assert_close_or_both_nan(actual: float, expected: float, rtol: float) -> None:
    if math.isnan(expected):
        assert math.isnan(actual)
    elif math.isinf(expected):
        assert actual == expected
    else:
        assert actual == pytest.approx(expected, rel=rtol, abs=0)


# --------------------------------------------------------------------------- global_norm
@FAST
@given(tensor_lists(), st.sampled_from([1.0, 2.0, 3.0, math.inf]))
def test_global_norm_matches_float64_reference(tensors, p):
    expected = reference_norm(tensors, p)
    result = gradclip.global_norm(tensors, p)
    assert result.dim() == 0
    assert result.dtype in (torch.float32, torch.float64)
    rtol = 1e-12 if all(t is None or t.dtype == torch.float64 for t in tensors) else 1e-5
    expected_cast = expected if result.dtype == torch.float64 else float(np.float32(expected))
    assert_close_or_both_nan(result.item(), expected_cast, rtol)


def test_global_norm_hand_computed():
    t = [torch.tensor([3.0]), None, torch.tensor([[4.0, 0.0], [0.0, 12.0]])]
    assert gradclip.global_norm(t).item() == 13.0
    assert gradclip.global_norm(t, 1).item() == 19.0
    assert gradclip.global_norm(t, math.inf).item() == 12.0
    assert gradclip.global_norm(t, "inf").item() == 12.0


def test_global_norm_empty_and_all_none():
    assert torch.equal(gradclip.global_norm([]), torch.tensor(0.0))
    assert torch.equal(gradclip.global_norm([None, None]), torch.tensor(0.0))
    assert gradclip.global_norm([torch.zeros(0)]).item() == 0.0


def test_global_norm_no_overflow_or_underflow_in_float32():
    big = torch.full((10,), 1e30)
    assert torch.linalg.vector_norm(big).isinf()  # torch's own kernel overflows
    assert gradclip.global_norm([big]).item() == pytest.approx(math.sqrt(10) * 1e30, rel=1e-6)
    tiny = torch.full((10,), 1e-30)
    assert gradclip.global_norm([tiny]).item() == pytest.approx(math.sqrt(10) * 1e-30, rel=1e-6)
    # the combination across tensors must not overflow either
    many = [torch.full((1,), 3e38) for _ in range(4)]
    assert gradclip.global_norm(many, 1).isinf()  # true value 1.2e39 exceeds float32
    assert gradclip.global_norm([many[0], torch.full((1,), 1e38)]).item() == pytest.approx(
        math.hypot(3e38, 1e38), rel=1e-6
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_global_norm_low_precision_accumulates_in_float32(dtype):
    x = torch.ones(70_000, dtype=dtype)  # the float16 sum of squares would overflow at 65504
    result = gradclip.global_norm([x])
    assert result.dtype == torch.float32
    assert result.item() == pytest.approx(math.sqrt(70_000), rel=1e-6)


def test_global_norm_sparse_gradients_coalesce_duplicates():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 1, 2, 7])).pow(2).sum().backward()
    grad = emb.weight.grad
    assert grad.is_sparse and not grad.is_coalesced()
    expected = grad.to_dense().norm().item()
    assert gradclip.global_norm([grad]).item() == pytest.approx(expected, rel=1e-6)


def test_global_norm_mixed_dtypes_promote():
    result = gradclip.global_norm([torch.ones(4, dtype=torch.float64), torch.ones(5)])
    assert result.dtype == torch.float64
    assert result.item() == pytest.approx(3.0, rel=1e-7)  # the float32 part is normed in float32


def test_ops_never_read_device_values_on_the_host():
    """On the meta device any host read (.item(), bool(), float()) raises."""
    grads = [torch.empty(3, 4, device="meta"), None, torch.empty(5, device="meta")]
    norm = gradclip.global_norm(grads)
    assert norm.device.type == "meta"
    clipped, _ = gradclip.clip_by_global_norm(grads, 1.0)
    assert clipped[1] is None and clipped[0].shape == (3, 4)
    gradclip.scale_(grads, norm)
    params = [torch.nn.Parameter(torch.empty(3, device="meta"))]
    params[0].grad = torch.empty(3, device="meta")
    gradclip.clip_grad_norm_(params, 1.0)
    gradclip.clip_grad_norm_(params, torch.tensor(1.0, device="meta"))
    gradclip.clip_grad_value_(params, 1.0)


# --------------------------------------------------------------------------- clip_by_global_norm
@FAST
@given(tensor_lists(scales=[0.0, 1e-30, 1.0, 1e30]), st.sampled_from([1e-3, 0.5, 1.0, 5.0, 1e35]))
def test_clip_by_global_norm_properties(tensors, clip_norm):
    assume(all(t is None or bool(torch.isfinite(t).all()) for t in tensors))  # float16 × 1e30
    before = [None if t is None else t.clone() for t in tensors]
    clipped, norm = gradclip.clip_by_global_norm(tensors, clip_norm)
    # functional: inputs untouched, None kept in place
    for t, b in zip(tensors, before, strict=True):
        assert (t is None) == (b is None)
        if t is not None:
            assert torch.equal(t, b)
    assert [c is None for c in clipped] == [t is None for t in tensors]
    present = [(t, c) for t, c in zip(tensors, clipped, strict=True) if t is not None]
    n = norm.item()
    post = reference_norm([c for _, c in present])
    low = any(t.dtype in (torch.float16, torch.bfloat16) for t, _ in present)
    rounding = 1e-2 if low else 1e-5
    assert post <= clip_norm * (1 + rounding)
    if n <= clip_norm:  # below the threshold the values are unchanged, bit for bit
        for t, c in present:
            assert torch.equal(t, c)
    else:  # direction preserved: one common positive factor c/n
        factor = clip_norm / n
        for t, c in present:
            expected = t.to(torch.float64) * np.float32(factor).item()
            tiny = torch.finfo(c.dtype).tiny  # products may underflow in the tensor's dtype
            torch.testing.assert_close(c.to(torch.float64), expected, rtol=rounding, atol=tiny)


def test_clip_by_global_norm_hand_computed_tf_cases():
    t = [torch.tensor([3.0, 0.0]), None, torch.tensor([[4.0]])]
    clipped, norm = gradclip.clip_by_global_norm(t, 2.5)
    assert norm.item() == 5.0
    assert clipped[1] is None
    torch.testing.assert_close(clipped[0], torch.tensor([1.5, 0.0]), rtol=0, atol=0)
    torch.testing.assert_close(clipped[2], torch.tensor([[2.0]]), rtol=0, atol=0)
    # exactly at the threshold: scale 1, nothing changes
    same, _ = gradclip.clip_by_global_norm(t, 5.0)
    assert torch.equal(same[0], t[0]) and torch.equal(same[2], t[2])


def test_clip_by_global_norm_use_norm_replaces_the_norm():
    t = [torch.tensor([3.0, 4.0])]
    clipped, norm = gradclip.clip_by_global_norm(t, 1.0, use_norm=torch.tensor(10.0))
    assert norm.item() == 10.0
    torch.testing.assert_close(clipped[0], torch.tensor([0.3, 0.4]))
    clipped, norm = gradclip.clip_by_global_norm(t, 1.0, use_norm=0.5)
    assert norm.item() == 0.5 and torch.equal(clipped[0], t[0])


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_clip_by_global_norm_non_finite_norm_gives_all_nan(bad):
    t = [torch.tensor([1.0, bad]), torch.tensor([2.0]), None]
    clipped, norm = gradclip.clip_by_global_norm(t, 1.0)
    assert not torch.isfinite(norm)
    assert torch.isnan(clipped[0]).all() and torch.isnan(clipped[1]).all() and clipped[2] is None
    clipped, _ = gradclip.clip_by_global_norm([torch.ones(2)], 1.0, use_norm=math.inf)
    assert torch.isnan(clipped[0]).all()


def test_clip_by_global_norm_zero_tensors_and_empty_list():
    clipped, norm = gradclip.clip_by_global_norm([torch.zeros(3)], 1.0)
    assert norm.item() == 0.0 and torch.equal(clipped[0], torch.zeros(3))
    assert gradclip.clip_by_global_norm([], 1.0) == ([], torch.tensor(0.0))


def test_clip_by_global_norm_sparse():
    emb = torch.nn.Embedding(6, 2, sparse=True)
    emb(torch.tensor([0, 0, 3])).sum().backward()
    dense = emb.weight.grad.to_dense()
    clipped, norm = gradclip.clip_by_global_norm([emb.weight.grad], 1.0)
    assert norm.item() == pytest.approx(dense.norm().item())
    torch.testing.assert_close(clipped[0].to_dense(), dense / dense.norm())


def test_clip_by_global_norm_argument_errors():
    with pytest.raises(TypeError, match="list or tuple"):
        gradclip.clip_by_global_norm(torch.ones(2), 1.0)
    with pytest.raises(TypeError, match=r"tensors\[1\]"):
        gradclip.clip_by_global_norm([torch.ones(1), 3.0], 1.0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="clip_norm"):
            gradclip.clip_by_global_norm([torch.ones(1)], bad)
    with pytest.raises(TypeError, match="clip_norm"):
        gradclip.clip_by_global_norm([torch.ones(1)], "5")
    with pytest.raises(TypeError, match="use_norm"):
        gradclip.clip_by_global_norm([torch.ones(1)], 1.0, use_norm="x")
    with pytest.raises(TypeError, match="floating dtype"):
        gradclip.clip_by_global_norm([torch.ones(1, dtype=torch.int64)], 1.0)


# --------------------------------------------------------------------------- clip_by_norm
def test_clip_by_norm_whole_tensor_and_axes():
    t = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    whole = gradclip.clip_by_norm(t, 1.0)
    n = math.sqrt(25.25)
    torch.testing.assert_close(whole, t / n)
    rows = gradclip.clip_by_norm(t, 1.0, axes=1)
    torch.testing.assert_close(rows, torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    cols = gradclip.clip_by_norm(t, 1.0, axes=[0])
    expected = t / torch.clamp(torch.linalg.vector_norm(t, dim=0, keepdim=True), min=1.0)
    torch.testing.assert_close(cols, expected)
    torch.testing.assert_close(gradclip.clip_by_norm(t, 1.0, axes=-1), rows)


def test_clip_by_norm_zero_norm_gives_zeros_not_nan():
    for c in (0.0, 1.0):
        assert torch.equal(gradclip.clip_by_norm(torch.zeros(2, 3), c), torch.zeros(2, 3))
    t = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(
        gradclip.clip_by_norm(t, 2.5, axes=1), torch.tensor([[0.0, 0.0], [1.5, 2.0]])
    )
    assert torch.equal(gradclip.clip_by_norm(t, 0.0), torch.zeros(2, 2))


@FAST
@given(
    tensor_lists(
        dtypes=[torch.float32, torch.float64], scales=[1e-3, 1.0, 1e3], allow_none=False, min_size=1
    ),
    st.floats(0.01, 100),
)
def test_clip_by_norm_matches_formula(tensors, c):
    t = tensors[0]
    out = gradclip.clip_by_norm(t, c)
    n = reference_norm([t])
    expected = (
        t.to(torch.float64) * c / max(n, c) if n > 0 else torch.zeros_like(t, dtype=torch.float64)
    )
    torch.testing.assert_close(out.to(torch.float64), expected, rtol=1e-5, atol=1e-30)
    assert out.dtype == t.dtype


def test_clip_by_norm_low_precision_and_sparse():
    t = torch.full((4,), 300.0, dtype=torch.float16)  # sum of squares overflows float16
    out = gradclip.clip_by_norm(t, 1.0)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), torch.full((4,), 0.5), rtol=1e-3, atol=0)
    sparse = torch.sparse_coo_tensor(
        [[0, 0, 2]], [3.0, 3.0, 8.0], (4,), check_invariants=True
    )  # duplicates add to 6
    out = gradclip.clip_by_norm(sparse, 5.0)
    torch.testing.assert_close(out.to_dense(), torch.tensor([3.0, 0.0, 4.0, 0.0]))
    with pytest.raises(ValueError, match="axes"):
        gradclip.clip_by_norm(sparse, 1.0, axes=0)


def test_clip_by_norm_argument_errors():
    with pytest.raises(TypeError, match="t must be a Tensor"):
        gradclip.clip_by_norm([1.0], 1.0)
    with pytest.raises(ValueError, match="clip_norm must be non-negative"):
        gradclip.clip_by_norm(torch.ones(2), -1.0)
    with pytest.raises(ValueError, match="NaN"):
        gradclip.clip_by_norm(torch.ones(2), math.nan)
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        gradclip.clip_by_norm(torch.ones(2, 2), 1.0, axes=2)


# --------------------------------------------------------------------------- clip_by_value
def test_clip_by_value_hand_and_broadcast():
    t = torch.tensor([[-2.0, 0.5, 3.0], [1.0, -0.1, math.nan]])
    out = gradclip.clip_by_value(t, -1.0, 1.0)
    torch.testing.assert_close(
        out, torch.tensor([[-1.0, 0.5, 1.0], [1.0, -0.1, math.nan]]), equal_nan=True
    )
    lo, hi = torch.tensor([-1.0, 0.0, -5.0]), torch.tensor([1.0, 0.2, 2.0])
    out = gradclip.clip_by_value(t, lo, hi)
    torch.testing.assert_close(
        out, torch.tensor([[-1.0, 0.2, 2.0], [1.0, 0.0, math.nan]]), equal_nan=True
    )
    with pytest.raises(ValueError, match="change the shape"):
        gradclip.clip_by_value(torch.ones(3), torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="must not exceed"):
        gradclip.clip_by_value(t, 1.0, -1.0)
    with pytest.raises(ValueError, match="NaN"):
        gradclip.clip_by_value(t, math.nan, 1.0)


def test_clip_by_value_sparse_coalesces_first():
    sparse = torch.sparse_coo_tensor([[1, 1, 3]], [0.8, 0.8, -4.0], (5,), check_invariants=True)
    out = gradclip.clip_by_value(sparse, -1.0, 1.0)
    torch.testing.assert_close(out.to_dense(), torch.tensor([0.0, 1.0, 0.0, -1.0, 0.0]))


# --------------------------------------------------------------------------- torch drop-ins
def _nothing_to_clip(grads):
    """The guard's warning when no parameter has a gradient, else no check."""
    if all(g is None for g in grads):
        return pytest.warns(UserWarning, match="nothing to clip")
    return contextlib.nullcontext()


def _param_pairs(grads):
    """Two identical parameter lists with the given grads (None means no grad)."""
    pairs = ([], [])
    for g in grads:
        for group in pairs:
            p = torch.nn.Parameter(torch.zeros(g.shape if g is not None else (1,)))
            p.grad = None if g is None else g.clone()
            group.append(p)
    return pairs


@FAST
@given(
    tensor_lists(dtypes=[torch.float32], scales=[0.0, 1e-30, 1.0, 1e30, math.inf, math.nan]),
    st.sampled_from([0.0, 1e-3, 1.0, 5.0, 1e30, math.inf]),
    st.sampled_from([1.0, 2.0, math.inf]),
    st.sampled_from([None, True, False]),
)
def test_clip_grad_norm_equals_torch_bit_for_bit(grads, max_norm, norm_type, foreach):
    ours, theirs = _param_pairs(grads)
    with _nothing_to_clip(grads):
        got = gradclip.clip_grad_norm_(ours, max_norm, norm_type, foreach=foreach)
    want = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type, foreach=foreach)
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    for a, b in zip(ours, theirs, strict=True):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)


@FAST
@given(
    tensor_lists(dtypes=[torch.float32], scales=[0.0, 1.0, 1e30, math.inf, math.nan]),
    st.sampled_from([0.0, 0.1, 1.0, 1e30]),
    st.sampled_from([None, True, False]),
)
def test_clip_grad_value_equals_torch_bit_for_bit(grads, clip_value, foreach):
    ours, theirs = _param_pairs(grads)
    with _nothing_to_clip(grads):
        assert gradclip.clip_grad_value_(ours, clip_value, foreach=foreach) is None
    if all(g is None for g in grads):
        return  # torch raises on an empty gradient list; gradclip does nothing
    torch.nn.utils.clip_grad_value_(theirs, clip_value, foreach=foreach)
    for a, b in zip(ours, theirs, strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, equal_nan=True)


def test_clip_grad_norm_single_tensor_generator_and_no_grads():
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([3.0, 4.0])
    assert gradclip.clip_grad_norm_(w, 1.0).item() == 5.0
    with pytest.warns(UserWarning, match="empty generator"):
        assert gradclip.clip_grad_norm_((p for p in []), 1.0).item() == 0.0
    with pytest.warns(UserWarning, match="no parameter has .grad"):
        assert gradclip.clip_grad_norm_([torch.nn.Parameter(torch.ones(2))], 1.0).item() == 0.0


def test_clip_grad_norm_error_if_nonfinite_leaves_grads_untouched():
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.tensor([math.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        gradclip.clip_grad_norm_([w], 1.0, error_if_nonfinite=True)
    assert torch.equal(w.grad, torch.tensor([math.inf, 1.0]))


def test_clip_grad_norm_tensor_max_norm_matches_float():
    a, b = _param_pairs([torch.tensor([3.0, 4.0])])
    gradclip.clip_grad_norm_(a, torch.tensor(2.0))
    torch.nn.utils.clip_grad_norm_(b, 2.0)
    assert torch.equal(a[0].grad, b[0].grad)


def test_clip_grad_norm_and_value_support_sparse_embedding():
    torch.manual_seed(0)
    sparse = torch.nn.Embedding(20, 4, sparse=True)
    dense = torch.nn.Embedding(20, 4)
    dense.weight.data.copy_(sparse.weight.data)
    idx = torch.tensor([3, 3, 5, 19, 3])
    for emb in (sparse, dense):
        (emb(idx) * 10).pow(2).sum().backward()
    got = gradclip.clip_grad_norm_(sparse.parameters(), 1.0)
    want = torch.nn.utils.clip_grad_norm_(dense.parameters(), 1.0)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(sparse.weight.grad.to_dense(), dense.weight.grad)
    gradclip.clip_grad_value_(sparse.parameters(), 0.01)
    torch.nn.utils.clip_grad_value_(dense.parameters(), 0.01)
    torch.testing.assert_close(sparse.weight.grad.to_dense(), dense.weight.grad)


def test_drop_in_argument_errors():
    w = torch.nn.Parameter(torch.zeros(2))
    w.grad = torch.ones(2)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="max_norm"):
            gradclip.clip_grad_norm_([w], bad)
        with pytest.raises(ValueError, match="clip_value"):
            gradclip.clip_grad_value_([w], bad)
    for bad_p in (0, -2.0, math.nan, -math.inf):
        with pytest.raises(ValueError, match="norm_type"):
            gradclip.clip_grad_norm_([w], 1.0, norm_type=bad_p)
    with pytest.raises(TypeError, match="norm_type"):
        gradclip.clip_grad_norm_([w], 1.0, norm_type="fro")
    with pytest.raises(TypeError, match="parameters"):
        gradclip.clip_grad_norm_(3.0, 1.0)
    with pytest.raises(TypeError, match=r"parameters\[1\]"):
        gradclip.clip_grad_norm_([w, "w"], 1.0)
    with pytest.raises(ValueError, match="max_norm must be a scalar"):
        gradclip.clip_grad_norm_([w], torch.ones(2))


def test_scale_in_place_groups_and_sparse():
    dense32, dense64 = torch.ones(3), torch.ones(2, dtype=torch.float64)
    sparse = torch.sparse_coo_tensor([[0]], [2.0], (3,), check_invariants=True)
    gradclip.scale_([dense32, None, dense64, sparse], torch.tensor(0.25))
    assert torch.equal(dense32, torch.full((3,), 0.25))
    assert torch.equal(dense64, torch.full((2,), 0.25, dtype=torch.float64))
    assert torch.equal(sparse.to_dense(), torch.tensor([0.5, 0.0, 0.0]))


def test_check_threshold_and_norm_type_messages():
    assert ops.check_norm_type("inf") == math.inf
    with pytest.raises(TypeError, match="norm_type"):
        ops.check_norm_type(True)
    with pytest.raises(ValueError, match="x must be positive"):
        ops.check_threshold(0.0, "x", allow_zero=False)
    with pytest.raises(ValueError, match="x must be finite"):
        ops.check_threshold(math.inf, "x", allow_inf=False)


def test_per_tensor_norms_keep_input_order_across_kernels():
    """Large tensors take the BLAS path and small ones the fused call; order is kept."""
    sizes = [ops_norms._DOT_MIN_NUMEL, 3, ops_norms._DOT_MIN_NUMEL * 2, 5, 1]
    tensors = [torch.full((n,), float(i + 1)) for i, n in enumerate(sizes)]
    norms = ops_norms._per_tensor_norms(tensors, 2.0, torch.device("cpu"), torch.float32)
    expected = torch.tensor([(i + 1) * math.sqrt(n) for i, n in enumerate(sizes)])
    torch.testing.assert_close(norms, expected)


@FAST
@given(tensor_lists(), st.sampled_from([1.0, 2.0, math.inf]))
def test_tensor_norms_in_input_order_match_reference(tensors, p):
    present = [t for t in tensors if t is not None]
    norms = gradclip.tensor_norms(tensors, p)
    assert norms.shape == (len(present),)
    for value, t in zip(norms.tolist(), present, strict=True):
        expected = reference_norm([t], p)
        if norms.dtype == torch.float32:
            expected = float(np.float32(expected))
        rtol = 1e-12 if t.dtype == torch.float64 else 1e-5
        assert_close_or_both_nan(value, expected, rtol)


def test_tensor_norms_tiny_tensor_beside_a_normal_one_does_not_underflow():
    norms = gradclip.tensor_norms([torch.tensor(1.5410e-30), torch.tensor(-0.2934)])
    assert norms[0].item() == pytest.approx(1.5410e-30, rel=1e-6)


def test_tensor_norms_mixed_groups_keep_order_and_empty_tensors_are_zero():
    tensors = [torch.ones(4), torch.ones(9, dtype=torch.float64), torch.zeros(0), torch.ones(1)]
    norms = gradclip.tensor_norms(tensors)
    assert norms.tolist() == [2.0, 3.0, 0.0, 1.0]
    assert gradclip.global_norm([torch.zeros(0), torch.ones(2)], "inf").item() == 1.0

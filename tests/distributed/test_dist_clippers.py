"""Every registered clipper, in every distributed setup, equals one process on the full gradient.

For each clipper in :data:`gradclip.clippers.CLIPPER_NAMES` (a new clipper is
picked up automatically, with its default options) and each setup of
:mod:`setups`, four steps with gradients of varying size are clipped on 2 gloo
ranks and, on each rank, by a second clipper on plain full copies. Stats,
the clipped gradients (gathered with ``full_tensor()``) and the clipper state
must match the single-process reference, and be bitwise identical on both
ranks.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.distributed as dist
from setups import SETUPS, build

from gradclip import ClippedOptimizer
from gradclip.clippers import CLIPPER_NAMES, make_clipper

# Options under which each clipper clips in these tiny setups (others: defaults).
OPTIONS: dict[str, dict[str, Any]] = {
    "norm": {"max_norm": 1.0},
    "tensor-norm": {"max_norm": 0.5},
    "value": {"clip_value": 0.3},
    "autoclip": {"percentile": 50.0, "window": 8},
    "zclip": {"warmup": 2, "z_threshold": 1.0},
    "agc": {"clip_factor": 0.05},
    "warmup-mean": {"warmup_steps": 2, "factor": 0.5},
}
GRAD_SCALES = (1.0, 3.0, 0.5, 20.0)
TOL = {"rtol": 1e-5, "atol": 1e-6}


def _state(clipper: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in clipper.state_dict()["state"].items()}


def _stats(stats: Any) -> list[torch.Tensor]:
    return [stats.norm, stats.threshold, stats.scale, stats.clipped_norm,
            stats.clipped, stats.finite]  # fmt: skip


def clipper_case(setup_name: str, name: str) -> list[Any]:
    """Per step: this rank's stats and state (checked against the reference here)."""
    dist_clipper = make_clipper(name, **OPTIONS.get(name, {}))
    ref_clipper = make_clipper(name, **OPTIONS.get(name, {}))
    out = []
    for step, scale in enumerate(GRAD_SCALES):
        s = build(setup_name, seed=step, grad_scale=scale)
        got = dist_clipper.clip(s.params, group=s.group)
        want = ref_clipper.clip(s.ref_params)
        where = f"{setup_name}/{name} step {step}"
        for a, b in zip(_stats(got), _stats(want), strict=True):
            assert a.dtype == b.dtype, where
            if a.dtype == torch.bool:
                assert bool(a) == bool(b), where
            else:
                torch.testing.assert_close(a, b, **TOL, msg=lambda m, w=where: f"{w}: {m}")
        for (pname, q), g in zip(s.ref_params, s.full_grads(), strict=True):
            label = f"{where} {pname}"
            torch.testing.assert_close(g, q.grad, **TOL, msg=lambda m, w=label: f"{w}: {m}")
        state, ref_state = _state(dist_clipper), _state(ref_clipper)
        torch.testing.assert_close(state, ref_state, **TOL, equal_nan=True)
        out.append((_stats(got), state))
    return out


@pytest.mark.parametrize("name", CLIPPER_NAMES)
@pytest.mark.parametrize("setup_name", list(SETUPS))
def test_clipper_matches_one_process(cluster, setup_name, name):
    r0, r1 = cluster.run(clipper_case, setup_name, name)
    if name in OPTIONS:  # the options were chosen so that something is clipped
        assert any(bool(stats[4]) for stats, _ in r0), "nothing was clipped: a weak test"
    for (stats0, state0), (stats1, state1) in zip(r0, r1, strict=True):
        for a, b in zip(stats0, stats1, strict=True):
            assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all())
        assert state0.keys() == state1.keys()
        for k in state0:  # adaptive state: bit for bit on every rank
            assert torch.equal(state0[k].nan_to_num(-1.0), state1[k].nan_to_num(-1.0)), k


def nan_on_one_rank_case(setup_name: str, name: str) -> tuple[bool, dict[str, torch.Tensor]]:
    """Two good steps, then a NaN in rank 1's local gradient under nonfinite='skip'."""
    clipper = make_clipper(name, **OPTIONS.get(name, {}), nonfinite="skip")
    for step in range(2):
        s = build(setup_name, seed=step)
        clipper.clip(s.params, group=s.group)
    before = _state(clipper)
    s = build(setup_name, seed=5)
    grads = [q.grad for _, q in s.params]
    local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
    if dist.get_rank() == 1:
        big = max(range(len(local)), key=lambda i: local[i].numel())
        local[big].view(-1)[0] = math.nan
    untouched = [g.clone() for g in local]
    stats = clipper.clip(s.params, group=s.group)
    assert not bool(stats.finite)
    for a, b in zip(local, untouched, strict=True):  # gradients left as they were
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    after = _state(clipper)
    for k in before:
        assert torch.equal(before[k].nan_to_num(-1.0), after[k].nan_to_num(-1.0)), k
    return bool(stats.finite), after


@pytest.mark.parametrize("name", CLIPPER_NAMES)
@pytest.mark.parametrize("setup_name", ["fsdp", "mesh_2d", "pipeline"])
def test_nan_on_one_rank_skips_on_every_rank(cluster, setup_name, name):
    (f0, s0), (f1, s1) = cluster.run(nan_on_one_rank_case, setup_name, name)
    assert f0 is False and f1 is False
    for k in s0:
        assert torch.equal(s0[k].nan_to_num(-1.0), s1[k].nan_to_num(-1.0)), k


def error_on_one_rank_case(name: str) -> str:
    """A NaN on rank 1 under nonfinite='error': every rank raises, nothing is written."""
    clipper = make_clipper(name, **OPTIONS.get(name, {}), nonfinite="error")
    s = build("fsdp")
    local = [q.grad.to_local() for _, q in s.params]
    if dist.get_rank() == 1:
        local[0].view(-1)[0] = math.nan
    before = [g.clone() for g in local]
    with pytest.raises(FloatingPointError) as info:
        clipper.clip(s.params)
    for a, b in zip(local, before, strict=True):
        assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    dist.barrier()  # both ranks are still in step
    return str(info.value)


@pytest.mark.parametrize("name", CLIPPER_NAMES)
def test_nan_under_error_raises_on_every_rank(cluster, name):
    messages = cluster.run(error_on_one_rank_case, name)
    assert all("nan" in m for m in messages)


def collectives_case(setup_name: str, name: str) -> list[tuple[str, int]]:
    """The collectives one clip issues (any kind, DTensor's included), with sizes."""
    import torch.distributed._functional_collectives as funcol

    s = build(setup_name)
    clipper = make_clipper(name, **OPTIONS.get(name, {}))
    calls = []
    patched = {}
    for module, attr in [(dist, "all_reduce"), (dist, "all_gather"), (dist, "broadcast"),
                         (dist, "reduce_scatter"), (dist, "all_gather_into_tensor"),
                         (funcol, "all_reduce"), (funcol, "all_gather_tensor"),
                         (funcol, "reduce_scatter_tensor")]:  # fmt: skip
        original = getattr(module, attr)
        patched[(module, attr)] = original

        def counting(*args: Any, _f: Any = original, _n: str = attr, **kw: Any) -> Any:
            first = args[0] if args else None
            calls.append((_n, first.numel() if isinstance(first, torch.Tensor) else -1))
            return _f(*args, **kw)

        setattr(module, attr, counting)
    try:
        clipper.clip(s.params, group=s.group)
    finally:
        for (module, attr), original in patched.items():
            setattr(module, attr, original)
    return calls


COLLECTIVES = [("ddp", 0), ("fsdp", 1), ("mesh_2d", 1), ("two_meshes", 1), ("pipeline", 1)]


@pytest.mark.parametrize("name", CLIPPER_NAMES)
@pytest.mark.parametrize(("setup_name", "expected"), COLLECTIVES)
def test_one_collective_per_clip_none_under_ddp(cluster, setup_name, expected, name):
    calls0, calls1 = cluster.run(collectives_case, setup_name, name)
    assert len(calls0) == len(calls1) == expected
    assert all(c[0] == "all_reduce" for c in calls0)


# float64 slots per clip under FSDP2, as docs/distributed.md states them: k_s = 4
# sharded tensors (2 weights, 2 biases; each bias is one AGC unit split over ranks).
K_S = 4
SLOTS = {"tensor-norm": K_S + 5, "value": 2 * K_S + 4, "agc": K_S + 5 + 2 * (1 + 1)}


@pytest.mark.parametrize("name", CLIPPER_NAMES)
def test_bytes_on_the_wire_match_the_docs(cluster, name):
    calls, _ = cluster.run(collectives_case, "fsdp", name)
    assert calls == [("all_reduce", SLOTS.get(name, K_S + 3))]


def optimizer_case(name: str, fused: bool) -> list[float]:
    """ClippedOptimizer(Adam) under FSDP2, three steps, against one process."""
    s = build("fsdp")
    params, ref = [p for _, p in s.params], [p for _, p in s.ref_params]
    opts = [
        ClippedOptimizer(
            torch.optim.Adam(ps, lr=0.1, fused=fused), make_clipper(name, **OPTIONS.get(name, {}))
        )
        for ps in (params, ref)
    ]
    norms = []
    for step, scale in enumerate(GRAD_SCALES[:3]):
        if step:  # fresh gradients of the same size on both sides
            full = build("fsdp", seed=step, grad_scale=scale)
            for (_, p), (_, q), (_, f) in zip(s.params, s.ref_params, full.ref_params, strict=True):
                p.grad.to_local().copy_(distribute_like(f.grad, p.grad))
                q.grad.copy_(f.grad)
        got, want = (o.step() for o in opts)
        torch.testing.assert_close(got.norm, want.norm, **TOL)
        for p, q in zip(params, ref, strict=True):
            torch.testing.assert_close(p.full_tensor(), q.detach(), **TOL)
        norms.append(float(got.norm))
    return norms


def distribute_like(full: torch.Tensor, like: Any) -> torch.Tensor:
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements).to_local()


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", ["norm", "zclip", "agc"])
def test_clipped_adam_under_fsdp_matches_one_process(cluster, name, fused):
    n0, n1 = cluster.run(optimizer_case, name, fused)
    assert n0 == n1


def empty_stage_case(name: str) -> float:
    """A pipeline rank with no gradient this step still joins the one all-reduce."""
    s = build("pipeline")
    clipper = make_clipper(name, **OPTIONS.get(name, {}))
    held = s.params if dist.get_rank() == 0 else []
    stats = clipper.clip(held, group=s.group)
    owner = s.owner or []
    stage0 = [q.grad for (_, q), o in zip(s.ref_params, owner, strict=True) if o == 0]
    want = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in stage0]))
    torch.testing.assert_close(stats.norm, want, **TOL)
    return float(stats.norm)


@pytest.mark.parametrize("name", CLIPPER_NAMES)
def test_a_rank_without_gradients_does_not_hang(cluster, name):
    n0, n1 = cluster.run(empty_stage_case, name)
    assert n0 == n1

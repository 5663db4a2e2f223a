"""The PTB language model trained under FSDP2 on 2 ranks equals one process.

Each rank takes half of the batch's columns (the LSTM state of a column
depends on that column only), FSDP2 averages the gradients, and the
``ClippedOptimizer`` clips the global gradient: the mean of the ranks'
losses must follow the single-process loss sequence step for step. A run
checkpointed with ``torch.distributed.checkpoint`` after 10 steps, its
processes killed and a new pair resumed from the checkpoint, must end where
the uninterrupted run ends.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from harness import Cluster
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from gradclip import ClippedOptimizer, make_clipper
from gradclip.lm.model import PTBModel, detach_state, tf_cost

VOCAB, HIDDEN, STEPS, BATCH, T = 12, 8, 20, 4, 5
CLIPPER = {"norm": {"max_norm": 1.2}, "zclip": {"warmup": 3, "z_threshold": 1.0}}


def _batches() -> Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (STEPS, T + 1, BATCH), generator=g)


def _model() -> PTBModel:
    torch.manual_seed(0)
    return PTBModel(VOCAB, HIDDEN, num_layers=2, keep_prob=1.0, init_scale=0.3)


def _optimizer(model: nn.Module, clipper: str) -> ClippedOptimizer:
    sgd = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.5)
    return ClippedOptimizer(sgd, make_clipper(clipper, **CLIPPER[clipper]))


def _train(model: nn.Module, opt: ClippedOptimizer, cols: slice, steps: range, state: Any) -> Any:
    """Train on columns ``cols`` of each batch; return (global losses, norms, state)."""
    data = _batches()
    losses, norms = [], []
    for step in steps:
        x, y = data[step, :-1, cols], data[step, 1:, cols]
        logits, state = model(x, state)
        state = detach_state(state)
        loss = tf_cost(logits, y)
        opt.zero_grad()
        loss.backward()
        stats = opt.step()
        loss = loss.detach()
        if dist.is_initialized() and cols != slice(None):
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        losses.append(float(loss))
        norms.append(float(stats.norm))
    return losses, norms, state


def _sharded(clipper: str) -> tuple[nn.Module, ClippedOptimizer, slice]:
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = _model()
    fully_shard(model.rnn, mesh=mesh)
    fully_shard(model, mesh=mesh)
    rank, half = dist.get_rank(), BATCH // dist.get_world_size()
    return model, _optimizer(model, clipper), slice(rank * half, (rank + 1) * half)


def fsdp_losses_case(clipper: str) -> tuple[list[float], list[float], list[float], list[float]]:
    model, opt, cols = _sharded(clipper)
    state = model.init_state(cols.stop - cols.start)  # type: ignore[operator]
    losses, norms, _ = _train(model, opt, cols, range(STEPS), state)
    ref = _model()
    ref_losses, ref_norms, _ = _train(
        ref, _optimizer(ref, clipper), slice(None), range(STEPS), ref.init_state(BATCH)
    )
    return losses, norms, ref_losses, ref_norms


@pytest.mark.parametrize("clipper", list(CLIPPER))
def test_fsdp_training_follows_one_process(cluster, clipper):
    (l0, n0, ref, ref_norms), (l1, n1, _, _) = cluster.run(fsdp_losses_case, clipper)
    assert l0 == l1 and n0 == n1  # every rank logs the same global numbers
    torch.testing.assert_close(torch.tensor(l0), torch.tensor(ref), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(n0), torch.tensor(ref_norms), rtol=1e-5, atol=1e-5)
    assert min(n0) < CLIPPER["norm"]["max_norm"] < max(n0) or clipper != "norm"


def _checkpoint_state(model: nn.Module, opt: ClippedOptimizer) -> dict[str, Any]:
    return {
        "model": get_model_state_dict(model),
        "optim": get_optimizer_state_dict(model, opt.optimizer),
        "clipper": opt.clipper.state_dict()["state"],
    }


def first_half_case(clipper: str, path: str) -> list[float]:
    model, opt, cols = _sharded(clipper)
    state = model.init_state(cols.stop - cols.start)  # type: ignore[operator]
    losses, _, state = _train(model, opt, cols, range(STEPS // 2), state)
    dcp.save(_checkpoint_state(model, opt), checkpoint_id=path)
    torch.save(state, os.path.join(path, f"rnn_state_rank{dist.get_rank()}.pt"))
    return losses


def second_half_case(clipper: str, path: str) -> list[float]:
    model, opt, cols = _sharded(clipper)
    saved = _checkpoint_state(model, opt)
    dcp.load(saved, checkpoint_id=path)
    set_model_state_dict(model, saved["model"])
    set_optimizer_state_dict(model, opt.optimizer, saved["optim"])
    opt.clipper.load_state_dict({"name": opt.clipper.name, "state": saved["clipper"]})
    state = torch.load(os.path.join(path, f"rnn_state_rank{dist.get_rank()}.pt"))
    return _train(model, opt, cols, range(STEPS // 2, STEPS), state)[0]


def uninterrupted_case(clipper: str) -> list[float]:
    model, opt, cols = _sharded(clipper)
    state = model.init_state(cols.stop - cols.start)  # type: ignore[operator]
    return _train(model, opt, cols, range(STEPS), state)[0]


def test_checkpoint_kill_resume_is_exact(cluster, tmp_path):
    clipper = "zclip"  # adaptive state must survive the restart too
    whole = cluster.run(uninterrupted_case, clipper)[0]
    first = Cluster(world_size=2)
    try:
        head = first.run(first_half_case, clipper, str(tmp_path))[0]
    finally:
        first.close(kill=True)  # the processes die; only the checkpoint remains
    second = Cluster(world_size=2)
    try:
        tail = second.run(second_half_case, clipper, str(tmp_path))[0]
    finally:
        second.close()
    assert head + tail == whole

"""The public ops on DTensor gradients: global norms across every mesh, as one process.

``gradclip.global_norm``, ``gradclip.tensor_norms`` and the drop-in
``gradclip.clip_grad_norm_`` take DTensor gradients (FSDP2, 2-D meshes,
parameters on two meshes, where torch's own ``stack`` of norms fails,
pytorch#180346) and return plain tensors equal to torch's ``clip_grad_norm_``
on the full gradient in one process, identical on every rank.
"""

from __future__ import annotations

import pytest
import torch
from setups import build

import gradclip

DTENSOR_SETUPS = ["fsdp", "fsdp_tied", "mixed_placements", "mesh_2d", "two_meshes"]


def ops_case(setup_name: str) -> list[float]:
    s = build(setup_name)
    params, ref = [p for _, p in s.params], [q for _, q in s.ref_params]
    grads = [p.grad for p in params]
    want = torch.stack([torch.linalg.vector_norm(q.grad.double()) for q in ref])
    norms = gradclip.tensor_norms(grads)
    assert type(norms) is torch.Tensor  # a plain tensor, no full_tensor() needed
    torch.testing.assert_close(norms.double(), want, rtol=1e-6, atol=0)
    total = gradclip.global_norm(grads)
    torch.testing.assert_close(total.double(), torch.linalg.vector_norm(want), rtol=1e-6, atol=0)
    got = gradclip.clip_grad_norm_(params, max_norm=0.5)
    expected = torch.nn.utils.clip_grad_norm_(ref, max_norm=0.5)
    torch.testing.assert_close(got, expected)
    for p, q in zip(params, ref, strict=True):
        torch.testing.assert_close(p.grad.full_tensor(), q.grad)
    return [float(total), float(got)]


@pytest.mark.parametrize("setup_name", DTENSOR_SETUPS)
def test_public_ops_on_dtensors_match_one_process(cluster, setup_name):
    r0, r1 = cluster.run(ops_case, setup_name)
    assert r0 == r1

"""A real 2 x 2 mesh on 4 gloo ranks: every clipper equals one process (HSDP, FSDP x TP)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from harness import Cluster
from test_dist_clippers import clipper_case

from gradclip.clippers import CLIPPER_NAMES


@pytest.fixture(scope="module")
def cluster4() -> Iterator[Cluster]:
    c = Cluster(world_size=4)
    yield c
    c.close()


@pytest.mark.parametrize("name", CLIPPER_NAMES)
def test_clipper_on_a_2x2_mesh_matches_one_process(cluster4, name):
    results = cluster4.run(clipper_case, "mesh_2x2", name)
    for other in results[1:]:  # stats and state bit for bit on all 4 ranks
        for (stats0, state0), (stats1, state1) in zip(results[0], other, strict=True):
            for a, b in zip(stats0, stats1, strict=True):
                assert torch.equal(a, b) or (a.isnan().all() and b.isnan().all())
            for k in state0:
                assert torch.equal(state0[k].nan_to_num(-1.0), state1[k].nan_to_num(-1.0)), k

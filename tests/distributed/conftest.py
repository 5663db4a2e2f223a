"""One 2-rank gloo cluster per test module (process start-up costs seconds)."""

from collections.abc import Iterator

import pytest
import torch.distributed as dist
from harness import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    c = Cluster(world_size=2)
    yield c
    c.close()

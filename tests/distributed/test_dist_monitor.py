"""GradMonitor under FSDP2 logs the global numbers, never a shard's.

A ``GradMonitor`` attached to a ``ClippedOptimizer`` over FSDP2 parameters, and
one used in a plain loop (``observe``), must record the same norms, per-layer
norms and update ratios as a monitor of the same model on one process.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from setups import build

import gradclip
from gradclip.monitor import GradMonitor

KEYS = ("norm", "clipped_norm", "threshold")


def _records(s: Any, sharded: bool, seam: bool) -> list[dict[str, Any]]:
    named = s.params if sharded else s.ref_params
    sgd = torch.optim.SGD([p for _, p in named], lr=0.1)
    monitor = GradMonitor(named, update_ratio_every=1, flush_every=100)
    if seam:
        opt = gradclip.ClippedOptimizer(sgd, gradclip.make_clipper("norm", max_norm=1.0))
        opt.add_observer(monitor)
        opt.step()
    else:
        monitor.observe()
        sgd.step()
    monitor.flush()
    return monitor.records


def monitor_case(seam: bool) -> list[dict[str, Any]]:
    s = build("fsdp")
    got, want = _records(s, True, seam), _records(s, False, seam)
    for a, b in zip(got, want, strict=True):
        for key in KEYS if seam else ("norm",):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
        for key in ("layers", "update_ratio"):
            assert a[key].keys() == b[key].keys()
            for layer in a[key]:
                assert a[key][layer] == pytest.approx(b[key][layer], rel=1e-5), (key, layer)
    return got


@pytest.mark.parametrize("seam", [True, False], ids=["observer", "observe"])
def test_monitor_logs_global_numbers_under_fsdp(cluster, seam):
    r0, r1 = cluster.run(monitor_case, seam)
    assert r0 == r1

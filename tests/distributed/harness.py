"""A tiny 2-process gloo cluster for tests: start once per module, run many cases.

``Cluster(world_size=2)`` spawns ``world_size`` CPU processes that each join one
gloo process group (``torch.distributed``), then wait for work. ``cluster.run(fn,
*args)`` runs the module-level function ``fn(*args)`` on every rank at once and
returns the per-rank results in rank order (tensors come back through pickling).
A case that raises on any rank fails the test with that rank's traceback; a
case that takes longer than ``timeout`` s (a hang) kills the cluster.

Functions travel by name (module and qualified name), so a case must live at
module level in a file under ``tests/distributed`` (the workers put that folder
on ``sys.path``).
"""

from __future__ import annotations

import datetime
import importlib
import os
import queue
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

HERE = os.path.dirname(os.path.abspath(__file__))


def _worker(rank: int, world_size: int, init_file: str, tasks: Any, results: Any) -> None:
    sys.path.insert(0, HERE)
    torch.set_num_threads(1)  # tiny tensors; two ranks share a 2-core machine
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    while True:
        task = tasks.get()
        if task is None:
            break
        module, name, args = task
        try:
            fn = getattr(importlib.import_module(module), name)
            results.put((rank, True, fn(*args)))
        except BaseException:  # report every failure, the parent decides
            results.put((rank, False, traceback.format_exc()))
    dist.destroy_process_group()


class Cluster:
    """``world_size`` gloo ranks on the CPU, reused by many :meth:`run` calls."""

    def __init__(self, world_size: int = 2, timeout: float = 90.0) -> None:
        self.world_size = world_size
        self.timeout = timeout
        ctx = mp.get_context("spawn")
        self._dir = tempfile.TemporaryDirectory()
        init_file = os.path.join(self._dir.name, "rendezvous")
        self._tasks = [ctx.Queue() for _ in range(world_size)]
        self._results: Any = ctx.Queue()
        self._procs = [
            ctx.Process(
                target=_worker,
                args=(r, world_size, init_file, self._tasks[r], self._results),
                daemon=True,
            )
            for r in range(world_size)
        ]
        for p in self._procs:
            p.start()

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """Run ``fn(*args)`` on every rank; return the results in rank order."""
        module = fn.__module__
        if module == "__main__":  # pragma: no cover - cases live in test modules
            raise ValueError("cluster cases must live in an importable module")
        for q in self._tasks:
            q.put((module, fn.__qualname__, args))
        out: dict[int, Any] = {}
        errors: list[str] = []
        for _ in range(self.world_size):
            try:
                rank, ok, value = self._results.get(timeout=self.timeout)
            except queue.Empty:
                self.close(kill=True)
                msg = f"{fn.__qualname__}: no answer in {self.timeout} s (a hang?)"
                raise TimeoutError(msg) from None
            if ok:
                out[rank] = value
            else:
                errors.append(f"rank {rank}:\n{value}")
        if errors:
            raise AssertionError(f"{fn.__qualname__} failed\n" + "\n".join(errors))
        return [out[r] for r in range(self.world_size)]

    def close(self, kill: bool = False) -> None:
        """Stop the workers (``kill``: at once, for a hang)."""
        for p, q in zip(self._procs, self._tasks, strict=True):
            if p.is_alive() and not kill:
                q.put(None)
        for p in self._procs:
            p.join(timeout=0 if kill else 20)
            if p.is_alive():
                p.kill()
                p.join()
        self._dir.cleanup()

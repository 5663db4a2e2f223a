"""Pool workers end with their parent: a killed sweep leaves no orphan training on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

PARENT = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from gradclip.diagnostics.workers import end_with_parent

    ctx = multiprocessing.get_context("fork")
    init = (end_with_parent, (os.getpid(),)) if sys.argv[1] == "guarded" else (None, ())
    pool = ProcessPoolExecutor(1, ctx, *init)
    pid = pool.submit(os.getpid).result()
    pool.submit(time.sleep, 60)
    print(pid, flush=True)
    time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _worker_after_killing_parent(mode: str) -> tuple[int, bool]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return worker, _alive(worker)


def test_a_guarded_worker_ends_when_its_parent_is_killed() -> None:
    _, alive = _worker_after_killing_parent("guarded")
    assert not alive


def test_an_unguarded_worker_outlives_its_parent() -> None:
    # the control: without end_with_parent the orphan trains on (the bug this fixes)
    worker, alive = _worker_after_killing_parent("plain")
    try:
        assert alive
    finally:
        os.kill(worker, signal.SIGKILL)

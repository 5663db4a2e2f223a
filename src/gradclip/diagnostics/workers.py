"""Worker processes that end with their parent.

``gradclip sweep --jobs N`` and ``gradclip tasks --jobs N`` train in spawned worker
processes. If the parent is killed (SIGTERM from a scheduler, SIGKILL, a closed
terminal), Python's pools never get to stop their workers, which then train on as
orphans, holding their run directories' locks, so a resumed sweep would collide with
them. On Linux each worker therefore asks the kernel for SIGTERM when its parent
dies (``prctl(PR_SET_PDEATHSIG)``); elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

__all__ = ["end_with_parent"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def end_with_parent(parent_pid: int) -> bool:
    """Have this process receive SIGTERM when its parent exits (Linux).

    Args:
        parent_pid: the parent's pid, taken before the worker started: if the parent
            has already gone, this process terminates itself at once.

    Returns:
        True if the kernel will signal this process, False where unsupported.

    Example:
        >>> import multiprocessing
        >>> from concurrent.futures import ProcessPoolExecutor
        >>> fork = multiprocessing.get_context("fork")
        >>> with ProcessPoolExecutor(1, fork, end_with_parent, (os.getpid(),)) as pool:
        ...     pool.submit(os.getppid).result() == os.getpid()
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return True

"""Atomic, strict file input and output for run directories and caches.

* :func:`atomic_write_bytes`: temporary file beside the target, fsync, rename;
* :func:`strict_json` / :func:`write_json` / :func:`read_json`: JSON without the
  non-standard ``NaN``/``Infinity`` (a non-finite number is ``null``), and a
  corrupt file reported in one line naming it;
* :func:`checkpoint_bytes` / :func:`load_checkpoint`: ``torch.save`` archives,
  with an empty, truncated or foreign file reported in one line naming it.

Errors a user can fix are :class:`~gradclip.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import secrets
import zipfile
from pathlib import Path
from typing import Any

import torch

from gradclip.errors import UserError

__all__ = [
    "atomic_write_bytes",
    "checkpoint_bytes",
    "load_checkpoint",
    "read_json",
    "strict_json",
    "write_json",
]


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file beside it, fsync and rename.

    Args:
        path: the destination; its directory is created if needed.
        payload: the bytes.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "x.bin"
        >>> atomic_write_bytes(path, b"ok"); path.read_bytes(), len(list(path.parent.iterdir()))
        (b'ok', 1)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name opened O_EXCL with mode 0o666, so the umask applies (mkstemp's 0o600 would
    # leave summaries and checkpoints unreadable to the rest of a group)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON ``null``).

    Args:
        value: numbers, strings, lists, tuples and dicts, nested.

    Returns:
        The same structure, safe for ``json.dumps(..., allow_nan=False)``.

    Example:
        >>> strict_json({"loss": float("nan"), "ppl": [1.5, float("inf")]})
        {'loss': None, 'ppl': [1.5, None]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented strict JSON (non-finite numbers as ``null``), atomically.

    Args:
        path: the file.
        value: JSON-able data (see :func:`strict_json`).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "s.json"
        >>> write_json(path, {"ppl": float("inf")}); read_json(path)
        {'ppl': None}
    """
    text = json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def checkpoint_bytes(blob: dict[str, Any]) -> bytes:
    """``blob`` serialised by ``torch.save`` (for :func:`create_run`'s step-0 checkpoint).

    Args:
        blob: the checkpoint dict.

    Returns:
        The bytes of the ``torch.save`` zip archive.
    """
    buf = io.BytesIO()
    torch.save(blob, buf)
    return buf.getvalue()


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` load).

    An empty, truncated or foreign file raises :class:`~gradclip.errors.UserError`
    in one line naming the file.

    Args:
        path: the checkpoint file.
        device: where its tensors go.

    Returns:
        The checkpoint's dict (``format``, ``config``, ``model``, ``optimizer``, ...).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> _ = path.write_bytes(b"")
        >>> load_checkpoint(path)
        Traceback (most recent call last):
        ...
        gradclip.errors.UserError: checkpoint ... is empty (the run was killed while writing it?)
    """
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"checkpoint {path} is empty (the run was killed while writing it?)")
    if not zipfile.is_zipfile(path):
        raise UserError(f"checkpoint {path} is truncated or not a gradclip checkpoint")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: {first[:200]}") from None
    if not isinstance(blob, dict) or "model" not in blob or "config" not in blob:
        raise UserError(f"checkpoint {path} is not a gradclip train checkpoint")
    return blob


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or corrupt one raises a UserError naming it.

    Args:
        path: the file.

    Returns:
        The parsed value.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "run.json"
        >>> _ = path.write_text('{"data": ')
        >>> read_json(path)
        Traceback (most recent call last):
        ...
        gradclip.errors.UserError: .../run.json is corrupt: Expecting value: line 1 ...
    """
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is corrupt: {exc}") from None

"""File formats and atomic, strict input and output for run directories and caches.

* :func:`atomic_write_bytes`: temporary file beside the target, fsync, rename;
* :func:`strict_json` / :func:`write_json` / :func:`read_json`: JSON without the
  non-standard ``NaN``/``Infinity`` (a non-finite number is ``null``), and a
  corrupt file reported in one line naming it;
* :func:`checkpoint_bytes` / :func:`load_checkpoint`: ``torch.save`` archives,
  with an empty, truncated or foreign file reported in one line naming it;
* :func:`encode_vocab` / :func:`decode_vocab`: ``vocab.txt``, every symbol round-tripped;
* :func:`lock_run`: one process at a time in a run directory.

Errors a user can fix are :class:`~gradclip.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from gradclip.errors import UserError

__all__ = [
    "LOCK_FILE",
    "atomic_write_bytes",
    "checkpoint_bytes",
    "decode_vocab",
    "encode_vocab",
    "load_checkpoint",
    "lock_run",
    "read_json",
    "strict_json",
    "write_json",
]

#: Held (``flock``) by the process training in a run directory; the OS releases it
#: when that process ends, however it ends.
LOCK_FILE = ".lock"


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
    weights = isinstance(blob, dict) and ("model" in blob or "dcp" in blob)  # dcp: FSDP2's
    if not weights or "config" not in blob:
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


def encode_vocab(vocab: list[str]) -> str:
    r"""The text of ``vocab.txt``: one symbol a line, with ``\`` and every character
    that is not printable (``'\r'``, ``'\n'``, ``'\x0c'``, ...) escaped as ``\uXXXX``.

    Args:
        vocab: the symbols, id order.

    Returns:
        Text that :func:`decode_vocab` turns back into ``vocab``, whatever the symbols.

    Example:
        >>> encode_vocab(["a", "\r", "\\"])
        'a\n\\u000d\n\\u005c\n'
        >>> decode_vocab(encode_vocab(["a", "\r", "\\"])) == ["a", "\r", "\\"]
        True
    """
    return "".join(_escape(w) + "\n" for w in vocab)


def _escape(word: str) -> str:
    out = []
    for c in word:
        if c.isprintable() and c != "\\":
            out.append(c)
        elif ord(c) <= 0xFFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    return "".join(out)


_ESCAPE = re.compile(r"\\(u[0-9a-f]{4}|U[0-9a-f]{8})")


def decode_vocab(text: str) -> list[str]:
    r"""The symbols of a ``vocab.txt`` text (the inverse of :func:`encode_vocab`).

    Args:
        text: the file's text, read without newline translation.

    Returns:
        The symbols in id order.

    Example:
        >>> decode_vocab("the\n\\u000d\n")
        ['the', '\r']
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [_ESCAPE.sub(lambda m: chr(int(m.group(1)[1:], 16)), line) for line in lines]


@contextlib.contextmanager
def lock_run(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock: one process trains in it at a time.

    A second ``gradclip train --resume`` on a directory in use is refused
    instead of corrupting it. The lock is an ``fcntl.flock`` on ``.lock``,
    released by the OS when the holder exits, even after ``kill -9``;
    where ``fcntl`` is missing (Windows) no lock is taken.

    Args:
        run_dir: the run directory.

    Returns:
        A context manager holding the lock.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> with lock_run(d):
        ...     with lock_run(d):
        ...         pass
        Traceback (most recent call last):
        ...
        gradclip.errors.UserError: run directory ... is in use by another gradclip process ...
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"run directory {run_dir} is in use by another gradclip process "
                "(wait for it to end, or stop it with SIGTERM)"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock

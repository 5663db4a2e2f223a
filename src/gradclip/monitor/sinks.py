"""Where :class:`~gradclip.monitor.GradMonitor` writes its records.

A sink is any object with ``write(records)`` and ``close()``; it is called once
per flush with the step and event records of that flush, in step order.

* :class:`MemorySink`: keeps every record in ``.records``.
* :class:`JsonlSink`: one strict-JSON object per line (``NaN``/``inf`` are
  written as ``null``, so ``jq`` and ``json.loads(..., parse_constant=...)``
  accept every line).
* :class:`TensorBoardSink`: scalars ``grad/norm``, ``grad/clipped_norm``,
  ``grad/clip_coef``, ``grad/clipped``, ``grad_layer/<layer>``,
  ``update_ratio/<layer>`` and the events as text (needs ``tensorboard``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

__all__ = ["JsonlSink", "MemorySink", "Sink", "TensorBoardSink", "strict_json"]

Record = dict[str, Any]


class Sink(Protocol):
    """What a sink provides."""

    def write(self, records: list[Record]) -> None: ...

    def close(self) -> None: ...


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


def strict_json(record: Record) -> str:
    """One record as strict JSON: non-finite floats become ``null``.

    Args:
        record: a JSON-able dict.

    Returns:
        The JSON text (no ``NaN``/``Infinity`` literals).

    Example:
        >>> strict_json({"norm": float("nan"), "layers": {"rnn": float("inf"), "emb": 1.5}})
        '{"norm": null, "layers": {"rnn": null, "emb": 1.5}}'
    """
    return json.dumps(_finite_or_none(record), allow_nan=False)


class MemorySink:
    """Keeps every record in memory (``.records``), in order.

    Example:
        >>> sink = MemorySink(); sink.write([{"kind": "step", "step": 0}]); sink.records
        [{'kind': 'step', 'step': 0}]
    """

    def __init__(self) -> None:
        self.records: list[Record] = []

    def write(self, records: list[Record]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends records to a JSON-lines file, one strict-JSON object per line.

    The file is flushed to the OS at each write, so a killed run keeps every
    record written before its last flush.

    Args:
        path: the ``.jsonl`` file (created with its parent directory).
        mode: ``"a"`` (append, default) or ``"w"`` (truncate).

    Example:
        >>> import tempfile, json, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "grad.jsonl"
        >>> sink = JsonlSink(path); sink.write([{"step": 0, "norm": float("inf")}]); sink.close()
        >>> json.loads(path.read_text())
        {'step': 0, 'norm': None}
    """

    def __init__(self, path: str | os.PathLike[str], mode: str = "a"):
        if mode not in ("a", "w"):
            raise ValueError(f"mode must be 'a' or 'w', got {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open(mode, encoding="utf-8")

    def write(self, records: list[Record]) -> None:
        if records:
            self._file.write("".join(strict_json(r) + "\n" for r in records))
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """Writes step records as TensorBoard scalars and events as text.

    Args:
        log_dir_or_writer: a directory, or an existing
            ``torch.utils.tensorboard.SummaryWriter`` (then not closed here).
        layers: also write per-layer norms and update ratios (default True).
    """

    def __init__(self, log_dir_or_writer: Any, *, layers: bool = True):
        if isinstance(log_dir_or_writer, str | os.PathLike):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError("TensorBoardSink needs the 'tensorboard' package") from e
            self.writer: Any = SummaryWriter(log_dir=str(log_dir_or_writer))
            self._own = True
        else:
            self.writer = log_dir_or_writer
            self._own = False
        self.layers = layers

    def write(self, records: list[Record]) -> None:
        add = self.writer.add_scalar
        for r in records:
            step = r["step"]
            if r.get("kind") == "event":
                self.writer.add_text(f"events/{r['event']}", r["message"], step)
                continue
            for key in ("norm", "clipped_norm", "clip_coef"):
                if r.get(key) is not None:
                    add(f"grad/{key}", r[key], step)
            add("grad/clipped", float(r["clipped"]), step)
            if self.layers:
                for prefix, key in (("grad_layer", "layers"), ("update_ratio", "update_ratio")):
                    for name, value in (r.get(key) or {}).items():
                        add(f"{prefix}/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self._own:
            self.writer.close()
        else:
            self.writer.flush()

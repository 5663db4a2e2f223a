"""The run directory of ``gradclip train``: every file name, creating, reading, resuming.

This module is the only code that knows the layout; the ``report`` and
``suggest`` commands read runs through :func:`read_run`. A run directory holds:

====================  =====================================================
``config.toml``       the resolved :class:`~gradclip.lm.config.LMConfig`
``run.json``          corpus (path, prefix, token mode, SHA-256 of each file),
                      clipper spec, device, versions, command line
``vocab.txt``         one symbol per line, escaped (see :func:`encode_vocab`)
``checkpoint.pt``     the latest checkpoint (written at step 0, every
                      ``checkpoint_steps`` / ``checkpoint_minutes``, at each
                      epoch end and when the run stops)
``metrics.jsonl``     one strict-JSON record per training step
``summary.json``      status, epochs, perplexities (strict JSON)
``tb/``               TensorBoard event files
====================  =====================================================

Strict JSON: ``metrics.jsonl``, ``summary.json`` and ``run.json`` never hold
the non-standard literals ``NaN``/``Infinity``; a non-finite number is written
as ``null`` (:func:`strict_json`), so ``jq`` and every JSON parser read them.

Every file is written atomically (a temporary ``.NAME.*.tmp`` beside it,
fsync, rename), and the directory itself is created atomically, step-0
checkpoint included: it either does not exist or can be resumed. A kill during
a write leaves a ``.tmp`` file that :func:`clean_stale_temp` removes on resume.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradclip.errors import UserError
from gradclip.lm.config import LMConfig, load_config
from gradclip.lm.files import (
    LOCK_FILE,
    atomic_write_bytes,
    checkpoint_bytes,
    decode_vocab,
    encode_vocab,
    load_checkpoint,
    lock_run,
    read_json,
    strict_json,
    write_json,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "RUN_FILE",
    "STATUSES",
    "SUMMARY_FILE",
    "TENSORBOARD_DIR",
    "VOCAB_FILE",
    "Run",
    "atomic_write_bytes",
    "checkpoint_bytes",
    "clean_stale_temp",
    "create_run",
    "decode_vocab",
    "default_run_dir",
    "encode_vocab",
    "load_checkpoint",
    "lock_run",
    "read_json",
    "read_metrics",
    "read_run",
    "save_checkpoint",
    "strict_json",
    "truncate_metrics",
    "write_json",
]

CONFIG_FILE = "config.toml"
RUN_FILE = "run.json"
VOCAB_FILE = "vocab.txt"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tb"
#: ``summary.json``'s ``status``: ``running`` (last checkpoint of a live or killed
#: run), ``stopped`` (signal or ``--stop-after``), ``finished``, ``diverged``.
STATUSES = ("running", "stopped", "finished", "diverged")
_REQUIRED = (CONFIG_FILE, RUN_FILE, VOCAB_FILE, CHECKPOINT_FILE)
_TMP = re.compile(r"^\..+\.tmp$")


# --------------------------------------------------------------------------- creating
def default_run_dir(label: str, root: str | Path = "runs") -> Path:
    """``ROOT/LABEL-YYYYmmdd-HHMMSS-XXXXXX``: a time stamp and a random suffix, so
    that runs started in the same second never collide.

    Args:
        label: the config name.
        root: the parent directory.

    Returns:
        A path that does not exist yet (almost surely; :func:`create_run` refuses otherwise).

    Example:
        >>> default_run_dir("small").name.startswith("small-")
        True
    """
    return Path(root) / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def create_run(path: str | Path, files: Mapping[str, str | bytes]) -> Path:
    """Create run directory ``path`` holding ``files``, atomically.

    The files are written into a temporary directory beside ``path``, which is
    then renamed: on any error nothing is left behind, and two processes
    creating the same directory cannot both succeed.

    Args:
        path: the run directory; it must not exist, or be an empty directory.
        files: file name → content (text is written as UTF-8).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> run = create_run(Path(tempfile.mkdtemp()) / "r", {"a.txt": "x"})
        >>> sorted(p.name for p in run.iterdir())
        ['a.txt']
        >>> create_run(run, {"a.txt": "y"})
        Traceback (most recent call last):
        ...
        gradclip.errors.UserError: run directory exists and is not empty: ...
    """
    run_dir = Path(path)
    taken = f"run directory exists and is not empty: {run_dir} (use --resume {run_dir} to "
    taken += "continue it, or choose another --run-dir)"
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(taken)
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.parent.glob(f".{run_dir.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed create
        tmp = run_dir.parent / f".{run_dir.name}.{secrets.token_hex(6)}.tmp"
        tmp.mkdir()  # mode 0o777 less the umask, like any directory the user makes
    except OSError as exc:
        raise UserError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    try:
        for name, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        try:
            os.replace(tmp, run_dir)
        except OSError:
            raise UserError(taken) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def clean_stale_temp(run_dir: Path) -> list[Path]:
    """Remove the ``.NAME.*.tmp`` files that a kill during an atomic write left.

    Args:
        run_dir: the run directory (not in use by another process).

    Returns:
        The paths removed.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = (d / ".checkpoint.pt.k9.tmp").write_text("")
        >>> [p.name for p in clean_stale_temp(d)]
        ['.checkpoint.pt.k9.tmp']
    """
    removed = []
    for p in run_dir.iterdir():
        if _TMP.match(p.name) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(run_dir: Path, blob: dict[str, Any]) -> Path:
    """Write ``blob`` (``torch.save``) to ``run_dir/checkpoint.pt``, atomically.

    Args:
        run_dir: the run directory.
        blob: the checkpoint dict.

    Returns:
        The checkpoint's path.

    Example:
        >>> import tempfile
        >>> path = save_checkpoint(Path(tempfile.mkdtemp()), {"config": {}, "model": {}})
        >>> load_checkpoint(path)
        {'config': {}, 'model': {}}
    """
    path = run_dir / CHECKPOINT_FILE
    atomic_write_bytes(path, checkpoint_bytes(blob))
    return path


# --------------------------------------------------------------------------- reading
def read_metrics(path: Path) -> list[dict[str, Any]]:
    r"""The records of a ``metrics.jsonl`` (``null`` = a non-finite value).

    A line cut short by a kill ends the list.

    Args:
        path: the file (a missing one has no records).

    Returns:
        One dict per line.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / METRICS_FILE
        >>> _ = path.write_text('{"step": 1, "loss": null}\n{"step": 2, "lo')
        >>> read_metrics(path)
        [{'step': 1, 'loss': None}]
    """
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                break
            if not isinstance(rec, dict) or "step" not in rec:
                break
            records.append(rec)
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    r"""Keep the records of ``metrics.jsonl`` up to global step ``last_step`` (the
    checkpoint's); later ones were written after it and will be written again.

    Args:
        path: the file.
        last_step: the last step to keep.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / METRICS_FILE
        >>> _ = path.write_text('{"step": 1}\n{"step": 2}\n')
        >>> truncate_metrics(path, 1); path.read_text()
        '{"step": 1}\n'
    """
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if r["step"] <= last_step]
    lines = [json.dumps(r, allow_nan=False) + "\n" for r in keep]
    atomic_write_bytes(path, "".join(lines).encode("utf-8"))


@dataclass(frozen=True)
class Run:
    """A run directory, read.

    Attributes:
        path: the directory.
        config: the resolved config (``config.toml``).
        info: ``run.json`` (corpus, hashes, clipper spec, versions).
        vocab: the symbols of ``vocab.txt``, id order.
        summary: ``summary.json``, or ``None`` before the first checkpoint wrote one.
    """

    path: Path
    config: LMConfig
    info: dict[str, Any]
    vocab: list[str]
    summary: dict[str, Any] | None

    @property
    def checkpoint_path(self) -> Path:
        """Returns: ``path / checkpoint.pt``."""
        return self.path / CHECKPOINT_FILE

    @property
    def status(self) -> str:
        """Returns: ``summary.json``'s status (``running`` when there is none yet)."""
        return str((self.summary or {}).get("status", "running"))

    def metrics(self) -> list[dict[str, Any]]:
        """The per-step records of ``metrics.jsonl`` (empty when it was not written).

        Returns:
            One dict per step: ``step``, ``epoch``, ``loss``, ``norm``, ``clipped_norm``,
            ``threshold``, ``clipped``, ``lr`` (``None`` for a non-finite value).
        """
        return read_metrics(self.path / METRICS_FILE)

    def tail_train_ppl(self) -> float:
        r"""The training perplexity over the last tenth of the recorded steps (at least one):
        :math:`\exp` of the mean per-word training loss there.

        After a short budget the validation perplexity is that of the last iterate, and at
        a high learning rate the last few updates move it by several percent; this average
        over many updates is the steadier view of the same run.

        Returns:
            The perplexity (``inf`` when a loss in the tail is not finite, ``nan`` for a
            run without metrics).
        """
        losses = [r.get("loss") for r in self.metrics()]
        if not losses:
            return math.nan
        tail = [math.inf if x is None else float(x) for x in losses[-max(1, len(losses) // 10) :]]
        if not all(math.isfinite(x) for x in tail):
            return math.inf
        mean = sum(tail) / len(tail) / self.config.num_steps  # each loss sums num_steps words
        return math.exp(mean) if mean < 709.0 else math.inf


def read_run(path: str | Path) -> Run:
    """Read the run directory ``path`` (a UserError says what is missing or corrupt).

    Args:
        path: a directory made by ``gradclip train`` / :func:`gradclip.lm.train`.

    Returns:
        The :class:`Run`.

    Example:
        >>> read_run("/nonexistent/run")
        Traceback (most recent call last):
        ...
        gradclip.errors.UserError: run directory not found: /nonexistent/run
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    for name in _REQUIRED:
        if not (run_dir / name).is_file():
            raise UserError(f"not a gradclip run directory (no {name}): {run_dir}")
    config, _ = load_config(str(run_dir / CONFIG_FILE))
    info = read_json(run_dir / RUN_FILE)
    if not isinstance(info, dict) or "sha256" not in info:
        raise UserError(f"{run_dir / RUN_FILE} is corrupt: not a gradclip run record")
    try:
        vocab = decode_vocab((run_dir / VOCAB_FILE).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{run_dir / VOCAB_FILE} is corrupt: {exc}") from None
    summary_path = run_dir / SUMMARY_FILE
    summary = read_json(summary_path) if summary_path.is_file() else None
    return Run(run_dir, config, info, vocab, summary)

"""Building what a run needs, with every user-fixable failure as a one-line
:class:`~gradclip.errors.UserError`: the device, the clipper (through the spec
grammar, once), the model (out of memory included), the optimizer, the corpus of
an existing run (hashes checked), the checkpoint (config compared before loading),
and the SIGINT/SIGTERM handling that lets a run stop at a step boundary.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import torch

import gradclip
from gradclip.clippers import Clipper, format_clipper_spec, make_clipper
from gradclip.distributed import is_dtensor
from gradclip.errors import UserError
from gradclip.lm.config import LMConfig, clip_options
from gradclip.lm.data import Corpus, load_corpus
from gradclip.lm.model import PTBModel
from gradclip.lm.parallel_checkpoint import load_dcp_model
from gradclip.lm.rundir import Run, load_checkpoint, read_run

__all__ = [
    "StopFlag",
    "build_clipper",
    "build_model",
    "load_run_checkpoint",
    "load_run_corpus",
    "make_optimizer",
    "open_trained",
    "resolve_device",
    "set_threads",
]


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` → CUDA when available, else CPU; an unavailable CUDA is a UserError.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a device.

    Returns:
        The :class:`torch.device`.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available")
    return device


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``; without it, at most one thread per CPU core
    (unless ``OMP_NUM_THREADS`` is set).

    Args:
        threads: the thread count, or ``None``.
    """
    if threads:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))


def build_clipper(cfg: LMConfig) -> tuple[Clipper, str]:
    """The clipper of ``cfg``, built once from its parsed spec (:func:`clip_options`).

    Args:
        cfg: the config.

    Returns:
        ``(clipper, full spec)``, the spec naming every option set (``max_norm`` included).

    Example:
        >>> from gradclip.lm.config import load_config
        >>> build_clipper(load_config("small")[0])[1]
        'norm:max_norm=5.0'
    """
    name, options = clip_options(cfg)
    return make_clipper(name, **options), format_clipper_spec(name, options)


def make_optimizer(
    model: torch.nn.Module, cfg: LMConfig, clipper: Clipper | None = None
) -> gradclip.ClippedOptimizer:
    """Plain SGD (the tutorial's ``GradientDescentOptimizer``) behind ``cfg``'s clipper.

    On the CPU and CUDA the SGD is torch's fused kernel, into which ClippedOptimizer
    folds the clip scale (one read of each gradient for the update, nothing written
    back to ``.grad``); over FSDP2's DTensor parameters, which the fused kernel does
    not take, the foreach one.

    Args:
        model: the model (its device picks the fused kernel).
        cfg: learning rate and clipper.
        clipper: the clipper, if already built by :func:`build_clipper`.

    Returns:
        The :class:`~gradclip.ClippedOptimizer`.

    Example:
        >>> from gradclip.lm.config import load_config
        >>> cfg = load_config("test")[0]
        >>> opt = make_optimizer(PTBModel.from_config(cfg, 10), cfg)
        >>> type(opt.optimizer).__name__, opt.clipper.max_norm
        ('SGD', 1.0)
    """
    if clipper is None:
        clipper, _ = build_clipper(cfg)
    first = next(model.parameters())
    fused = first.device.type in ("cpu", "cuda") and not is_dtensor(first)
    sgd = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, fused=fused)
    return gradclip.ClippedOptimizer(sgd, clipper)


def build_model(
    cfg: LMConfig, vocab_size: int, device: torch.device, *, seed: int | None = None
) -> PTBModel:
    """``PTBModel.from_config(cfg, vocab_size)`` on ``device``; running out of memory
    is a UserError saying how big the model was. With ``seed``, ``torch.manual_seed(seed)``
    first: the weights a training run of that seed starts from (``gradclip train`` and
    ``gradclip suggest --trial-seeds`` both build them here).

    Args:
        cfg: the config.
        vocab_size: V.
        device: where the model goes.
        seed: seeds torch's RNG before the weights are drawn (``None``: as it is).

    Returns:
        The model.

    Example:
        >>> from gradclip.lm.config import load_config
        >>> cfg = load_config("test")[0]
        >>> build_model(cfg, 10, torch.device("cpu")).hidden_size
        2
    """
    if seed is not None:
        torch.manual_seed(seed)
    try:
        return PTBModel.from_config(cfg, vocab_size).to(device)
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "can't allocate memory" not in str(exc):
            raise  # CPU allocation failures are plain RuntimeErrors; anything else is a bug
        h, layers = cfg.hidden_size, cfg.num_layers
        approx = 2 * vocab_size * h + vocab_size + layers * 8 * h * (h + 1)
        raise UserError(
            f"out of memory building the model on {device} (about {approx:,} parameters, "
            f"hidden_size {h}, num_layers {layers}, vocabulary {vocab_size}); "
            "reduce hidden_size or vocab_size"
        ) from None


def load_run_corpus(run: Run, data: Corpus | str | os.PathLike[str] | None = None) -> Corpus:
    """The corpus of ``run``, from where ``run.json`` says or from ``data`` (a moved
    copy, or the in-memory :class:`Corpus` the run was started with); the files'
    SHA-256 must match those recorded, else a UserError.

    Args:
        run: the run directory, read.
        data: another directory holding the same files, a :class:`Corpus`, or ``None``.

    Returns:
        The corpus, with the run's vocabulary.

    Example (a run whose corpus file changed after training)::

        load_run_corpus(read_run("runs/r"))
        # UserError: the corpus in DIR is not the one runs/r was trained on: the
        # valid file changed (SHA-256 differs from run.json); pass --data DIR ...
    """
    info = run.info
    where = "the given corpus" if isinstance(data, Corpus) else data or info["data"]
    if isinstance(data, Corpus):
        corpus = data
    elif where is None:
        raise UserError(f"{run.path} was trained on an in-memory corpus: pass it again as data")
    else:
        prefix, vocab_size = info["data_prefix"], run.config.vocab_size
        corpus = load_corpus(where, tokens=info["tokens"], prefix=prefix, vocab_size=vocab_size)
    changed = [s for s, sha in info["sha256"].items() if corpus.sha256.get(s) != sha]
    if changed:
        raise UserError(
            f"the corpus in {where} is not the one {run.path} was trained on: the "
            f"{', '.join(changed)} file{'s' if len(changed) > 1 else ''} changed "
            "(SHA-256 differs from run.json); pass --data DIR with the original files"
        )
    if corpus.vocab != run.vocab:
        raise UserError(
            f"the corpus in {where} does not give the run's vocabulary "
            f"({len(corpus.vocab)} vs {len(run.vocab)} types)"
        )
    return corpus


def load_run_checkpoint(run: Run, device: torch.device) -> tuple[dict[str, Any], PTBModel]:
    """The checkpoint of ``run`` and its model, the checkpoint's config compared with
    the run's before any weight is loaded (a checkpoint copied from another run is a
    UserError naming the first differing field).

    Args:
        run: the run directory, read.
        device: where the model goes.

    Returns:
        ``(checkpoint dict, model with the checkpoint's weights)``.

    Example (a checkpoint copied from a run with two layers)::

        load_run_checkpoint(read_run("runs/r"), torch.device("cpu"))
        # UserError: checkpoint runs/r/checkpoint.pt belongs to another config:
        # num_layers = 2 there, 1 in runs/r/config.toml
    """
    path = run.checkpoint_path
    blob = load_checkpoint(path, device)
    saved, own = blob["config"], run.config.as_dict()
    for key in own:
        if key in saved and saved[key] != own[key]:
            raise UserError(
                f"checkpoint {path} belongs to another config: {key} = {saved[key]!r} there, "
                f"{own[key]!r} in {run.path / 'config.toml'}"
            )
    model = build_model(run.config, len(run.vocab), device)
    try:
        if "dcp" in blob:  # trained under FSDP2: the weights are in a DCP folder
            load_dcp_model(run.path / blob["dcp"], model)
        else:
            model.load_state_dict(blob["model"])
    except (RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not fit the run's model: {first}") from None
    return blob, model


def open_trained(run_dir: str | Path, device: torch.device) -> tuple[Run, PTBModel, dict[str, Any]]:
    """The run in ``run_dir`` and its checkpoint's model in eval mode (for ``evaluate``,
    ``generate`` and other readers of a trained model).

    Args:
        run_dir: a run directory.
        device: where the model goes.

    Returns:
        ``(run, model, checkpoint dict)``.

    Example::

        run, model, blob = open_trained("runs/small-1", torch.device("cpu"))
        print(run.status, blob["global_step"], model.training)  # finished 30199 False
    """
    run = read_run(run_dir)
    blob, model = load_run_checkpoint(run, device)
    return run, model.eval(), blob


class StopFlag:
    """Asks the training loop to stop at the next step boundary (it then saves a
    checkpoint). Set by SIGINT or SIGTERM inside :meth:`catch_signals`, or by
    ``--stop-after``; a second SIGINT interrupts at once.

    Attributes:
        requested: whether a stop was asked for.
        reason: what asked, e.g. ``"SIGTERM"`` or ``"stopped after 100 steps"``.
        signum: the signal's number, or ``None``.

    Example:
        >>> stop = StopFlag()
        >>> stop.request("stopped after 10 steps"); stop.request("SIGTERM", 15)
        >>> stop(), stop.reason, stop.signum
        (True, 'stopped after 10 steps', None)
    """

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.requested

    def request(self, reason: str, signum: int | None = None) -> None:
        """Ask for a stop (the first reason is kept).

        Args:
            reason: what asks.
            signum: the signal, if a signal asks.
        """
        if not self.requested:
            self.requested, self.reason, self.signum = True, reason, signum

    @contextmanager
    def catch_signals(self, announce: bool = True) -> Iterator[None]:
        """Within the block, SIGINT and SIGTERM request a stop (main thread only).

        Args:
            announce: say so on stderr (under torchrun, rank 0 only).

        Returns:
            A context manager; on leaving it the previous handlers are restored.
        """

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            name = signal.Signals(signum).name
            self.request(name, signum)
            if announce:
                print(
                    f"\ngradclip train: {name}: saving a checkpoint at the next step"
                    + (" (press Ctrl-C again to abort without saving)" if name == "SIGINT" else ""),
                    file=sys.stderr,
                    flush=True,
                )

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

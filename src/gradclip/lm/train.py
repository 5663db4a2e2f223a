"""Training as a function: :func:`train` starts a run, :func:`resume` continues one,
both return a :class:`~gradclip.lm.options.RunResult`. The step loop is
:func:`gradclip.lm.loop.run_loop`.

A run always ends in one of three ways, recorded in ``summary.json``:

* ``finished``: every epoch done, test perplexity measured;
* ``stopped``: SIGINT, SIGTERM or ``stop_after``; a checkpoint is saved and
  :func:`resume` continues exactly where it stopped;
* ``diverged``: a step's perplexity exp(loss/T), or an epoch's, was not finite;
  the step is recorded.

A kill (``kill -9``, power loss) loses only the steps since the last checkpoint
(written at step 0, every ``checkpoint_steps`` steps, every
``checkpoint_minutes`` minutes and at each epoch end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
from pathlib import Path

import torch

import gradclip
from gradclip.errors import UserError
from gradclip.lm.batches import check_corpus
from gradclip.lm.config import LMConfig, load_config, validate
from gradclip.lm.data import SPLITS, Corpus, load_corpus
from gradclip.lm.loop import result_of, run_loop
from gradclip.lm.model import count_parameters
from gradclip.lm.options import RunOptions, RunResult
from gradclip.lm.parallel import Parallel, start
from gradclip.lm.parallel_checkpoint import remove_stale_dcp, restore_ranks
from gradclip.lm.reporting import say
from gradclip.lm.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    VOCAB_FILE,
    Run,
    checkpoint_bytes,
    clean_stale_temp,
    create_run,
    default_run_dir,
    encode_vocab,
    lock_run,
    read_run,
    strict_json,
    truncate_metrics,
    write_json,
)
from gradclip.lm.session import (
    StopFlag,
    build_clipper,
    build_model,
    load_run_checkpoint,
    load_run_corpus,
    make_optimizer,
    resolve_device,
)
from gradclip.lm.state import TrainState

__all__ = ["RunOptions", "RunResult", "resume", "train"]


def train(
    config: LMConfig | str,
    data: Corpus | str | Path,
    run_dir: str | Path | None = None,
    *,
    tokens: str = "word",
    data_prefix: str | None = None,
    options: RunOptions | None = None,
    label: str | None = None,
) -> RunResult:
    r"""Train the tutorial's language model in a new run directory.

    Everything is checked (config, clipper spec, corpus, device, model size)
    before the directory is created, atomically, with a step-0 checkpoint: a
    bad input leaves nothing behind, and a run directory is always resumable.

    Args:
        config: an :class:`~gradclip.lm.config.LMConfig`, a built-in config name
            or a TOML path.
        data: a :class:`~gradclip.lm.data.Corpus` or a corpus directory.
        run_dir: the directory to create (``None``: ``runs/NAME-TIME-XXXXXX``).
        tokens: ``"word"`` or ``"char"`` when ``data`` is a directory.
        data_prefix: file-name prefix when ``data`` is a directory.
        options: device, logging, progress, ``stop_after`` (:class:`RunOptions`).
        label: the config's name, for messages and the default run directory
            (default: ``config``'s file stem, or ``"run"``).

    Returns:
        The :class:`RunResult` (status ``finished``, ``stopped`` or ``diverged``).

    Example:
        >>> import io, random, tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> for split in ("train", "valid", "test"):
        ...     words = " ".join(random.Random(0).choice("abcde") for _ in range(900))
        ...     _ = (root / f"{split}.txt").write_text(words + "\n")
        >>> quiet = RunOptions(progress=False, tensorboard=False, out=io.StringIO())
        >>> r = train("test", root, root / "run", options=quiet)
        >>> r.status, r.epochs, r.steps, r.test_ppl < 6  # 22 = ⌊(⌊901/20⌋ − 1)/2⌋ steps
        ('finished', 1, 22, True)
        >>> resume(root / "run", options=quiet).status  # already finished
        'finished'
    """
    opts = options or RunOptions()
    label = label or (Path(config).stem if isinstance(config, str) else "run")
    cfg = load_config(config)[0] if isinstance(config, str) else validate(config)
    device = resolve_device(opts.device)
    with start(opts.distributed or "none", device, cfg.batch_size) as (par, device):
        opts = _quiet(opts, par)
        return _train(cfg, data, run_dir, tokens, data_prefix, opts, label, par, device)


def _quiet(opts: RunOptions, par: Parallel) -> RunOptions:
    """Ranks other than 0 show and write nothing (their metrics rows are rank 0's)."""
    if par.writer:
        return opts
    return dataclasses.replace(opts, progress=False, tensorboard=False, out=io.StringIO())


def _train(
    cfg: LMConfig,
    data: Corpus | str | Path,
    run_dir: str | Path | None,
    tokens: str,
    data_prefix: str | None,
    opts: RunOptions,
    label: str,
    par: Parallel,
    device: torch.device,
) -> RunResult:
    clipper, spec = build_clipper(cfg)
    if not isinstance(data, Corpus):
        data = load_corpus(data, tokens=tokens, prefix=data_prefix, vocab_size=cfg.vocab_size)
    corpus = data
    check_corpus(corpus, cfg.batch_size, cfg.num_steps)
    path = par.broadcast(Path(run_dir) if run_dir is not None else default_run_dir(label))
    model = build_model(cfg, corpus.vocab_size, device, seed=cfg.seed)
    optimizer = make_optimizer(model, cfg, clipper)
    state = TrainState()
    step0 = checkpoint_bytes(state.checkpoint(cfg, model, optimizer, device)) if par.writer else b""
    net = par.wrap(model, device)
    if par.mode == "fsdp":  # over the DTensor shards now
        optimizer = make_optimizer(model, cfg, clipper)
    par.seed_rank(cfg.seed)
    train_file = Path(corpus.files["train"]) if "train" in corpus.files else None
    info = {
        "data": str(train_file.parent.resolve()) if train_file else None,  # None: in memory
        "data_prefix": train_file.name[: -len("train.txt")] if train_file else None,
        "tokens": corpus.tokens,
        "files": corpus.files,
        "sha256": corpus.sha256,
        "vocab_size": corpus.vocab_size,
        "tokens_per_split": {s: int(corpus.split(s).numel()) for s in SPLITS},
        "parameters": count_parameters(model),
        "clip": cfg.clip.strip() or spec,
        "clip_spec": spec,
        "config_name": label,
        "device": str(device),
        "distributed": par.mode,
        "world_size": par.world,
        "threads": torch.get_num_threads(),
        "argv": sys.argv,
        "gradclip": gradclip.__version__,
        "torch": torch.__version__,
    }
    files: dict[str, str | bytes] = {
        CONFIG_FILE: cfg.to_toml(),
        RUN_FILE: json.dumps(strict_json(info), indent=2, allow_nan=False) + "\n",
        VOCAB_FILE: encode_vocab(corpus.vocab),
        CHECKPOINT_FILE: step0,
        SUMMARY_FILE: json.dumps(strict_json(state.summary(cfg)), indent=2) + "\n",
    }
    par.on_writer(lambda: create_run(path, files))
    ranks = f", {par.world} processes ({par.mode})" if par.active else ""
    say(
        f"gradclip train: config {label}, {info['parameters']:,} parameters, "
        f"vocab {corpus.vocab_size}, clip {spec}, device {device}{ranks}, "
        f"{torch.get_num_threads()} thread(s); run dir {path}",
        opts.out,
    )
    with contextlib.ExitStack() as lock:
        par.on_writer(lambda: lock.enter_context(lock_run(path)))
        return run_loop(cfg, model, optimizer, corpus, path, device, state, opts, par, net)


def resume(
    run_dir: str | Path,
    *,
    data: Corpus | str | Path | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, exactly: the metrics
    and results are those of an uninterrupted run.

    Args:
        run_dir: a run directory made by :func:`train`.
        data: the corpus directory, if it moved (its files' hashes must match), or
            the :class:`~gradclip.lm.data.Corpus` of a run started on one in memory.
        options: as for :func:`train` (``stop_after`` counts all steps, old and new).

    Returns:
        The :class:`RunResult`; a run that already ended returns at once.
    """
    opts = options or RunOptions()
    run = read_run(run_dir)
    mode = run.info.get("distributed", "none")
    if opts.distributed is not None and opts.distributed != mode:
        raise UserError(
            f"{run.path} was trained with --distributed {mode}: resume it so "
            "(--distributed may be left out)"
        )
    device = resolve_device(opts.device)
    with start(mode, device, run.config.batch_size) as (par, device):
        world = run.info.get("world_size", 1)
        if par.world != world:
            raise UserError(
                f"{run.path} was trained on {world} processes: resume it with "
                f"torchrun --nproc-per-node {world}"
            )
        with contextlib.ExitStack() as lock:
            par.on_writer(lambda: lock.enter_context(lock_run(run.path)))
            return _resume(run, data, _quiet(opts, par), par, device)


def _resume(
    run: Run,
    data: Corpus | str | Path | None,
    opts: RunOptions,
    par: Parallel,
    device: torch.device,
) -> RunResult:
    if par.writer:
        clean_stale_temp(run.path)  # safe: the lock says no other process writes here
    blob, model = load_run_checkpoint(run, device)
    corpus = load_run_corpus(run, data)
    moved = isinstance(data, (str, Path)) and str(Path(data).resolve()) != run.info["data"]
    if moved and par.writer:
        assert isinstance(data, (str, Path))
        write_json(run.path / RUN_FILE, {**run.info, "data": str(Path(data).resolve())})
    net = par.wrap(model, device)
    optimizer = make_optimizer(model, run.config)
    state = TrainState.restore(blob, optimizer, device)
    restore_ranks(par, blob, model, optimizer, run.path, run.config.seed)
    state.hidden = par.local_state(state.hidden, run.config.batch_size)
    if state.status in ("finished", "diverged"):
        say(f"gradclip train: {run.path} has already {state.status}", opts.out)
        return result_of(run.path, state, 0.0, StopFlag())
    if par.writer:
        truncate_metrics(run.path / METRICS_FILE, state.global_step)
        remove_stale_dcp(run.path, blob.get("dcp"))  # left by a kill after a DCP save
    par.barrier()  # the other ranks replay metrics.jsonl once it is truncated
    say(
        f"gradclip train: resuming {run.path} at epoch {state.epoch + 1}, "
        f"step {state.step_in_epoch} (global step {state.global_step})",
        opts.out,
    )
    return run_loop(run.config, model, optimizer, corpus, run.path, device, state, opts, par, net)

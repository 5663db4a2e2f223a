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

import json
import sys
from pathlib import Path

import torch

import gradclip
from gradclip.lm.config import LMConfig, load_config, validate
from gradclip.lm.data import SPLITS, Corpus, check_corpus, load_corpus
from gradclip.lm.loop import result_of, run_loop
from gradclip.lm.model import count_parameters
from gradclip.lm.options import RunOptions, RunResult
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
    clipper, spec = build_clipper(cfg)
    if not isinstance(data, Corpus):
        data = load_corpus(data, tokens=tokens, prefix=data_prefix, vocab_size=cfg.vocab_size)
    corpus = data
    check_corpus(corpus, cfg.batch_size, cfg.num_steps)
    path = Path(run_dir) if run_dir is not None else default_run_dir(label)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, corpus.vocab_size, device)
    optimizer = make_optimizer(model, cfg, clipper)
    state = TrainState()
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
        "threads": torch.get_num_threads(),
        "argv": sys.argv,
        "gradclip": gradclip.__version__,
        "torch": torch.__version__,
    }
    create_run(
        path,
        {
            CONFIG_FILE: cfg.to_toml(),
            RUN_FILE: json.dumps(strict_json(info), indent=2, allow_nan=False) + "\n",
            VOCAB_FILE: encode_vocab(corpus.vocab),
            CHECKPOINT_FILE: checkpoint_bytes(state.checkpoint(cfg, model, optimizer, device)),
            SUMMARY_FILE: json.dumps(strict_json(state.summary(cfg)), indent=2) + "\n",
        },
    )
    say(
        f"gradclip train: config {label}, {info['parameters']:,} parameters, "
        f"vocab {corpus.vocab_size}, clip {spec}, device {device}, "
        f"{torch.get_num_threads()} thread(s); run dir {path}",
        opts.out,
    )
    with lock_run(path):
        return run_loop(cfg, model, optimizer, corpus, path, device, state, opts)


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
    with lock_run(run.path):
        return _resume(run, data, opts)


def _resume(run: Run, data: Corpus | str | Path | None, opts: RunOptions) -> RunResult:
    clean_stale_temp(run.path)  # safe: the lock says no other process writes here
    device = resolve_device(opts.device)
    blob, model = load_run_checkpoint(run, device)
    corpus = load_run_corpus(run, data)
    if isinstance(data, (str, Path)) and str(Path(data).resolve()) != run.info["data"]:
        write_json(run.path / RUN_FILE, {**run.info, "data": str(Path(data).resolve())})
    optimizer = make_optimizer(model, run.config)
    state = TrainState.restore(blob, optimizer, device)
    if state.status in ("finished", "diverged"):
        say(f"gradclip train: {run.path} has already {state.status}", opts.out)
        return result_of(run.path, state, 0.0, StopFlag())
    truncate_metrics(run.path / METRICS_FILE, state.global_step)
    say(
        f"gradclip train: resuming {run.path} at epoch {state.epoch + 1}, "
        f"step {state.step_in_epoch} (global step {state.global_step})",
        opts.out,
    )
    return run_loop(run.config, model, optimizer, corpus, run.path, device, state, opts)

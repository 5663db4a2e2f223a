"""Training as a function: :func:`train` starts a run, :func:`resume` continues one,
both return a :class:`RunResult`. The step loop is :func:`_loop`, one loop in
the spirit of nanoGPT's ``train.py``.

Per step the loop does no host read: the loss and the clip statistics stay on
the device and are written in blocks (:class:`~gradclip.lm.reporting.MetricsLog`);
the progress display reads the device every ``refresh_every`` steps.

A run always ends in one of three ways, recorded in ``summary.json``:

* ``finished``: every epoch done, test perplexity measured;
* ``stopped``: SIGINT, SIGTERM or ``stop_after``; a checkpoint is saved and
  :func:`resume` continues exactly where it stopped;
* ``diverged``: a step's loss, or an epoch's perplexity, was not finite; the
  step is recorded.

A kill (``kill -9``, power loss) loses only the steps since the last checkpoint
(written at step 0, every ``checkpoint_steps`` steps, every
``checkpoint_minutes`` minutes and at each epoch end).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

import gradclip
from gradclip.clippers import ClipStats
from gradclip.lm.config import LMConfig, load_config, validate
from gradclip.lm.data import SPLITS, Batches, Corpus, check_corpus, load_corpus
from gradclip.lm.evaluation import evaluate, evaluate_stream, perplexity
from gradclip.lm.model import PTBModel, State, count_parameters, detach_state, tf_cost
from gradclip.lm.reporting import MetricsLog, Progress, make_tb_writer, say
from gradclip.lm.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    VOCAB_FILE,
    checkpoint_bytes,
    clean_stale_temp,
    create_run,
    default_run_dir,
    encode_vocab,
    read_run,
    save_checkpoint,
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

__all__ = ["RunOptions", "RunResult", "resume", "train", "train_step"]


@dataclass(frozen=True)
class RunOptions:
    """How a run is carried out (not what it computes: that is the config).

    Attributes:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
        metrics: write ``metrics.jsonl``.
        tensorboard: write TensorBoard event files (when tensorboard is installed).
        progress: show progress: a bar on a terminal, else a line every
            ``progress_seconds``.
        progress_seconds: least time between two plain progress lines.
        refresh_every: steps between two progress updates (each reads the device).
        flush_every: steps between two ``metrics.jsonl`` writes.
        test_chunk: tokens per forward in the batch-1 test pass.
        stop_after: stop (checkpoint saved, status ``stopped``) after this many steps in all.
        handle_signals: SIGINT/SIGTERM stop the run at the next step (main thread only).
        out: where messages go (default ``sys.stdout``).
    """

    device: str | torch.device | None = "auto"
    metrics: bool = True
    tensorboard: bool = True
    progress: bool = True
    progress_seconds: float = 30.0
    refresh_every: int = 50
    flush_every: int = 200
    test_chunk: int = 100
    stop_after: int | None = None
    handle_signals: bool = True
    out: TextIO | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended.

    Attributes:
        run_dir: the run directory.
        status: ``finished``, ``stopped`` or ``diverged``.
        steps: training steps done in all.
        epochs: epochs completed.
        train_ppl: the last completed epoch's training perplexity (``None`` before one).
        valid_ppl: its validation perplexity.
        test_ppl: the test perplexity (``finished`` runs only).
        clip_rate: fraction of all steps whose gradients were clipped.
        wall_seconds: time this call took.
        diverged_step: the step at which the run diverged.
        stop_reason: what stopped it (``"SIGTERM"``, ``"stopped after 100 steps"``).
        signum: the signal that stopped it, if one did.
        history: one record per completed epoch.
    """

    run_dir: Path
    status: str
    steps: int
    epochs: int
    train_ppl: float | None
    valid_ppl: float | None
    test_ppl: float | None
    clip_rate: float | None
    wall_seconds: float
    diverged_step: int | None = None
    stop_reason: str = ""
    signum: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """The CLI's exit status: 0 finished or stopped by ``stop_after``, 3 diverged,
        128 + N stopped by signal N (130 SIGINT, 143 SIGTERM)."""
        if self.status == "diverged":
            return 3
        return 128 + self.signum if self.status == "stopped" and self.signum else 0


def train_step(
    model: PTBModel, optimizer: Any, x: Tensor, y: Tensor, hidden: State
) -> tuple[Tensor, ClipStats, State]:
    """One step of truncated BPTT: forward ``T`` steps from the carried state, the
    tutorial's cost Σ_t mean_b CE, backward, clip and step.

    Args:
        model: the language model.
        optimizer: a :class:`~gradclip.ClippedOptimizer`.
        x: inputs ``[T, B]``.
        y: targets ``[T, B]``.
        hidden: the state carried from the previous step (detached here).

    Returns:
        ``(loss, clip statistics, new state)``, the loss detached, nothing read on the host.
    """
    hidden = detach_state(hidden)
    logits, hidden = model(x, hidden)
    loss = tf_cost(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    stats = optimizer.step()
    return loss.detach(), stats, hidden


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
    """Train the tutorial's language model in a new run directory.

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
    train_file = Path(corpus.files["train"])
    info = {
        "data": str(train_file.parent.resolve()),
        "data_prefix": train_file.name[: -len("train.txt")],
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
    return _loop(cfg, model, optimizer, corpus, path, device, state, opts)


def resume(
    run_dir: str | Path, *, data: str | Path | None = None, options: RunOptions | None = None
) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, exactly: the metrics
    and results are those of an uninterrupted run.

    Args:
        run_dir: a run directory made by :func:`train`.
        data: the corpus directory, if it moved (its files' hashes must match).
        options: as for :func:`train` (``stop_after`` counts all steps, old and new).

    Returns:
        The :class:`RunResult`; a run that already ended returns at once.
    """
    opts = options or RunOptions()
    run = read_run(run_dir)
    clean_stale_temp(run.path)
    device = resolve_device(opts.device)
    blob, model = load_run_checkpoint(run, device)
    corpus = load_run_corpus(run, data)
    if data is not None and str(Path(data).resolve()) != run.info["data"]:
        write_json(run.path / RUN_FILE, {**run.info, "data": str(Path(data).resolve())})
    optimizer = make_optimizer(model, run.config)
    state = TrainState.restore(blob, optimizer, device)
    if state.status in ("finished", "diverged"):
        say(f"gradclip train: {run.path} has already {state.status}", opts.out)
        return _result(run.path, state, 0.0, StopFlag())
    truncate_metrics(run.path / METRICS_FILE, state.global_step)
    say(
        f"gradclip train: resuming {run.path} at epoch {state.epoch + 1}, "
        f"step {state.step_in_epoch} (global step {state.global_step})",
        opts.out,
    )
    return _loop(run.config, model, optimizer, corpus, run.path, device, state, opts)


def _result(run_dir: Path, st: TrainState, seconds: float, stop: StopFlag) -> RunResult:
    last = st.history[-1] if st.history else {}
    clipped = float(st.total_clipped) if st.total_clipped is not None else 0.0
    return RunResult(
        run_dir=run_dir,
        status=st.status,
        steps=st.global_step,
        epochs=len(st.history),
        train_ppl=last.get("train_ppl"),
        valid_ppl=last.get("valid_ppl"),
        test_ppl=st.test_ppl,
        clip_rate=clipped / st.global_step if st.global_step else None,
        wall_seconds=seconds,
        diverged_step=st.diverged_step,
        stop_reason=stop.reason if st.status == "stopped" else "",
        signum=stop.signum if st.status == "stopped" else None,
        history=list(st.history),
    )


def _loop(
    cfg: LMConfig,
    model: PTBModel,
    optimizer: Any,
    corpus: Corpus,
    run_dir: Path,
    device: torch.device,
    st: TrainState,
    opts: RunOptions,
) -> RunResult:
    """Train from ``st`` to the end of the schedule, a stop request or divergence."""
    t_start = time.perf_counter()
    out = opts.out
    B, T = cfg.batch_size, cfg.num_steps
    batches = Batches(corpus.train, B, T).to(device)
    n = len(batches)
    tb = None
    if opts.tensorboard:
        tb = make_tb_writer(run_dir / TENSORBOARD_DIR, purge_step=st.global_step + 1)
    metrics_path = run_dir / METRICS_FILE if opts.metrics else None
    # a step diverged when its perplexity exp(loss / T) is no longer finite
    log = MetricsLog(metrics_path, tb, opts.flush_every, max_loss=709.0 * T)
    stop = StopFlag()
    last_save = time.monotonic()
    path = run_dir / CHECKPOINT_FILE

    def save() -> Path:  # metrics first: after a kill, metrics.jsonl may run ahead, never behind
        st.diverged_step = st.diverged_step or log.flush()
        if st.diverged_step is not None:
            st.status = "diverged"
        write_json(run_dir / SUMMARY_FILE, st.summary(cfg))
        return save_checkpoint(run_dir, st.checkpoint(cfg, model, optimizer, device))

    signals = stop.catch_signals() if opts.handle_signals else contextlib.nullcontext()
    with signals:
        try:
            while st.epoch < cfg.max_max_epoch and st.status == "running" and not stop():
                lr = cfg.lr_at(st.epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                st.start_epoch(model, B, device)
                assert st.epoch_cost is not None and st.epoch_clipped is not None
                assert st.total_clipped is not None and st.hidden is not None
                desc = f"epoch {st.epoch + 1}/{cfg.max_max_epoch}"
                progress = Progress(n, desc, st.step_in_epoch, opts.progress, opts.progress_seconds)
                t0, first = time.perf_counter(), st.step_in_epoch
                window = torch.zeros((), device=device)
                for i in range(st.step_in_epoch, n):
                    if stop():
                        break
                    x, y = batches[i]
                    loss, stats, st.hidden = train_step(model, optimizer, x, y, st.hidden)
                    st.global_step += 1
                    st.step_in_epoch = i + 1
                    st.epoch_cost += loss
                    st.epoch_clipped += stats.clipped
                    st.total_clipped += stats.clipped
                    window += stats.norm
                    values = (loss, stats.norm, stats.clipped_norm, stats.threshold, stats.clipped)
                    st.diverged_step = log.add(st.global_step, st.epoch, lr, values)
                    if st.diverged_step is not None:
                        break
                    if (i + 1) % opts.refresh_every == 0:
                        wps = progress.words_per_second(i + 1, B * T)
                        ppl = perplexity(float(st.epoch_cost) / ((i + 1) * T))
                        clip = float(st.epoch_clipped) / (i + 1)
                        gnorm = float(window) / opts.refresh_every
                        window.zero_()
                        progress.update(
                            i + 1, f"wps={wps:,.0f} ppl={ppl:.2f} gnorm={gnorm:.3g} clip={clip:.1%}"
                        )
                    if opts.stop_after is not None and st.global_step >= opts.stop_after:
                        stop.request(f"stopped after {opts.stop_after} steps")
                    minutes = (time.monotonic() - last_save) / 60
                    if (cfg.checkpoint_steps and st.global_step % cfg.checkpoint_steps == 0) or (
                        cfg.checkpoint_minutes and minutes >= cfg.checkpoint_minutes
                    ):
                        save()
                        last_save = time.monotonic()
                        if st.status == "diverged":
                            break
                progress.close()
                elapsed = time.perf_counter() - t0
                if st.diverged_step is not None or st.step_in_epoch < n:
                    break  # diverged, or stopped inside the epoch
                st.diverged_step = log.flush()
                if st.diverged_step is not None:
                    break
                train_ppl = perplexity(float(st.epoch_cost) / (n * T))
                valid_ppl = evaluate(model, corpus.valid, B, T)
                record = {
                    "epoch": st.epoch + 1,
                    "lr": lr,
                    "train_ppl": train_ppl,
                    "valid_ppl": valid_ppl,
                    "clip_rate": float(st.epoch_clipped) / n,
                    "steps": n,
                    "global_step": st.global_step,
                    "seconds": elapsed,
                    "wps": (n - first) * B * T / max(elapsed, 1e-9),
                }
                st.history.append(record)
                say(
                    f"{desc}  lr {lr:.4g}  train ppl {train_ppl:.2f}  valid ppl {valid_ppl:.2f}  "
                    f"clip rate {record['clip_rate']:.1%}  {record['wps']:,.0f} wps  "
                    f"{elapsed:.1f} s",
                    out,
                )
                if tb is not None:
                    for key in ("train_ppl", "valid_ppl", "lr", "clip_rate"):
                        tb.add_scalar(f"epoch/{key}", record[key], st.global_step)
                st.epoch += 1
                st.step_in_epoch = 0
                st.hidden = None
                if not (math.isfinite(train_ppl) and math.isfinite(valid_ppl)):
                    st.diverged_step = st.global_step
                    break
                if st.epoch >= cfg.max_max_epoch:
                    st.test_ppl = evaluate_stream(model, corpus.test, opts.test_chunk)
                    st.status = "finished"
                    if tb is not None:
                        tb.add_scalar("test/ppl", st.test_ppl, st.global_step)
                save()
                last_save = time.monotonic()
            if st.diverged_step is not None:
                st.status = "diverged"
            elif st.status == "running":
                st.status = "stopped"
            if st.status != "finished":
                path = save()
        finally:
            log.close()
            if tb is not None:
                tb.close()
    if st.status == "finished":
        last = st.history[-1]
        say(
            f"done: train ppl {last['train_ppl']:.2f}  valid ppl {last['valid_ppl']:.2f}  "
            f"test ppl {st.test_ppl:.2f}  (run dir {run_dir})",
            out,
        )
    elif st.status == "diverged":
        say(
            f"diverged at step {st.diverged_step}: the loss or perplexity is no longer finite; "
            f"recorded in {run_dir / SUMMARY_FILE} (status diverged)",
            out,
        )
    else:
        say(
            f"{stop.reason or 'stopped'} at step {st.global_step} (epoch {st.epoch + 1}, "
            f"step {st.step_in_epoch}/{n}); checkpoint saved to {path}; "
            f"continue with: gradclip train --resume {run_dir}",
            out,
        )
    return _result(run_dir, st, time.perf_counter() - t_start, stop)

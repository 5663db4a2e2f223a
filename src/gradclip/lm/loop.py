"""The step loop of ``gradclip train``: :func:`run_loop`, one loop in the spirit of
nanoGPT's ``train.py``, and :func:`train_step`.

Per step the loop does no host read: the loss and the clip statistics stay on
the device and are written in blocks (:class:`~gradclip.lm.reporting.MetricsLog`);
the progress display reads the device every ``refresh_every`` steps.
Divergence (a step's perplexity exp(loss/T), or an epoch's, not finite) is
noticed at the next metrics flush or checkpoint, at most ``flush_every`` steps
later; the step recorded is the first diverged one.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gradclip.clippers import ClipStats
from gradclip.lm.batches import Batches
from gradclip.lm.config import LMConfig
from gradclip.lm.data import Corpus
from gradclip.lm.evaluation import evaluate, evaluate_stream, perplexity
from gradclip.lm.model import PTBModel, State, detach_state, tf_cost
from gradclip.lm.options import RunOptions, RunResult
from gradclip.lm.parallel import Parallel, signal_name
from gradclip.lm.parallel_checkpoint import complete_checkpoint, remove_stale_dcp
from gradclip.lm.reporting import LoopMonitor, MetricsLog, Progress, make_tb_writer, say
from gradclip.lm.rundir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    read_metrics,
    save_checkpoint,
    write_json,
)
from gradclip.lm.session import StopFlag
from gradclip.lm.state import TrainState

__all__ = ["result_of", "run_loop", "train_step"]


def train_step(
    model: torch.nn.Module, optimizer: Any, x: Tensor, y: Tensor, hidden: State
) -> tuple[Tensor, ClipStats, State]:
    """One step of truncated BPTT: forward ``T`` steps from the carried state, the
    tutorial's cost Σ_t mean_b CE, backward, clip and step.

    Args:
        model: the language model (or its DDP wrapper).
        optimizer: a :class:`~gradclip.ClippedOptimizer`.
        x: inputs ``[T, B]``.
        y: targets ``[T, B]``.
        hidden: the state carried from the previous step (detached here).

    Returns:
        ``(loss, clip statistics, new state)``, the loss detached, nothing read on the host.

    Example:
        >>> from gradclip.lm.config import load_config
        >>> from gradclip.lm.session import make_optimizer
        >>> cfg = load_config("test")[0]
        >>> model = PTBModel.from_config(cfg, 10)
        >>> x = torch.zeros(cfg.num_steps, cfg.batch_size, dtype=torch.long)
        >>> opt = make_optimizer(model, cfg)
        >>> loss, stats, h = train_step(model, opt, x, x, model.init_state(cfg.batch_size))
        >>> float(stats.threshold), loss.requires_grad
        (1.0, False)
    """
    hidden = detach_state(hidden)
    logits, hidden = model(x, hidden)
    loss = tf_cost(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    stats = optimizer.step()
    return loss.detach(), stats, hidden


def result_of(run_dir: Path, st: TrainState, seconds: float, stop: StopFlag) -> RunResult:
    """The :class:`RunResult` of a run that stands at ``st``.

    Args:
        run_dir: the run directory.
        st: where the run stands.
        seconds: the time this call took.
        stop: what stopped it, if anything.

    Returns:
        The result.
    """
    last = st.history[-1] if st.history else {}
    return RunResult(
        run_dir=run_dir,
        status=st.status,
        steps=st.global_step,
        epochs=len(st.history),
        train_ppl=last.get("train_ppl"),
        valid_ppl=last.get("valid_ppl"),
        test_ppl=st.test_ppl,
        clip_rate=st.clip_rate,
        wall_seconds=seconds,
        diverged_step=st.diverged_step,
        stop_reason=stop.reason if st.status == "stopped" else "",
        signum=stop.signum if st.status == "stopped" else None,
        history=list(st.history),
    )


def run_loop(
    cfg: LMConfig,
    model: PTBModel,
    optimizer: Any,
    corpus: Corpus,
    run_dir: Path,
    device: torch.device,
    st: TrainState,
    opts: RunOptions,
    par: Parallel | None = None,
    net: torch.nn.Module | None = None,
) -> RunResult:
    """Train from ``st`` to the end of the schedule, a stop request or divergence.

    Each epoch: set the tutorial's learning rate, zero the state (unless resuming
    inside the epoch), run the steps (checkpointing every ``checkpoint_steps`` /
    ``checkpoint_minutes``), then evaluate valid, record the epoch and checkpoint;
    after the last one, the batch-1 test pass.

    Args:
        cfg: the config.
        model: the model.
        optimizer: its :class:`~gradclip.ClippedOptimizer`.
        corpus: the token streams.
        run_dir: the run directory (created).
        device: where training runs.
        st: where to start from (fresh or restored from a checkpoint).
        opts: logging, progress, stop and signal options.
        par: this process's rank under ``torchrun`` (:mod:`gradclip.lm.parallel`):
            it trains on its rows of each batch, the logged loss is the ranks' mean,
            only rank 0 writes, stops and timed checkpoints are agreed on every
            ``refresh_every`` steps.
        net: the module the training forward runs through (DDP's wrapper).

    Returns:
        The :class:`RunResult`; ``st`` is left where the run ended.
    """
    t_start = time.perf_counter()
    out = opts.out
    par = par or Parallel()
    net = net or model
    B, T = cfg.batch_size, cfg.num_steps
    batches = Batches(corpus.train, B, T)
    batches.data = batches.data[:, par.rows(B)]  # this rank's rows of the stream
    batches = batches.to(device)
    n = len(batches)
    tb = None
    if opts.tensorboard and par.writer:
        tb = make_tb_writer(run_dir / TENSORBOARD_DIR, purge_step=st.global_step + 1)
    metrics_path = run_dir / METRICS_FILE if opts.metrics else None
    monitor = LoopMonitor(model, optimizer) if opts.monitor else None
    if monitor is not None and metrics_path is not None:  # resumed: the detector's history
        monitor.replay(read_metrics(metrics_path))
    log = MetricsLog(
        metrics_path if par.writer else None,
        tb,
        opts.flush_every,
        max_loss=709.0 * T,
        monitor=monitor,
        events_to=sys.stderr if par.writer else None,
    )
    stop = StopFlag()
    caught = StopFlag() if par.active else stop  # ranks agree before acting on a signal
    if opts.stop_after is not None and st.global_step >= opts.stop_after:  # nothing to do
        stop.request(f"stopped after {opts.stop_after} steps")
    last_save = time.monotonic()
    path = run_dir / CHECKPOINT_FILE

    def save() -> Path:  # metrics first: after a kill, metrics.jsonl may run ahead, never behind
        st.diverged_step = st.diverged_step or log.flush()
        if st.diverged_step is not None:
            st.status = "diverged"
        summary = st.summary(cfg)
        if monitor is not None:
            summary["gradients"] = monitor.stats.as_dict()
        if par.writer:
            write_json(run_dir / SUMMARY_FILE, summary)
        blob = st.checkpoint(cfg, model, optimizer, device)
        blob = complete_checkpoint(par, blob, model, optimizer, run_dir, st.global_step)
        if par.writer:
            save_checkpoint(run_dir, blob)
            remove_stale_dcp(run_dir, blob.get("dcp"))
        return path

    signals = caught.catch_signals(par.writer) if opts.handle_signals else contextlib.nullcontext()
    with signals:
        try:
            while st.epoch < cfg.max_max_epoch and st.status == "running" and not stop():
                lr = cfg.lr_at(st.epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                st.start_epoch(model, B // par.world, device)
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
                    loss, stats, st.hidden = train_step(net, optimizer, x, y, st.hidden)
                    loss = par.mean(loss)
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
                    due = bool(cfg.checkpoint_minutes and minutes >= cfg.checkpoint_minutes)
                    if par.active:  # every rank saves and stops at the same step
                        signum, due = 0, False
                        if (i + 1) % opts.refresh_every == 0:
                            signum, due = par.agree(caught.signum, due, device)
                        if signum:
                            stop.request(signal_name(signum), signum)
                    if (cfg.checkpoint_steps and st.global_step % cfg.checkpoint_steps == 0) or due:
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
            if monitor is not None:
                monitor.detach()
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
    return result_of(run_dir, st, time.perf_counter() - t_start, stop)

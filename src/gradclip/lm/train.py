"""The training loop: the tutorial's ``run_epoch`` with gradclip clippers, logging,
checkpoints and exact resume.

Per step the loop does no host read: the loss is accumulated in a tensor, and
each step's 0-d statistics are kept and written to ``metrics.jsonl`` in blocks
(one ``torch.stack(...).tolist()`` per column every ``flush_every`` steps). The
progress bar reads the device every ``refresh_every`` steps. On CUDA these are
the only synchronisations.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TextIO

import torch
import torch.nn.functional as F
from torch import Tensor

import gradclip
from gradclip.lm.config import LMConfig
from gradclip.lm.data import Batches, atomic_write_bytes
from gradclip.lm.model import PTBModel, State, detach_state, tf_cost

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
METRIC_COLUMNS = ("loss", "norm", "clipped_norm", "threshold", "clipped")


class _StatsLike(Protocol):
    norm: Tensor
    threshold: Tensor
    clipped_norm: Tensor
    clipped: Tensor


StepSink = Callable[[int, Tensor, Any], None]


# --------------------------------------------------------------------------- clipping
def clip_spec(cfg: LMConfig) -> str:
    """The clipper spec of ``cfg``: ``norm`` at ``max_grad_norm`` unless ``clip`` says else.

    A ``norm`` spec without ``max_norm`` takes ``max_grad_norm`` (e.g. ``norm:norm_type=inf``).
    """
    spec = cfg.clip.strip()
    if not spec:
        return f"norm:max_norm={cfg.max_grad_norm!r}"
    name, _, rest = spec.partition(":")
    keys = {part.partition("=")[0].strip().replace("-", "_") for part in rest.split(",")}
    if name.strip().lower() == "norm" and "max_norm" not in keys:
        options = [part.strip() for part in rest.split(",") if part.strip()]
        return ":".join(["norm", ",".join([f"max_norm={cfg.max_grad_norm!r}", *options])])
    return spec


def make_optimizer(model: torch.nn.Module, cfg: LMConfig) -> Any:
    """Plain SGD (the tutorial's ``GradientDescentOptimizer``) behind a gradclip clipper.

    On the CPU and CUDA the SGD is torch's fused kernel, into which ClippedOptimizer
    folds the clip scale (one read of each gradient for the update, nothing written
    back to ``.grad``)."""
    clipper = gradclip.make_clipper_from_spec(clip_spec(cfg))
    device = next(model.parameters()).device
    fused = device.type in ("cpu", "cuda")
    sgd = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, fused=fused)
    return gradclip.ClippedOptimizer(sgd, clipper)


# --------------------------------------------------------------------------- core loop
def train_steps(
    model: PTBModel,
    batches: Batches,
    optimizer: Any,
    state: State,
    steps: range,
    sink: StepSink | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[State, int]:
    """Run training steps ``steps`` of one epoch; return the state and the number
    of steps done (fewer when ``stop()`` fires before a step).

    ``optimizer.step()`` may return clip statistics; they are handed to ``sink``
    with the step index and the step's (detached) cost.
    """
    model.train()
    done = 0
    for i in steps:
        if stop is not None and stop():
            break
        x, y = batches[i]
        state = detach_state(state)
        logits, state = model(x, state)
        cost = tf_cost(logits, y)
        optimizer.zero_grad(set_to_none=True)
        cost.backward()  # type: ignore[no-untyped-call]
        stats = optimizer.step()
        if sink is not None:
            sink(i, cost.detach(), stats)
        done += 1
    return state, done


@torch.no_grad()
def evaluate(model: PTBModel, ids: Tensor, batch_size: int, num_steps: int) -> float:
    """The tutorial's eval ``run_epoch``: zero state, batches of ``[B, T]``, no dropout.

    Returns exp(mean cross-entropy per predicted token).
    """
    device = model.embedding.weight.device
    batches = Batches(ids, batch_size, num_steps).to(device)
    if len(batches) == 0:
        raise ValueError(
            f"evaluation split too small for batch_size {batch_size} and num_steps {num_steps}"
        )
    was_training = model.training
    model.eval()
    state = model.init_state(batch_size)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in batches:
        logits, state = model(x, state)
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
        )
    model.train(was_training)
    tokens = len(batches) * num_steps * batch_size
    return math.exp(total.item() / tokens)


@torch.no_grad()
def evaluate_stream(model: PTBModel, ids: Tensor, chunk: int = 100) -> float:
    """Test perplexity as the tutorial computes it (batch 1, num_steps 1), in chunks.

    With batch 1, the state carried and dropout off, feeding the stream ``chunk``
    tokens at a time computes the same function as one token at a time: all
    N − 1 next-token predictions, each conditioned on the whole prefix. Only the
    rounding of the recurrent matmuls may differ (the tests check agreement).
    """
    device = model.embedding.weight.device
    stream = ids.long().to(device)
    n = stream.numel() - 1
    if n < 1:
        raise ValueError("test split needs at least 2 tokens")
    was_training = model.training
    model.eval()
    state = model.init_state(1)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        x = stream[start:stop].unsqueeze(1)
        y = stream[start + 1 : stop + 1]
        logits, state = model(x, state)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y, reduction="sum")
    model.train(was_training)
    return math.exp(total.item() / n)


# --------------------------------------------------------------------------- logging
class MetricsLog:
    """Per-step metrics kept as tensors and written to ``metrics.jsonl`` in blocks.

    Every step goes to ``metrics.jsonl``; TensorBoard gets every ``tb_every``-th step
    (six scalars cost about 0.3 ms a row, 0.7 % of a small-config step)."""

    def __init__(
        self,
        path: Path | None,
        tb_writer: Any = None,
        flush_every: int = 200,
        tb_every: int = 10,
    ) -> None:
        self.path = path
        self.tb = tb_writer
        self.flush_every = flush_every
        self.tb_every = tb_every
        self.rows: list[tuple[int, int, float, tuple[Tensor, ...]]] = []
        self._fh: TextIO | None = None
        if path is not None:
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def add(self, step: int, epoch: int, lr: float, values: tuple[Tensor, ...]) -> None:
        self.rows.append((step, epoch, lr, values))
        if len(self.rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        columns = [
            torch.stack([r[3][j] for r in self.rows]).tolist() for j in range(len(METRIC_COLUMNS))
        ]
        lines = []
        for k, (step, epoch, lr, _) in enumerate(self.rows):
            rec: dict[str, Any] = {"step": step, "epoch": epoch + 1}
            for j, name in enumerate(METRIC_COLUMNS):
                v = columns[j][k]
                rec[name] = bool(v) if name == "clipped" else v
            rec["lr"] = lr
            lines.append(json.dumps(rec, allow_nan=True))
            if self.tb is not None and step % self.tb_every == 0:
                self.tb.add_scalar("train/loss", rec["loss"], step)
                self.tb.add_scalar("train/grad_norm", rec["norm"], step)
                self.tb.add_scalar("train/clipped_norm", rec["clipped_norm"], step)
                self.tb.add_scalar("train/threshold", rec["threshold"], step)
                self.tb.add_scalar("train/clipped", float(rec["clipped"]), step)
                self.tb.add_scalar("train/lr", lr, step)
        if self._fh is not None:
            self._fh.write("\n".join(lines) + "\n")
            self._fh.flush()
        self.rows.clear()

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop lines after global step ``last_step`` (written after the last checkpoint)."""
    if not path.exists():
        return
    keep: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError):
                break
            if step > last_step:
                break
            keep.append(line if line.endswith("\n") else line + "\n")
    atomic_write_bytes(path, "".join(keep).encode("utf-8"))


def make_tb_writer(log_dir: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` when tensorboard is installed, else None."""
    try:
        import tensorboard  # type: ignore[import-untyped]  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(log_dir=str(log_dir))


# --------------------------------------------------------------------------- interrupt
class StopFlag:
    """Set by the first Ctrl-C (the loop then saves and exits at a step boundary);
    a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""

    def __call__(self) -> bool:
        return self.requested

    @contextmanager
    def catch_sigint(self) -> Iterator[None]:
        try:
            previous = signal.getsignal(signal.SIGINT)
        except ValueError:  # pragma: no cover
            previous = None

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            self.reason = "interrupted"
            print(
                "\ngradclip train: Ctrl-C: saving a checkpoint at the next step "
                "(press again to abort without saving)",
                file=sys.stderr,
            )

        installed = False
        try:
            signal.signal(signal.SIGINT, handler)
            installed = True
        except ValueError:  # not the main thread
            pass
        try:
            yield
        finally:
            if installed:
                signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- trainer
@dataclass
class TrainState:
    """Where training stands; all of it goes into the checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    step_in_epoch: int = 0  # steps of that epoch already done
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    test_ppl: float | None = None
    finished: bool = False


@dataclass
class Trainer:
    """Owns model, optimizer, data and run directory for ``gradclip train``."""

    cfg: LMConfig
    model: PTBModel
    optimizer: Any
    train_ids: Tensor
    valid_ids: Tensor
    test_ids: Tensor
    run_dir: Path
    device: torch.device
    log_metrics: bool = True
    tensorboard: bool = True
    progress: bool = True
    refresh_every: int = 50
    flush_every: int = 200
    test_chunk: int = 100
    stop_after: int | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    state: TrainState = field(default_factory=TrainState)
    _hidden: State | None = None
    _epoch_cost: Tensor | None = None
    _epoch_clipped: Tensor | None = None

    # ----------------------------------------------------------------- checkpoint
    def checkpoint_dict(self) -> dict[str, Any]:
        st = self.state
        blob: dict[str, Any] = {
            "format": 1,
            "config": self.cfg.as_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": st.epoch,
            "step_in_epoch": st.step_in_epoch,
            "global_step": st.global_step,
            "history": st.history,
            "test_ppl": st.test_ppl,
            "finished": st.finished,
            "rng_cpu": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            blob["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if st.step_in_epoch > 0:
            blob["hidden"] = self._hidden
            blob["epoch_cost"] = self._epoch_cost
            blob["epoch_clipped"] = self._epoch_clipped
        return blob

    def save_checkpoint(self) -> Path:
        buf = io.BytesIO()
        torch.save(self.checkpoint_dict(), buf)
        path = self.run_dir / CHECKPOINT
        atomic_write_bytes(path, buf.getvalue())
        self.write_summary()
        return path

    def load_checkpoint(self, blob: dict[str, Any]) -> None:
        self.model.load_state_dict(blob["model"])
        self.optimizer.load_state_dict(blob["optimizer"])
        self.state = TrainState(
            epoch=int(blob["epoch"]),
            step_in_epoch=int(blob["step_in_epoch"]),
            global_step=int(blob["global_step"]),
            history=list(blob["history"]),
            test_ppl=blob.get("test_ppl"),
            finished=bool(blob.get("finished", False)),
        )
        torch.set_rng_state(blob["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in blob:
            torch.cuda.set_rng_state(blob["rng_cuda"], self.device)
        if self.state.step_in_epoch > 0:
            self._hidden = _to_device(blob["hidden"], self.device)
            self._epoch_cost = blob["epoch_cost"].to(self.device)
            self._epoch_clipped = blob["epoch_clipped"].to(self.device)

    def write_summary(self) -> None:
        st = self.state
        summary = {
            "config": self.cfg.as_dict(),
            "epochs": st.history,
            "test_ppl": st.test_ppl,
            "finished": st.finished,
            "global_step": st.global_step,
        }
        atomic_write_bytes(
            self.run_dir / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode("utf-8")
        )

    # ----------------------------------------------------------------- running
    def _print(self, msg: str) -> None:
        print(msg, file=self.out, flush=True)

    def run(self, stop: StopFlag | None = None) -> bool:
        """Train to the end (True) or until a stop request (False; checkpoint saved)."""
        stop = stop or StopFlag()
        cfg = self.cfg
        B, T = cfg.batch_size, cfg.num_steps
        batches = Batches(self.train_ids, B, T).to(self.device)
        n_steps = len(batches)
        tb = make_tb_writer(self.run_dir / "tb") if self.tensorboard else None
        metrics = MetricsLog(
            self.run_dir / METRICS if self.log_metrics else None, tb, self.flush_every
        )
        words_per_step = B * T
        try:
            while self.state.epoch < cfg.max_max_epoch:
                st = self.state
                epoch = st.epoch
                lr = cfg.lr_at(epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                if st.step_in_epoch == 0:
                    self._hidden = self.model.init_state(B)
                    self._epoch_cost = torch.zeros((), device=self.device)
                    self._epoch_clipped = torch.zeros((), device=self.device)
                assert self._hidden is not None
                assert self._epoch_cost is not None and self._epoch_clipped is not None
                bar = _progress(
                    n_steps,
                    f"epoch {epoch + 1}/{cfg.max_max_epoch}",
                    self.progress,
                    st.step_in_epoch,
                )
                t0 = time.perf_counter()
                first = st.step_in_epoch
                sink = _EpochSink(self, metrics, bar, epoch, lr, t0, stop, tb is not None)
                self._hidden, _ = train_steps(
                    self.model,
                    batches,
                    self.optimizer,
                    self._hidden,
                    range(st.step_in_epoch, n_steps),
                    sink,
                    stop,
                )
                elapsed = time.perf_counter() - t0
                steps_done = self.state.step_in_epoch - first
                if bar is not None:
                    bar.update(self.state.step_in_epoch - bar.n)
                    bar.close()
                if self.state.step_in_epoch < n_steps:  # stopped mid-epoch
                    metrics.flush()
                    path = self.save_checkpoint()
                    self._print(
                        f"{stop.reason or 'stopped'} at step {self.state.global_step} "
                        f"(epoch {epoch + 1}, step {self.state.step_in_epoch}/{n_steps}); "
                        f"checkpoint saved to {path}; continue with: "
                        f"gradclip train --resume {self.run_dir}"
                    )
                    return False
                train_ppl = math.exp(float(self._epoch_cost) / (n_steps * T))
                clip_rate = float(self._epoch_clipped) / n_steps
                valid_ppl = evaluate(self.model, self.valid_ids, B, T)
                record = {
                    "epoch": epoch + 1,
                    "lr": lr,
                    "train_ppl": train_ppl,
                    "valid_ppl": valid_ppl,
                    "clip_rate": clip_rate,
                    "steps": n_steps,
                    "global_step": self.state.global_step,
                    "seconds": elapsed,
                    "wps": steps_done * words_per_step / max(elapsed, 1e-9),
                }
                self.state.history.append(record)
                self._print(
                    f"epoch {epoch + 1}/{cfg.max_max_epoch}  lr {lr:.4g}  "
                    f"train ppl {train_ppl:.2f}  valid ppl {valid_ppl:.2f}  "
                    f"clip rate {clip_rate:.1%}  {record['wps']:,.0f} wps  {elapsed:.1f} s"
                )
                if tb is not None:
                    tb.add_scalar("epoch/train_ppl", train_ppl, epoch + 1)
                    tb.add_scalar("epoch/valid_ppl", valid_ppl, epoch + 1)
                    tb.add_scalar("epoch/lr", lr, epoch + 1)
                    tb.add_scalar("epoch/clip_rate", clip_rate, epoch + 1)
                self.state.epoch += 1
                self.state.step_in_epoch = 0
                self._hidden = None
                metrics.flush()
                if self.state.epoch >= cfg.max_max_epoch:
                    self.state.test_ppl = evaluate_stream(
                        self.model, self.test_ids, self.test_chunk
                    )
                    self.state.finished = True
                self.save_checkpoint()
                if stop() and not self.state.finished:
                    self._print(
                        f"{stop.reason or 'stopped'} after epoch {epoch + 1}; checkpoint "
                        f"saved; continue with: gradclip train --resume {self.run_dir}"
                    )
                    return False
            if self.state.test_ppl is not None:
                last = self.state.history[-1] if self.state.history else {}
                self._print(
                    f"done: train ppl {last.get('train_ppl', float('nan')):.2f}  "
                    f"valid ppl {last.get('valid_ppl', float('nan')):.2f}  "
                    f"test ppl {self.state.test_ppl:.2f}  (run dir {self.run_dir})"
                )
                if tb is not None:
                    tb.add_scalar("test/ppl", self.state.test_ppl, self.state.epoch)
            return True
        finally:
            metrics.close()
            if tb is not None:
                tb.close()


class _EpochSink:
    """Per-step bookkeeping: sums in tensors, metrics rows, a progress bar every
    ``refresh_every`` steps (the only host read)."""

    def __init__(
        self,
        trainer: Trainer,
        metrics: MetricsLog,
        bar: Any,
        epoch: int,
        lr: float,
        t0: float,
        stop: StopFlag,
        tb: bool,
    ) -> None:
        self.tr = trainer
        self.metrics = metrics
        self.bar = bar
        self.epoch = epoch
        self.lr = lr
        self.t0 = t0
        self.stop = stop
        self.record = trainer.log_metrics or tb
        self.first = trainer.state.step_in_epoch
        self.window_norm = torch.zeros((), device=trainer.device)
        self.window_n = 0

    def __call__(self, i: int, cost: Tensor, stats: Any) -> None:
        tr = self.tr
        st = tr.state
        st.global_step += 1
        st.step_in_epoch = i + 1
        assert tr._epoch_cost is not None and tr._epoch_clipped is not None
        tr._epoch_cost = tr._epoch_cost + cost
        tr._epoch_clipped = tr._epoch_clipped + stats.clipped
        if self.record:
            self.metrics.add(
                st.global_step,
                self.epoch,
                self.lr,
                (cost, stats.norm, stats.clipped_norm, stats.threshold, stats.clipped),
            )
        if self.bar is not None:
            self.window_norm = self.window_norm + stats.norm
            self.window_n += 1
            if (i + 1) % tr.refresh_every == 0:
                self.refresh(i + 1)
        if tr.stop_after is not None and st.global_step >= tr.stop_after:
            self.stop.requested = True
            self.stop.reason = f"stopped after {tr.stop_after} steps"

    def refresh(self, steps: int) -> None:
        tr = self.tr
        cfg = tr.cfg
        elapsed = time.perf_counter() - self.t0
        words = (steps - self.first) * cfg.batch_size * cfg.num_steps
        ppl = math.exp(min(float(tr._epoch_cost) / (steps * cfg.num_steps), 700.0))  # type: ignore[arg-type]
        gnorm = float(self.window_norm) / max(self.window_n, 1)
        clip = float(tr._epoch_clipped) / steps  # type: ignore[arg-type]
        self.bar.set_postfix_str(
            f"wps={words / max(elapsed, 1e-9):,.0f} ppl={ppl:.2f} "
            f"gnorm={gnorm:.3g} clip={clip:.1%}",
            refresh=False,
        )
        self.bar.update(steps - self.bar.n)
        self.window_norm = torch.zeros((), device=tr.device)
        self.window_n = 0


def _to_device(state: State, device: torch.device) -> State:
    if isinstance(state, (tuple, list)):
        return (state[0].to(device), state[1].to(device))
    return state.to(device)


def _progress(total: int, desc: str, enabled: bool, initial: int) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        file=sys.stderr,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
        dynamic_ncols=True,
        leave=False,
    )


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))

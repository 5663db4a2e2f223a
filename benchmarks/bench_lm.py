"""Words/s of ``gradclip train``'s loop (config ``small``) against a pytorch/examples
``word_language_model``-style loop, and the cost of per-step clipping + logging.

Three loops, same model size (V 10000, 2 × 200 LSTM, untied), batch 20, bptt 20,
same token stream, run side by side in interleaved blocks:

* ``examples``: a minimal re-implementation of pytorch/examples'
  ``word_language_model`` training step (reference §15): ``nn.Embedding`` +
  ``nn.LSTM(200, 200, 2)`` + ``nn.Linear``, ``nn.Dropout`` on embedding and
  output (p = 0 here, as in the small config), mean cross-entropy,
  ``torch.nn.utils.clip_grad_norm_(params, 0.25)``, manual SGD
  ``p.add_(p.grad, alpha=-lr)``, hidden state detached each batch and
  ``total_loss += loss.item()``.
* ``gradclip``: the loop of ``gradclip train`` itself (``train_step`` with the
  loop's per-step bookkeeping): TF-scale loss, ``ClippedOptimizer`` with the
  ``norm`` clipper at 5, the gradient monitor (per-layer norms, update ratio
  every 100th step), per-step ``metrics.jsonl`` rows (and TensorBoard when
  installed) flushed every 200 steps, progress bar refreshed every 50 steps.
* ``bare``: the same loop without clipping and logging: plain ``torch.optim.SGD``
  and no per-step bookkeeping.

Each block is ``--block`` steps (default 25); the loops take turns block by block,
the order rotating every round, so that the load of a shared machine hits all
three alike. The ``gradclip`` loop flushes ``metrics.jsonl`` (and TensorBoard)
once per block, i.e. 8× as often as ``gradclip train`` does by default, so its
logging cost is counted in full. Words/s of a block = block · B · T / seconds.
Reported: the median over ``--rounds`` blocks per loop, and the median over
rounds of the per-round ratio (robust to slow drifts of the machine's load).

Run: ``.venv/bin/python benchmarks/bench_lm.py --threads 2`` (wall clock), or
``--threads 1 --clock cpu`` (CPU time; robust to other jobs on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gradclip
from gradclip.lm.batches import Batches
from gradclip.lm.config import load_config
from gradclip.lm.loop import train_step
from gradclip.lm.model import PTBModel
from gradclip.lm.reporting import LoopMonitor, MetricsLog, Progress, make_tb_writer
from gradclip.lm.session import make_optimizer


class ExamplesRNNModel(nn.Module):
    """pytorch/examples word_language_model's RNNModel (LSTM, untied), written from §15."""

    def __init__(self, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float) -> None:
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nhid, self.nlayers = nhid, nlayers
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, x: Tensor, hidden: tuple[Tensor, Tensor]) -> tuple[Tensor, Any]:
        emb = self.drop(self.encoder(x))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> tuple[Tensor, Tensor]:
        w = next(self.parameters())
        return (
            w.new_zeros(self.nlayers, bsz, self.nhid),
            w.new_zeros(self.nlayers, bsz, self.nhid),
        )


class ExamplesLoop:
    def __init__(self, batches: Batches, vocab: int, lr: float = 20.0, clip: float = 0.25) -> None:
        torch.manual_seed(0)
        self.model = ExamplesRNNModel(vocab, 200, 200, 2, 0.0)
        self.criterion = nn.NLLLoss()  # examples: log_softmax + NLLLoss = mean CE
        self.batches = batches
        self.hidden: Any = self.model.init_hidden(batches.batch_size)
        self.lr, self.clip, self.vocab = lr, clip, vocab
        self.total_loss = 0.0

    def run(self, steps: range) -> None:
        model = self.model
        model.train()
        for i in steps:
            data, targets = self.batches[i]
            model.zero_grad()
            self.hidden = tuple(h.detach() for h in self.hidden)  # repackage_hidden
            output, self.hidden = model(data, self.hidden)
            loss = self.criterion(output, targets.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-self.lr)
            self.total_loss += loss.item()


class GradclipLoop:
    """The ``gradclip train`` step loop with (full) or without (bare) clip + logging.

    ``full`` repeats the per-step bookkeeping of :func:`gradclip.lm.loop.run_loop`:
    the running sums, the metrics row and a progress refresh every 50 steps."""

    def __init__(
        self, batches: Batches, vocab: int, full: bool, out_dir: Path, flush_every: int = 200
    ) -> None:
        cfg, _ = load_config("small")
        torch.manual_seed(0)
        self.model = PTBModel.from_config(cfg, vocab)
        self.batches = batches
        self.state = self.model.init_state(batches.batch_size)
        self.full = full
        self.lr = cfg.learning_rate
        if full:
            self.optimizer: Any = make_optimizer(self.model, cfg)
            self.tb = make_tb_writer(out_dir / "tb")
            monitor = LoopMonitor(self.model, self.optimizer)
            self.metrics = MetricsLog(
                out_dir / "metrics.jsonl", self.tb, flush_every=flush_every, monitor=monitor
            )
            self.devnull = open(os.devnull, "w")  # noqa: SIM115
            self.progress = Progress(len(batches), "bench", stream=self.devnull)
            self.cost = torch.zeros(())
            self.clipped = torch.zeros(())
            self.window = torch.zeros(())
            self.step = 0
        else:
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.learning_rate)

    def run(self, steps: range) -> None:
        for i in steps:
            x, y = self.batches[i]
            loss, stats, self.state = train_step(self.model, self.optimizer, x, y, self.state)
            if not self.full:
                continue
            self.step += 1
            self.cost += loss
            self.clipped += stats.clipped
            self.window += stats.norm
            values = (loss, stats.norm, stats.clipped_norm, stats.threshold, stats.clipped)
            self.metrics.add(self.step, 0, self.lr, values)
            if self.step % 50 == 0:
                wps = self.progress.words_per_second(self.step, 400)
                ppl = float(self.cost) / (self.step * 20)
                text = f"wps={wps:,.0f} ppl={ppl:.2f} gnorm={float(self.window) / 50:.3g}"
                self.window.zero_()
                self.progress.update(self.step % len(self.batches), text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--block", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument(
        "--flush-every",
        type=int,
        default=0,
        help="metrics flush period of the gradclip loop (default: --block, or 200 "
        "if the block is shorter, as in gradclip train)",
    )
    ap.add_argument("--data", help="PTB directory (default: random ids, V = 10000)")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: process_time (CPU seconds of all the process's "
        "threads, so time lost to other processes on a shared machine is not counted; "
        "use with --threads 1)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    vocab = 10000
    flush_every = args.flush_every or (args.block if args.block >= 25 else 200)
    if args.data:
        from gradclip.lm.data import load_corpus

        ids = load_corpus(args.data).train
    else:
        ids = torch.randint(0, vocab, (929_589,), generator=torch.Generator().manual_seed(0))
    batches = Batches(ids, 20, 20)
    words = 20 * 20
    with tempfile.TemporaryDirectory() as tmp:
        loops: dict[str, Any] = {
            "examples": ExamplesLoop(batches, vocab),
            "gradclip": GradclipLoop(batches, vocab, True, Path(tmp), flush_every),
            "bare": GradclipLoop(batches, vocab, False, Path(tmp)),
        }
        pos = {k: 0 for k in loops}

        def take(name: str, n: int) -> range:
            start = pos[name]
            if start + n > len(batches):
                start = 0
            pos[name] = start + n
            return range(start, start + n)

        for name, loop in loops.items():
            loop.run(take(name, args.warmup))
        if "gradclip" in loops:
            loops["gradclip"].metrics.flush()
        wps: dict[str, list[float]] = {k: [] for k in loops}
        seconds: dict[str, float] = {k: 0.0 for k in loops}
        order = list(loops)
        for r in range(args.rounds):
            shift = r % len(order)  # rotate the order so no loop always runs first
            for name in order[shift:] + order[:shift]:
                t0 = clock()
                loops[name].run(take(name, args.block))
                dt = clock() - t0
                seconds[name] += dt
                wps[name].append(args.block * words / dt)
            if (r + 1) % 6 == 0:
                print(
                    f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:,.0f}" for k, v in wps.items()),
                    file=sys.stderr,
                )
        g = loops["gradclip"]
        g.metrics.close()
        if g.tb is not None:
            g.tb.close()
        g.progress.close()
        g.devnull.close()
        lines = (Path(tmp) / "metrics.jsonl").read_text().count("\n")
    med = {k: statistics.median(v) for k, v in wps.items()}

    def paired(a: str, b: str) -> float:
        """Median over rounds of wps[a] / wps[b] measured in the same round."""
        return statistics.median(x / y for x, y in zip(wps[a], wps[b], strict=True))

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {args.threads}, gradclip {gradclip.__version__}, "
        f"clock {args.clock}"
    )
    print(
        f"blocks: {args.rounds} rounds × {args.block} steps per loop (B 20, T 20), "
        f"order rotated each round; gradclip flushes metrics every {flush_every} steps"
    )
    print("| loop | words/s (median) | min | max |")
    print("|---|---|---|---|")
    for k, v in wps.items():
        print(f"| {k} | {med[k]:,.0f} | {min(v):,.0f} | {max(v):,.0f} |")
    print(
        f"gradclip / examples: {med['gradclip'] / med['examples']:.3f} (ratio of medians), "
        f"{paired('gradclip', 'examples'):.3f} (median of per-round ratios)"
    )
    print(
        f"clip+logging overhead, bare / gradclip − 1: {med['bare'] / med['gradclip'] - 1:+.2%} "
        f"(ratio of medians), {paired('bare', 'gradclip') - 1:+.2%} (median of per-round ratios)"
    )
    total = {k: args.rounds * args.block * words / v for k, v in seconds.items()}
    print(
        "words/s over all blocks (total words / total time): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in total.items())
        + f"; gradclip / examples {total['gradclip'] / total['examples']:.3f}, "
        f"overhead {total['bare'] / total['gradclip'] - 1:+.2%}"
    )
    print(f"(metrics.jsonl rows written by the gradclip loop: {lines})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

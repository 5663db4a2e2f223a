"""Cost of GradMonitor on a PTB-small training step (CPU), measured step-interleaved.

One model (config ``small``: V 10000, 2 × 200 LSTM, B 20, T 20, random tokens),
one fused SGD, and one ``ClippedOptimizer`` (norm clip at 5) per variant, the
variants taking turns step by step (order rotated every round) so that a shared
machine's load hits them alike:

* ``sgd``: plain fused SGD, no clip (the reference step);
* ``clip``: ``ClippedOptimizer`` with the norm clipper, no observer;
* ``monitor``: the same with a ``GradMonitor`` attached (defaults: update ratio
  every 10 steps, flush every 50 steps, in-memory sink);
* ``monitor-ratio1``: update ratio every step (its worst case);
* ``monitor-noratio``: no update ratio.

Timed per step: the whole step (forward, backward, optimizer) and the optimizer
call alone (where clip and monitor run). Reported: medians over rounds, the
monitor's extra cost per step (difference of the optimizer-call medians, plus
its flush amortised per step) as a fraction of the median whole step.

Run: ``.venv/bin/python benchmarks/bench_monitor.py --threads 2 --rounds 150``
(only on a quiet machine: ``uptime`` load below 1.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from typing import Any

import torch

import gradclip
from gradclip.lm.config import load_config
from gradclip.lm.model import detach_state, tf_cost
from gradclip.lm.session import build_model
from gradclip.monitor import GradMonitor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, _ = load_config("small")
    torch.manual_seed(0)
    model = build_model(cfg, 10000, torch.device("cpu"))
    B, T = cfg.batch_size, cfg.num_steps
    tokens = torch.randint(0, 10000, (args.rounds * 5 + args.warmup + 2, T + 1, B))
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, fused=True)

    def clipped() -> Any:
        return gradclip.ClippedOptimizer(sgd, gradclip.make_clipper("norm", max_norm=5.0))

    monitors = {
        "monitor": GradMonitor(model, warn=False),
        "monitor-ratio1": GradMonitor(model, warn=False, update_ratio_every=1),
        "monitor-noratio": GradMonitor(model, warn=False, update_ratio_every=0),
    }
    steppers: dict[str, Any] = {"sgd": sgd, "clip": clipped()}
    for name, mon in monitors.items():
        steppers[name] = clipped()
        mon.attach(steppers[name])
    names = list(steppers)
    state = model.init_state(B)
    whole: dict[str, list[float]] = {n: [] for n in names}
    opt_t: dict[str, list[float]] = {n: [] for n in names}
    i = 0
    for r in range(args.rounds + args.warmup):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            x, y = tokens[i, :T], tokens[i, 1:]
            i = (i + 1) % len(tokens)
            t0 = time.perf_counter()
            state = detach_state(state)
            logits, state = model(x, state)
            loss = tf_cost(logits, y)
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            t1 = time.perf_counter()
            steppers[name].step()
            t2 = time.perf_counter()
            if r >= args.warmup:
                whole[name].append(t2 - t0)
                opt_t[name].append(t2 - t1)
    # flush cost in isolation: 50 buffered steps (one host read, grouping, events)
    flush_ms = {}
    obs = _observation(steppers["clip"], model)
    for name, mon in monitors.items():
        costs = []
        for _ in range(20):
            fresh = GradMonitor(model, warn=False, flush_every=10**9,
                                update_ratio_every=mon.update_ratio_every)  # fmt: skip
            for k in range(1, 51):  # steps 1..50, as a run's next 50 steps
                step_obs = dataclasses.replace(obs, step=k)
                fresh.before_step(step_obs)
                fresh.after_step(step_obs)
            t0 = time.perf_counter()
            fresh.flush()
            costs.append(time.perf_counter() - t0)
        flush_ms[name] = statistics.median(costs) * 1e3
    med = {n: statistics.median(v) * 1e3 for n, v in whole.items()}
    med_opt = {n: statistics.median(v) * 1e3 for n, v in opt_t.items()}
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), {args.rounds} rounds x {len(names)} variants"
    )
    print(f"{'variant':<16} {'step ms':>8} {'opt.step ms':>11}")
    for n in names:
        print(f"{n:<16} {med[n]:>8.2f} {med_opt[n]:>11.3f}")
    step = med["clip"]
    clip_cost = med_opt["clip"] - med_opt["sgd"]
    print(f"clip cost: {clip_cost:.3f} ms = {clip_cost / step:.2%} of a {step:.1f} ms step")
    for n, mon in monitors.items():
        extra = med_opt[n] - med_opt["clip"]
        amort = flush_ms[n] / 50
        every = mon.update_ratio_every
        if every > 1:  # the step's median misses the update-ratio steps: add them amortised
            extra += (med_opt["monitor-ratio1"] - med_opt["monitor-noratio"]) / every
        total = extra + amort
        print(
            f"{n}: +{extra:.3f} ms per step (update ratio amortised) + flush {flush_ms[n]:.2f} ms"
            " / 50 steps "
            f"= {total:.3f} ms = {total / step:.2%} of the step; "
            f"monitor + clip = {(total + clip_cost) / step:.2%}"
        )


def _observation(opt: Any, model: torch.nn.Module) -> Any:
    """The observation of the last step, rebuilt (the seam's type, real shapes)."""
    from gradclip.optim import StepObservation

    params = tuple(model.parameters())
    grads = tuple(p.grad for p in params)
    names = tuple(f"param{i}" for i in range(len(params)))
    return StepObservation(0, names, params, grads, gradclip.tensor_norms(grads), opt.last_stats)


if __name__ == "__main__":
    main()

"""Cost of GradMonitor on a PTB-small training step (CPU), measured step-interleaved.

One model (config ``small``: V 10000, 2 × 200 LSTM, B 20, T 20, random tokens),
one fused plain SGD, and one stepper (norm clip at 5) per variant, the variants
taking turns step by step (order rotated every round) so that a shared
machine's load hits them alike:

* ``sgd``: plain fused SGD, no clip (the reference step);
* ``clip``: ``ClippedOptimizer`` with the norm clipper, no observer;
* ``monitor``: ``clip`` with a ``GradMonitor`` attached (defaults: update ratio
  every 100 steps, flush every 50 steps, in-memory sink);
* ``monitor-ratio1``: update ratio every step (its worst case);
* ``monitor-noratio``: no update ratio;
* ``clip-pass``: the same clip by hand (below) with its separate norm pass, one
  ``torch._foreach_norm`` over the gradients in the step: the ``clip`` path's
  work without ``ClippedOptimizer``'s bookkeeping;
* ``clip-hooks``: the same clip without the separate norm pass: a
  ``register_post_accumulate_grad_hook`` on every parameter writes
  ``‖∇p‖₂`` into a preallocated slot while backward finalises the gradient;
  the step only takes the norm of the slots, ``s = c / max(n, c)`` (the
  ``norm`` clipper's rule) and folds ``s`` into fused SGD's learning rate with
  the library's own ``fold_scale_into_lr`` (as ``clip`` does). The hooks return
  at once in the other variants (one Python call per parameter);
* ``clip-async``: as ``clip-hooks``, but each hook hands its norm to one worker
  thread and returns, so the norms run beside the rest of backward (the embedding's,
  finalised last, cannot); the step waits for them. An experiment for issue 9's 1 %
  goal, not a library path;
* ``torch-clip``: what a user of ``torch.nn.utils`` writes, torch's own
  ``clip_grad_norm_(params, 5)`` (its defaults) then the same fused SGD step: the
  reference the ``monitor`` variant (gradclip's clip + monitor) is compared with.

Timed per step: the whole step (forward, backward, optimizer), the backward
alone (where the hooks run; the time inside them is also summed directly) and
the optimizer call alone (where clip and monitor run). Reported: medians over
rounds, the monitor's extra cost per step (difference of the optimizer-call
medians, plus its flush amortised per step) as a fraction of the median whole
step, and the three clips' costs against ``sgd``. Every 10th round the hand
clips' norm and coefficient (at the threshold and at half the norm) are checked
against the ``norm`` clipper's own on a copy of the same gradients (outside the
timing).

After every round, outside the variants' timings, the floor of any clip that reads
the gradients once more is timed on the last step's gradients: ``sum`` (one read per
tensor, an add per element: the cheapest reduction torch has), ``_foreach_norm`` (the
clippers' norm pass alone) and a BLAS ``dot(g, g)`` per tensor.

Run: ``.venv/bin/python benchmarks/bench_monitor.py --threads 2 --rounds 150``
(only on a quiet machine: ``uptime`` load below 1.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

import gradclip
from gradclip.lm.config import load_config
from gradclip.lm.model import detach_state, tf_cost
from gradclip.lm.session import build_model
from gradclip.monitor import GradMonitor
from gradclip.optim.fused import fold_scale_into_lr

MAX_NORM = 5.0


class ManualClip:
    """Global-norm clip of fused plain SGD from per-parameter norms in preallocated
    slots: taken by hooks as backward finalises each gradient (``in_backward``),
    or by one separate ``_foreach_norm`` pass in the step (the ``clip`` path's
    work without ``ClippedOptimizer``'s bookkeeping)."""

    def __init__(
        self,
        model: torch.nn.Module,
        sgd: torch.optim.SGD,
        in_backward: bool,
        worker: ThreadPoolExecutor | None = None,
    ) -> None:
        self.sgd = sgd
        self.params = list(model.parameters())
        self.norms = torch.zeros(len(self.params))  # one slot per parameter
        self.in_backward = in_backward
        self.worker = worker  # hooks hand their norms to it and return (clip-async)
        self.pending: list[Future[Any]] = []
        self.active = False
        self.hook_s = 0.0  # time spent inside the hooks since the last reset
        if in_backward:
            for i, p in enumerate(self.params):
                p.register_post_accumulate_grad_hook(self._hook(self.norms[i]))  # type: ignore[no-untyped-call]

    def _hook(self, slot: torch.Tensor) -> Any:
        def hook(p: torch.Tensor) -> None:
            if self.active:  # while the gradient is still in cache
                t0 = time.perf_counter()
                if self.worker is None:
                    torch.linalg.vector_norm(p.grad, out=slot)
                else:
                    grad = p.grad
                    self.pending.append(
                        self.worker.submit(torch.linalg.vector_norm, grad, out=slot)
                    )
                self.hook_s += time.perf_counter() - t0

        return hook

    def coefficient(self, max_norm: float = MAX_NORM) -> tuple[torch.Tensor, torch.Tensor]:
        """The slots' global norm ``n`` and ``s = c / max(n, c)`` (the ``norm`` clipper's rule)."""
        total = torch.linalg.vector_norm(self.norms)
        return total, max_norm / torch.clamp(total, min=max_norm)

    def step(self) -> None:
        if not self.in_backward:  # the separate pass
            grads = [p.grad for p in self.params if p.grad is not None]
            torch.stack(torch._foreach_norm(grads), out=self.norms)
        for job in self.pending:  # clip-async: the norms handed to the worker
            job.result()
        self.pending.clear()
        saved = fold_scale_into_lr(self.sgd, self.coefficient()[1])
        assert saved is not None  # fused plain SGD: the scale rides on the lr
        try:
            self.sgd.step()
        finally:
            for group, lr in zip(self.sgd.param_groups, saved, strict=True):
                group["lr"] = lr

    def check(self) -> float:
        """Assert the slots' norm and coefficient equal the ``norm`` clipper's on a
        copy of the current gradients, at ``MAX_NORM`` and at half the norm (so
        that it clips); return the norm."""
        grads = [p.grad.clone() for p in self.params if p.grad is not None]
        assert len(grads) == len(self.params)
        total = float(torch.linalg.vector_norm(self.norms))
        for c in (MAX_NORM, total / 2):
            mine, coef = self.coefficient(c)
            ref = gradclip.make_clipper("norm", max_norm=c).clip([g.clone() for g in grads])
            torch.testing.assert_close(mine, ref.norm, rtol=1e-5, atol=0)
            torch.testing.assert_close(coef, ref.scale, rtol=1e-5, atol=0)
        return total


class TorchClip:
    """``torch.nn.utils.clip_grad_norm_`` with its defaults, then the fused SGD step."""

    def __init__(self, model: torch.nn.Module, sgd: torch.optim.SGD) -> None:
        self.params = list(model.parameters())
        self.sgd = sgd

    def step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, MAX_NORM)
        self.sgd.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument(
        "--worker-threads", type=int, default=1, help="intra-op threads of clip-async's worker"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, _ = load_config("small")
    torch.manual_seed(0)
    model = build_model(cfg, 10000, torch.device("cpu"))
    B, T = cfg.batch_size, cfg.num_steps
    tokens = torch.randint(0, 10000, (args.rounds * 5 + args.warmup + 2, T + 1, B))
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, fused=True)

    def clipped() -> Any:
        return gradclip.ClippedOptimizer(sgd, gradclip.make_clipper("norm", max_norm=MAX_NORM))

    monitors = {
        "monitor": GradMonitor(model, warn=False),
        "monitor-ratio1": GradMonitor(model, warn=False, update_ratio_every=1),
        "monitor-noratio": GradMonitor(model, warn=False, update_ratio_every=0),
    }
    steppers: dict[str, Any] = {"sgd": sgd, "clip": clipped()}
    for name, mon in monitors.items():
        steppers[name] = clipped()
        mon.attach(steppers[name])
    steppers["clip-pass"] = ManualClip(model, sgd, in_backward=False)
    hooks = steppers["clip-hooks"] = ManualClip(model, sgd, in_backward=True)
    worker = ThreadPoolExecutor(
        1, initializer=torch.set_num_threads, initargs=(args.worker_threads,)
    )
    async_hooks = steppers["clip-async"] = ManualClip(model, sgd, True, worker)
    steppers["torch-clip"] = TorchClip(model, sgd)
    names = list(steppers)
    state = model.init_state(B)
    whole: dict[str, list[float]] = {n: [] for n in names}
    back_t: dict[str, list[float]] = {n: [] for n in names}
    opt_t: dict[str, list[float]] = {n: [] for n in names}
    checked: list[float] = []
    hook_t: list[float] = []
    floor_t: dict[str, list[float]] = {"sum": [], "foreach_norm": [], "dot": []}
    i = 0
    for r in range(args.rounds + args.warmup):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            x, y = tokens[i, :T], tokens[i, 1:]
            i = (i + 1) % len(tokens)
            hooks.active = name == "clip-hooks"
            async_hooks.active = name == "clip-async"
            hooks.hook_s = 0.0
            t0 = time.perf_counter()
            state = detach_state(state)
            logits, state = model(x, state)
            loss = tf_cost(logits, y)
            sgd.zero_grad(set_to_none=True)
            tb = time.perf_counter()
            loss.backward()
            t1 = time.perf_counter()
            steppers[name].step()
            t2 = time.perf_counter()
            if r >= args.warmup:
                whole[name].append(t2 - t0)
                back_t[name].append(t1 - tb)
                opt_t[name].append(t2 - t1)
                if hooks.active:
                    hook_t.append(hooks.hook_s)
            if name.startswith("clip-") and r % 10 == 0:  # fused plain SGD left .grad unclipped
                checked.append(steppers[name].check())
        if r >= args.warmup:
            _time_read_floor([p.grad for p in model.parameters()], floor_t)
    hooks.active = async_hooks.active = False
    worker.shutdown()
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
    med_back = {n: statistics.median(v) * 1e3 for n, v in back_t.items()}
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), {args.rounds} rounds x {len(names)} variants"
    )
    print(f"{'variant':<16} {'step ms':>8} {'backward ms':>11} {'opt.step ms':>11}")
    for n in names:
        print(f"{n:<16} {med[n]:>8.2f} {med_back[n]:>11.3f} {med_opt[n]:>11.3f}")
    step = med["clip"]
    clip_cost = med_opt["clip"] - med_opt["sgd"]
    print(f"clip cost: {clip_cost:.3f} ms = {clip_cost / step:.2%} of a {step:.1f} ms step")
    print(
        f"clip-pass/clip-hooks vs the norm clipper: {len(checked)} checks passed (norm and "
        f"coefficient, rtol 1e-5), norms {min(checked):.3f} .. {max(checked):.3f}"
    )
    print(f"time inside the hooks: median {statistics.median(hook_t) * 1e3:.3f} ms per step")
    for n in ("clip", "clip-pass", "clip-hooks", "clip-async"):
        back = med_back[n] - med_back["sgd"]
        opt = med_opt[n] - med_opt["sgd"]
        w = med[n] - med["sgd"]
        print(
            f"{n} vs sgd: backward {back:+.3f} ms + opt.step {opt:+.3f} ms = {back + opt:+.3f} ms"
            f" = {(back + opt) / step:.2%} of the step; whole-step medians {w:+.3f} ms"
        )
    torch_cost = med_opt["torch-clip"] - med_opt["sgd"]
    print(
        f"torch-clip vs sgd: opt.step {torch_cost:+.3f} ms = {torch_cost / step:.2%} of the step"
        f" (torch's clip_grad_norm_ reads the gradients twice and writes them once)"
    )
    for n, ts in floor_t.items():
        ms = statistics.median(ts) * 1e3
        print(f"read floor, {n} over the gradients: {ms:.3f} ms = {ms / step:.2%} of the step")
    for n, mon in monitors.items():
        extra = med_opt[n] - med_opt["clip"]
        amort = flush_ms[n] / 50
        every = mon.update_ratio_every
        if every > 1:  # the step's median misses the update-ratio steps: add them amortised
            extra += (med_opt["monitor-ratio1"] - med_opt["monitor-noratio"]) / every
        total = extra + amort
        vs_torch = total + clip_cost - torch_cost
        print(
            f"{n}: +{extra:.3f} ms per step (update ratio amortised) + flush {flush_ms[n]:.2f} ms"
            " / 50 steps "
            f"= {total:.3f} ms = {total / step:.2%} of the step; "
            f"monitor + clip = {(total + clip_cost) / step:.2%}; against torch-clip "
            f"{vs_torch:+.3f} ms = {vs_torch / step:+.2%}"
        )


def _time_read_floor(grads: list[Any], into: dict[str, list[float]]) -> None:
    """Time one read of every gradient three ways (see the module docstring)."""
    reads = {
        "sum": lambda: [g.sum() for g in grads],
        "foreach_norm": lambda: torch._foreach_norm(grads),
        "dot": lambda: [torch.dot(g.view(-1), g.view(-1)) for g in grads],
    }
    for name, read in reads.items():
        t0 = time.perf_counter()
        read()
        into[name].append(time.perf_counter() - t0)


def _observation(opt: Any, model: torch.nn.Module) -> Any:
    """The observation of the last step, rebuilt (the seam's type, real shapes)."""
    from gradclip.optim import StepObservation

    params = tuple(model.parameters())
    grads = tuple(p.grad for p in params)
    names = tuple(f"param{i}" for i in range(len(params)))
    return StepObservation(0, names, params, grads, gradclip.tensor_norms(grads), opt.last_stats)


if __name__ == "__main__":
    main()

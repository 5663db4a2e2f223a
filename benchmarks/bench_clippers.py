"""Time clip + optimizer step against the step alone and against torch's recipe.

Usage: python benchmarks/bench_clippers.py [--repeats 15] [--configs small medium large]
                                           [--optimizers sgd adam adamw]

Gradient shapes are those of the TF PTB tutorial's small, medium and large
models as torch lays them out (embedding, 2 × nn.LSTM with two biases, softmax
weight and bias). For each model and optimizer every candidate runs once per
round, in rotating order, so that the shared machine's noise falls on all of
them alike; the table reports medians. Before each timed call the gradients
are restored from a copy (untimed), so every call clips the same values.

Candidates (``fused`` = ``fused=True``; ``default`` = torch's default, which
on the CPU is the per-tensor loop):

* ``step`` / ``fused step``: the optimizer alone;
* ``torch recipe``: ``torch.nn.utils.clip_grad_norm_`` then a default step;
* ``norm + fused`` / ``norm + default``: :class:`gradclip.ClippedOptimizer`
  with ``make_clipper("norm")`` (threshold half the gradient norm: it clips);
* ``norm/skip + fused``: the same with ``nonfinite="skip"`` (the skip flag goes
  through the kernel's ``found_inf``);
* adaptive clippers with the fused optimizer, their published defaults;
* ``read floor``: one ``sum`` over every gradient, the least a norm pass costs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import gradclip

CONFIGS = {"small": (10_000, 200, 2), "medium": (10_000, 650, 2), "large": (10_000, 1500, 2)}
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    # the tutorial's SGD (lr 1, no momentum), and Adam/AdamW with common settings
    "sgd": lambda ps, **kw: torch.optim.SGD(ps, lr=1.0, **kw),
    "adam": lambda ps, **kw: torch.optim.Adam(ps, lr=1e-4, **kw),
    "adamw": lambda ps, **kw: torch.optim.AdamW(ps, lr=1e-4, weight_decay=0.01, **kw),
}
ADAPTIVE = ("autoclip", "zclip", "warmup-mean", "agc")


def lstm_lm_shapes(vocab: int, hidden: int, layers: int) -> list[tuple[int, ...]]:
    """Gradient shapes of the tutorial's model as torch lays it out (nn.LSTM, two biases)."""
    shapes: list[tuple[int, ...]] = [(vocab, hidden)]
    for _ in range(layers):
        shapes += [(4 * hidden, hidden), (4 * hidden, hidden), (4 * hidden,), (4 * hidden,)]
    return [*shapes, (vocab, hidden), (vocab,)]


def median_times(
    fns: dict[str, Callable[[], object]], restore: Callable[[], None], repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """(medians, minima) of interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for _ in range(2):  # warm-up: allocates optimizer state, fills caches
        for fn in fns.values():
            restore()
            fn()
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            restore()
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    minima = {name: min(ts) for name, ts in times.items()}
    for t in (medians, minima):  # what norm + fused costs with no overhead at all
        t["floor"] = t["fused step + grad_scale"] + t["gradclip norm"]
    return medians, minima


def bench(config: str, opt_name: str, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    gen = torch.Generator().manual_seed(0)
    shapes = lstm_lm_shapes(*CONFIGS[config])
    params = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.05) for s in shapes]
    backup = [torch.randn(s, generator=gen) * 1e-3 for s in shapes]
    for p, g in zip(params, backup, strict=True):
        p.grad = g.clone()
    grads = [p.grad for p in params if p.grad is not None]
    max_norm = 0.5 * float(gradclip.global_norm(backup))

    def restore() -> None:
        torch._foreach_copy_(grads, backup)

    fused = OPTIMIZERS[opt_name](params, fused=True)
    default = OPTIMIZERS[opt_name](params)

    def fused_with_grad_scale() -> None:  # the kernel then also writes .grad back
        fused.grad_scale = grad_scale  # type: ignore[attr-defined]
        fused.step()
        del fused.grad_scale  # type: ignore[attr-defined]

    grad_scale = torch.tensor(2.0)

    def wrap(opt: torch.optim.Optimizer, name: str, **kw: object) -> Callable[[], object]:
        return gradclip.ClippedOptimizer(opt, gradclip.make_clipper(name, **kw)).step

    fns: dict[str, Callable[[], object]] = {
        "read floor": lambda: [g.sum() for g in grads],
        "gradclip norm": lambda: gradclip.global_norm(grads),
        "torch norm": lambda: torch.nn.utils.get_total_norm(grads),
        "fused step": fused.step,
        "fused step + grad_scale": fused_with_grad_scale,
        "step": default.step,
        "torch recipe": lambda: (
            torch.nn.utils.clip_grad_norm_(params, max_norm),
            default.step(),
        ),
        "norm + fused": wrap(fused, "norm", max_norm=max_norm),
        "norm + default": wrap(default, "norm", max_norm=max_norm),
        "norm/skip + fused": wrap(fused, "norm", max_norm=max_norm, nonfinite="skip"),
    }
    for name in ADAPTIVE:
        fns[f"{name} + fused"] = wrap(fused, name)
    return median_times(fns, restore, repeats)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln), "?"
        )
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor() or "?"
    return f"{model}, {torch.get_num_threads()} threads, torch {torch.__version__}"


RATIOS = [
    ("norm+fused / fused step", "norm + fused", "fused step"),
    ("norm+fused / torch recipe", "norm + fused", "torch recipe"),
    ("norm+default / step", "norm + default", "step"),
    ("norm/skip / norm (fused)", "norm/skip + fused", "norm + fused"),
    ("fused step + grad_scale / fused step", "fused step + grad_scale", "fused step"),
    ("(fused+grad_scale + norm pass) / fused step", "floor", "fused step"),
    *((f"{a} / norm", f"{a} + fused", "norm + fused") for a in ADAPTIVE),
]
TIMES = [
    "step",
    "fused step",
    "fused step + grad_scale",
    "torch recipe",
    "norm + default",
    "norm + fused",
    "read floor",
    "gradclip norm",
    "torch norm",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS)
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{machine()}; {args.repeats} interleaved rounds")
    print(f"command: {' '.join(['python', *sys.argv])}\n")
    results = {
        (config, opt_name): bench(config, opt_name, args.repeats)
        for config in args.configs
        for opt_name in args.optimizers
    }
    print("Median times (ms):\n")
    print("| model | opt | " + " | ".join(TIMES) + " |")
    print("|---|---|" + "---|" * len(TIMES))
    for (config, opt_name), (med, _) in results.items():
        cells = [f"{med[k] * 1e3:.2f}" for k in TIMES]
        print(f"| {config} | {opt_name} | " + " | ".join(cells) + " |")
    for title, pick in (("medians", 0), ("minima (best round)", 1)):
        print(f"\nRatios of {title}:\n")
        print("| model | opt | " + " | ".join(r[0] for r in RATIOS) + " |")
        print("|---|---|" + "---|" * len(RATIOS))
        for (config, opt_name), both in results.items():
            t = both[pick]
            cells = [f"{t[a] / t[b]:.2f}" for _, a, b in RATIOS]
            print(f"| {config} | {opt_name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

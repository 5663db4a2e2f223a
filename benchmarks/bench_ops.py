"""Time gradclip's clipping ops against torch.nn.utils on the PTB tutorial's gradient shapes.

Usage: python benchmarks/bench_ops.py [--repeats 21] [--configs small medium large]

Every candidate runs once per round, in rotating order, so that the machine's
noise falls on all of them alike; the table reports medians. The read floor is
the time to read the gradients' bytes once with the simplest read-only kernel
(``torch.sum`` over each gradient), i.e. the bytes at the measured bandwidth.
``clip_by_global_norm`` is functional (TensorFlow semantics), so it is also
compared with torch's out-of-place recipe, ``get_total_norm`` + ``_foreach_mul``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

import gradclip

# (vocab V, hidden H, layers L) of the TensorFlow PTB tutorial configs.
CONFIGS = {"small": (10_000, 200, 2), "medium": (10_000, 650, 2), "large": (10_000, 1500, 2)}


def lstm_lm_shapes(vocab: int, hidden: int, layers: int) -> list[tuple[int, ...]]:
    """Gradient shapes of the tutorial's model as torch lays it out (nn.LSTM, two biases)."""
    shapes: list[tuple[int, ...]] = [(vocab, hidden)]
    for _ in range(layers):
        shapes += [(4 * hidden, hidden), (4 * hidden, hidden), (4 * hidden,), (4 * hidden,)]
    return [*shapes, (vocab, hidden), (vocab,)]


def median_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for _ in range(2):  # warm-up
        for fn in fns.values():
            fn()
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_config(name: str, repeats: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=gen) for s in lstm_lm_shapes(*CONFIGS[name])]
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.empty_like(g))
        p.grad = g
        params.append(p)
    nbytes = sum(g.numel() * g.element_size() for g in grads)
    large = 1e30  # a threshold that never clips, so repeated calls see the same values

    times = median_times(
        {
            "read pass": lambda: [g.sum() for g in grads],
            "torch get_total_norm": lambda: torch.nn.utils.get_total_norm(grads, foreach=True),
            "gradclip global_norm": lambda: gradclip.global_norm(grads),
            "torch clip_grad_norm_": lambda: torch.nn.utils.clip_grad_norm_(
                params, large, foreach=True
            ),
            "gradclip clip_grad_norm_": lambda: gradclip.clip_grad_norm_(params, large),
            "gradclip clip_by_global_norm": lambda: gradclip.clip_by_global_norm(grads, large),
            "torch out-of-place clip": lambda: torch._foreach_mul(
                grads,
                torch.clamp(large / (torch.nn.utils.get_total_norm(grads) + 1e-6), max=1.0),
            ),
        },
        repeats,
    )
    read_floor = times["read pass"]
    bandwidth = nbytes / read_floor / 1e9
    n_params = sum(g.numel() for g in grads)
    rows = [
        f"| {name} ({n_params / 1e6:.1f}M params, {nbytes / 2**20:.0f} MiB) | read floor "
        f"{read_floor * 1e3:.2f} ms ({bandwidth:.1f} GB/s) | | |"
    ]
    pairs = [
        ("gradclip global_norm", "torch get_total_norm"),
        ("gradclip clip_by_global_norm", "torch clip_grad_norm_"),
        ("gradclip clip_by_global_norm", "torch out-of-place clip"),
        ("gradclip clip_grad_norm_", "torch clip_grad_norm_"),
    ]
    for ours, theirs in pairs:
        t_ours, t_theirs = times[ours], times[theirs]
        rows.append(
            f"| {ours} vs {theirs} | {t_ours * 1e3:.2f} ms vs {t_theirs * 1e3:.2f} ms | "
            f"{t_ours / t_theirs:.2f}x | {read_floor / t_ours:.0%} of read bandwidth |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or 'cpu'}, "
        f"median of {args.repeats} interleaved rounds"
    )
    print("| case | time (median) | ratio to torch | read bandwidth used |")
    print("|---|---|---|---|")
    for name in args.configs:
        for row in bench_config(name, args.repeats):
            print(row)


if __name__ == "__main__":
    main()

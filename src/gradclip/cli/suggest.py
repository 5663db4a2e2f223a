"""``gradclip suggest``: propose a clipping threshold from measured gradient norms.

Two sources of norms:

* ``gradclip suggest --config small --data DIR [--steps N]``: trains a fresh model
  of that config for ``N`` steps without clipping (through :func:`gradclip.suggest`);
  if the norm explodes, the rest of the ``N`` steps train again from the start under
  a conservative clip, and their pre-clip norms are used;
* ``--trials`` then trains each candidate threshold for ``N`` steps from the same start
  and recommends the one with the lowest training loss over the last quarter of its
  steps, if it beats the mean norm's by
  ``--trial-margin`` and in every run (when the lowest candidate wins, up to two lower
  thresholds are tried: the measured clip, then half the winner); ``--trial-seeds K``
  trains each from the initial weights of K seeds, ``--trial-repeats K`` on K windows of
  batches;
* ``gradclip suggest RUN_DIR``: reads the pre-clip norms already recorded in the
  run's ``metrics.jsonl``; no training.

Prints the rules table and a recommendation (``--json`` for scripts); ``--out DIR``
writes ``DIR/suggest.png``, the histogram with the candidate thresholds marked.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from gradclip.cli.flags import (
    add_command,
    add_device_flags,
    add_progress_flag,
    device_from_args,
    fraction,
    positive_int,
)
from gradclip.clippers.options import suggest as suggest_name
from gradclip.diagnostics.suggest import (
    Suggestion,
    plot_norm_histogram,
    suggest,
    suggest_from_norms,
)
from gradclip.diagnostics.suggestion import TRIAL_MARGIN
from gradclip.errors import UserError
from gradclip.lm.config import FIELDS


def parse_set(items: list[str] | None) -> dict[str, object]:
    """``["learning_rate=2", "cell=rnn_tanh"]`` → ``{"learning_rate": "2", ...}``.

    Args:
        items: the ``--set`` values.

    Returns:
        Field name → text value (validated later by the config loader).

    Example:
        >>> parse_set(["learning_rate=2", "cell = rnn_tanh"])
        {'learning_rate': '2', 'cell': 'rnn_tanh'}
    """
    out: dict[str, object] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. learning_rate=2")
        name = key.strip().replace("-", "_")
        if name not in FIELDS:
            hint = suggest_name(name, list(FIELDS))
            raise UserError(f"--set {item!r}: unknown config field {name!r}{hint}(see --help)")
        out[name] = value.strip()
    return out


def register(subparsers: Any) -> None:
    """Add ``gradclip suggest``."""
    p = add_command(
        subparsers,
        "suggest",
        help="propose a clipping threshold from measured gradient norms",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "run_dir", nargs="?", metavar="RUN_DIR", help="a run directory to read norms from"
    )
    p.add_argument("--config", help="built-in config or TOML file to train (with --data)")
    p.add_argument("--data", metavar="DIR", help="corpus directory (with --config)")
    p.add_argument(
        "--steps",
        type=positive_int,
        default=200,
        metavar="N",
        help="training steps (unclipped; clipped after an explosion)",
    )
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="config field override (repeatable)"
    )
    p.add_argument(
        "--trials",
        action="store_true",
        help="then train each candidate threshold for --steps steps from the same start and "
        "recommend the one with the lowest training loss over its last quarter, trying lower "
        "ones when the lowest wins (with --config; up to 8x the cost)",
    )
    p.add_argument(
        "--trial-repeats",
        type=positive_int,
        default=1,
        metavar="K",
        help="with --trials, train each candidate on K consecutive windows of --steps batches "
        "and score it by the mean (K times the trials' cost; default 1)",
    )
    p.add_argument(
        "--trial-seeds",
        type=positive_int,
        default=None,
        metavar="K",
        help="with --trials, train each candidate from the initial weights of K seeds (the "
        "config's seed and the K-1 after it) on the same batches and score it by the mean "
        "(K times the trials' cost)",
    )
    p.add_argument(
        "--trial-margin",
        type=fraction,
        default=TRIAL_MARGIN,
        metavar="F",
        help="with --trials, the lowest trial loss replaces the mean norm only if lower by "
        f"more than this fraction (default {TRIAL_MARGIN:g}; 0: the lowest always decides)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", metavar="DIR", help="write DIR/suggest.png (norm histogram)")
    add_device_flags(p)
    add_progress_flag(p)
    p.set_defaults(func=_run_suggest)


def _from_run(run_dir: str) -> tuple[Suggestion, str]:
    from gradclip.lm import read_run

    run = read_run(run_dir)
    records = run.metrics()
    if not records:
        raise UserError(f"no metrics in {run.path}: metrics.jsonl is missing or empty")
    norms = [r.get("norm") for r in records]
    if not any(isinstance(n, int | float) and math.isfinite(n) and n > 0 for n in norms):
        raise UserError(f"{run.path / 'metrics.jsonl'} records no finite gradient norm")
    clipped = sum(bool(r.get("clipped")) for r in records)
    source = f"{len(records)} steps recorded in {run.path}"
    if clipped:
        source += (
            f" (clipped on {clipped / len(records):.0%} of steps: pre-clip norms of a clipped "
            "run, whose trajectory differs from an unclipped one)"
        )
    what = "recorded training steps" + (" (a clipped run)" if clipped else "")
    # An unclipped run's norms after an explosion describe a thrown-off model.
    return suggest_from_norms(norms, what=what, healthy_only=not clipped), source


def _train(args: argparse.Namespace) -> tuple[Suggestion, str]:
    from gradclip.lm import load_config, load_corpus
    from gradclip.lm.batches import Batches
    from gradclip.lm.model import detach_state, tf_cost
    from gradclip.lm.session import build_model

    if not args.data:
        raise UserError("--config needs --data DIR (or give a RUN_DIR instead)")
    device = device_from_args(args)
    cfg, _ = load_config(args.config, parse_set(args.set))
    corpus = load_corpus(args.data, vocab_size=cfg.vocab_size)
    model = build_model(cfg, corpus.vocab_size, device, seed=cfg.seed)
    batches = Batches(corpus.train, cfg.batch_size, cfg.num_steps).to(device)
    state = {"h": model.init_state(cfg.batch_size)}

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        logits, state["h"] = m(batch[0], detach_state(state["h"]))
        loss: torch.Tensor = tf_cost(logits, batch[1])
        return loss

    def seeded_init(m: torch.nn.Module, r: int) -> None:
        """Loads the weights a training run of seed ``cfg.seed + r`` starts from."""
        start = build_model(cfg, corpus.vocab_size, device, seed=cfg.seed + r)
        m.load_state_dict(start.state_dict())

    opt = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    steps = min(args.steps, len(batches))
    if args.trials and args.trial_repeats * steps > len(batches):
        raise UserError(
            f"--trial-repeats {args.trial_repeats} x --steps {steps} needs "
            f"{args.trial_repeats * steps} training batches; the corpus has {len(batches)}"
        )
    bar = _bar(steps, not args.no_progress)
    try:
        s = suggest(
            model,
            loss_fn,
            batches,
            opt,
            steps=steps,
            progress=lambda i: bar.update(1) if bar else None,
            restart=lambda: state.update(h=model.init_state(cfg.batch_size)),
            trials=args.trials,
            trial_repeats=args.trial_seeds or args.trial_repeats,
            trial_init=seeded_init if args.trial_seeds else None,
            trial_margin=args.trial_margin,
            on_total=lambda n: _set_total(bar, n),
        )
    finally:
        if bar is not None:
            bar.close()
    where = f"config {args.config} (lr {cfg.learning_rate:g})"
    if s.measured_clip is None:
        return s, f"{s.steps} unclipped steps of {where}"
    return s, (
        f"{len(s.norms)} steps of {where} clipped at {s.measured_clip:.3g}, after the unclipped "
        f"norm exploded at step {s.exploded_at}"
    )


def _set_total(bar: Any, total: int) -> None:
    if bar is not None:
        bar.total = total
        bar.refresh()


def _bar(total: int, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="suggest", unit="step", file=sys.stderr)


def _run_suggest(args: argparse.Namespace) -> int:
    """``gradclip suggest``: prints the table and recommendation, returns 0."""
    if args.run_dir and args.config:
        raise UserError("give either RUN_DIR or --config/--data, not both")
    if not args.run_dir and not args.config:
        raise UserError("give a RUN_DIR, or --config NAME --data DIR to measure a fresh model")
    if args.run_dir and args.trials:
        raise UserError("--trials trains the candidates: use it with --config/--data, not RUN_DIR")
    if args.trial_repeats != 1 and not args.trials:
        raise UserError("--trial-repeats needs --trials")
    if args.trial_margin != TRIAL_MARGIN and not args.trials:
        raise UserError("--trial-margin needs --trials")
    if args.trial_seeds is not None and not args.trials:
        raise UserError("--trial-seeds needs --trials")
    if args.trial_seeds is not None and args.trial_repeats != 1:
        raise UserError("give --trial-seeds or --trial-repeats, not both")
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: not a directory")
    s, source = _from_run(args.run_dir) if args.run_dir else _train(args)
    png = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        png = plot_norm_histogram(
            s, Path(args.out) / "suggest.png", title=f"Gradient norms: {source}"
        )
    if args.json:
        from gradclip.lm.rundir import strict_json

        out = {"source": source, **s.as_dict(), "png": str(png) if png else None}
        print(json.dumps(strict_json(out), allow_nan=False))
        return 0
    print(f"gradclip suggest: {source}")
    print(s.table())
    print()
    print(f"Recommended max_norm: {s.threshold:.4g}  ({s.rule})")
    print(s.explanation)
    if png:
        print(f"histogram: {png}")
    return 0

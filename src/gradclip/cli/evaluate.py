"""``gradclip evaluate RUN_DIR``: valid and test perplexity of a run's checkpoint.

A diverged checkpoint evaluates to ``inf`` (``null`` with ``--json``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gradclip.cli.flags import add_command, add_device_flags, device_from_args, positive_int
from gradclip.lm.evaluation import evaluate, evaluate_stream
from gradclip.lm.rundir import strict_json
from gradclip.lm.session import load_run_corpus, open_trained


def register(subparsers: Any) -> None:
    """Add ``gradclip evaluate``.

    Args:
        subparsers: the object ``add_subparsers`` returned.
    """
    p = add_command(subparsers, "evaluate", help="valid and test perplexity of a run's checkpoint")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a gradclip train run directory")
    p.add_argument("--data", metavar="DIR", help="corpus directory (default: the run's)")
    p.add_argument(
        "--test-chunk", type=positive_int, default=100, metavar="N",
        help="tokens per forward in the batch-1 test pass",
    )  # fmt: skip
    p.add_argument(
        "--json", action="store_true", help="print a JSON object (non-finite values as null)"
    )
    add_device_flags(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    """Print the perplexities of ``args.run_dir``'s checkpoint; exit status 0."""
    run, model, blob = open_trained(args.run_dir, device_from_args(args))
    corpus = load_run_corpus(run, args.data)
    cfg = run.config
    valid = evaluate(model, corpus.valid, cfg.batch_size, cfg.num_steps)
    test = evaluate_stream(model, corpus.test, args.test_chunk)
    result: dict[str, Any] = {
        "run_dir": str(run.path),
        "epoch": int(blob["epoch"]),
        "step_in_epoch": int(blob["step_in_epoch"]),
        "global_step": int(blob["global_step"]),
        "status": blob.get("status", "running"),
        "valid_ppl": valid,
        "test_ppl": test,
    }
    if args.json:
        print(json.dumps(strict_json(result), allow_nan=False))
    else:
        where = f"after epoch {result['epoch']}"
        if result["step_in_epoch"]:
            where = f"in epoch {result['epoch'] + 1}, step {result['step_in_epoch']}"
        print(f"{run.path} ({where}): valid ppl {valid:.2f}  test ppl {test:.2f}")
    return 0

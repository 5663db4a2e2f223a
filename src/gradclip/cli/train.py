"""``gradclip train``: the TensorFlow PTB tutorial's language model, any clipper.

A thin shell over :func:`gradclip.lm.train` and :func:`gradclip.lm.resume`.
Exit status: 0 finished (or ``--stop-after``), 3 diverged, 130 / 143 stopped by
SIGINT / SIGTERM with a checkpoint saved, 2 bad input.
"""

from __future__ import annotations

import argparse
from typing import Any

from gradclip.cli.flags import (
    add_command,
    add_device_flags,
    add_progress_flag,
    device_from_args,
    positive_int,
)
from gradclip.clippers import CLIPPER_NAMES
from gradclip.errors import UserError
from gradclip.lm.config import BUILTIN_CONFIGS, FIELDS, LMConfig, load_config
from gradclip.lm.data import TOKEN_MODES
from gradclip.lm.parallel import MODES
from gradclip.lm.train import RunOptions, resume, train

#: Flags that define a run; ``--resume`` continues a run as it was defined, so
#: it refuses them (all alike: ``--config`` and ``--tokens`` as much as ``--lr``).
DEFINING = ("config", "tokens", "data_prefix", "run_dir", *FIELDS)


def _field_help(name: str, help: str, configs: dict[str, LMConfig]) -> str:
    values = {c: getattr(cfg, name) for c, cfg in configs.items()}
    if name == "clip":
        help += "; names: " + ", ".join(CLIPPER_NAMES)
    if len(set(values.values())) == 1:
        return f"{help} (default: {next(iter(values.values()))!r})"
    shown = ", ".join(f"{c} {v:.4g}" for c, v in values.items())
    return f"{help} (default: the config's; {shown})"


def register(subparsers: Any) -> None:
    """Add ``gradclip train``.

    Args:
        subparsers: the object ``add_subparsers`` returned.
    """
    p = add_command(
        subparsers,
        "train",
        help="train the TensorFlow PTB tutorial's LSTM language model",
        description="Train the TensorFlow PTB tutorial's language model (configs small, "
        "medium, large, test) with any gradclip clipper. Exit status: 0 finished, "
        "3 diverged, 130/143 stopped by SIGINT/SIGTERM (checkpoint saved), 2 bad input.",
    )
    where = p.add_argument_group("what to train (required: --data, unless --resume)")
    where.add_argument("--data", metavar="DIR", help="corpus directory (train/valid/test files)")
    where.add_argument(
        "--config",
        help=f"built-in config ({', '.join(BUILTIN_CONFIGS)}) or a TOML file (default: small)",
    )
    where.add_argument(
        "--data-prefix",
        metavar="PREFIX",
        help="file-name prefix, e.g. 'ptb.char.' for {PREFIX}train.txt "
        "(default: 'ptb.' if ptb.train.txt exists, else none)",
    )
    where.add_argument("--tokens", choices=TOKEN_MODES, help="word or char tokens (default: word)")
    where.add_argument(
        "--run-dir",
        metavar="DIR",
        help="run directory to create (default: runs/CONFIG-TIME-XXXXXX)",
    )
    where.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its last checkpoint, exactly; only --data (a moved "
        "corpus with the same files) and the options below may accompany it",
    )
    fields = p.add_argument_group("config overrides")
    configs = {c: load_config(c)[0] for c in BUILTIN_CONFIGS}
    for name, (_, help, flags) in FIELDS.items():
        fields.add_argument(*flags, dest=name, metavar="X", help=_field_help(name, help, configs))
    run = p.add_argument_group("running")
    add_device_flags(run)
    run.add_argument(
        "--distributed",
        choices=MODES,
        help="data-parallel training under torchrun (torchrun --nproc-per-node N -m gradclip "
        "train --distributed ddp|fsdp ...): each of the N processes trains on batch_size/N "
        "rows of every batch, rank 0 writes; gloo on the CPU, NCCL on CUDA; --resume uses "
        "the run's own (default: none)",
    )
    add_progress_flag(run)
    run.add_argument("--no-metrics", action="store_true", help="do not write metrics.jsonl")
    run.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files")
    run.add_argument(
        "--no-monitor",
        action="store_true",
        help="no gradient monitor (per-layer norms, update ratios and events in metrics.jsonl)",
    )
    for flag, kind, default, metavar, help in (
        ("--refresh-every", positive_int, 50, "N", "progress update period in steps (each "
         "reads the device)"),
        ("--progress-seconds", float, 30.0, "S", "least time between progress lines when "
         "stderr is not a terminal"),
        ("--flush-every", positive_int, 200, "N", "metrics.jsonl write period in steps"),
        ("--test-chunk", positive_int, 100, "N", "tokens per forward in the batch-1 test pass "
         "(same result as the tutorial's 1)"),
        ("--stop-after", positive_int, None, "STEPS", "save a checkpoint and stop after this "
         "many steps in total (exit 0)"),
    ):  # fmt: skip
        run.add_argument(flag, type=kind, default=default, metavar=metavar, help=help)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    """``gradclip train``.

    Args:
        args: the parsed flags.

    Returns:
        The run's exit status (:attr:`gradclip.lm.options.RunResult.exit_status`).
    """
    options = RunOptions(
        device=device_from_args(args),
        metrics=not args.no_metrics,
        tensorboard=not args.no_tensorboard,
        monitor=not args.no_monitor,
        progress=not args.no_progress,
        progress_seconds=args.progress_seconds,
        refresh_every=args.refresh_every,
        flush_every=args.flush_every,
        test_chunk=args.test_chunk,
        stop_after=args.stop_after,
        distributed=args.distributed,
    )
    if args.resume:
        given = [name for name in DEFINING if getattr(args, name) is not None]
        if given:
            flag = (
                FIELDS[given[0]][2][0] if given[0] in FIELDS else "--" + given[0].replace("_", "-")
            )
            raise UserError(
                f"{flag} cannot be combined with --resume (a run continues with the config, "
                "corpus and tokens it was started with)"
            )
        return resume(args.resume, data=args.data, options=options).exit_status
    if not args.data:
        raise UserError("--data DIR is required (or --resume RUN_DIR)")
    overrides = {name: getattr(args, name) for name in FIELDS}
    name = args.config or "small"
    cfg, _ = load_config(name, overrides)
    result = train(
        cfg,
        args.data,
        args.run_dir,
        tokens=args.tokens or "word",
        data_prefix=args.data_prefix,
        options=options,
        label=name,
    )
    return result.exit_status

"""``gradclip train``, ``gradclip evaluate`` and ``gradclip generate``.

Everything the user typed or pointed at (config, flags, corpus, clipper spec,
device) is checked before the run directory is created, and the directory is
created atomically (built beside its final name, then renamed), so a bad input
leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import gradclip
from gradclip.lm.config import BUILTIN_CONFIGS, CELLS, FIELD_NAMES, LMConfig, load_config
from gradclip.lm.data import (
    SPLITS,
    TOKEN_MODES,
    Corpus,
    DataError,
    check_epoch_size,
    load_corpus,
)
from gradclip.lm.model import PTBModel, count_parameters
from gradclip.lm.train import (
    CHECKPOINT,
    METRICS,
    StopFlag,
    Trainer,
    clip_spec,
    evaluate,
    evaluate_stream,
    make_optimizer,
    set_threads,
    truncate_metrics,
)

CONFIG_FILE = "config.toml"
RUN_FILE = "run.json"
VOCAB_FILE = "vocab.txt"

_FLAG_HELP = {
    "init_scale": "uniform init range ±X",
    "learning_rate": "initial SGD learning rate (TF scale)",
    "max_grad_norm": "global-norm clipping threshold of the default clipper",
    "num_layers": "recurrent layers",
    "num_steps": "unroll length T (truncated BPTT)",
    "hidden_size": "hidden size = embedding size",
    "max_epoch": "epochs at the full learning rate",
    "max_max_epoch": "total epochs",
    "keep_prob": "dropout keep probability",
    "lr_decay": "learning-rate decay per epoch after max_epoch",
    "batch_size": "batch size B",
    "vocab_size": "vocabulary cap (the rest maps to <unk>)",
    "cell": f"recurrent cell: {', '.join(CELLS)}",
    "clip": "clipper NAME[:key=value,...] (default: norm at max_grad_norm); "
    + "names: "
    + ", ".join(getattr(gradclip, "CLIPPER_NAMES", ())),
    "seed": "random seed (initialisation and dropout)",
}


# --------------------------------------------------------------------------- parsers
def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the TensorFlow PTB tutorial's LSTM language model",
        description="Train the TensorFlow PTB tutorial's language model (configs small, "
        "medium, large, test) with any gradclip clipper.",
    )
    p.add_argument(
        "--config",
        default="small",
        help=f"built-in config ({', '.join(BUILTIN_CONFIGS)}) or a TOML file (default: small)",
    )
    p.add_argument("--data", metavar="DIR", help="corpus directory (train/valid/test files)")
    p.add_argument(
        "--data-prefix",
        metavar="PREFIX",
        help="file-name prefix, e.g. 'ptb.char.' for {PREFIX}train.txt "
        "(default: 'ptb.' if ptb.train.txt exists, else none)",
    )
    p.add_argument("--tokens", choices=TOKEN_MODES, default="word", help="word or char tokens")
    p.add_argument(
        "--run-dir", metavar="DIR", help="run directory to create (default: runs/CONFIG-TIME)"
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly")
    _add_device_flags(p)
    for name in FIELD_NAMES:
        flags = ["--" + name.replace("_", "-")]
        if name == "learning_rate":
            flags.append("--lr")
        p.add_argument(*flags, dest=name, metavar="X", default=None, help=_FLAG_HELP[name])
    p.add_argument("--no-metrics", action="store_true", help="do not write metrics.jsonl")
    p.add_argument("--no-tensorboard", action="store_true", help="no TensorBoard event files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--refresh-every", default="50", metavar="N", help="progress-bar refresh (steps)"
    )
    p.add_argument("--flush-every", default="200", metavar="N", help="metrics flush (steps)")
    p.add_argument(
        "--test-chunk",
        default="100",
        metavar="N",
        help="tokens per forward in the batch-1 test pass (same result as the tutorial's 1)",
    )
    p.add_argument(
        "--stop-after",
        metavar="STEPS",
        help="save a checkpoint and stop after this many steps in total (like Ctrl-C)",
    )
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser("evaluate", help="valid and test perplexity of a run's checkpoint")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--data", metavar="DIR", help="corpus directory (default: the run's)")
    e.add_argument("--test-chunk", default="100", metavar="N")
    e.add_argument("--json", action="store_true", help="print a JSON object")
    _add_device_flags(e)
    e.set_defaults(func=cmd_evaluate)

    g = subparsers.add_parser("generate", help="sample text from a run's checkpoint")
    g.add_argument("run_dir", metavar="RUN_DIR")
    g.add_argument("--length", default="100", metavar="N", help="tokens to sample (default 100)")
    g.add_argument("--temperature", default="1.0", metavar="X")
    g.add_argument("--seed", default="0", metavar="N")
    g.add_argument("--prompt", default="", help="text to condition on (tokenised like the corpus)")
    _add_device_flags(g)
    g.set_defaults(func=cmd_generate)


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--threads", metavar="N", help="CPU threads (torch.set_num_threads)")


# --------------------------------------------------------------------------- helpers
def _int_flag(value: str | None, flag: str, minimum: int = 1) -> int | None:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{flag} must be an integer, got {value!r}") from None
    if n < minimum:
        raise ValueError(f"{flag} must be at least {minimum}, got {n}")
    return n


def _float_flag(value: str, flag: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{flag} must be a number, got {value!r}") from None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _check_corpus(corpus: Corpus, cfg: LMConfig) -> None:
    check_epoch_size("train", corpus.train.numel(), cfg.batch_size, cfg.num_steps)
    check_epoch_size("valid", corpus.valid.numel(), cfg.batch_size, cfg.num_steps)
    if corpus.test.numel() < 2:
        raise DataError(f"test split is too small: {corpus.test.numel()} token(s); need 2")


def _check_clipper(cfg: LMConfig) -> None:
    spec = clip_spec(cfg)
    try:
        gradclip.make_clipper_from_spec(spec)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--clip {cfg.clip or spec}: {exc}") from None


def _create_run_dir(run_dir: Path, files: dict[str, str]) -> None:
    """Create ``run_dir`` holding ``files``, atomically: build beside it, then rename."""
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ValueError(
            f"run directory exists and is not empty: {run_dir} (use --resume {run_dir} "
            "to continue it, or choose another --run-dir)"
        )
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".tmp", dir=run_dir.parent))
    try:
        for name, text in files.items():
            with open(tmp / name, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_run(run_dir_arg: str) -> tuple[Path, LMConfig, dict[str, Any], list[str]]:
    run_dir = Path(run_dir_arg)
    if not run_dir.is_dir():
        raise ValueError(f"run directory not found: {run_dir}")
    for name in (CONFIG_FILE, RUN_FILE, VOCAB_FILE, CHECKPOINT):
        if not (run_dir / name).is_file():
            raise ValueError(f"not a gradclip run directory (no {name}): {run_dir}")
    cfg, _ = load_config(str(run_dir / CONFIG_FILE))
    info = json.loads((run_dir / RUN_FILE).read_text("utf-8"))
    vocab = (run_dir / VOCAB_FILE).read_text("utf-8").split("\n")[:-1]
    return run_dir, cfg, info, vocab


def _load_run_corpus(
    info: dict[str, Any], cfg: LMConfig, vocab: list[str], data: str | None
) -> Corpus:
    corpus = load_corpus(
        data or info["data"],
        tokens=info["tokens"],
        prefix=info["data_prefix"],
        vocab_size=cfg.vocab_size,
    )
    if corpus.vocab != vocab:
        raise ValueError(
            f"the corpus in {data or info['data']} does not give the run's vocabulary "
            f"({len(corpus.vocab)} vs {len(vocab)} types)"
        )
    return corpus


def _load_checkpoint(run_dir: Path, device: torch.device) -> dict[str, Any]:
    path = run_dir / CHECKPOINT
    try:
        blob: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
    return blob


# --------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    threads = _int_flag(args.threads, "--threads")
    refresh = _int_flag(args.refresh_every, "--refresh-every")
    flush = _int_flag(args.flush_every, "--flush-every")
    test_chunk = _int_flag(args.test_chunk, "--test-chunk")
    stop_after = _int_flag(args.stop_after, "--stop-after")
    assert refresh is not None and flush is not None and test_chunk is not None
    device = resolve_device(args.device)
    set_threads(threads)
    common: dict[str, Any] = {
        "device": device,
        "log_metrics": not args.no_metrics,
        "tensorboard": not args.no_tensorboard,
        "progress": not args.no_progress,
        "refresh_every": refresh,
        "flush_every": flush,
        "test_chunk": test_chunk,
        "stop_after": stop_after,
    }
    if args.resume:
        return _resume(args, common)

    overrides = {name: getattr(args, name) for name in FIELD_NAMES}
    cfg, _ = load_config(args.config, overrides)
    if not args.data:
        raise ValueError("--data DIR is required (or --resume RUN_DIR)")
    _check_clipper(cfg)
    corpus = load_corpus(
        args.data, tokens=args.tokens, prefix=args.data_prefix, vocab_size=cfg.vocab_size
    )
    _check_corpus(corpus, cfg)
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        label = Path(args.config).stem if args.config not in BUILTIN_CONFIGS else args.config
        run_dir = Path("runs") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"

    torch.manual_seed(cfg.seed)
    model = PTBModel.from_config(cfg, corpus.vocab_size).to(device)
    optimizer = make_optimizer(model, cfg)
    info = {
        "data": str(Path(args.data).resolve()),
        "data_prefix": args.data_prefix,
        "tokens": corpus.tokens,
        "files": corpus.files,
        "sha256": corpus.sha256,
        "vocab_size": corpus.vocab_size,
        "tokens_per_split": {s: int(corpus.split(s).numel()) for s in SPLITS},
        "parameters": count_parameters(model),
        "clip": clip_spec(cfg),
        "config_name": args.config,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "argv": sys.argv,
        "gradclip": gradclip.__version__,
        "torch": torch.__version__,
    }
    _create_run_dir(
        run_dir,
        {
            CONFIG_FILE: cfg.to_toml(),
            RUN_FILE: json.dumps(info, indent=2) + "\n",
            VOCAB_FILE: "".join(w + "\n" for w in corpus.vocab),
        },
    )
    print(
        f"gradclip train: config {args.config}, {info['parameters']:,} parameters, "
        f"vocab {corpus.vocab_size}, clip {info['clip']}, device {device}, "
        f"{torch.get_num_threads()} thread(s); run dir {run_dir}",
        flush=True,
    )
    return _run_trainer(_make_trainer(cfg, model, optimizer, corpus, run_dir, common))


def _make_trainer(
    cfg: LMConfig,
    model: PTBModel,
    optimizer: Any,
    corpus: Corpus,
    run_dir: Path,
    common: dict[str, Any],
) -> Trainer:
    return Trainer(
        cfg=cfg,
        model=model,
        optimizer=optimizer,
        train_ids=corpus.train,
        valid_ids=corpus.valid,
        test_ids=corpus.test,
        run_dir=run_dir,
        **common,
    )


def _run_trainer(trainer: Trainer) -> int:
    stop = StopFlag()
    with stop.catch_sigint():
        finished = trainer.run(stop)
    if finished or stop.reason.startswith("stopped after"):
        return 0
    return 130


def _resume(args: argparse.Namespace, common: dict[str, Any]) -> int:
    given = [name for name in FIELD_NAMES if getattr(args, name) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ValueError(f"{flag} cannot be combined with --resume (the run's config is fixed)")
    if args.data or args.run_dir or args.data_prefix:
        raise ValueError("--data, --data-prefix and --run-dir cannot be combined with --resume")
    run_dir, cfg, info, vocab = _read_run(args.resume)
    device = common["device"]
    blob = _load_checkpoint(run_dir, device)
    corpus = _load_run_corpus(info, cfg, vocab, None)
    model = PTBModel.from_config(cfg, corpus.vocab_size).to(device)
    trainer = _make_trainer(cfg, model, make_optimizer(model, cfg), corpus, run_dir, common)
    trainer.load_checkpoint(blob)
    if trainer.state.finished:
        print(
            f"gradclip train: {run_dir} is already finished (test ppl {trainer.state.test_ppl:.2f})"
        )
        return 0
    truncate_metrics(run_dir / METRICS, trainer.state.global_step)
    print(
        f"gradclip train: resuming {run_dir} at epoch {trainer.state.epoch + 1}, "
        f"step {trainer.state.step_in_epoch} (global step {trainer.state.global_step})",
        flush=True,
    )
    return _run_trainer(trainer)


# --------------------------------------------------------------------------- evaluate
def _model_from_run(
    args: argparse.Namespace,
) -> tuple[PTBModel, LMConfig, dict[str, Any], list[str], Path, dict[str, Any]]:
    device = resolve_device(args.device)
    set_threads(_int_flag(args.threads, "--threads"))
    run_dir, cfg, info, vocab = _read_run(args.run_dir)
    blob = _load_checkpoint(run_dir, device)
    model = PTBModel.from_config(cfg, len(vocab)).to(device)
    model.load_state_dict(blob["model"])
    model.eval()
    return model, cfg, info, vocab, run_dir, blob


def cmd_evaluate(args: argparse.Namespace) -> int:
    test_chunk = _int_flag(args.test_chunk, "--test-chunk")
    assert test_chunk is not None
    model, cfg, info, vocab, run_dir, blob = _model_from_run(args)
    corpus = _load_run_corpus(info, cfg, vocab, args.data)
    valid = evaluate(model, corpus.valid, cfg.batch_size, cfg.num_steps)
    test = evaluate_stream(model, corpus.test, test_chunk)
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "epoch": int(blob["epoch"]),
        "step_in_epoch": int(blob["step_in_epoch"]),
        "valid_ppl": valid,
        "test_ppl": test,
    }
    if args.json:
        print(json.dumps(result))
    else:
        where = f"after epoch {result['epoch']}"
        if result["step_in_epoch"]:
            where = f"in epoch {result['epoch'] + 1}, step {result['step_in_epoch']}"
        print(f"{run_dir} ({where}): valid ppl {valid:.2f}  test ppl {test:.2f}")
    return 0


# --------------------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace) -> int:
    length = _int_flag(args.length, "--length")
    seed = _int_flag(args.seed, "--seed", minimum=0)
    temperature = _float_flag(args.temperature, "--temperature")
    if not temperature > 0:
        raise ValueError(f"--temperature must be positive, got {args.temperature!r}")
    assert length is not None and seed is not None
    model, _cfg, info, vocab, _, _ = _model_from_run(args)
    from gradclip.lm.data import EOS, tokenize

    word_to_id = {w: i for i, w in enumerate(vocab)}
    prompt = tokenize(args.prompt, info["tokens"]) if args.prompt else []
    unknown = [w for w in prompt if w not in word_to_id and "<unk>" not in word_to_id]
    if unknown:
        raise ValueError(f"--prompt: {unknown[0]!r} is not in the vocabulary")
    start = [word_to_id.get(EOS, 0)] + [
        word_to_id.get(w, word_to_id.get("<unk>", 0)) for w in prompt
    ]
    device = model.embedding.weight.device
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[str] = list(prompt)
    with torch.no_grad():
        state = model.init_state(1)
        logits, state = model(torch.tensor(start, device=device).unsqueeze(1), state)
        last = logits[-1, 0]
        for _ in range(length):
            probs = torch.softmax(last.double() / temperature, dim=-1)
            idx = int(torch.multinomial(probs, 1, generator=gen))
            out.append(vocab[idx])
            logits, state = model(torch.tensor([[idx]], device=device), state)
            last = logits[-1, 0]
    sep = "" if info["tokens"] == "char" else " "
    text = sep.join("\n" if w == EOS else w for w in out)
    text = "\n".join(line.strip() for line in text.split("\n"))
    print(text)
    return 0

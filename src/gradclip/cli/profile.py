"""``gradclip profile``: the temporal gradient profile of a language model, with a verdict.

* ``gradclip profile --config small [--data DIR]``: the built-in config's model at
  initialisation;
* ``gradclip profile RUN_DIR``: the model of a training run's latest checkpoint.

The batch is the first ``[T, B]`` window of the training split when a corpus is at
hand (``--data``, or the run's own corpus), else uniform random token ids and targets.
Writes ``OUT/profile.png`` (log scale) and ``OUT/profile.json`` (for ``gradclip
report``) and prints the verdict with its evidence.
"""

from __future__ import annotations

import argparse

import torch

from gradclip.cli.flags import add_command, positive_int
from gradclip.diagnostics.plots import output_folder
from gradclip.diagnostics.profile import PROFILE_FILE, PROFILE_PLOT, temporal_profile, write_profile
from gradclip.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = add_command(
        subparsers,
        "profile",
        "temporal gradient profile ‖∂L_T/∂h_t‖ of a model (exploding, vanishing or stable)",
        (__doc__ or "").replace("``", ""),
    )
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a gradclip train run directory")
    p.add_argument("--config", default="small", help="built-in config or TOML (without RUN_DIR)")
    p.add_argument("--data", metavar="DIR", help="corpus directory for a real batch")
    p.add_argument(
        "--steps", type=positive_int, metavar="T", help="unroll length (default: config's)"
    )
    p.add_argument("--batch", type=positive_int, default=4, help="sequences in the batch")
    p.add_argument("--seed", type=int, default=0, help="random seed (init, random batch)")
    p.add_argument(
        "--max-jacobian-dim",
        type=positive_int,
        default=1024,
        help="skip the Jacobian products above this state size per sequence",
    )
    p.add_argument("--out", default="gradclip-profile", metavar="DIR", help="output folder")
    p.set_defaults(func=run_profile)


def run_profile(args: argparse.Namespace) -> int:
    """Measure, write ``profile.png``/``profile.json``, print the verdict; return 0."""
    from gradclip.lm.data import load_corpus
    from gradclip.lm.session import build_model, load_run_checkpoint, load_run_corpus

    output_folder(args.out)
    torch.manual_seed(args.seed)
    ids = None
    if args.run_dir is not None:
        from gradclip.lm.rundir import read_run

        run = read_run(args.run_dir)
        cfg = run.config
        _, model = load_run_checkpoint(run, torch.device("cpu"))
        source = f"run {run.path}"
        if args.data is not None or (run.path / "run.json").is_file():
            try:
                ids = load_run_corpus(run, args.data).train
            except UserError:
                ids = None  # corpus moved away: fall back to a random batch
    else:
        from gradclip.lm.config import load_config

        try:
            cfg, _ = load_config(args.config)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        vocab = cfg.vocab_size
        if args.data is not None:
            corpus = load_corpus(args.data, vocab_size=cfg.vocab_size)
            ids, vocab = corpus.train, len(corpus.vocab)
        model = build_model(cfg, vocab, torch.device("cpu"))
        source = f"config {args.config} at initialisation"
    steps = args.steps or cfg.num_steps
    x, y = _batch(ids, model.vocab_size, steps, args.batch)
    prof = temporal_profile(model, x, targets=y, max_jacobian_dim=args.max_jacobian_dim)
    out = write_profile(args.out, prof, f"{source}, T = {steps}, batch {args.batch}")
    print(f"{source}: {prof.verdict}")
    print(f"  {prof.evidence}")
    if prof.jacobian_norms is None:
        print("  (Jacobian products skipped: the state is larger than --max-jacobian-dim)")
    for w in prof.weights:
        print(f"  {w.name}: λ₁ = {w.sigma_max:.4g} vs 1/γ = {w.bound:g} ({w.condition})")
    print(f"wrote {out / PROFILE_PLOT} and {out / PROFILE_FILE}")
    return 0


def _batch(
    ids: torch.Tensor | None, vocab: int, steps: int, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if ids is not None and ids.numel() > batch * (steps + 1):
        width = ids.numel() // batch
        data = ids[: batch * width].long().view(batch, width).t()
        return data[:steps], data[1 : steps + 1]
    return torch.randint(0, vocab, (steps, batch)), torch.randint(0, vocab, (steps, batch))

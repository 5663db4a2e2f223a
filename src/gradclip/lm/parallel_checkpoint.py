"""Checkpoints of ``gradclip train --distributed ddp|fsdp``.

Under DDP rank 0 writes ``checkpoint.pt`` as one process would (the weights
are replicated), plus the recurrent state of every row (gathered) and every
rank's RNG state. Under FSDP2 the weights and the inner optimizer's state go
through ``torch.distributed.checkpoint`` (DCP) into
``dcp/step-NNNNNNNNN-XXXXXX/`` (each rank writes its shards, rank 0 the
``.metadata``), and ``checkpoint.pt`` (rank 0) holds the rest and names that
folder. Older folders are removed once ``checkpoint.pt`` names the new one, so
a kill at any time leaves a ``checkpoint.pt`` whose folder is complete.
"""

from __future__ import annotations

import secrets
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradclip.errors import UserError
from gradclip.lm.parallel import Parallel

__all__ = ["DCP_DIR", "complete_checkpoint", "load_dcp_model", "remove_stale_dcp", "restore_ranks"]

#: Folder of the run directory holding FSDP2's DCP checkpoints.
DCP_DIR = "dcp"


def complete_checkpoint(
    par: Parallel, blob: dict[str, Any], model: nn.Module, optimizer: Any, run_dir: Path, step: int
) -> dict[str, Any]:
    """Complete a :meth:`TrainState.checkpoint <gradclip.lm.state.TrainState.checkpoint>`
    dict for ``par``'s mode (collective: every rank calls it).

    DDP: the full hidden state and every rank's RNG. FSDP2: also writes the
    weights and the inner optimizer's state with DCP and puts the folder's name,
    relative to ``run_dir``, under ``"dcp"`` instead of ``"model"``.

    Args:
        par: this process's rank.
        blob: the checkpoint dict of this rank.
        model: the (sharded) model.
        optimizer: the :class:`~gradclip.ClippedOptimizer`.
        run_dir: the run directory.
        step: the global step.

    Returns:
        The dict rank 0 saves as ``checkpoint.pt`` (``blob`` itself in one process).

    Example:
        >>> complete_checkpoint(Parallel(), {"model": {}}, nn.Linear(1, 1), None, Path("r"), 0)
        {'model': {}}
    """
    if not par.active:
        return blob
    if "hidden" in blob:
        blob["hidden"] = par.gather_state(blob["hidden"])
    blob["rng_ranks"] = par.rng_states(torch.get_rng_state())
    if "rng_cuda" in blob:
        device = next(model.parameters()).device
        blob["rng_cuda_ranks"] = par.rng_states(torch.cuda.get_rng_state(device))
    blob["world_size"] = par.world
    blob["distributed"] = par.mode
    if par.mode == "fsdp":
        from torch.distributed.checkpoint.state_dict import (
            get_model_state_dict,
            get_optimizer_state_dict,
        )
        from torch.distributed.checkpoint.state_dict_saver import save

        name = par.broadcast(f"{DCP_DIR}/step-{step:09d}-{secrets.token_hex(3)}")
        state = {
            "model": get_model_state_dict(model),
            "optim": get_optimizer_state_dict(model, optimizer.optimizer),
        }
        save(state, checkpoint_id=str(run_dir / name))
        blob.pop("model", None)
        blob["optimizer"]["optimizer"]["state"] = {}  # in DCP
        blob["dcp"] = name
    return blob


def restore_ranks(
    par: Parallel, blob: dict[str, Any], model: nn.Module, optimizer: Any, run_dir: Path, seed: int
) -> None:
    """After :meth:`TrainState.restore <gradclip.lm.state.TrainState.restore>`:
    this rank's RNG state, and under FSDP2 the inner optimizer's DCP state.

    Args:
        par: this process's rank.
        blob: the checkpoint dict.
        model: the wrapped model.
        optimizer: the :class:`~gradclip.ClippedOptimizer`.
        run_dir: the run directory.
        seed: the config's seed (a step-0 checkpoint has rank 0's RNG only).
    """
    if not par.active:
        return
    if "rng_ranks" in blob:
        torch.set_rng_state(blob["rng_ranks"][par.rank].cpu().clone())  # own storage
        if "rng_cuda_ranks" in blob and torch.cuda.is_available():
            device = next(model.parameters()).device
            torch.cuda.set_rng_state(blob["rng_cuda_ranks"][par.rank].cpu().clone(), device)
    else:
        par.seed_rank(seed)
    if par.mode == "fsdp" and "dcp" in blob:
        from torch.distributed.checkpoint.state_dict import (
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )
        from torch.distributed.checkpoint.state_dict_loader import load

        state = {"optim": get_optimizer_state_dict(model, optimizer.optimizer)}
        load(state, checkpoint_id=str(run_dir / blob["dcp"]))
        set_optimizer_state_dict(model, optimizer.optimizer, state["optim"])


def remove_stale_dcp(run_dir: Path, keep: str | None) -> None:
    """Remove the DCP folders of ``run_dir`` other than ``keep`` (rank 0, once
    ``checkpoint.pt`` names ``keep``; and on resume, those a kill left).

    Args:
        run_dir: the run directory.
        keep: the folder ``checkpoint.pt`` names (relative), or ``None``.
    """
    root = run_dir / DCP_DIR
    if not root.is_dir():
        return
    for p in root.iterdir():
        if keep is None or p != run_dir / keep:
            shutil.rmtree(p, ignore_errors=True)


def load_dcp_model(folder: Path, model: nn.Module) -> None:
    """Load the weights of a DCP checkpoint into an unsharded ``model`` (collective
    when a process group is up; a single process reads every shard itself).

    Args:
        folder: the DCP folder.
        model: a plain model of the run's shape.
    """
    from torch.distributed.checkpoint.state_dict_loader import load

    if not (folder / ".metadata").is_file():
        raise UserError(f"checkpoint folder {folder} is missing or incomplete")
    state = {"model": model.state_dict()}
    with warnings.catch_warnings():  # one process reading every shard is the intent
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        load(state, checkpoint_id=str(folder))
    model.load_state_dict(state["model"])

"""``gradclip train --distributed ddp|fsdp`` under ``torchrun``: the process group,
the data split, the model wrapper, rank-0 writing, agreed stops.

Data split. Rank ``r`` of ``W`` trains on rows ``r·B/W … (r+1)·B/W − 1`` of the
batchified stream (``B`` = the config's ``batch_size``, the global batch): the
columns of each ``[T, B]`` step batch. An LSTM column depends on its own row
only, and the gradient both wrappers average over ranks is

.. math:: \\frac{1}{W}\\sum_r \\nabla \\sum_t \\frac{W}{B}\\sum_{b \\in r} \\ell_{t,b}
          = \\nabla \\sum_t \\frac{1}{B}\\sum_b \\ell_{t,b},

the gradient of one process on the full batch: losses, norms and clipping
decisions equal the single-process run up to float reduction order. The logged
loss is the mean of the ranks' losses (one scalar all-reduce per step).
With dropout (``keep_prob < 1``) each rank draws its own masks, so only the
distribution, not the masks, matches one process.

Evaluation (valid, test) runs the full batch on every rank, redundantly: the
numbers are those of one process, with no gather.

Files. Only rank 0 writes ``metrics.jsonl``, ``summary.json``, TensorBoard,
progress and messages (:meth:`Parallel.on_writer`); checkpoints are
:mod:`gradclip.lm.parallel_checkpoint`'s.

Stops. SIGINT/SIGTERM and the ``checkpoint_minutes`` timer are agreed on by all
ranks every ``refresh_every`` steps (one all-reduce of two numbers, MAX), so
every rank stops or saves at the same step.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gradclip.errors import UserError

__all__ = ["MODES", "Parallel", "signal_name", "start"]

#: ``--distributed`` choices.
MODES = ("none", "ddp", "fsdp")
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

State = Tensor | tuple[Tensor, Tensor]


@dataclass
class Parallel:
    """This process's place in the run.

    Attributes:
        mode: ``"none"``, ``"ddp"`` or ``"fsdp"``.
        rank: this process's rank.
        world: the number of processes.
        owns_group: whether :func:`start` created the process group (and ends it).

    Example:
        >>> par = Parallel()
        >>> par.writer, par.rows(20), par.active
        (True, slice(0, 20, None), False)
    """

    mode: str = "none"
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def active(self) -> bool:
        """Returns: whether several processes train together."""
        return self.mode != "none"

    @property
    def writer(self) -> bool:
        """Returns: whether this process writes files and messages (rank 0)."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of the batchified stream (columns of a ``[T, B]`` batch).

        Args:
            batch_size: the global B (divisible by the world size).

        Returns:
            ``slice(r·B/W, (r+1)·B/W)``.
        """
        n = batch_size // self.world
        return slice(self.rank * n, (self.rank + 1) * n)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to run the training forward through.

        DDP: a :class:`~torch.nn.parallel.DistributedDataParallel` around ``model``
        (``model`` itself keeps the plain state dict). FSDP2: ``fully_shard`` on the
        recurrent block and the whole model, in place (the embedding and decoder
        form the root's group), returning ``model``.

        Args:
            model: the language model, weights identical on every rank.
            device: its device.

        Returns:
            The module to call in training.
        """
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        if self.mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            # the loop does no in-place op on the model's outputs, which this warns of
            warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* view tensor")
            mesh = init_device_mesh(device.type, (self.world,))
            fully_shard(model.rnn, mesh=mesh)  # type: ignore[arg-type]
            fully_shard(model, mesh=mesh)
        return model

    def mean(self, t: Tensor) -> Tensor:
        """The mean of ``t`` over ranks (``t`` itself in one process).

        Args:
            t: a tensor, same shape on every rank.

        Returns:
            The mean (a new tensor when reduced).
        """
        if not self.active:
            return t
        t = t.clone()
        dist.all_reduce(t)  # SUM: gloo has no AVG
        return t / self.world

    def agree(self, signum: int | None, due: bool, device: torch.device) -> tuple[int, bool]:
        """Combine every rank's stop signal and checkpoint timer (MAX over ranks).

        Args:
            signum: the signal this rank caught, if any.
            due: whether this rank's ``checkpoint_minutes`` timer expired.
            device: where the reduction runs.

        Returns:
            ``(signal number or 0, due on any rank)``.
        """
        flags = torch.tensor([signum or 0, int(due)], device=device)
        if self.active:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        sig, any_due = flags.tolist()
        return int(sig), bool(any_due)

    def gather_state(self, state: State | None) -> State | None:
        """The recurrent state of all rows, from every rank's rows (``[L, B, H]``).

        Args:
            state: this rank's ``[L, B/W, H]`` state (or tuple), or ``None``.

        Returns:
            The full state (on every rank).
        """
        if not self.active or state is None:
            return state
        parts = state if isinstance(state, tuple) else (state,)
        full = []
        for t in parts:
            pieces = [torch.empty_like(t) for _ in range(self.world)]
            dist.all_gather(pieces, t.contiguous())
            full.append(torch.cat(pieces, dim=1))
        return (full[0], full[1]) if isinstance(state, tuple) else full[0]

    def local_state(self, state: State | None, batch_size: int) -> State | None:
        """This rank's rows of a full ``[L, B, H]`` state.

        Args:
            state: the full state or ``None``.
            batch_size: B.

        Returns:
            The rows :meth:`rows` names.
        """
        if not self.active or state is None:
            return state
        rows = self.rows(batch_size)
        if isinstance(state, tuple):
            return (state[0][:, rows].contiguous(), state[1][:, rows].contiguous())
        return state[:, rows].contiguous()

    def rng_states(self, own: Tensor) -> Tensor:
        """Every rank's RNG state, stacked ``[W, n]`` (so dropout resumes exactly).

        Args:
            own: this rank's state (``torch.get_rng_state()`` or CUDA's).

        Returns:
            The states, on the CPU.
        """
        if not self.active:
            return own.unsqueeze(0)
        pieces = [own for _ in range(self.world)]
        dist.all_gather_object(pieces, own.cpu())
        return torch.stack(pieces)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank.

        Args:
            value: a picklable object.

        Returns:
            Rank 0's object.
        """
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_writer(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on rank 0; a :class:`~gradclip.errors.UserError` there is raised
        on every rank (instead of leaving the others waiting in the next collective).

        Args:
            fn: what rank 0 does (create the run directory, take its lock).
        """
        error = None
        if self.writer:
            try:
                fn()
            except UserError as exc:
                error = str(exc)
                if not self.active:
                    raise
            except BaseException:
                self.broadcast("rank 0 failed (its traceback is above)")
                raise
        error = self.broadcast(error)
        if error is not None:
            raise UserError(error)

    def barrier(self) -> None:
        """Wait for every rank (nothing in one process)."""
        if self.active:
            dist.barrier()

    def close(self) -> None:
        """End the process group if :func:`start` created it."""
        if self.owns_group and dist.is_initialized():
            # free the wrappers (DDP, FSDP2's mesh) now: left to the interpreter's exit,
            # the gloo threads they keep alive can abort the process
            gc.collect()
            dist.destroy_process_group()
            gc.collect()
            self.owns_group = False

    def seed_rank(self, seed: int) -> None:
        """Give ranks > 0 their own RNG stream (dropout masks), after the model is built.

        Args:
            seed: the config's seed.
        """
        if self.rank > 0:
            torch.manual_seed(seed + self.rank)


def _from_env(mode: str) -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():  # a caller's own group
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return dist.get_rank(), dist.get_world_size(), local
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise UserError(
            f"--distributed {mode} needs torchrun's environment ({', '.join(missing)} not set): "
            f"launch with torchrun --nproc-per-node N -m gradclip train --distributed {mode} ..."
        )
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None


@contextlib.contextmanager
def start(
    mode: str, device: torch.device, batch_size: int
) -> Iterator[tuple[Parallel, torch.device]]:
    """Join the run's process group (from torchrun's environment) and pick this rank's device.

    Every check comes before the group is created: an unknown mode, missing
    torchrun variables, or a batch size the world size does not divide is a
    one-line :class:`~gradclip.errors.UserError`. CPU → gloo; CUDA → NCCL on
    ``cuda:LOCAL_RANK``. A group the caller already created is used (and kept).

    Args:
        mode: ``"none"``, ``"ddp"`` or ``"fsdp"``.
        device: the device asked for (``cuda`` becomes ``cuda:LOCAL_RANK``).
        batch_size: the global batch size B.

    Returns:
        A context manager giving ``(Parallel, device)``; leaving it ends the group.

    Example:
        >>> with start("none", torch.device("cpu"), 20) as (par, dev):
        ...     par.world, dev
        (1, device(type='cpu'))
    """
    if mode not in MODES:
        raise UserError(f"--distributed must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none":
        if os.environ.get("WORLD_SIZE", "1") not in ("", "1") and not dist.is_initialized():
            raise UserError(
                f"started by torchrun as one of {os.environ['WORLD_SIZE']} processes: pass "
                "--distributed ddp or fsdp (else every process would train the whole run alone)"
            )
        yield Parallel(), device
        return
    rank, world, local = _from_env(mode)
    if batch_size % world:
        raise UserError(
            f"batch_size {batch_size} is not divisible by the {world} processes: each rank "
            "trains on batch_size / world_size rows; choose a multiple of the world size"
        )
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    par = Parallel(mode, rank, world, owns_group=not dist.is_initialized())
    if par.owns_group:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    try:
        yield par, device
    except BaseException:
        par.close()
        raise
    par.barrier()  # no rank tears its connections down while another still uses them
    par.close()


def signal_name(signum: int) -> str:
    """``15`` → ``"SIGTERM"``.

    Args:
        signum: a signal number.

    Returns:
        Its name.

    Example:
        >>> signal_name(2)
        'SIGINT'
    """
    return signal.Signals(signum).name

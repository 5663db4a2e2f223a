"""Where a training run stands, and its checkpoint: everything needed to continue
bit for bit (weights, optimizer and clipper state, RNG, the carried hidden state
and the epoch's running sums).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradclip.lm.config import LMConfig
from gradclip.lm.model import PTBModel, State

__all__ = ["CHECKPOINT_FORMAT", "TrainState"]

#: Version of the checkpoint dict (1: epoch-end checkpoints; 2: + status, total_clipped).
CHECKPOINT_FORMAT = 2


def _to_device(state: State, device: torch.device) -> State:
    if isinstance(state, (tuple, list)):
        return (state[0].to(device), state[1].to(device))
    return state.to(device)


@dataclass
class TrainState:
    """The loop's position and running sums; all of it goes into the checkpoint.

    Attributes:
        epoch: the epoch in progress (0-based).
        step_in_epoch: steps of that epoch already done.
        global_step: steps done in all.
        history: one record per finished epoch (train/valid ppl, lr, clip rate, speed).
        status: ``running``, ``stopped``, ``finished`` or ``diverged``.
        test_ppl: set when the run finished.
        diverged_step: the first step whose loss was not finite (or whose epoch's
            perplexity was), when ``status`` is ``diverged``.
        hidden: the recurrent state carried across steps of the epoch.
        epoch_cost: Σ loss over the epoch's steps (0-d tensor, on the device).
        epoch_clipped: number of the epoch's steps that clipped (0-d tensor).
        total_clipped: number of all steps that clipped (0-d tensor).

    Example:
        >>> st = TrainState(global_step=40, total_clipped=torch.tensor(10.0))
        >>> st.summary(LMConfig(0.1, 1.0, 5.0, 1, 2, 2, 1, 1, 1.0, 0.5, 2, 10))["clip_rate"]
        0.25
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    test_ppl: float | None = None
    diverged_step: int | None = None
    hidden: State | None = None
    epoch_cost: Tensor | None = None
    epoch_clipped: Tensor | None = None
    total_clipped: Tensor | None = None

    def start_epoch(self, model: PTBModel, batch_size: int, device: torch.device) -> None:
        """Zero hidden state and sums at the start of an epoch (not when resuming inside one).

        Args:
            model: gives the zero state.
            batch_size: B.
            device: where the sums live.
        """
        if self.total_clipped is None:
            self.total_clipped = torch.zeros((), device=device)
        if self.step_in_epoch == 0 or self.hidden is None:
            self.hidden = model.init_state(batch_size)
            self.epoch_cost = torch.zeros((), device=device)
            self.epoch_clipped = torch.zeros((), device=device)

    def checkpoint(
        self, cfg: LMConfig, model: PTBModel, optimizer: Any, device: torch.device
    ) -> dict[str, Any]:
        """The checkpoint dict of this state with ``model`` and ``optimizer``.

        Args:
            cfg: the run's config (compared on resume before anything is loaded).
            model: its weights.
            optimizer: its state (the clipper's included).
            device: whose RNG state is saved too.

        Returns:
            A dict that ``torch.load(weights_only=True)`` reads back.
        """
        blob: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "config": cfg.as_dict(),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "history": self.history,
            "status": self.status,
            "finished": self.status == "finished",
            "test_ppl": self.test_ppl,
            "diverged_step": self.diverged_step,
            "total_clipped": self.total_clipped,
            "rng_cpu": torch.get_rng_state(),
        }
        if device.type == "cuda":
            blob["rng_cuda"] = torch.cuda.get_rng_state(device)
        if self.step_in_epoch > 0:
            blob["hidden"] = self.hidden
            blob["epoch_cost"] = self.epoch_cost
            blob["epoch_clipped"] = self.epoch_clipped
        return blob

    @classmethod
    def restore(cls, blob: dict[str, Any], optimizer: Any, device: torch.device) -> TrainState:
        """Load ``blob``'s optimizer state and RNG state, and return its :class:`TrainState`.

        Args:
            blob: a checkpoint dict (the model weights are loaded by the caller).
            optimizer: receives ``blob["optimizer"]``.
            device: where the tensors go.

        Returns:
            The state to continue from.
        """
        optimizer.load_state_dict(blob["optimizer"])
        torch.set_rng_state(blob["rng_cpu"].cpu())
        if device.type == "cuda" and "rng_cuda" in blob:
            torch.cuda.set_rng_state(blob["rng_cuda"].cpu(), device)
        status = blob.get("status", "finished" if blob.get("finished") else "running")
        st = cls(
            epoch=int(blob["epoch"]),
            step_in_epoch=int(blob["step_in_epoch"]),
            global_step=int(blob["global_step"]),
            history=list(blob["history"]),
            status="running" if status == "stopped" else status,
            test_ppl=blob.get("test_ppl"),
            diverged_step=blob.get("diverged_step"),
        )
        if blob.get("total_clipped") is not None:
            st.total_clipped = blob["total_clipped"].to(device)
        if st.step_in_epoch > 0:
            st.hidden = _to_device(blob["hidden"], device)
            st.epoch_cost = blob["epoch_cost"].to(device)
            st.epoch_clipped = blob["epoch_clipped"].to(device)
        return st

    @property
    def clip_rate(self) -> float | None:
        """Fraction of all steps so far that clipped (``None`` before the first step)."""
        if not self.global_step:
            return None
        clipped = float(self.total_clipped) if self.total_clipped is not None else 0.0
        return clipped / self.global_step

    def summary(self, cfg: LMConfig) -> dict[str, Any]:
        """The ``summary.json`` record of this state (strict JSON is applied on writing).

        Args:
            cfg: the run's config.

        Returns:
            ``status``, ``finished``, ``global_step``, ``epochs``, ``test_ppl``,
            ``diverged_step``, ``clip_rate``, ``config``.
        """
        return {
            "status": self.status,
            "finished": self.status == "finished",
            "global_step": self.global_step,
            "epochs": self.history,
            "test_ppl": self.test_ppl,
            "diverged_step": self.diverged_step,
            "clip_rate": self.clip_rate,
            "config": cfg.as_dict(),
        }

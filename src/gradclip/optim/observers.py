"""The observer seam of :class:`~gradclip.optim.ClippedOptimizer`.

An observer sees every step twice: :meth:`StepObserver.before_step` after the
clip and before ``optimizer.step()`` (parameters still old), and
:meth:`StepObserver.after_step` after it, with ``skipped`` now known: whether
the optimizer left the parameters as they were (the ``skip`` policy on a
non-finite norm, or a ``GradScaler`` overflow). The per-tensor norms come from the
clipper's own norm pass, so observing costs no second pass over the gradients;
with no observer attached a step builds nothing for them.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

from gradclip.clippers import ClipStats

__all__ = ["StepObservation", "StepObserver"]


@dataclasses.dataclass(frozen=True)
class StepObservation:
    """What one :class:`~gradclip.optim.ClippedOptimizer` step saw.

    Attributes:
        step: 0-based index of this ``ClippedOptimizer`` step.
        names: one per gradient: the optimizer's ``param_names`` (an optimizer
            built from ``named_parameters()``), else ``"param{i}"`` with ``i``
            the parameter's position in the optimizer's parameter groups.
        params: the parameters, in the same order (``None`` for a bare gradient).
        grads: the gradients the clipper saw (the same tensor objects; see the
            optim module for what they hold after the step).
        tensor_norms: 1-d per-tensor pre-clip norms (the clipper's ``norm_type``;
            L2 for ``agc``), same order, or ``None`` if the clipper had none.
        stats: the step's :class:`~gradclip.clippers.ClipStats`.
        skipped: ``None`` in :meth:`StepObserver.before_step` (not yet known);
            in :meth:`StepObserver.after_step` a 0-d bool tensor on the norms'
            device, True when the optimizer skipped the update: under the
            ``"skip"`` policy ``~stats.finite``; under ``GradScaler`` the
            scaler's own ``found_inf`` (whatever the clipper's policy); else
            False. Read without a host sync (it may still be on the device).
    """

    step: int
    names: tuple[str, ...]
    params: tuple[Tensor | None, ...]
    grads: tuple[Tensor, ...]
    tensor_norms: Tensor | None
    stats: ClipStats
    skipped: Tensor | None = None


class StepObserver:
    """Base class of step observers, with no-op defaults (duck typing works too).

    Example:
        >>> import torch
        >>> from gradclip import ClippedOptimizer, StepObserver, make_clipper
        >>> class Print(StepObserver):
        ...     def before_step(self, obs):
        ...         print(obs.step, obs.names, obs.tensor_norms)
        ...     def after_step(self, obs):
        ...         print("skipped:", bool(obs.skipped))
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = ClippedOptimizer(torch.optim.SGD([w], lr=1.0), make_clipper("norm"))
        >>> handle = opt.add_observer(Print())
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> _ = opt.step()
        0 ('param0',) tensor([5.])
        skipped: False
        >>> handle.remove()
    """

    def before_step(self, obs: StepObservation) -> None:
        """Called after the clip, before ``optimizer.step()``: parameters are still old.

        Args:
            obs: this step's observation.
        """

    def after_step(self, obs: StepObservation) -> None:
        """Called after ``optimizer.step()`` (also when the step was skipped).

        Args:
            obs: this step's observation: the one :meth:`before_step` saw, with
                ``skipped`` filled in (a copy, the other fields the same objects).
        """

r"""The one place where non-finite norms are handled, for every clipper and for
:class:`~gradclip.optim.ClippedOptimizer`'s skip.

Non-finite gradients: every clipper takes ``nonfinite=``

* ``"propagate"`` (default): no guard, TensorFlow semantics: a method that
  scales by a norm-derived factor produces NaN (TensorFlow's error signal);
  ``value`` clamps like ``tf.clip_by_value`` (NaN stays NaN). Statistics are
  never updated with the non-finite norm.
* ``"error"``: raise :class:`FloatingPointError` before anything is touched
  (one host sync per call, the price of the check).
* ``"skip"``: gradients and statistics are left untouched and ``stats.finite``
  is False; :class:`gradclip.optim.ClippedOptimizer` then suppresses the step.
"""

from __future__ import annotations

import dataclasses
from typing import cast

import torch
from torch import Tensor

from gradclip.clippers.options import NONFINITE_POLICIES, NonFinite

__all__ = ["NonFinitePolicy"]


@dataclasses.dataclass(frozen=True)
class NonFinitePolicy:
    """What to do when the norm is not finite; the one helper every clipper and
    :class:`~gradclip.optim.ClippedOptimizer` use (see the module docstring).

    Example:
        >>> policy = NonFinitePolicy.of("skip")
        >>> policy.guard(torch.tensor([0.5]), torch.tensor([float("inf")]), torch.tensor(False))
        tensor([1.])
    """

    mode: NonFinite

    @classmethod
    def of(cls, mode: object) -> NonFinitePolicy:
        """Validate a policy name.

        Args:
            mode: ``"propagate"``, ``"error"`` or ``"skip"``.

        Returns:
            The policy.
        """
        if mode not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {mode!r}")
        return cls(cast(NonFinite, mode))

    @property
    def skips(self) -> bool:
        """True under ``"skip"``: the optimizer step must be suppressed."""
        return self.mode == "skip"

    def check(self, finite: Tensor, norm: Tensor, who: str) -> None:
        """Under ``"error"``, raise ``FloatingPointError`` (one host sync) if not ``finite``.

        Args:
            finite: 0-d bool tensor, whether the norm is finite.
            norm: the norm, for the message.
            who: the clipper's ``repr``, for the message.
        """
        if self.mode == "error" and not bool(finite):
            raise FloatingPointError(
                f"{who}: the gradient norm is {float(norm)}; gradients were left untouched. "
                "Use nonfinite='skip' to skip such steps or 'propagate' to let NaN through."
            )

    def poison(self, value: Tensor, norm: Tensor) -> Tensor:
        """Under ``"propagate"``, ``value + (n − n)``: NaN where ``norm`` is inf or NaN
        (TensorFlow's error signal); ``value`` otherwise.

        Args:
            value: a factor or a norm derived from ``norm``.
            norm: the norm(s) it derives from (broadcastable to ``value``).

        Returns:
            ``value``, poisoned under ``"propagate"``.
        """
        return value + (norm - norm) if self.mode == "propagate" else value

    def guard(self, factor: Tensor, norms: Tensor, finite: Tensor) -> Tensor:
        """The scale factor to apply: poisoned under ``"propagate"``, 1 (untouched)
        under ``"skip"`` when not ``finite``, as is under ``"error"``.

        Args:
            factor: the clip factors (0-d, per tensor or per unit).
            norms: the norms they were computed from (same shape).
            finite: 0-d bool tensor, whether the global norm is finite.

        Returns:
            The factors to multiply the gradients by.
        """
        if self.skips:
            return torch.where(finite.to(factor.device), factor, 1.0)
        return self.poison(factor, norms)

    def skipped(self, finite: Tensor, dtype: torch.dtype) -> Tensor:
        """Whether this step is skipped, as a number (no sync): the fused kernels'
        ``found_inf`` and the optimizer's skip counter.

        Args:
            finite: 0-d bool tensor, whether the global norm is finite.
            dtype: the result's dtype.

        Returns:
            0-d tensor: 1 under ``"skip"`` with a non-finite norm, else 0.
        """
        return (~finite if self.skips else torch.zeros_like(finite)).to(dtype)

    def should_step(self, finite: Tensor) -> bool:
        """Whether to call an unfused ``optimizer.step()`` (the one host sync of ``"skip"``).

        Args:
            finite: 0-d bool tensor, whether the global norm is finite.

        Returns:
            False only under ``"skip"`` with a non-finite norm.
        """
        return not self.skips or bool(finite)

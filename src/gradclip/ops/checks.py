"""Argument checks shared by the ops and the clippers, and the silent-failure guards."""

from __future__ import annotations

import math
import warnings
from typing import TypeAlias

from torch import Tensor

__all__ = ["as_tensor_list", "check_norm_type", "check_threshold", "warn_if_nothing_to_clip"]

Threshold: TypeAlias = float | int | Tensor

EMPTY_INPUT = (
    "nothing to clip: the iterable of parameters is empty (an empty generator or list), "
    "so no gradient clipping will occur; the likely cause is an exhausted generator, "
    "e.g. model.parameters() consumed twice"
)
NO_GRADS = (
    "nothing to clip: no parameter has .grad: were gradients passed where parameters "
    "were expected, or is backward() missing?"
)


def as_tensor_list(tensors: object, name: str) -> list[Tensor | None]:
    """Materialise ``tensors`` (a Tensor or an iterable of Tensor/None) as a list.

    Args:
        tensors: a tensor, or an iterable of tensors and ``None``.
        name: the argument's name, for error messages.

    Returns:
        The items as a list (a single tensor becomes ``[tensor]``).

    Example:
        >>> import torch
        >>> as_tensor_list(torch.ones(1), "t")
        [tensor([1.])]
    """
    if isinstance(tensors, Tensor):
        return [tensors]
    if tensors is None or isinstance(tensors, (str, bytes, dict)):
        raise TypeError(
            f"{name} must be a Tensor or an iterable of Tensors, got {type(tensors).__name__}"
        )
    try:
        items = list(tensors)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"{name} must be a Tensor or an iterable of Tensors, got {type(tensors).__name__}"
        ) from None
    for i, item in enumerate(items):
        if item is not None and not isinstance(item, Tensor):
            raise TypeError(f"{name}[{i}] must be a Tensor or None, got {type(item).__name__}")
        if item is not None and not (item.is_floating_point() or item.is_complex()):
            raise TypeError(f"{name}[{i}] must have a floating dtype, got {item.dtype}")
    return items


def warn_if_nothing_to_clip(given: int, with_grad: int, all_parameters: bool) -> None:
    """Warn about the two clips that silently do nothing.

    Args:
        given: how many tensors the caller passed (``None`` entries excluded).
        with_grad: how many of them brought a gradient.
        all_parameters: whether every given tensor is a parameter (requires grad),
            so that a missing ``.grad`` cannot mean "this is a bare gradient".

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_nothing_to_clip(0, 0, True)
        >>> "exhausted generator" in str(caught[0].message)
        True
    """
    if given == 0:
        warnings.warn(EMPTY_INPUT, UserWarning, stacklevel=4)
    elif with_grad == 0 and all_parameters:
        warnings.warn(NO_GRADS, UserWarning, stacklevel=4)


def check_norm_type(norm_type: object) -> float:
    """Validate a norm order.

    Args:
        norm_type: a positive number, ``inf``, or the strings ``"inf"``/``"infinity"``.

    Returns:
        ``norm_type`` as a float.

    Example:
        >>> check_norm_type("inf"), check_norm_type(2)
        (inf, 2.0)
    """
    if isinstance(norm_type, str) and norm_type.lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)):
        raise TypeError(f"norm_type must be a number or 'inf', got {norm_type!r}")
    p = float(norm_type)
    if math.isnan(p) or p <= 0:
        raise ValueError(f"norm_type must be positive or inf, got {norm_type!r}")
    return p


def check_threshold(
    value: object, name: str, *, allow_zero: bool = True, allow_inf: bool = True
) -> Threshold:
    """Validate a clipping threshold; 0-d tensors pass unchecked (checking would sync).

    Args:
        value: a number (not a bool) or a one-element tensor.
        name: the option's name, for the error message.
        allow_zero: accept 0.
        allow_inf: accept ``inf``.

    Returns:
        The number as a float, or the tensor itself.

    Example:
        >>> check_threshold(1, "max_norm")
        1.0
        >>> check_threshold(0, "max_norm", allow_zero=False)
        Traceback (most recent call last):
        ...
        ValueError: max_norm must be positive, got 0
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a 0-d Tensor, got {value!r}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    if v < 0 or (v == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    if math.isinf(v) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v

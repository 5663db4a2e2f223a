"""The one exception type for problems a user can fix.

Application code (:mod:`gradclip.lm`, :mod:`gradclip.diagnostics`,
:mod:`gradclip.cli`) raises :class:`UserError` for bad input: a missing or
corrupt file, an unknown name, a value out of range. ``gradclip``'s ``main``
prints it as one line, ``gradclip COMMAND: error: MESSAGE``, and exits with
status 2. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """An input problem the user can fix: reported in one line, exit status 2.

    It subclasses :class:`ValueError`, so Python callers that catch
    ``ValueError`` around the library (the core raises ``ValueError`` for bad
    arguments) catch it too. The message names the file, option or value.

    Args:
        message: one line saying what is wrong and, where it helps, what to do.

    Example:
        >>> from gradclip.errors import UserError
        >>> try:
        ...     raise UserError("--steps must be a positive integer, got '0'")
        ... except ValueError as exc:
        ...     print(exc)
        --steps must be a positive integer, got '0'
    """

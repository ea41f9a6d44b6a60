"""The small exception hierarchy of tokenshape.

Every error raised for bad input names the argument, the value received and what was expected, so
that a person reading a traceback from inside a training loop knows what to change.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "InvalidArgumentError",
    "MissingModelError",
    "RewardFunctionError",
    "StudyStoreError",
    "TokenShapeError",
]


class TokenShapeError(Exception):
    """Base class of every error raised by tokenshape."""


class InvalidArgumentError(TokenShapeError, ValueError):
    """An argument has a value outside what the function accepts.

    Args:
        name: the argument's name as the caller spelled it.
        value: the value received (shown through ``repr``, shortened when long).
        expected: what would have been accepted, in words.
    """

    def __init__(self, name: str, value: Any, expected: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        shown = repr(value)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        super().__init__(f"{name}={shown}: expected {expected}")


class RewardFunctionError(TokenShapeError, ValueError):
    """A reward function returned something other than one finite float per row."""


class MissingModelError(TokenShapeError, FileNotFoundError):
    """A cached model that a command needs has not been built yet."""


class StudyStoreError(TokenShapeError):
    """A study folder can't be used: its file is not a tokenshape study, is damaged, or is in use.

    Raised before anything is written, so the file that caused it is left as it was.
    """

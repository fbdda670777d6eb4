"""Error types raised by the Rhai engine.

Every error carries ``line`` and ``column`` (1-based; 0 when unknown) and renders
as ``"line:col: message"``.
"""

from __future__ import annotations

from typing import Any

Pos = tuple[int, int]
NOPOS: Pos = (0, 0)


class RhaiError(Exception):
    """Common base of all errors raised by the engine."""

    def __init__(self, message: str, pos: Pos = NOPOS) -> None:
        super().__init__(message)
        self.message = message
        self.line, self.column = pos

    @property
    def pos(self) -> Pos:
        return (self.line, self.column)

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.message}"


class ParseError(RhaiError):
    """The source text is not a valid script."""


class EvalError(RhaiError):
    """A runtime error while evaluating a script."""


class LimitExceeded(EvalError):
    """A sandbox limit (operations, call depth, sizes, variables...) was exceeded.

    Scripts cannot catch this with ``try``/``catch``.
    """


class ThrownError(EvalError):
    """A value thrown by the script with ``throw``."""

    def __init__(self, value: Any, message: str, pos: Pos = NOPOS) -> None:
        super().__init__(message, pos)
        self.value = value


class Fail(Exception):
    """Internal: a runtime failure without a position (builtins raise it; call sites
    turn it into an :class:`EvalError` at their own position)."""

    def __init__(self, message: str, limit: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.limit = limit

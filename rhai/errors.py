"""Error types raised by the Rhai engine.

Every error carries ``line`` and ``column`` (1-based; 0 when unknown) and renders
as ``"line:col: message"``.
"""

from __future__ import annotations

import difflib
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


class Signal(Exception):
    """Internal: a control signal travelling up the Python stack (``return``/``break`` out of
    an expression, ``exit``). Never caught by ``try``/``catch``; builtins and host-call
    wrappers let it pass unchanged."""


class ExitSignal(Signal):
    """``exit(value)``: stops the whole evaluation; the engine answers ``value``."""

    def __init__(self, value: Any) -> None:
        super().__init__("exit")
        self.value = value


def to_eval_error(e: BaseException, pos: Pos, what: str = "") -> RhaiError:
    """The engine error for exception ``e`` raised at ``pos`` (``what`` prefixes the message
    of a foreign exception)."""
    if isinstance(e, Fail):
        if e.limit:
            return LimitExceeded(e.message, pos)
        return EvalError(e.message, pos)
    if isinstance(e, RhaiError):
        return e
    if isinstance(e, MemoryError):
        return LimitExceeded("Out of memory", pos)
    if isinstance(e, RecursionError):
        return LimitExceeded("Stack overflow: the script nests too deeply", pos)
    return EvalError(f"{what}{type(e).__name__}: {e}", pos)


def suggest(name: str, candidates: list[str]) -> str:
    """`` (did you mean `x`?)`` for the closest of ``candidates``, or an empty string."""
    m = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean `{m[0]}`?)" if m else ""

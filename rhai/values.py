"""Rhai values and their Python representation.

==========  ===================================
Rhai        Python
==========  ===================================
INT         ``int`` (checked to the i64 range)
FLOAT       ``float``
bool        ``bool``
char        :class:`Char` (a 1-character ``str`` subclass)
string      ``str``
array       ``list``
object map  ``dict`` with ``str`` keys
()          ``None``
Fn          :class:`FnPtr`
range       :class:`Range`
==========  ===================================
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from .errors import Fail

INT_MAX = (1 << 63) - 1
INT_MIN = -(1 << 63)
EPSILON = 2.220446049250313e-16


class Char(str):
    """A Rhai ``char``: a one-character string that is a distinct type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Char({str.__repr__(self)})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Char and str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = str.__hash__


class Cell:
    """A shared variable captured by a closure."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v


class Range:
    """An integer range ``start..end`` or ``start..=end``."""

    __slots__ = ("end", "inclusive", "start")

    def __init__(self, start: int, end: int, inclusive: bool = False) -> None:
        self.start = start
        self.end = end
        self.inclusive = inclusive

    def py_range(self) -> range:
        return range(self.start, self.end + 1 if self.inclusive else self.end)

    def __contains__(self, x: object) -> bool:
        if type(x) is not int:
            return False
        if self.inclusive:
            return self.start <= x <= self.end
        return self.start <= x < self.end

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Range) and (self.start, self.end, self.inclusive) == (
            other.start,
            other.end,
            other.inclusive,
        )

    def __hash__(self) -> int:
        return hash((self.start, self.end, self.inclusive))

    def __repr__(self) -> str:
        return f"{self.start}..{'=' if self.inclusive else ''}{self.end}"


class StepRange:
    """The iterator returned by ``range(from, to, step)``."""

    __slots__ = ("end", "start", "step")

    def __init__(self, start: Any, end: Any, step: Any) -> None:
        self.start = start
        self.end = end
        self.step = step

    def __iter__(self) -> Any:
        x, end, step = self.start, self.end, self.step
        if step > 0:
            while x < end:
                yield x
                x += step
        else:
            while x > end:
                yield x
                x += step

    def __repr__(self) -> str:
        return f"range({self.start}, {self.end}, {self.step})"


class FnPtr:
    """A Rhai function pointer: a named function or an anonymous closure, with
    optional curried arguments."""

    __slots__ = ("_ctx", "cells", "closure", "curry", "name")

    def __init__(
        self,
        name: str,
        curry: tuple[Any, ...] = (),
        closure: Any = None,
        cells: tuple[Cell, ...] = (),
        ctx: Any = None,
    ) -> None:
        self.name = name
        self.curry = curry
        self.closure = closure
        self.cells = cells
        self._ctx = ctx

    @property
    def is_anonymous(self) -> bool:
        return self.closure is not None

    def __call__(self, *args: Any) -> Any:
        """Call the function from host code (uses the context that created it)."""
        if self._ctx is None:
            raise TypeError("this function pointer is not bound to a running engine")
        # the context knows how to call (values must not depend on the runtime)
        return self._ctx.call_fnptr_host(self, list(args))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FnPtr)
            and self.name == other.name
            and self.closure is other.closure
            and self.curry == other.curry
        )

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Fn({self.name})"


def type_of(v: Any) -> str:
    t = type(v)
    if t is int:
        return "i64"
    if t is str:
        return "string"
    if t is float:
        return "f64"
    if t is bool:
        return "bool"
    if v is None:
        return "()"
    if t is list:
        return "array"
    if t is dict:
        return "map"
    if t is Char:
        return "char"
    if t is FnPtr:
        return "Fn"
    if t is Range:
        return "range=" if v.inclusive else "range"
    if t is StepRange:
        return "StepRange"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, dict):
        return "map"
    if isinstance(v, str):
        return "string"
    return t.__name__


# ---------------------------------------------------------------------------
# formatting


def fmt_float(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    a = abs(x)
    if a != 0.0 and (a < 1e-10 or a >= 1e15):
        s = repr(x)
        if "e" in s:
            m, e = s.split("e")
            return f"{m}e{int(e)}"
        return s
    if x == int(x) and a < 1e15:
        return f"{int(x)}.0" if x != 0 or math.copysign(1.0, x) > 0 else "-0.0"
    return repr(x)


_ESC = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "\0": "\\0"}


def _quote(s: str, q: str) -> str:
    out = [q]
    for ch in s:
        if ch == q:
            out.append("\\" + q)
        elif ch in _ESC:
            out.append(_ESC[ch])
        else:
            out.append(ch)
    out.append(q)
    return "".join(out)


def to_display(v: Any, c: Any = None) -> str:
    """The ``to_string`` / ``print`` form of a value."""
    t = type(v)
    if t is str or t is Char:
        return str(v)
    return to_debug(v, 0, c)


def to_debug(v: Any, depth: int = 0, c: Any = None) -> str:
    """The ``to_debug`` / ``debug`` form of a value; with a context, one operation per
    array or map item and per 64 characters of strings."""
    if depth > 64:
        return "..."
    t = type(v)
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return fmt_float(v)
    if t is str:
        if c is not None:
            charge_str(c, len(v))
        return _quote(v, '"')
    if t is Char:
        return _quote(v, "'")
    if v is None:
        return "()"
    if isinstance(v, (list, tuple)):
        if c is not None:
            charge(c, len(v))
        return "[" + ", ".join(to_debug(x, depth + 1, c) for x in v) + "]"
    if isinstance(v, dict):
        if c is not None:
            charge(c, len(v) + (_keys_chars(v) >> STR_CHUNK_BITS))
        items = sorted(v.items(), key=lambda kv: str(kv[0]))
        body = ", ".join(_quote(str(k), '"') + ": " + to_debug(x, depth + 1, c) for k, x in items)
        return "#{" + body + "}"
    if t is FnPtr:
        return f"Fn({v.name})"
    if t is Range or t is StepRange:
        return repr(v)
    if isinstance(v, str):
        return _quote(v, '"')
    return f"<{type_of(v)}>"


# ---------------------------------------------------------------------------
# comparisons


def float_eq(x: float, y: float) -> bool:
    if x == y:
        return True
    if x == 0.0 or y == 0.0:
        return abs(x - y) < EPSILON
    return abs(x - y) < max(abs(x), abs(y)) * EPSILON


def float_lt(x: float, y: float) -> bool:
    if x >= y:
        return False
    if x == 0.0 or y == 0.0:
        return y - x >= EPSILON
    return y - x >= max(abs(x), abs(y)) * EPSILON


def float_le(x: float, y: float) -> bool:
    if x == 0.0 or y == 0.0:
        return y - x >= -EPSILON
    return y - x >= -max(abs(x), abs(y)) * EPSILON


_NUM = (int, float)


def values_eq(a: Any, b: Any, c: Any = None) -> bool:
    """Rhai ``==``: different non-numeric types are simply unequal. With a context,
    comparing arrays and maps spends one operation per item compared."""
    ta, tb = type(a), type(b)
    if ta is tb:
        if ta is str:
            # equal lengths: C compares the characters (one operation per 64 of them)
            if c is not None and len(a) >> STR_CHUNK_BITS and len(a) == len(b) and a is not b:
                charge(c, len(a) >> STR_CHUNK_BITS)
            return a == b
        if ta is float:
            return float_eq(a, b)
        if ta is list:
            if len(a) != len(b):
                return False
            if c is not None:
                charge(c, len(a))
            return all(values_eq(x, y, c) for x, y in zip(a, b, strict=False))
        if ta is dict:
            if len(a) != len(b):
                return False
            if c is not None:
                charge(c, len(a) + (_keys_chars(a) >> STR_CHUNK_BITS))
            if a.keys() != b.keys():
                return False
            return all(values_eq(a[k], b[k], c) for k in a)
        return bool(a == b)
    if (ta is int and tb is float) or (ta is float and tb is int):
        return float_eq(float(a), float(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return False
        if c is not None:
            charge(c, len(a))
        return all(values_eq(x, y, c) for x, y in zip(a, b, strict=False))
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return False
        if c is not None:
            charge(c, len(a) + (_keys_chars(a) >> STR_CHUNK_BITS))
        if a.keys() != b.keys():
            return False
        return all(values_eq(a[k], b[k], c) for k in a)
    return False


def _keys_chars(m: dict[str, Any]) -> int:
    """How many characters the keys of map ``m`` hold (looking up long keys hashes them)."""
    return sum(len(k) for k in m)


def str_cmp_cost(a: str, b: str) -> int:
    """Operations for ordering two strings: C scans their common prefix."""
    return min(len(a), len(b)) >> STR_CHUNK_BITS


def compare(op: str, a: Any, b: Any, c: Any = None) -> bool:
    """Rhai ``<``, ``<=``, ``>``, ``>=``; with a context, strings are charged for the
    characters compared."""
    ta, tb = type(a), type(b)
    if c is not None and ta is str and tb is str and (len(a) >> STR_CHUNK_BITS):
        charge(c, str_cmp_cost(a, b))
    if (ta is int or ta is float) and (tb is int or tb is float):
        if ta is int and tb is int:
            if op == "<":
                return bool(a < b)
            if op == "<=":
                return bool(a <= b)
            if op == ">":
                return bool(a > b)
            return bool(a >= b)
        x, y = float(a), float(b)
        if op == "<":
            return float_lt(x, y)
        if op == "<=":
            return float_le(x, y)
        if op == ">":
            return float_lt(y, x)
        return float_le(y, x)
    if ta is tb and ta in (str, Char, bool):
        if op == "<":
            return bool(a < b)
        if op == "<=":
            return bool(a <= b)
        if op == ">":
            return bool(a > b)
        return bool(a >= b)
    if ta is tb or (ta in (str, Char) and tb in (str, Char)):
        if ta in (str, Char):
            sa, sb = str(a), str(b)
            return {"<": sa < sb, "<=": sa <= sb, ">": sa > sb, ">=": sa >= sb}[op]
        raise Fail(f"Function not found: {op} ({type_of(a)}, {type_of(b)})")
    return False


# ---------------------------------------------------------------------------
# copying and conversion


def charge(c: Any, n: int) -> None:
    """Spend ``n`` operations of context ``c`` (work proportional to a value's size)."""
    c.ops += n
    if c.ops > c.max_ops:
        msg = over_budget(c)
        if msg is not None:
            raise Fail(msg, limit=True)


# With a time limit or a progress callback, the clock is read (and the callback called) once
# per this many operations (c.max_ops is then the next checkpoint, not the limit itself, so
# the interpreter's one inline test covers both).
CLOCK_EVERY = 1024
# How the message of the error past a wall-clock limit starts.
TIMED_OUT = "Script timed out"


def over_budget(c: Any) -> str | None:
    """Called when ``c.ops`` has passed ``c.max_ops``: the message of the limit passed, or
    None when that was only a checkpoint for reading the clock (then the next one is set)."""
    if c.ops > c.limit_ops:
        return f"Too many operations: the limit is {c.limit_ops}"
    deadline = c.deadline
    if deadline is not None and time.monotonic() > deadline:
        return f"{TIMED_OUT}: it ran for more than {c.max_time:g} s"
    progress = c.on_progress
    if progress is not None and progress(c.ops) is not None:
        return "Script terminated by the host"
    c.max_ops = min(c.limit_ops, c.ops + CLOCK_EVERY)
    return None


# C-level string work (copying, scanning, splitting) costs one operation per this many characters
STR_CHUNK_BITS = 6


def charge_str(c: Any, n: int) -> None:
    """Spend the operations for C-level work over ``n`` characters."""
    if n >> STR_CHUNK_BITS:
        charge(c, n >> STR_CHUNK_BITS)


def deep_copy(v: Any, c: Any = None) -> Any:
    """Copy arrays and maps all the way down; with a context, one operation per item copied."""
    t = type(v)
    if t is list:
        if c is not None:
            charge(c, len(v))
        return [deep_copy(x, c) if type(x) in (list, dict) else x for x in v]
    if t is dict:
        if c is not None:
            charge(c, len(v))
        return {k: (deep_copy(x, c) if type(x) in (list, dict) else x) for k, x in v.items()}
    return v


def check_int(v: int) -> int:
    if INT_MIN <= v <= INT_MAX:
        return v
    raise Fail("Arithmetic overflow: integer out of the 64-bit range")


def from_python(v: Any, depth: int = 0) -> Any:
    """Convert a host value into a Rhai value (called on host function results)."""
    t = type(v)
    if t is int or t is str or t is float or t is bool or v is None or t is Char:
        if t is int:
            return check_int(v)
        return v
    if t is list or t is dict or t is FnPtr or t is Range:
        return v
    if depth > 64:
        raise Fail("host value nests too deeply")
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return check_int(int(v))
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [from_python(x, depth + 1) for x in v]
    if isinstance(v, dict):
        return {str(k): from_python(x, depth + 1) for k, x in v.items()}
    return v  # an opaque custom value: scripts can pass it around, nothing more


def to_python(v: Any) -> Any:
    """Values returned to the host are already plain Python values."""
    return v


HostFn = Callable[..., Any]

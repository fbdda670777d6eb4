"""The semantics of Rhai's operators on values: arithmetic, ``in``, property and index
access (including string slices and bit-fields), truth tests and iteration. The compiled
code inlines the common cases and calls these for the rest."""

from __future__ import annotations

import math
from typing import Any

from .errors import EvalError, Fail, Pos, RhaiError, ThrownError, to_eval_error
from .values import (
    INT_MAX,
    INT_MIN,
    Char,
    FnPtr,
    Range,
    StepRange,
    charge,
    charge_str,
    to_display,
    type_of,
    values_eq,
)  # fmt: skip

NUM = (int, float)


# ---------------------------------------------------------------------------
# operators (slow paths; fast paths are inlined in the closures)


def arith(op: str, a: Any, b: Any, pos: Pos, c: Any = None) -> Any:
    try:
        return _arith(op, a, b, c)
    except Fail as e:
        raise to_eval_error(e, pos) from None
    except (OverflowError, ValueError, ZeroDivisionError, MemoryError) as e:
        raise to_eval_error(e, pos) from None


def _overflow(op: str) -> Fail:
    return Fail(f"Arithmetic overflow in '{op}'")


def int_op(op: str, a: int, b: int) -> Any:
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    elif op == "/":
        if b == 0:
            raise Fail("Division by zero")
        q = abs(a) // abs(b)
        r = q if (a < 0) == (b < 0) else -q
    elif op == "%":
        if b == 0:
            raise Fail("Division by zero (modulo)")
        if b == -1 and a == INT_MIN:
            raise _overflow(op)
        r = abs(a) % abs(b)
        if a < 0:
            r = -r
    elif op == "**":
        if b < 0:
            raise Fail("Integer raised to a negative power")
        if a in (0, 1):
            r = a if b > 0 else 1
        elif a == -1:
            r = 1 if b % 2 == 0 else -1
        elif b > 63:
            raise _overflow(op)
        else:
            r = a**b
    elif op == "<<" or op == ">>":
        left = op == "<<"
        if b < 0:
            left, b = not left, -b
        if b >= 64:
            raise Fail(f"Shift amount out of range in '{op}'")
        if left:
            r = (a << b) & 0xFFFFFFFFFFFFFFFF
            if r > INT_MAX:
                r -= 1 << 64
            return r
        return a >> b
    elif op == "&":
        return a & b
    elif op == "|":
        return a | b
    elif op == "^":
        return a ^ b
    else:
        raise Fail(f"Function not found: {op} (i64, i64)")
    if INT_MIN <= r <= INT_MAX:
        return r
    raise _overflow(op)


def float_op(op: str, x: float, y: float) -> Any:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        if y == 0.0:
            if x == 0.0 or math.isnan(x):
                return math.nan
            return math.copysign(math.inf, x) * math.copysign(1.0, y)
        return x / y
    if op == "%":
        if y == 0.0:
            return math.nan
        return math.fmod(x, y)
    if op == "**":
        try:
            return math.pow(x, y)
        except OverflowError:
            return math.inf
        except ValueError:
            return math.nan
    raise Fail(f"Function not found: {op} (f64, f64)")


def _arith(op: str, a: Any, b: Any, c: Any = None) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        return int_op(op, a, b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        return float_op(op, float(a), float(b))
    if op == "+":
        if ta is str or tb is str or (ta is Char and tb is Char):
            s = ("" if a is None else to_display(a, c)) + ("" if b is None else to_display(b, c))
            if c is not None:
                charge_str(c, len(s))
            return s
        if ta is list and tb is list:
            if c is not None:
                charge(c, len(a) + len(b))
            return a + b
        if ta is dict and tb is dict:
            if c is not None:
                charge(c, len(a) + len(b))
            r = dict(a)
            r.update(b)
            return r
    if op == "-" and ta is str and tb in (str, Char):
        if c is not None:
            charge_str(c, len(a))
        return a.replace(b, "")
    if ta is bool and tb is bool and op in ("&", "|", "^"):
        if op == "&":
            return a and b
        if op == "|":
            return a or b
        return a != b
    raise Fail(f"Function not found: {op} ({type_of(a)}, {type_of(b)})")


def contains(container: Any, item: Any, c: Any = None) -> bool:
    t = type(container)
    if t is list:
        if c is not None:
            charge(c, len(container))
        return any(values_eq(x, item, c) for x in container)
    if t is str:
        if type(item) in (str, Char):
            if c is not None:
                charge_str(c, len(container))
            return item in container
        raise Fail(f"Function not found: contains (string, {type_of(item)})")
    if t is dict:
        if type(item) in (str, Char):
            return str(item) in container
        raise Fail(f"Function not found: contains (map, {type_of(item)})")
    if t is Range:
        return item in container
    if t is StepRange:
        for x in container:
            if c is not None:
                charge(c, 1)
            if values_eq(x, item):
                return True
        return False
    raise Fail(f"Function not found: in ({type_of(item)}, {type_of(container)})")


def get_prop(o: Any, name: str, pos: Pos) -> Any:
    t = type(o)
    if t is dict:
        return o.get(name)
    if isinstance(o, dict):
        return dict.get(o, name)  # never a subclass's own get (host code)
    if t is str or t is list:
        if name == "len":
            return len(o)
        if name == "is_empty":
            return len(o) == 0
    elif t is FnPtr:
        if name == "name":
            return o.name
        if name == "is_anonymous":
            return o.is_anonymous
    elif t is Range:
        if name == "start":
            return o.start
        if name == "end":
            return o.end
        if name == "is_inclusive":
            return o.inclusive
        if name == "is_exclusive":
            return not o.inclusive
        if name == "is_empty":
            return len(o.py_range()) == 0
    elif t is int and name in ("is_odd", "is_even", "is_zero"):
        return {"is_odd": o % 2 == 1, "is_even": o % 2 == 0, "is_zero": o == 0}[name]
    elif t is float and name in ("floor", "ceiling", "round", "int", "fraction", "is_nan"):
        return _float_prop(o, name)
    raise EvalError(f"Property '{name}' not found for type {type_of(o)}", pos)


def _float_prop(x: float, name: str) -> Any:
    if name == "is_nan":
        return math.isnan(x)
    if math.isnan(x) or math.isinf(x):
        return x
    if name == "floor":
        return float(math.floor(x))
    if name == "ceiling":
        return float(math.ceil(x))
    if name == "round":
        return float(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)
    if name == "int":
        return float(math.trunc(x))
    return x - math.trunc(x)


def norm_index(i: Any, n: int, what: str, pos: Pos) -> int:
    if type(i) is not int:
        raise EvalError(f"{what} index must be an integer, not {type_of(i)}", pos)
    j = i + n if i < 0 else i
    if 0 <= j < n:
        return j
    raise EvalError(f"{what} index {i} out of bounds: only {n} element(s)", pos)


def get_index(o: Any, i: Any, pos: Pos) -> Any:
    t = type(o)
    if t is list:
        if type(i) is int:
            n = len(o)
            if -n <= i < n:
                return o[i]
        return o[norm_index(i, len(o), "Array", pos)]
    if t is dict or isinstance(o, dict):
        if type(i) not in (str, Char):
            raise EvalError(f"Object map index must be a string, not {type_of(i)}", pos)
        return o.get(str(i))
    if t is str:
        if type(i) is Range:
            a, b = str_slice_span(o, i, pos)
            return o[a:b]
        return Char(o[norm_index(i, len(o), "String", pos)])
    if t is int:
        if type(i) is Range:
            shift, mask = bit_span(i, pos)
            return (o & mask) >> shift
        if type(i) is not int:
            raise EvalError("Bit-field index must be an integer", pos)
        j = i + 64 if i < 0 else i
        if not 0 <= j < 64:
            raise EvalError(f"Bit-field index {i} out of bounds: only 64 bits", pos)
        return bool((o >> j) & 1)
    if t is tuple:
        return o[norm_index(i, len(o), "Array", pos)]
    raise EvalError(f"Indexing is not supported for type {type_of(o)}", pos)


def _from_end(n: int, i: int, pos: Pos) -> int:
    if 0 < -i <= n:
        return n + i
    raise EvalError(f"String index {i} out of bounds: only {n} character(s)", pos)


def str_slice_span(s: str, r: Range, pos: Pos) -> tuple[int, int]:
    """``s[a..b]`` / ``s[a..=b]`` as Rhai 1.25 computes it: ``(start, stop)`` of the slice.

    A negative start counts from the end (out of range is an error); a negative end counts
    from the end (out of range means 0). Rhai's inclusive slices quirk is kept: an inclusive
    range whose end equals its start is empty unless it covers the whole string."""
    n = len(s)
    if n == 0:
        return 0, 0
    a = r.start if r.start >= 0 else _from_end(n, r.start, pos)
    b = r.end if r.end >= 0 else (n + r.end if -r.end <= n else 0)
    if not r.inclusive:
        return (0, n) if a == 0 and b >= n else (a, max(a, b))
    if a == 0 and b >= n - 1:
        return 0, n
    return a, (b + 1 if b > a else a)


def str_splice(s: str, r: Range, value: str, pos: Pos) -> str:
    """``s[range] = value`` as Rhai 1.25 writes a slice back: the characters before the
    slice's start, ``value``, then those after its end (ends past the string are clamped)."""
    n = len(s)
    if n == 0:
        return value
    a = r.start if r.start >= 0 else _from_end(n, r.start, pos)
    b = r.end if r.end >= 0 else (n + r.end if -r.end <= n else 0)
    tail = min(b, n - 1) + 1 if r.inclusive else min(b, n)
    return s[:a] + value + s[tail:]


def bit_span(r: Range, pos: Pos) -> tuple[int, int]:
    """``(shift, mask)`` of the bits ``n[range]`` reads, the mask as a signed 64-bit integer
    (``-1``: all bits). Unlike single bits, range bounds do not count from the end."""
    end = r.end
    if end == INT_MAX:
        end = 63 if r.inclusive else 64

    def bit(i: int, allow_end: bool) -> int:
        if 0 <= i < 64 or (allow_end and i == 64):
            return i
        raise EvalError(f"Bit-field index {i} out of bounds: only 64 bits", pos)

    start = bit(r.start, False)
    stop = bit(end, not r.inclusive) + (1 if r.inclusive else 0)
    if stop <= start:
        return 0, 0
    if start == 0 and stop == 64:
        return 0, -1
    mask = ((1 << (stop - start)) - 1) << start
    return start, (mask - (1 << 64) if mask > INT_MAX else mask)


def set_bits(o: int, r: Range, v: Any, pos: Pos) -> int:
    """``n[range] = v``: the bits of the range replaced by the low bits of ``v``."""
    if type(v) is not int:
        raise EvalError(f"Only an integer can be assigned into a bit-field, not {type_of(v)}",
                        pos)  # fmt: skip
    shift, mask = bit_span(r, pos)
    mask &= 0xFFFFFFFFFFFFFFFF
    u = (o & ~mask) | ((v << shift) & mask)
    u &= 0xFFFFFFFFFFFFFFFF
    return u - (1 << 64) if u > INT_MAX else u


def truth(v: Any, pos: Pos, what: str = "condition") -> bool:
    if v is True:
        return True
    if v is False:
        return False
    raise EvalError(f"Boolean value expected for the {what}, not {type_of(v)}", pos)


def iterate(v: Any, pos: Pos, c: Any = None) -> Any:
    t = type(v)
    if t is Range:
        return v.py_range()
    if t is list:
        if c is not None:
            charge(c, len(v))  # the snapshot
        return list(v)
    if t is str:
        return map(Char, v)  # lazily: each iteration is charged by the loop
    if t is StepRange:
        return v
    if t is tuple:
        return list(v)
    raise EvalError(f"Iterator not found for type {type_of(v)}", pos)


# message prefix -> Rhai's name of the error (the `error` field of a caught error)
_ERROR_KINDS = (
    ("Division by zero", "ErrorArithmetic"),
    ("Arithmetic overflow", "ErrorArithmetic"),
    ("Integer raised to a negative power", "ErrorArithmetic"),
    ("Shift amount", "ErrorArithmetic"),
    ("Array index", "ErrorArrayBounds"),
    ("String index", "ErrorStringBounds"),
    ("Bit-field index", "ErrorBitFieldBounds"),
    ("Variable not found: ", "ErrorVariableNotFound"),
    ("Function not found: ", "ErrorFunctionNotFound"),
    ("'this' is not bound", "ErrorUnboundThis"),
    ("Cannot modify constant", "ErrorAssignmentToConstant"),
    ("Indexing is not supported", "ErrorIndexingType"),
    ("Iterator not found", "ErrorFor"),
    ("Data race", "ErrorDataRace"),
    ("Boolean value expected", "ErrorMismatchDataType"),
)


def error_value(e: RhaiError) -> Any:
    """What ``catch (err)`` binds: a thrown value as it was thrown; any other error as an
    object map, as in Rhai: ``message``, ``line``, ``position``, ``error`` (Rhai's name of the
    kind of error) and, for missing variables and functions, ``variable``/``function``."""
    if isinstance(e, ThrownError):
        return e.value
    m: dict[str, Any] = {"message": e.message, "line": e.line, "position": e.column}
    kind = next((k for prefix, k in _ERROR_KINDS if e.message.startswith(prefix)), "")
    m["error"] = kind or "ErrorRuntime"
    if kind in ("ErrorVariableNotFound", "ErrorFunctionNotFound"):
        what = e.message.split(": ", 1)[1].split(" (did you mean")[0]
        m["variable" if kind == "ErrorVariableNotFound" else "function"] = what
    return m


def switch_key(v: Any, c: Any = None) -> Any:
    """The key ``switch`` matches by: the type and the value (so ``1.0`` is not ``1``), arrays
    and maps by their contents (with a context, one operation per item, and the hashing of
    long strings inside them)."""
    t = type(v)
    if t is list:
        if c is not None:
            charge(c, len(v))
        return (list, tuple(switch_key(x, c) for x in v))
    if t is dict:
        if c is not None:
            charge(c, len(v))
        return (dict, tuple(sorted((k, switch_key(x, c)) for k, x in v.items())))
    if t is str and c is not None:
        charge_str(c, len(v))
    return (t, v)

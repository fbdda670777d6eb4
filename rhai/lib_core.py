"""The standard library, part one: the helpers every part uses, and the generic, function
pointer, math and conversion functions. Every builtin takes the runtime context first, then
its arguments."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import NOPOS, ExitSignal, Fail
from .runtime import BUILTINS, STR_MUTATORS, VARIADIC, Ctx, call_fnptr
from .values import (
    INT_MAX,
    INT_MIN,
    Char,
    FnPtr,
    Range,
    StepRange,
    to_debug,
    to_display,
    type_of,
)  # fmt: skip

F = Callable[..., Any]
STRS = (str, Char)
NUMS = (int, float)


def reg(name: str, *arities: int, mutates_str: bool = False) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        for a in arities:
            BUILTINS[(name, a)] = fn
        if mutates_str:
            STR_MUTATORS.add(name)
        return fn

    return deco


def nf(name: str, *args: Any) -> Fail:
    return Fail(f"Function not found: {name} ({', '.join(type_of(a) for a in args)})")


def is_num(v: Any) -> bool:
    t = type(v)
    return t is int or t is float


# ---------------------------------------------------------------------------
# generic


@reg("print", 1)
def _print(c: Ctx, v: Any) -> None:
    if c.on_print is not None:
        c.on_print(to_display(v, c))


@reg("debug", 1)
def _debug(c: Ctx, v: Any) -> None:
    if c.on_debug is not None:
        c.on_debug(to_debug(v, 0, c))


@reg("type_of", 1)
def _type_of(c: Ctx, v: Any) -> str:
    return type_of(v)


@reg("to_string", 1)
def _to_string(c: Ctx, v: Any) -> str:
    s = to_display(v, c)
    if len(s) > c.max_str:
        raise Fail("Length of string exceeds the maximum limit", limit=True)
    return s


@reg("to_debug", 1)
def _to_debug(c: Ctx, v: Any) -> str:
    s = to_debug(v, 0, c)
    if len(s) > c.max_str:
        raise Fail("Length of string exceeds the maximum limit", limit=True)
    return s


@reg("Fn", 1)
def _fn(c: Ctx, name: Any) -> FnPtr:
    if type(name) is not str:
        raise nf("Fn", name)
    if (
        not name
        or not (name[0].isalpha() or name[0] == "_")
        or not all(ch.isalnum() or ch == "_" for ch in name)
    ):
        raise Fail(f"Invalid function name for Fn: {name!r}")
    return FnPtr(name, (), None, (), c)


def _call(c: Ctx, fp: Any, *args: Any) -> Any:
    if type(fp) is not FnPtr:
        raise nf("call", fp, *args)
    return call_fnptr(c, fp, list(args), NOPOS)


VARIADIC["call"] = _call


def _curry(c: Ctx, fp: Any, *args: Any) -> Any:
    if type(fp) is not FnPtr:
        raise nf("curry", fp, *args)
    return FnPtr(fp.name, fp.curry + args, fp.closure, fp.cells, c)


VARIADIC["curry"] = _curry


@reg("exit", 0, 1)
def _exit(c: Ctx, value: Any = None) -> None:
    """Stop the script: the engine answers ``value`` (``()`` when not given)."""
    raise ExitSignal(value)


@reg("is_def_fn", 2)
def _is_def_fn(c: Ctx, name: Any, arity: Any) -> bool:
    return (name, arity) in c.fns


@reg("range", 2, 3)
def _range(c: Ctx, a: Any, b: Any, step: Any = None) -> Any:
    if step is None:
        if type(a) is int and type(b) is int:
            return Range(a, b, False)
        if is_num(a) and is_num(b):
            return StepRange(float(a), float(b), 1.0)
        raise nf("range", a, b)
    if not (is_num(a) and is_num(b) and is_num(step)):
        raise nf("range", a, b, step)
    if step == 0:
        raise Fail("The step of a range cannot be zero")
    if type(a) is int and type(b) is int and type(step) is int:
        return StepRange(a, b, step)
    return StepRange(float(a), float(b), float(step))


# ---------------------------------------------------------------------------
# numbers and math


def _f(name: str, x: Any) -> float:
    if type(x) is float:
        return x
    if type(x) is int:
        return float(x)
    raise nf(name, x)


def _mathfn(name: str, fn: Callable[[float], float]) -> None:
    def impl(c: Ctx, x: Any) -> float:
        try:
            return fn(_f(name, x))
        except ValueError:
            return math.nan
        except OverflowError:
            return math.inf

    BUILTINS[(name, 1)] = impl


for _name, _fn_ in {
    "sqrt": math.sqrt, "exp": math.exp, "ln": math.log, "log": math.log10,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh,
    "asinh": math.asinh, "acosh": math.acosh, "atanh": math.atanh,
    "to_degrees": math.degrees, "to_radians": math.radians,
}.items():  # fmt: skip
    _mathfn(_name, _fn_)


@reg("log", 2)
def _log2(c: Ctx, x: Any, base: Any) -> float:
    try:
        return math.log(_f("log", x)) / math.log(_f("log", base))
    except (ValueError, ZeroDivisionError):
        return math.nan


@reg("atan", 2)
def _atan2(c: Ctx, x: Any, y: Any) -> float:
    return math.atan2(_f("atan", x), _f("atan", y))


@reg("hypot", 2)
def _hypot(c: Ctx, x: Any, y: Any) -> float:
    return math.hypot(_f("hypot", x), _f("hypot", y))


@reg("PI", 0)
def _pi(c: Ctx) -> float:
    return math.pi


@reg("E", 0)
def _e(c: Ctx) -> float:
    return math.e


def _float_round(name: str, x: Any) -> float:
    x = _f(name, x)
    if math.isnan(x) or math.isinf(x):
        return x
    if name == "floor":
        return float(math.floor(x))
    if name == "ceiling":
        return float(math.ceil(x))
    if name == "round":
        return math.copysign(float(math.floor(abs(x) + 0.5)), x)
    if name == "int":
        return float(math.trunc(x))
    return x - math.trunc(x)


for _name in ("floor", "ceiling", "round", "int", "fraction"):
    BUILTINS[(_name, 1)] = (lambda n: lambda c, x: _float_round(n, x))(_name)


@reg("abs", 1)
def _abs(c: Ctx, x: Any) -> Any:
    if type(x) is int:
        if x == INT_MIN:
            raise Fail("Arithmetic overflow in 'abs'")
        return abs(x)
    if type(x) is float:
        return abs(x)
    raise nf("abs", x)


@reg("sign", 1)
def _sign(c: Ctx, x: Any) -> int:
    if type(x) is int or type(x) is float:
        if x != x:
            raise Fail("sign of NaN")
        return (x > 0) - (x < 0)
    raise nf("sign", x)


@reg("min", 2)
def _min(c: Ctx, a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        return min(a, b)
    if is_num(a) and is_num(b):
        return float(min(a, b))
    if type(a) is type(b) and type(a) in (str, Char):
        return min(a, b)
    raise nf("min", a, b)


@reg("max", 2)
def _max(c: Ctx, a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        return max(a, b)
    if is_num(a) and is_num(b):
        return float(max(a, b))
    if type(a) is type(b) and type(a) in (str, Char):
        return max(a, b)
    raise nf("max", a, b)


@reg("is_nan", 1)
def _is_nan(c: Ctx, x: Any) -> bool:
    return math.isnan(_f("is_nan", x))


@reg("is_finite", 1)
def _is_finite(c: Ctx, x: Any) -> bool:
    return math.isfinite(_f("is_finite", x))


@reg("is_infinite", 1)
def _is_infinite(c: Ctx, x: Any) -> bool:
    return math.isinf(_f("is_infinite", x))


@reg("is_zero", 1)
def _is_zero(c: Ctx, x: Any) -> bool:
    if is_num(x):
        return bool(x == 0)
    raise nf("is_zero", x)


@reg("is_odd", 1)
def _is_odd(c: Ctx, x: Any) -> bool:
    if type(x) is int:
        return x % 2 == 1
    raise nf("is_odd", x)


@reg("is_even", 1)
def _is_even(c: Ctx, x: Any) -> bool:
    if type(x) is int:
        return x % 2 == 0
    raise nf("is_even", x)


@reg("to_int", 1)
def _to_int(c: Ctx, x: Any) -> int:
    t = type(x)
    if t is int:
        return x
    if t is float:
        if math.isnan(x) or math.isinf(x):
            raise Fail(f"Cannot convert {to_display(x)} to an integer")
        r = math.trunc(x)
        if not INT_MIN <= r <= INT_MAX:
            raise Fail(f"Integer overflow converting {to_display(x)} to an integer")
        return r
    if t is bool:
        return int(x)
    if t is Char:
        return ord(x)
    raise nf("to_int", x)


@reg("to_float", 1)
def _to_float(c: Ctx, x: Any) -> float:
    if type(x) in (int, float):
        return float(x)
    raise nf("to_float", x)


@reg("to_char", 1)
def _to_char(c: Ctx, x: Any) -> Char:
    if type(x) is int:
        try:
            return Char(chr(x))
        except (ValueError, OverflowError):
            raise Fail(f"Invalid character code: {x}") from None
    if type(x) is Char:
        return x
    raise nf("to_char", x)


def _radix_fmt(name: str, x: Any, spec: str) -> str:
    if type(x) is not int:
        raise nf(name, x)
    return format(x & 0xFFFFFFFFFFFFFFFF if x < 0 else x, spec)


BUILTINS[("to_hex", 1)] = lambda c, x: _radix_fmt("to_hex", x, "x")
BUILTINS[("to_octal", 1)] = lambda c, x: _radix_fmt("to_octal", x, "o")
BUILTINS[("to_binary", 1)] = lambda c, x: _radix_fmt("to_binary", x, "b")


@reg("parse_int", 1, 2)
def _parse_int(c: Ctx, s: Any, radix: Any = 10) -> int:
    if type(s) is not str or type(radix) is not int:
        raise nf("parse_int", s, radix)
    if not 2 <= radix <= 36:
        raise Fail(f"Invalid radix: {radix}")
    t = s.strip()
    try:
        if not t or "_" in t or (t[0] == "+" and t[1:2] in "+-"):
            raise ValueError
        v = int(t, radix)
    except ValueError:
        raise Fail(f"Error parsing integer number '{s}': invalid digit") from None
    if not INT_MIN <= v <= INT_MAX:
        raise Fail(f"Error parsing integer number '{s}': number too large")
    return v


@reg("parse_float", 1)
def _parse_float(c: Ctx, s: Any) -> float:
    if type(s) is not str:
        raise nf("parse_float", s)
    t = s.strip()
    try:
        if "_" in t:
            raise ValueError
        return float(t)
    except ValueError:
        raise Fail(f"Error parsing floating-point number '{s}'") from None


@reg("parse_bool", 1)
def _parse_bool(c: Ctx, s: Any) -> bool:
    if type(s) is str and s.strip() in ("true", "false"):
        return s.strip() == "true"
    raise Fail(f"Error parsing boolean '{s}'")

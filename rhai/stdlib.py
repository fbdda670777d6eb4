"""The standard library: string, array, object map, math, conversion and function-pointer
functions. Every builtin takes the runtime context first, then its arguments."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cmp_to_key
from typing import Any

from .errors import Fail
from .runtime import (
    BUILTINS,
    STR_MUTATORS,
    VARIADIC,
    Ctx,
    NewStr,
    bind_fn,
    call_fnptr,
    check_arr,
    check_map,
    fast_filter,
    fast_pred,
    fn_arity,
)  # fmt: skip
from .values import (
    INT_MAX,
    INT_MIN,
    Char,
    FnPtr,
    Range,
    StepRange,
    charge,
    charge_str,
    check_int,
    compare,
    deep_copy,
    to_debug,
    to_display,
    type_of,
    values_eq,
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
    return call_fnptr(c, fp, list(args), (0, 0))


VARIADIC["call"] = _call


def _curry(c: Ctx, fp: Any, *args: Any) -> Any:
    if type(fp) is not FnPtr:
        raise nf("curry", fp, *args)
    return FnPtr(fp.name, fp.curry + args, fp.closure, fp.cells, c)


VARIADIC["curry"] = _curry


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


# ---------------------------------------------------------------------------
# shared by strings, arrays and maps


@reg("len", 1)
def _len(c: Ctx, x: Any) -> int:
    if type(x) in (str, list, dict) or isinstance(x, (str, list, dict, tuple)):
        return len(x)
    raise nf("len", x)


@reg("is_empty", 1)
def _is_empty(c: Ctx, x: Any) -> bool:
    if isinstance(x, (str, list, dict, tuple)):
        return len(x) == 0
    if type(x) is Range:
        return len(x.py_range()) == 0
    raise nf("is_empty", x)


@reg("contains", 2)
def _contains(c: Ctx, x: Any, item: Any) -> bool:
    t = type(x)
    if t is str:
        if type(item) in STRS:
            charge_str(c, len(x))
            return item in x
        raise nf("contains", x, item)
    if t is list or t is tuple:
        charge(c, len(x))
        return any(values_eq(v, item, c) for v in x)
    if isinstance(x, dict):
        if type(item) in STRS:
            return str(item) in x
        raise nf("contains", x, item)
    if t is Range:
        return item in x
    raise nf("contains", x, item)


@reg("clear", 1, mutates_str=True)
def _clear(c: Ctx, x: Any) -> Any:
    if type(x) is str:
        return NewStr("")
    if type(x) in (list, dict):
        charge(c, len(x))
        x.clear()
        return None
    raise nf("clear", x)


def _span(n: int, start: int, length: int | None) -> tuple[int, int]:
    if start < 0:
        start = max(n + start, 0)
    if start >= n:
        return n, n
    if length is None:
        return start, n
    if length <= 0:
        return start, start
    return start, min(start + length, n)


def _span_args(name: str, n: int, a: Any, b: Any) -> tuple[int, int]:
    if type(a) is Range and b is None:
        r = a.py_range()
        s = max(r.start, 0)
        e = min(max(r.stop, s), n)
        return min(s, n), e
    if type(a) is not int or (b is not None and type(b) is not int):
        raise Fail(f"Function not found: {name} with arguments ({type_of(a)}, {type_of(b)})")
    return _span(n, a, b)


@reg("index_of", 2, 3)
def _index_of(c: Ctx, x: Any, item: Any, start: Any = 0) -> int:
    if type(start) is not int:
        raise nf("index_of", x, item, start)
    t = type(x)
    if t is str:
        if type(item) not in STRS:
            raise nf("index_of", x, item)
        s, _ = _span(len(x), start, None)
        charge_str(c, len(x) - s)
        return x.find(item, s)
    if t is list:
        s, _ = _span(len(x), start, None)
        if type(item) is FnPtr:
            call = bind_fn(c, item, 1) if fn_arity(item) in (None, 1) else None
            for i in range(s, len(x)):
                r = call(x[i]) if call else call_fnptr(c, item, [x[i], i], (0, 0))
                if r is True:
                    return i
            return -1
        charge(c, len(x) - s)
        for i in range(s, len(x)):
            if values_eq(x[i], item, c):
                return i
        return -1
    raise nf("index_of", x, item)


@reg("get", 2)
def _get(c: Ctx, x: Any, i: Any) -> Any:
    t = type(x)
    if t is list or t is str:
        if type(i) is not int:
            raise nf("get", x, i)
        n = len(x)
        j = i + n if i < 0 else i
        if 0 <= j < n:
            return Char(x[j]) if t is str else x[j]
        return None
    if isinstance(x, dict):
        if type(i) not in STRS:
            raise nf("get", x, i)
        return x.get(str(i))
    raise nf("get", x, i)


@reg("set", 3, mutates_str=True)
def _set(c: Ctx, x: Any, i: Any, v: Any) -> Any:
    t = type(x)
    if t is list:
        if type(i) is not int:
            raise nf("set", x, i, v)
        n = len(x)
        j = i + n if i < 0 else i
        if 0 <= j < n:
            x[j] = deep_copy(v, c)
        return None
    if t is str:
        if type(i) is not int or type(v) is not Char:
            raise nf("set", x, i, v)
        n = len(x)
        j = i + n if i < 0 else i
        if 0 <= j < n:
            return NewStr(x[:j] + v + x[j + 1 :])
        return NewStr(x)
    if t is dict:
        if type(i) not in STRS:
            raise nf("set", x, i, v)
        x[str(i)] = deep_copy(v, c)
        check_map(c, x)
        return None
    raise nf("set", x, i, v)


@reg("remove", 2, mutates_str=True)
def _remove(c: Ctx, x: Any, i: Any) -> Any:
    t = type(x)
    if t is list:
        if type(i) is not int:
            raise nf("remove", x, i)
        n = len(x)
        j = i + n if i < 0 else i
        if 0 <= j < n:
            return x.pop(j)
        return None
    if t is dict:
        if type(i) not in STRS:
            raise nf("remove", x, i)
        return x.pop(str(i), None)
    if t is str:
        if type(i) not in STRS:
            raise nf("remove", x, i)
        charge_str(c, len(x))
        return NewStr(x.replace(i, ""))
    raise nf("remove", x, i)


@reg("truncate", 2, mutates_str=True)
def _truncate(c: Ctx, x: Any, n: Any) -> Any:
    if type(n) is not int:
        raise nf("truncate", x, n)
    n = max(n, 0)
    if type(x) is str:
        charge_str(c, min(n, len(x)))
        return NewStr(x[:n])
    if type(x) is list:
        charge(c, max(len(x) - n, 0))
        del x[n:]
        return None
    raise nf("truncate", x, n)


@reg("pad", 3, mutates_str=True)
def _pad(c: Ctx, x: Any, n: Any, v: Any) -> Any:
    if type(n) is not int:
        raise nf("pad", x, n, v)
    t = type(x)
    if t is str:
        if type(v) not in STRS or not v:
            raise nf("pad", x, n, v)
        if n > c.max_str:
            raise Fail("Length of string exceeds the maximum limit", limit=True)
        if len(x) >= n:
            return NewStr(x)
        need = n - len(x)
        charge_str(c, n)
        fill = (v * (need // len(v) + 1))[:need]
        return NewStr(x + fill)
    if t is list:
        if n > c.max_arr:
            raise Fail("Size of array exceeds the maximum limit", limit=True)
        charge(c, n - len(x))
        while len(x) < n:
            x.append(deep_copy(v, c))
        return None
    raise nf("pad", x, n, v)


@reg("reverse", 1)
def _reverse(c: Ctx, x: Any) -> Any:
    if type(x) is list:
        charge(c, len(x))
        x.reverse()
        return None
    raise nf("reverse", x)


@reg("split", 1, 2, 3)
def _split(c: Ctx, x: Any, a: Any = None, b: Any = None) -> Any:
    t = type(x)
    if t is str:
        charge_str(c, len(x))
        if a is None:
            return _charged_parts(c, x.split())
        if type(a) is int and b is None:
            n = len(x)
            j = max(a + n, 0) if a < 0 else min(a, n)
            return [x[:j], x[j:]]
        if type(a) in STRS:
            if b is None:
                return _charged_parts(c, check_arr(c, x.split(a) if a else list(x)))
            if type(b) is int:
                return _charged_parts(c, check_arr(c, x.split(a, max(b - 1, 0)) if b > 0 else [x]))
        raise nf("split", x, a)
    if t is list and type(a) is int and b is None:
        n = len(x)
        j = max(a + n, 0) if a < 0 else min(a, n)
        charge(c, n - j)
        tail = x[j:]
        del x[j:]
        return tail
    raise nf("split", x, a)


# ---------------------------------------------------------------------------
# strings


def _charged_parts(c: Ctx, parts: list[Any]) -> list[Any]:
    charge(c, len(parts))
    return parts


def _str_fn(name: str, fn: Callable[[str], Any], mutates: bool = False) -> None:
    def impl(c: Ctx, s: Any) -> Any:
        if type(s) is str:
            charge_str(c, len(s))
            r = fn(s)
            return NewStr(r) if mutates else r
        if type(s) is Char and not mutates:
            return Char(fn(s)) if name in ("to_upper", "to_lower") and len(fn(s)) == 1 else fn(s)
        raise nf(name, s)

    BUILTINS[(name, 1)] = impl
    if mutates:
        STR_MUTATORS.add(name)


_str_fn("to_upper", str.upper)
_str_fn("to_lower", str.lower)
_str_fn("make_upper", str.upper, True)
_str_fn("make_lower", str.lower, True)
_str_fn("trim", str.strip, True)
_str_fn("trim_start", str.lstrip, True)
_str_fn("trim_end", str.rstrip, True)
_str_fn("bytes", lambda s: len(s.encode("utf-8")))


@reg("chars", 1)
def _chars(c: Ctx, s: Any) -> list[Char]:
    if type(s) is str:
        charge(c, len(s))
        return [Char(ch) for ch in s]
    raise nf("chars", s)


BUILTINS[("to_chars", 1)] = _chars


@reg("starts_with", 2)
def _starts_with(c: Ctx, s: Any, p: Any) -> bool:
    if type(s) is str and type(p) in STRS:
        charge_str(c, len(p))
        return s.startswith(p)
    raise nf("starts_with", s, p)


@reg("ends_with", 2)
def _ends_with(c: Ctx, s: Any, p: Any) -> bool:
    if type(s) is str and type(p) in STRS:
        charge_str(c, len(p))
        return s.endswith(p)
    raise nf("ends_with", s, p)


@reg("sub_string", 2, 3)
def _sub_string(c: Ctx, s: Any, a: Any, b: Any = None) -> str:
    if type(s) is not str:
        raise nf("sub_string", s, a)
    i, j = _span_args("sub_string", len(s), a, b)
    charge_str(c, j - i)
    return s[i:j]


@reg("crop", 2, 3, mutates_str=True)
def _crop(c: Ctx, s: Any, a: Any, b: Any = None) -> Any:
    if type(s) is not str:
        raise nf("crop", s, a)
    i, j = _span_args("crop", len(s), a, b)
    charge_str(c, j - i)
    return NewStr(s[i:j])


@reg("replace", 3, mutates_str=True)
def _replace(c: Ctx, s: Any, find: Any, sub: Any) -> Any:
    if type(s) is str and type(find) in STRS and type(sub) in STRS:
        if not find:
            raise Fail("replace: the string to find cannot be empty")
        if len(sub) > len(find) and s.count(find) * (len(sub) - len(find)) + len(s) > c.max_str:
            raise Fail("Length of string exceeds the maximum limit", limit=True)
        charge_str(c, len(s))
        r = s.replace(find, sub)
        charge_str(c, len(r))
        return NewStr(r)
    raise nf("replace", s, find, sub)


# ---------------------------------------------------------------------------
# arrays


def _arr(name: str, x: Any, *rest: Any) -> list[Any]:
    if type(x) is not list:
        raise nf(name, x, *rest)
    return x


@reg("push", 2)
def _push(c: Ctx, a: Any, v: Any) -> None:
    _arr("push", a, v).append(deep_copy(v, c))
    check_arr(c, a)


@reg("append", 2)
def _append(c: Ctx, a: Any, v: Any) -> None:
    if type(a) is str:
        raise Fail("append on a string: use +=")
    _arr("append", a, v)
    if type(v) is list:
        if len(a) + len(v) > c.max_arr:
            raise Fail("Size of array exceeds the maximum limit", limit=True)
        a.extend(deep_copy(v, c))
    else:
        a.append(deep_copy(v, c))
    check_arr(c, a)


@reg("insert", 3)
def _insert(c: Ctx, a: Any, i: Any, v: Any) -> None:
    _arr("insert", a, i, v)
    if type(i) is not int:
        raise nf("insert", a, i, v)
    n = len(a)
    j = max(i + n, 0) if i < 0 else i
    charge_str(c, len(a))  # moves the tail
    a.insert(j, deep_copy(v, c))
    check_arr(c, a)


@reg("pop", 1)
def _pop(c: Ctx, a: Any) -> Any:
    return _arr("pop", a).pop() if a else None


@reg("shift", 1)
def _shift(c: Ctx, a: Any) -> Any:
    charge_str(c, len(_arr("shift", a)))  # moves the rest
    return a.pop(0) if a else None


@reg("chop", 2)
def _chop(c: Ctx, a: Any, n: Any) -> None:
    _arr("chop", a, n)
    if type(n) is not int:
        raise nf("chop", a, n)
    charge(c, len(a))
    if n <= 0:
        a.clear()
    elif n < len(a):
        del a[: len(a) - n]


@reg("extract", 2, 3)
def _extract(c: Ctx, a: Any, s: Any, n: Any = None) -> list[Any]:
    _arr("extract", a, s)
    i, j = _span_args("extract", len(a), s, n)
    charge(c, j - i)
    return a[i:j]


def _pred_call(c: Ctx, fp: Any) -> Callable[[Any, int], Any]:
    if fn_arity(fp) == 2:
        call2 = bind_fn(c, fp, 2)
        return call2
    call1 = bind_fn(c, fp, 1)
    return lambda x, i: call1(x)


def _bool(name: str, v: Any) -> bool:
    if v is True or v is False:
        return v
    raise Fail(f"The function passed to '{name}' must return a boolean, not {type_of(v)}")


@reg("filter", 2)
def _filter(c: Ctx, a: Any, fp: Any) -> Any:
    if type(a) is dict:
        call = bind_fn(c, fp, 2)
        return {k: v for k, v in a.items() if _bool("filter", call(k, v))}
    _arr("filter", a, fp)
    fast = fast_filter(c, fp, a)
    if fast is not None:
        return fast
    if fn_arity(fp) == 2:
        call2 = bind_fn(c, fp, 2)
        return [x for i, x in enumerate(a) if _bool("filter", call2(x, i))]
    call = bind_fn(c, fp, 1)
    out = []
    for x in a:
        r = call(x)
        if r is True:
            out.append(x)
        elif r is not False:
            _bool("filter", r)
    return out


@reg("map", 2)
def _map(c: Ctx, a: Any, fp: Any) -> list[Any]:
    _arr("map", a, fp)
    call = _pred_call(c, fp)
    return [call(x, i) for i, x in enumerate(a)]


@reg("for_each", 2)
def _for_each(c: Ctx, a: Any, fp: Any) -> None:
    _arr("for_each", a, fp)
    call = _pred_call(c, fp)
    for i, x in enumerate(list(a)):
        call(x, i)


@reg("reduce", 2, 3)
def _reduce(c: Ctx, a: Any, fp: Any, init: Any = None) -> Any:
    _arr("reduce", a, fp)
    if fn_arity(fp) == 3:
        acc = init
        for i, x in enumerate(a):
            acc = call_fnptr(c, fp, [acc, x, i], (0, 0))
        return acc
    call = bind_fn(c, fp, 2)
    acc = init
    for x in a:
        acc = call(acc, x)
    return acc


@reg("reduce_rev", 2, 3)
def _reduce_rev(c: Ctx, a: Any, fp: Any, init: Any = None) -> Any:
    _arr("reduce_rev", a, fp)
    call = bind_fn(c, fp, 2)
    acc = init
    for x in reversed(a):
        acc = call(acc, x)
    return acc


@reg("some", 2)
def _some(c: Ctx, a: Any, fp: Any) -> bool:
    _arr("some", a, fp)
    call = _pred_call(c, fp)
    return any(_bool("some", call(x, i)) for i, x in enumerate(a))


@reg("all", 2)
def _all(c: Ctx, a: Any, fp: Any) -> bool:
    _arr("all", a, fp)
    call = _pred_call(c, fp)
    return all(_bool("all", call(x, i)) for i, x in enumerate(a))


@reg("none", 2)
def _none(c: Ctx, a: Any, fp: Any) -> bool:
    return not _some(c, a, fp)


@reg("find", 2)
def _find(c: Ctx, a: Any, fp: Any) -> Any:
    _arr("find", a, fp)
    pred = fast_pred(c, fp, len(a), "find")
    if pred is not None:
        for x in a:
            if pred(x):
                return x
        return None
    call = _pred_call(c, fp)
    for i, x in enumerate(a):
        if _bool("find", call(x, i)):
            return x
    return None


@reg("find_map", 2)
def _find_map(c: Ctx, a: Any, fp: Any) -> Any:
    _arr("find_map", a, fp)
    call = _pred_call(c, fp)
    for i, x in enumerate(a):
        r = call(x, i)
        if r is not None:
            return r
    return None


def _take(c: Ctx, name: str, a: Any, x: Any, n: Any, keep_matching: bool) -> Any:
    """drain (keep_matching=False) / retain (True); returns the removed items."""
    if type(a) is dict:
        call = bind_fn(c, x, 2)
        hit = [k for k, v in list(a.items()) if _bool(name, call(k, v))]
        keys = [k for k in a if k not in hit] if keep_matching else hit
        return {k: a.pop(k) for k in keys}
    _arr(name, a, x)
    charge(c, len(a))
    if type(x) is FnPtr:
        call = _pred_call(c, x)
        flags = [_bool(name, call(v, i)) for i, v in enumerate(a)]
        removed = [v for v, m in zip(a, flags, strict=False) if m != keep_matching]
        a[:] = [v for v, m in zip(a, flags, strict=False) if m == keep_matching]
        return removed
    i, j = _span_args(name, len(a), x, n)
    if keep_matching:
        removed = a[:i] + a[j:]
        a[:] = a[i:j]
        return removed
    removed = a[i:j]
    del a[i:j]
    return removed


BUILTINS[("drain", 2)] = lambda c, a, x: _take(c, "drain", a, x, None, False)
BUILTINS[("drain", 3)] = lambda c, a, x, n: _take(c, "drain", a, x, n, False)
BUILTINS[("retain", 2)] = lambda c, a, x: _take(c, "retain", a, x, None, True)
BUILTINS[("retain", 3)] = lambda c, a, x, n: _take(c, "retain", a, x, n, True)


@reg("splice", 4)
def _splice(c: Ctx, a: Any, s: Any, n: Any, items: Any) -> None:
    _arr("splice", a, s, n, items)
    i, j = _span_args("splice", len(a), s, n)
    charge(c, len(a))
    a[i:j] = deep_copy(items, c) if type(items) is list else [deep_copy(items, c)]
    check_arr(c, a)


def _natural_cmp(x: Any, y: Any) -> int:
    if compare("<", x, y):
        return -1
    if compare(">", x, y):
        return 1
    return 0


@reg("sort", 1, 2)
def _sort(c: Ctx, a: Any, fp: Any = None) -> None:
    _arr("sort", a)
    if fp is None:
        types = {type(x) for x in a}
        if len(types) > 1 and not types <= {int, float}:
            raise Fail("Cannot sort an array with elements of different types")
        if types and not types <= {int, float, str, Char, bool}:
            raise Fail(f"Cannot sort an array of {type_of(a[0])}")
        charge(c, len(a) * max(len(a).bit_length(), 1))  # n log n comparisons
        a.sort(key=cmp_to_key(_natural_cmp))
        return
    call = bind_fn(c, fp, 2)

    def cmp(x: Any, y: Any) -> int:
        r = call(x, y)
        if type(r) is int:
            return (r > 0) - (r < 0)
        if type(r) is bool:
            return 1 if r else -1
        raise Fail(f"The sort comparer must return an integer, not {type_of(r)}")

    charge(c, len(a))
    a.sort(key=cmp_to_key(cmp))


@reg("sort_desc", 1)
def _sort_desc(c: Ctx, a: Any) -> None:
    _sort(c, a)
    a.reverse()


@reg("dedup", 1, 2)
def _dedup(c: Ctx, a: Any, fp: Any = None) -> None:
    _arr("dedup", a)
    if not a:
        return
    charge(c, len(a))
    call = bind_fn(c, fp, 2) if fp is not None else (lambda x, y: values_eq(x, y, c))
    out = [a[0]]
    for x in a[1:]:
        if not _bool("dedup", call(out[-1], x)):
            out.append(x)
    a[:] = out


@reg("zip", 3)
def _zip(c: Ctx, a: Any, b: Any, fp: Any) -> list[Any]:
    _arr("zip", a, b, fp)
    _arr("zip", b)
    call = bind_fn(c, fp, 2)
    return [call(x, y) for x, y in zip(a, b, strict=False)]


# ---------------------------------------------------------------------------
# object maps


def _map_arg(name: str, m: Any, *rest: Any) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise nf(name, m, *rest)
    return m


@reg("keys", 1)
def _keys(c: Ctx, m: Any) -> list[Any]:
    charge(c, len(_map_arg("keys", m)))
    return sorted(m, key=str)


@reg("values", 1)
def _values(c: Ctx, m: Any) -> list[Any]:
    m = _map_arg("values", m)
    charge(c, len(m))
    return [m[k] for k in sorted(m, key=str)]


@reg("mixin", 2)
def _mixin(c: Ctx, m: Any, other: Any) -> None:
    _map_arg("mixin", m, other).update(deep_copy(_map_arg("mixin", other), c))
    check_map(c, m)


@reg("fill_with", 2)
def _fill_with(c: Ctx, m: Any, other: Any) -> None:
    _map_arg("fill_with", m, other)
    for k, v in _map_arg("fill_with", other).items():
        if k not in m:
            m[k] = deep_copy(v, c)
    check_map(c, m)


def _check_int(v: int) -> int:
    return check_int(v)

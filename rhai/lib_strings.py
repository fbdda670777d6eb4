"""The standard library, part two: functions shared by strings, arrays and maps (length,
search, get/set, truncation, splitting) and the string functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import Fail
from .fastpath import item_caller
from .lib_core import STRS, nf, reg
from .runtime import BUILTINS, STR_MUTATORS, Ctx, NewStr, check_arr, check_map
from .values import (
    Char,
    FnPtr,
    Range,
    charge,
    charge_str,
    deep_copy,
    type_of,
    values_eq,
)  # fmt: skip

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
        # as Rhai: a negative start is 0, an end before the start is the start
        start = max(a.start, 0)
        length = max(a.end, start) - start + (1 if a.inclusive else 0)
        return _span(n, start, length)
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
        charge_str(c, len(x) - s + len(item))
        return x.find(item, s)
    if t is list:
        s, _ = _span(len(x), start, None)
        if type(item) is FnPtr:
            call = item_caller(c, item, "index_of")
            for i in range(s, len(x)):
                if call(x[i], i) is True:
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
        charge_str(c, len(s) + len(find))  # the scan (count and replace)
        if len(sub) > len(find) and s.count(find) * (len(sub) - len(find)) + len(s) > c.max_str:
            raise Fail("Length of string exceeds the maximum limit", limit=True)
        r = s.replace(find, sub)
        charge_str(c, len(r))
        return NewStr(r)
    raise nf("replace", s, find, sub)


@reg("pop", 1, 2, mutates_str=True)
def _pop(c: Ctx, x: Any, n: Any = None) -> Any:
    """``pop`` on an array removes its last item; on a string its last character (or with a
    count, that many, returned as a string)."""
    if type(x) is list and n is None:
        return x.pop() if x else None
    if type(x) is not str or (n is not None and type(n) is not int):
        raise nf("pop", x) if n is None else nf("pop", x, n)
    if n is None:
        return NewStr(x[:-1], Char(x[-1])) if x else None
    if n <= 0:
        return NewStr(x, "")
    charge_str(c, len(x))
    return NewStr(x[: max(len(x) - n, 0)], x[max(len(x) - n, 0) :])


@reg("split_rev", 2, 3)
def _split_rev(c: Ctx, x: Any, sep: Any, n: Any = None) -> Any:
    """``split`` from the end: the pieces last first (at most ``n`` of them)."""
    if type(x) is not str or type(sep) not in STRS or (n is not None and type(n) is not int):
        raise nf("split_rev", x, sep) if n is None else nf("split_rev", x, sep, n)
    charge_str(c, len(x))
    if n is None:
        parts = x.rsplit(sep) if sep else list(x)
    else:
        parts = x.rsplit(sep, max(n - 1, 0)) if n > 0 else [x]
    parts.reverse()
    charge(c, len(parts))
    return check_arr(c, parts)

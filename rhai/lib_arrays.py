"""The standard library, part three: array and object map functions. Callbacks follow
Rhai's conventions (see :func:`rhai.fastpath.item_caller`)."""

from __future__ import annotations

from functools import cmp_to_key
from typing import Any

from .errors import NOPOS, Fail
from .fastpath import bind_fn, fast_filter, fast_pred, item_caller
from .lib_core import nf, reg
from .lib_strings import _span_args
from .runtime import (
    BUILTINS,
    Ctx,
    call_fnptr,
    call_fnptr_this,
    check_arr,
    check_map,
    script_arities,
)
from .values import (
    Char,
    FnPtr,
    Range,
    charge,
    charge_str,
    compare,
    deep_copy,
    type_of,
    values_eq,
)  # fmt: skip

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
    arities = script_arities(c, fp) if type(fp) is FnPtr else set()
    if arities and 1 not in arities:
        call2 = item_caller(c, fp, "filter")
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
    call = item_caller(c, fp, "map")
    return [call(x, i) for i, x in enumerate(a)]


@reg("for_each", 2)
def _for_each(c: Ctx, a: Any, fp: Any) -> None:
    """As in Rhai: each item is bound to ``this`` (changes to it are kept); a function
    taking one parameter also gets the item's index."""
    _arr("for_each", a, fp)
    if type(fp) is not FnPtr:
        raise nf("for_each", a, fp)
    arities = script_arities(c, fp)
    with_index = 1 in arities and 0 not in arities
    box: list[Any] = [None]

    def put(f: list[Any], v: Any) -> None:
        box[0] = v

    for i in range(len(a)):
        box[0] = a[i]
        call_fnptr_this(c, fp, [i] if with_index else [], NOPOS, a[i], put, box)
        a[i] = box[0]


@reg("reduce", 2, 3)
def _reduce(c: Ctx, a: Any, fp: Any, init: Any = None) -> Any:
    _arr("reduce", a, fp)
    if type(fp) is FnPtr and 3 in script_arities(c, fp):
        acc = init
        for i, x in enumerate(a):
            acc = call_fnptr(c, fp, [acc, x, i], NOPOS)
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
    call = item_caller(c, fp, "some")
    return any(_bool("some", call(x, i)) for i, x in enumerate(a))


@reg("all", 2)
def _all(c: Ctx, a: Any, fp: Any) -> bool:
    _arr("all", a, fp)
    call = item_caller(c, fp, "all")
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
    call = item_caller(c, fp, "find")
    for i, x in enumerate(a):
        if _bool("find", call(x, i)):
            return x
    return None


@reg("find_map", 2)
def _find_map(c: Ctx, a: Any, fp: Any) -> Any:
    _arr("find_map", a, fp)
    call = item_caller(c, fp, "find_map")
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
        call = item_caller(c, x, name)
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


@reg("splice", 3, 4)
def _splice(c: Ctx, a: Any, s: Any, n: Any, items: Any = None) -> None:
    if items is None and type(s) is Range:  # splice(range, items)
        n, items = None, n
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
        log_n = max(len(a).bit_length(), 1)
        charge(c, len(a) * log_n)  # n log n comparisons
        if str in types:  # each string takes part in about log n of them
            charge_str(c, sum(len(x) for x in a) * log_n)
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
    return _sorted_keys(c, _map_arg("keys", m))


def _sorted_keys(c: Ctx, m: dict[str, Any]) -> list[str]:
    """The keys in order, charged as a sort of strings (n log n, and their characters)."""
    log_n = max(len(m).bit_length(), 1)
    charge(c, len(m) * log_n)
    charge_str(c, sum(len(k) for k in m) * log_n)
    return sorted(m, key=str)


@reg("values", 1)
def _values(c: Ctx, m: Any) -> list[Any]:
    m = _map_arg("values", m)
    return [m[k] for k in _sorted_keys(c, m)]


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

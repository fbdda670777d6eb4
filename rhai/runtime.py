"""Runtime support shared by the compiled closures and the standard library:
the evaluation context, control flow signals and function dispatch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import NOPOS, EvalError, Fail, LimitExceeded, Pos, RhaiError, suggest, to_eval_error
from .values import Cell, FnPtr, deep_copy, from_python, type_of

UNLIMITED = 1 << 62

# (name, arity) -> builtin taking (ctx, *args); VARIADIC: name -> builtin taking (ctx, *args)
BUILTINS: dict[tuple[str, int], Callable[..., Any]] = {}
VARIADIC: dict[str, Callable[..., Any]] = {}
# builtins whose first argument is a string that they "change in place": they return a
# NewStr and the call site writes the new string back into the variable
STR_MUTATORS: set[str] = set()


class NewStr:
    __slots__ = ("s",)

    def __init__(self, s: str) -> None:
        self.s = s


class Ctx:
    """State of one evaluation: limits, counters, functions and host hooks."""

    __slots__ = (
        "depth",
        "fns",
        "host",
        "max_arr",
        "max_depth",
        "max_map",
        "max_ops",
        "max_str",
        "max_vars",
        "on_debug",
        "on_print",
        "ops",
    )  # fmt: skip

    def __init__(self, engine: Any, fns: dict[tuple[str, int], Any]) -> None:
        self.ops = 0
        self.max_ops = engine.max_operations or UNLIMITED
        self.depth = 0
        self.max_depth = engine.max_call_levels or UNLIMITED
        self.max_str = engine.max_string_size or UNLIMITED
        self.max_arr = engine.max_array_size or UNLIMITED
        self.max_map = engine.max_map_size or UNLIMITED
        self.max_vars = engine.max_variables or UNLIMITED
        self.fns = fns
        self.host = engine._host
        self.on_print = engine.on_print
        self.on_debug = engine.on_debug

    def call_fnptr_host(self, fp: FnPtr, args: list[Any]) -> Any:
        """Call ``fp`` from host code (``FnPtr.__call__``) with host values."""
        return call_fnptr(self, fp, [from_python(a) for a in args], NOPOS)


RETURN, BREAK, CONTINUE = 0, 1, 2


class Ctl:
    """A control-flow signal returned by statements (return / break / continue)."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: int, value: Any) -> None:
        self.kind = kind
        self.value = value


class CtlExc(Exception):
    """A control-flow signal escaping from an expression position."""

    def __init__(self, ctl: Ctl) -> None:
        self.ctl = ctl


def ops_exceeded(c: Ctx, pos: Pos) -> None:
    raise LimitExceeded(f"Too many operations: the limit is {c.max_ops}", pos)


def check_str(c: Ctx, s: str, pos: Pos = NOPOS) -> str:
    if len(s) > c.max_str:
        raise LimitExceeded(f"Length of string exceeds the maximum limit ({c.max_str})", pos)
    return s


def check_arr(c: Ctx, a: list[Any]) -> list[Any]:
    if len(a) > c.max_arr:
        raise Fail(f"Size of array exceeds the maximum limit ({c.max_arr})", limit=True)
    return a


def check_map(c: Ctx, m: dict[str, Any]) -> dict[str, Any]:
    if len(m) > c.max_map:
        raise Fail(f"Size of object map exceeds the maximum limit ({c.max_map})", limit=True)
    return m


class ScriptFn:
    """A compiled script function or closure body."""

    __slots__ = (
        "body",
        "calls",
        "cap_slots",
        "cell_params",
        "copy_params",
        "fast",
        "may_ctl",
        "name",
        "nparams",
        "nslots",
        "pad",
        "params",
        "pos",
    )  # fmt: skip

    def __init__(self, name: str, params: list[str], pos: Pos) -> None:
        self.name = name
        self.params = params
        self.nparams = len(params)
        self.pos = pos
        self.body: Callable[[list[Any]], Any] = lambda f: None
        self.pad: list[Any] = []
        self.copy_params: list[int] = []
        self.cell_params: list[int] = []
        self.cap_slots: list[int] = []
        self.may_ctl = True
        self.calls = True
        self.nslots = 2
        self.fast: Any = None


def run_frame(c: Ctx, sf: ScriptFn, fr: list[Any], pos: Pos) -> Any:
    """Run a function body on a prepared frame (handles call depth and `return`)."""
    c.ops += 1
    if c.ops > c.max_ops:
        ops_exceeded(c, pos)
    c.depth += 1
    if c.depth > c.max_depth:
        c.depth -= 1
        raise LimitExceeded(
            f"Stack overflow: more than {c.max_depth} nested function calls ({sf.name})", pos
        )
    try:
        r = sf.body(fr)
    except CtlExc as e:
        r = e.ctl
    finally:
        c.depth -= 1
    if type(r) is Ctl:
        return r.value
    return r


def make_frame(
    c: Ctx, sf: ScriptFn, args: list[Any], this: Any, cells: tuple[Cell, ...]
) -> list[Any]:
    fr = [c, this, *args]
    if sf.pad:
        fr.extend(sf.pad)
    for i in sf.copy_params:
        fr[i] = deep_copy(fr[i], c)
    for i in sf.cell_params:
        fr[i] = Cell(fr[i])
    if cells:
        for s, cell in zip(sf.cap_slots, cells, strict=False):
            fr[s] = cell
    return fr


def call_script(c: Ctx, sf: ScriptFn, args: list[Any], this: Any, pos: Pos) -> Any:
    return run_frame(c, sf, make_frame(c, sf, args, this, ()), pos)


def call_host(name: str, h: Callable[..., Any], args: list[Any], pos: Pos) -> Any:
    try:
        r = h(*args)
    except RhaiError:
        raise
    except (Fail, RecursionError, MemoryError, CtlExc):
        raise
    except Exception as e:
        raise EvalError(f"Error in host function '{name}': {type(e).__name__}: {e}", pos) from e
    t = type(r)
    if t is int or t is str or t is float or t is bool or r is None or t is dict or t is list:
        if t is int and not (-(1 << 63) <= r < (1 << 63)):
            raise EvalError(f"Host function '{name}' returned an integer out of range", pos)
        return r
    return from_python(r)


def all_fn_names(c: Ctx) -> list[str]:
    names = [k[0] for k in c.fns] + [k[0] for k in c.host] + [k[0] for k in BUILTINS]
    return names + list(VARIADIC)


def not_found(c: Ctx, name: str, args: list[Any], pos: Pos) -> EvalError:
    types = ", ".join(type_of(a) for a in args)
    return EvalError(f"Function not found: {name} ({types}){suggest(name, all_fn_names(c))}", pos)


def call_named(c: Ctx, name: str, args: list[Any], pos: Pos) -> Any:
    key = (name, len(args))
    sf = c.fns.get(key)
    if sf is not None:
        return call_script(c, sf, args, None, pos)
    c.ops += 1
    if c.ops > c.max_ops:
        ops_exceeded(c, pos)
    h = c.host.get(key)
    if h is not None:
        return call_host(name, h, args, pos)
    b = BUILTINS.get(key) or VARIADIC.get(name)
    if b is not None:
        return method_result(call_builtin(c, name, b, pos, *args), None, None)
    raise not_found(c, name, args, pos)


def call_builtin(c: Ctx, name: str, b: Callable[..., Any], pos: Pos, *args: Any) -> Any:
    """Run a builtin; an exception of the host's (Python's) becomes an EvalError here."""
    try:
        return b(c, *args)
    except (RhaiError, CtlExc):
        raise
    except Exception as e:
        raise to_eval_error(e, pos, f"{name}: ") from None


def method_result(r: Any, setter: Callable[[Any, Any], None] | None, f: Any) -> Any:
    """A builtin that changes a string in place returns NewStr: write it back, answer ()."""
    if type(r) is NewStr:
        if setter is not None:
            setter(f, r.s)
        return None
    return r


M_SCRIPT, M_HOST, M_BUILTIN, M_MISSING = 0, 1, 2, 3


def resolve_method(c: Ctx, name: str, nargs: int) -> tuple[Any, Any, int, Any]:
    """What ``obj.name(<nargs args>)`` calls in this context, in :func:`call_method`'s order:
    ``(fns, host, kind, target)``, cached by call sites while ``c.fns`` and ``c.host`` are the
    same objects (the engine replaces its host table on every registration)."""
    sf = c.fns.get((name, nargs))
    if sf is not None:
        return (c.fns, c.host, M_SCRIPT, sf)
    h = c.host.get((name, nargs + 1))
    if h is not None:
        return (c.fns, c.host, M_HOST, h)
    b = BUILTINS.get((name, nargs + 1)) or VARIADIC.get(name)
    if b is not None:
        return (c.fns, c.host, M_BUILTIN, b)
    return (c.fns, c.host, M_MISSING, None)


def call_method(
    c: Ctx,
    obj: Any,
    name: str,
    args: list[Any],
    pos: Pos,
    setter: Callable[[list[Any], Any], None] | None,
    f: list[Any],
) -> Any:
    n = len(args)
    sf = c.fns.get((name, n))
    if sf is not None:
        fr = make_frame(c, sf, args, obj, ())
        r = run_frame(c, sf, fr, pos)
        if setter is not None and fr[1] is not obj:
            setter(f, fr[1])
        return r
    c.ops += 1
    if c.ops > c.max_ops:
        ops_exceeded(c, pos)
    key = (name, n + 1)
    h = c.host.get(key)
    if h is not None:
        return call_host(name, h, [obj, *args], pos)
    b = BUILTINS.get(key) or VARIADIC.get(name)
    if b is not None:
        return method_result(call_builtin(c, name, b, pos, obj, *args), setter, f)
    if type(obj) is dict and type(obj.get(name)) is FnPtr:
        return call_fnptr(c, obj[name], args, pos, obj)
    raise not_found(c, name, [obj, *args], pos)


def call_fnptr(c: Ctx, fp: FnPtr, args: list[Any], pos: Pos, this: Any = None) -> Any:
    if fp.curry:
        args = [*fp.curry, *args]
    sf = fp.closure
    if sf is not None:
        if len(args) != sf.nparams:
            raise EvalError(
                f"Function not found: {fp.name} with {len(args)} argument(s) "
                f"(the closure takes {sf.nparams})",
                pos,
            )
        return run_frame(c, sf, make_frame(c, sf, args, this, fp.cells), pos)
    if this is not None:
        return call_method(c, this, fp.name, args, pos, None, [])
    return call_named(c, fp.name, args, pos)


def bind_fn(c: Ctx, fp: Any, nargs: int, pos: Pos = NOPOS) -> Callable[..., Any]:
    """A fast Python callable for calling ``fp`` repeatedly (used by filter, map, ...)."""
    if type(fp) is not FnPtr:
        raise Fail(f"Expecting a function pointer, not {type_of(fp)}")
    sf = fp.closure
    if sf is None or fp.curry or fp.cells or sf.may_ctl or sf.calls or sf.pad or \
            sf.copy_params or sf.cell_params or sf.nparams != nargs:  # fmt: skip
        return lambda *a: call_fnptr(c, fp, list(a), pos)
    body = sf.body
    maxops = c.max_ops
    if nargs == 1:

        def call1(x: Any) -> Any:
            c.ops += 1
            if c.ops > maxops:
                ops_exceeded(c, pos)
            return body([c, None, x])

        return call1
    if nargs == 2:

        def call2(x: Any, y: Any) -> Any:
            c.ops += 1
            if c.ops > maxops:
                ops_exceeded(c, pos)
            return body([c, None, x, y])

        return call2
    return lambda *a: call_fnptr(c, fp, list(a), pos)


def fn_arity(fp: Any) -> int | None:
    """Number of parameters a closure takes (None for named functions)."""
    if type(fp) is FnPtr and fp.closure is not None:
        return int(fp.closure.nparams) - len(fp.curry)
    return None


def fast_filter(c: Ctx, fp: Any, items: list[Any], pos: Pos = NOPOS) -> list[Any] | None:
    """Filter with a closure compiled to Python source; None when there is none."""
    if type(fp) is not FnPtr or fp.closure is None or fp.closure.fast is None or fp.curry:
        return None
    c.ops += len(items)
    if c.ops > c.max_ops:
        ops_exceeded(c, pos)
    return run_vfilter(c, fp.closure, items, pos)


def run_vfilter(c: Ctx, sf: ScriptFn, items: list[Any], pos: Pos) -> list[Any]:
    """Run the fast filter of closure ``sf`` (its operations already charged); items it does
    not decide inline go through the closure itself, bound only when first needed."""
    bound: list[Callable[[Any], Any]] = []

    def checked(x: Any) -> Any:
        if not bound:
            bound.append(bind_fn(c, FnPtr(sf.name, (), sf, (), c), 1, pos))
        r = bound[0](x)
        if r is True or r is False:
            return r
        raise Fail(f"The function passed to 'filter' must return a boolean, not {type_of(r)}")

    return sf.fast.vfilter(items, checked)  # type: ignore[no-any-return]


def fast_pred(c: Ctx, fp: Any, n: int, name: str, pos: Pos = NOPOS) -> Callable[[Any], Any] | None:
    """For an array of ``n`` items: a predicate compiled to Python source, or None.

    The ``n`` operations are charged up front."""
    if type(fp) is not FnPtr or fp.closure is None or fp.closure.fast is None or fp.curry:
        return None
    c.ops += n
    if c.ops > c.max_ops:
        ops_exceeded(c, pos)
    slow = bind_fn(c, fp, 1, pos)

    def checked(x: Any) -> Any:
        r = slow(x)
        if r is True or r is False:
            return r
        raise Fail(f"The function passed to '{name}' must return a boolean, not {type_of(r)}")

    return fp.closure.fast.make(checked)  # type: ignore[no-any-return]

"""Runtime support shared by the compiled closures and the standard library:
the evaluation context, control flow signals and function dispatch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import (
    NOPOS,
    EvalError,
    Fail,
    LimitExceeded,
    Pos,
    RhaiError,
    Signal,
    suggest,
    to_eval_error,
)  # fmt: skip
from .values import CLOCK_EVERY, Cell, FnPtr, deep_copy, from_python, over_budget, type_of

UNLIMITED = 1 << 62

# (name, arity) -> builtin taking (ctx, *args); VARIADIC: name -> builtin taking (ctx, *args)
BUILTINS: dict[tuple[str, int], Callable[..., Any]] = {}
VARIADIC: dict[str, Callable[..., Any]] = {}
# builtins whose first argument is a string that they "change in place": they return a
# NewStr and the call site writes the new string back into the variable
STR_MUTATORS: set[str] = set()


class NewStr:
    """What a builtin that changes a string returns: the new string, written back into the
    variable by the call site, and the call's answer (``()`` unless given)."""

    __slots__ = ("ret", "s")

    def __init__(self, s: str, ret: Any = None) -> None:
        self.s = s
        self.ret = ret


class _Unbound:
    """The value of frame slot 1 (``this``) in a function not called as a method."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unbound this>"


UNBOUND: Any = _Unbound()


class Ctx:
    """State of one evaluation: limits, counters, functions, top-level constants (for
    ``global::``) and host hooks."""

    __slots__ = (
        "deadline",
        "depth",
        "fns",
        "globals",
        "host",
        "limit_ops",
        "max_arr",
        "max_depth",
        "max_map",
        "max_ops",
        "max_str",
        "max_time",
        "max_vars",
        "on_debug",
        "on_print",
        "on_progress",
        "ops",
        "typed",
    )  # fmt: skip

    def __init__(self, engine: Any, fns: dict[tuple[str, int], Any],
                 globals_: dict[str, Any] | None = None,
                 typed: frozenset[str] = frozenset(),
                 max_time: float | None = None) -> None:  # fmt: skip
        self.ops = 0
        self.limit_ops = engine.max_operations or UNLIMITED
        # a wall-clock limit: then max_ops is the next operation count at which the clock
        # is read (values.over_budget), so the interpreter's one inline test serves both
        self.max_time: float = (engine.max_time if max_time is None else max_time) or 0.0
        self.deadline = time.monotonic() + self.max_time if self.max_time > 0 else None
        self.on_progress = engine.on_progress
        if self.deadline is not None or self.on_progress is not None:
            self.max_ops = min(self.limit_ops, CLOCK_EVERY)
        else:
            self.max_ops = self.limit_ops
        self.depth = 0
        self.max_depth = engine.max_call_levels or UNLIMITED
        self.max_str = engine.max_string_size or UNLIMITED
        self.max_arr = engine.max_array_size or UNLIMITED
        self.max_map = engine.max_map_size or UNLIMITED
        self.max_vars = engine.max_variables or UNLIMITED
        self.fns = fns
        # shared with the AST in call_fn (the top-level statements that write it do not run)
        self.globals: dict[str, Any] = {} if globals_ is None else globals_
        self.typed = typed  # names with typed methods: fns[("i64.name", n)]
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


class CtlExc(Signal):
    """A control-flow signal escaping from an expression position."""

    def __init__(self, ctl: Ctl) -> None:
        super().__init__("ctl")
        self.ctl = ctl


def ops_exceeded(c: Ctx, pos: Pos) -> None:
    """``c.ops`` passed ``c.max_ops``: raise if a limit (operations, time) is passed; a
    clock checkpoint just returns."""
    msg = over_budget(c)
    if msg is not None:
        raise LimitExceeded(msg, pos)


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
    """A frame: the context, ``this``, the arguments, then room for the locals; captured
    variables arrive as the closure's shared cells."""
    fr = [c, this, *args]
    if sf.pad:
        fr.extend(sf.pad)
    for i in sf.copy_params:
        fr[i] = deep_copy(fr[i], c)
    if cells:
        for s, cell in zip(sf.cap_slots, cells, strict=False):
            fr[s] = cell
    return fr


def call_script(c: Ctx, sf: ScriptFn, args: list[Any], this: Any, pos: Pos) -> Any:
    return run_frame(c, sf, make_frame(c, sf, args, this, ()), pos)


def call_host(name: str, h: Callable[..., Any], args: list[Any], pos: Pos) -> Any:
    try:
        r = h(*args)
    except (RhaiError, Fail, RecursionError, MemoryError, Signal):
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
    """``name(args)`` in function-call style."""
    key = (name, len(args))
    sf = c.fns.get(key)
    if sf is not None:
        return call_script(c, sf, args, UNBOUND, pos)
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


def call_named_raw(c: Ctx, name: str, args: list[Any], pos: Pos) -> Any:
    """:func:`call_named`, leaving a builtin's :class:`NewStr` for the caller to write back."""
    b = BUILTINS.get((name, len(args))) or VARIADIC.get(name)
    if b is None or (name, len(args)) in c.fns or (name, len(args)) in c.host:
        return call_named(c, name, args, pos)
    c.ops += 1
    if c.ops > c.max_ops:
        ops_exceeded(c, pos)
    return call_builtin(c, name, b, pos, *args)


def call_builtin(c: Ctx, name: str, b: Callable[..., Any], pos: Pos, *args: Any) -> Any:
    """Run a builtin; an exception of the host's (Python's) becomes an EvalError here."""
    try:
        return b(c, *args)
    except (RhaiError, Signal):
        raise
    except Exception as e:
        raise to_eval_error(e, pos, f"{name}: ") from None


def method_result(r: Any, setter: Callable[[Any, Any], None] | None, f: Any) -> Any:
    """A builtin that changes a string in place returns NewStr: write it back, answer its
    ``ret``."""
    if type(r) is NewStr:
        if setter is not None:
            setter(f, r.s)
        return r.ret
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


Setter = Callable[[list[Any], Any], None]


def call_method(c: Ctx, obj: Any, name: str, args: list[Any], pos: Pos,
                setter: Setter | None, f: list[Any], props: bool = True) -> Any:  # fmt: skip
    """``obj.name(args)``: a function pointer held in map property ``name`` (called with
    ``this`` bound to the map), else a script function with ``this`` bound to ``obj`` (a
    changed ``this`` is written back through ``setter``), else a host function or builtin
    taking ``obj`` first."""
    if props and type(obj) is dict:
        fp = obj.get(name)
        if type(fp) is FnPtr:
            return call_fnptr_this(c, fp, args, pos, obj, setter, f)
    n = len(args)
    sf = c.fns.get((name, n))
    if name in c.typed:  # a method for this type of `this` comes first
        sf = c.fns.get((f"{type_of(obj)}.{name}", n)) or sf
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
    raise not_found(c, name, [obj, *args], pos)


def _closure_arity_error(fp: FnPtr, nargs: int, pos: Pos) -> EvalError:
    return EvalError(
        f"Function not found: {fp.name} with {nargs} argument(s) "
        f"(the closure takes {fp.closure.nparams})",
        pos,
    )


def call_fnptr(c: Ctx, fp: FnPtr, args: list[Any], pos: Pos) -> Any:
    """``fp.call(args)`` / ``call(fp, args)``: ``this`` is not bound."""
    if fp.curry:
        args = [*fp.curry, *args]
    sf = fp.closure
    if sf is not None:
        if len(args) != sf.nparams:
            raise _closure_arity_error(fp, len(args), pos)
        return run_frame(c, sf, make_frame(c, sf, args, UNBOUND, fp.cells), pos)
    return call_named(c, fp.name, args, pos)


def call_fnptr_this(c: Ctx, fp: FnPtr, args: list[Any], pos: Pos, obj: Any,
                    setter: Setter | None, f: list[Any]) -> Any:  # fmt: skip
    """``obj.call(fp, args)`` (and ``obj.prop(args)`` for a function pointer in map property
    ``prop``): the function runs with ``this`` bound to ``obj``; a changed ``this`` is
    written back through ``setter``."""
    if fp.curry:
        args = [*fp.curry, *args]
    sf = fp.closure
    if sf is None:
        return call_method(c, obj, fp.name, args, pos, setter, f, props=False)
    if len(args) != sf.nparams:
        raise _closure_arity_error(fp, len(args), pos)
    fr = make_frame(c, sf, args, obj, fp.cells)
    r = run_frame(c, sf, fr, pos)
    if setter is not None and fr[1] is not obj:
        setter(f, fr[1])
    return r


def script_arities(c: Ctx, fp: FnPtr) -> set[int]:
    """The numbers of arguments ``fp`` accepts from a caller (after its curried ones), or an
    empty set when it names no script function (then a builtin or host function decides)."""
    if fp.closure is not None:
        return {fp.closure.nparams - len(fp.curry)}
    return {a - len(fp.curry) for (n, a) in c.fns if n == fp.name}


__all__ = ["UNBOUND", "Ctl", "CtlExc", "Ctx", "NewStr", "ScriptFn", "call_fnptr", "call_method"]

"""Compiling function and method calls.

Method call sites cache what their name resolves to (script function, host function or
builtin), keyed on the identity of the AST's and the engine's function tables (the engine
replaces its table on every registration, so later registrations are seen). A function
pointer held in a map property is called first, with ``this`` bound to the map, as in Rhai.
``list.filter(<closure literal>)`` with a closure :mod:`rhai.fastpath` compiled runs without
making a function pointer.
"""

from __future__ import annotations

from typing import Any

from .compile_base import CompilerBase, Ev, is_lvalue
from .errors import EvalError, RhaiError, Signal, to_eval_error
from .fastpath import run_vfilter
from .nodes import Call, Closure, Const, MethodCall, Node, Var
from .parser import TYPE_ALIASES
from .runtime import (
    BUILTINS,
    M_BUILTIN,
    M_HOST,
    M_MISSING,
    STR_MUTATORS,
    ScriptFn,
    call_builtin,
    call_fnptr,
    call_fnptr_this,
    call_host,
    call_method,
    call_named,
    call_named_raw,
    method_result,
    ops_exceeded,
    resolve_method,
)  # fmt: skip
from .values import Cell, FnPtr, type_of


class CallCompiler(CompilerBase):
    typed_methods: frozenset[str] = frozenset()  # set by the compiler

    def c_call(self, n: Call) -> Ev:
        name, pos = n.name, n.pos
        if name == "is_def_var" and len(n.args) == 1:
            return self.is_def_var(n)
        if name == "is_shared" and len(n.args) == 1:
            return self.is_shared(n.args[0])
        args = [self.cx(a) for a in n.args]
        if name == "is_def_fn" and len(args) == 2:
            af, bf = args

            def is_def(f: list[Any]) -> Any:
                return (af(f), bf(f)) in f[0].fns

            return is_def
        if name == "is_def_fn" and len(args) == 3:  # is_def_fn(type, name, arity)
            tf, af, bf = args

            def is_def_typed(f: list[Any]) -> Any:
                t = tf(f)
                return (f"{TYPE_ALIASES.get(t, t)}.{af(f)}", bf(f)) in f[0].fns

            return is_def_typed
        if name in STR_MUTATORS and n.args and is_lvalue(n.args[0]):
            # `trim(s)` changes the string in variable `s`, as `s.trim()` does
            setter = self.setter(n.args[0])

            def call_mutator(f: list[Any]) -> Any:
                argv = [a(f) for a in args]
                if type(argv[0]) is not str:
                    return call_named(f[0], name, argv, pos)
                return method_result(call_named_raw(f[0], name, argv, pos), setter, f)

            return call_mutator
        if not args:
            return lambda f: call_named(f[0], name, [], pos)
        if len(args) == 1:
            a0 = args[0]
            return lambda f: call_named(f[0], name, [a0(f)], pos)
        return lambda f: call_named(f[0], name, [a(f) for a in args], pos)

    def is_def_var(self, n: Call) -> Ev:
        """``is_def_var(name)``: whether a variable of that name is in scope here."""
        visible, arg, pos = n.visible, n.args[0], n.pos
        if type(arg) is Const and type(arg.value) is str:
            known = arg.value in visible
            return lambda f: known
        af = self.cx(arg)

        def ev(f: list[Any]) -> Any:
            name = af(f)
            if type(name) is not str:
                raise EvalError(f"Function not found: is_def_var ({type_of(name)})", pos)
            return name in visible

        return ev

    def is_shared(self, arg: Node) -> Ev:
        """``is_shared(x)``: whether variable ``x`` is shared with a closure (from the moment
        a closure captures it)."""
        af = self.cx(arg)
        if type(arg) is Var and arg.var is not None and arg.var.captured:
            slot = arg.var.slot
            return lambda f: type(f[slot]) is Cell

        def ev(f: list[Any]) -> Any:
            af(f)
            return False

        return ev

    def c_method(self, n: MethodCall) -> Ev:
        name, target, elvis, pos = n.name, n.target, n.elvis, n.pos
        if name == "is_shared" and not n.args:
            return self.is_shared(target)
        of = self.cx(target)
        args = [self.cx(a) for a in n.args]
        setter = self.setter(target) if is_lvalue(target) else None
        if name == "call":
            return self.call_method_call(of, args, setter, elvis, pos, race_slot(target))
        if name == "Fn":  # a keyword of function-call style only, as in Rhai

            def fn_method(f: list[Any]) -> Any:
                types = ", ".join(type_of(x) for x in [of(f), *[a(f) for a in args]])
                raise EvalError(f"Function not found: Fn ({types}): 'Fn' cannot be called in "
                                "method-call style", pos)  # fmt: skip

            return fn_method
        nargs = len(args)
        if name in self.typed_methods:  # which function depends on the type of `this`

            def typed(f: list[Any]) -> Any:
                o = of(f)
                if o is None and elvis:
                    return None
                return call_method(f[0], o, name, [a(f) for a in args], pos, setter, f)

            return typed
        # what the name resolves to is cached per call site (see resolve_method)
        cache: list[tuple[Any, Any, int, Any]] = [(None, None, M_MISSING, None)]
        # `list.filter(|x| <simple predicate>)`: no function pointer is made at all
        fsf: ScriptFn | None = None
        if name == "filter" and nargs == 1 and type(n.args[0]) is Closure:
            fsf = n.args[0].fn.compiled
            if fsf is None or fsf.fast is None:
                fsf = None
        filter_builtin = BUILTINS.get(("filter", 2))

        a0 = args[0] if nargs else None
        one = nargs == 1

        def ev(f: list[Any]) -> Any:
            o = of(f)
            c = f[0]
            if type(o) is dict:
                fp = o.get(name)
                if type(fp) is FnPtr:  # a method held in the map: `this` is the map
                    return call_fnptr_this(c, fp, [a(f) for a in args], pos, o, setter, f)
            elif o is None and elvis:
                return None
            ent = cache[0]
            if ent[0] is not c.fns or ent[1] is not c.host:
                ent = cache[0] = resolve_method(c, name, nargs)
            kind = ent[2]
            if kind == M_BUILTIN:
                fn = ent[3]
                if fn is filter_builtin and fsf is not None and type(o) is list:
                    c.ops += len(o) + 1
                    if c.ops > c.max_ops:
                        ops_exceeded(c, pos)
                    try:
                        return run_vfilter(c, fsf, o, pos)
                    except (RhaiError, Signal):
                        raise
                    except Exception as e:
                        raise to_eval_error(e, pos, "filter: ") from None
                if one:
                    argv = [a0(f)]  # type: ignore[misc]
                else:
                    argv = [a(f) for a in args] if nargs else []
                c.ops += 1
                if c.ops > c.max_ops:
                    ops_exceeded(c, pos)
                return method_result(call_builtin(c, name, fn, pos, o, *argv), setter, f)
            if kind == M_HOST:
                if one:
                    argv = [o, a0(f)]  # type: ignore[misc]
                else:
                    argv = [o, *[a(f) for a in args]] if nargs else [o]
                c.ops += 1
                if c.ops > c.max_ops:
                    ops_exceeded(c, pos)
                return call_host(name, ent[3], argv, pos)
            return call_method(c, o, name, [a(f) for a in args], pos, setter, f, props=False)

        return ev

    def call_method_call(self, of: Ev, args: list[Ev], setter: Any, elvis: bool,
                         pos: tuple[int, int], race: int | None) -> Ev:  # fmt: skip
        """``fp.call(args)`` calls ``fp``; ``obj.call(fp, args)`` calls ``fp`` with ``this``
        bound to ``obj`` (a changed ``this`` is written back)."""

        def ev(f: list[Any]) -> Any:
            o = of(f)
            if o is None and elvis:
                return None
            argv = [a(f) for a in args]
            if type(o) is FnPtr:
                return call_fnptr(f[0], o, argv, pos)
            if not argv or type(argv[0]) is not FnPtr:
                types = ", ".join(type_of(x) for x in [o, *argv])
                raise EvalError(f"Function not found: call ({types}): expecting a function "
                                "pointer to call with `this` bound", pos)  # fmt: skip
            if race is not None:
                check_race(f, race, argv[0], pos)
            return call_fnptr_this(f[0], argv[0], argv[1:], pos, o, setter, f)

        return ev


def race_slot(target: Node) -> int | None:
    """The slot of ``target`` when it is a variable a closure may share (see
    :func:`check_race`)."""
    if type(target) is Var and target.var is not None and target.var.captured:
        return target.var.slot
    return None


def check_race(f: list[Any], slot: int, fp: FnPtr, pos: tuple[int, int]) -> None:
    """Rhai refuses to bind ``this`` to a shared variable that the closure called also
    captures (``x.call(|a| this += x + a, 1)``): a data race."""
    cell = f[slot]
    if type(cell) is Cell and any(c is cell for c in fp.cells):
        raise EvalError("Data race detected: the closure captures the variable bound to 'this'",
                        pos)  # fmt: skip

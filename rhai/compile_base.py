"""What the compiler's parts share: dispatch, expression-position wrapping and the analyses
of the typed tree (control flow, calls, aliasing) that pick the compiled form.

The compiler turns every node into a Python closure ``ev(frame) -> value``. A frame is a list:
slot 0 holds the runtime :class:`~rhai.runtime.Ctx`, slot 1 ``this``, then parameters and
locals at the slots the resolver chose. A captured variable's slot holds a
:class:`~rhai.values.Cell` shared with the closures once one has been created (until then,
the plain value). Statements may return a :class:`~rhai.runtime.Ctl` (return / break /
continue) which blocks, loops and calls propagate; from an expression position the signal
travels as a :class:`~rhai.runtime.CtlExc` exception instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .nodes import (
    FRESH_VALUES,
    Block,
    Break,
    Call,
    Closure,
    Continue,
    DoLoop,
    For,
    If,
    Index,
    Loop,
    MethodCall,
    Node,
    Prop,
    Return,
    Switch,
    This,
    Throw,
    Try,
    Var,
    VarInfo,
    While,
    children,
)  # fmt: skip
from .runtime import Ctl, CtlExc
from .values import deep_copy

Ev = Callable[[list[Any]], Any]
Setter = Callable[[list[Any], Any], None]

_LOOPS = (While, Loop, DoLoop, For)
_CALLS = (Call, MethodCall, Return, Throw, Try, While, Loop, DoLoop, For, Closure, This)


def may_ctl(n: Node | None) -> bool:
    """Whether running ``n`` may produce a return/break/continue signal."""
    t = type(n)
    if t is Return or t is Break or t is Continue:
        return True
    if t is Block:
        return any(may_ctl(s) for s in n.stmts)  # type: ignore[union-attr]
    if t is If:
        return may_ctl(n.then) or may_ctl(n.other)  # type: ignore[union-attr]
    if t is Switch:
        return any(may_ctl(c.body) for c in n.cases) or may_ctl(n.default)  # type: ignore[union-attr]
    if t in _LOOPS:
        return may_ctl(n.body)  # type: ignore[union-attr]
    if t is Try:
        return may_ctl(n.body) or may_ctl(n.catch)  # type: ignore[union-attr]
    return False


def has_calls(n: Node) -> bool:
    """Whether ``n`` calls functions, loops, throws or may fail to find a variable (such
    closures do not take the :func:`~rhai.fastpath.bind_fn` fast path)."""
    if isinstance(n, _CALLS) or (type(n) is Var and n.var is None and not n.fn_ptr):
        return True
    return any(has_calls(k) for k in children(n))


def vars_in(n: Node, out: list[VarInfo]) -> list[VarInfo]:
    """The variables ``n`` reads (closures excluded)."""
    if type(n) is Var:
        if n.var is not None:
            out.append(n.var)
    else:
        for k in children(n):
            vars_in(k, out)
    return out


def needs_copy(target: VarInfo | None, init: Node) -> bool:
    """Whether a value stored from ``init`` (into ``target``) must be copied so that no two
    variables share an array or map that one of them changes in place."""
    if isinstance(init, FRESH_VALUES):
        return False
    if target is not None and target.mutated:
        return True
    return any(v.mutated for v in vars_in(init, []))


def is_lvalue(n: Node) -> bool:
    """Whether a changed value can be written back into ``n`` (a variable, ``this``, or a
    property/index chain on one)."""
    while type(n) is Prop or type(n) is Index:
        if n.elvis:  # type: ignore[union-attr]
            return False
        n = n.target  # type: ignore[union-attr]
    return type(n) is This or (type(n) is Var and n.var is not None and not n.var.const)


class CompilerBase:
    """Dispatch (``c_<KIND>`` per node class) and the helpers every part uses."""

    def cs(self, n: Node) -> Ev:
        """Compile in statement position (may return a Ctl)."""
        return getattr(self, "c_" + n.KIND)(n)  # type: ignore[no-any-return]

    def cx(self, n: Node) -> Ev:
        """Compile in expression position."""
        inner = self.cs(n)
        if not may_ctl(n):
            return inner

        def ev(f: list[Any]) -> Any:
            r = inner(f)
            if type(r) is Ctl:
                raise CtlExc(r)
            return r

        return ev

    def cx_copy(self, n: Node, target: VarInfo | None = None) -> Ev:
        """Compile a value that is stored somewhere, copied when :func:`needs_copy` says."""
        ev = self.cx(n)
        return copy_wrap(ev) if needs_copy(target, n) else ev

    # provided by the parts
    def setter(self, n: Node) -> Setter:
        raise NotImplementedError


def copy_wrap(ev: Ev) -> Ev:
    def cp(f: list[Any]) -> Any:
        v = ev(f)
        t = type(v)
        if t is list or t is dict:
            return deep_copy(v, f[0])
        return v

    return cp

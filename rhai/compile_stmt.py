"""Compiling statements: ``let``, blocks, ``if``, ``switch``, loops, jumps and
``try``/``catch``."""

from __future__ import annotations

from typing import Any

from .compile_base import CompilerBase, Ev
from .errors import EvalError, Fail, LimitExceeded, RhaiError, ThrownError, to_eval_error
from .nodes import (
    Block,
    Break,
    Continue,
    DoLoop,
    For,
    If,
    Let,
    Loop,
    Return,
    Switch,
    Throw,
    Try,
    While,
)  # fmt: skip
from .ops import error_value, iterate, switch_key, truth
from .runtime import BREAK, CONTINUE, RETURN, Ctl, CtlExc, ops_exceeded
from .values import Cell, Range, deep_copy, to_display


class StmtCompiler(CompilerBase):
    # set by the compiler: whether top-level constants are published for `global::`
    publish_globals = False

    def c_let(self, n: Let) -> Ev:
        var = n.var
        assert var is not None
        nlive, pos, slot = n.live, n.pos, var.slot
        init: Ev = (lambda f: None) if n.init is None else self.cx_copy(n.init, var)
        if n.is_global and self.publish_globals:
            name = n.name

            def let_global(f: list[Any]) -> Any:
                if nlive > f[0].max_vars:
                    raise LimitExceeded("Too many variables defined", pos)
                v = f[slot] = init(f)
                f[0].globals[name] = v

            return let_global

        def let(f: list[Any]) -> Any:
            if nlive > f[0].max_vars:
                raise LimitExceeded("Too many variables defined", pos)
            f[slot] = init(f)  # a new variable (a closure's earlier cell is left to it)

        return let

    def c_block(self, n: Block) -> Ev:
        stmts = [self.cs(s) for s in n.stmts]
        count, pos = len(stmts), n.pos
        if count == 0:
            return lambda f: None
        if count == 1:
            s0 = stmts[0]

            def block1(f: list[Any]) -> Any:
                c = f[0]
                c.ops += 1
                if c.ops > c.max_ops:
                    ops_exceeded(c, pos)
                return s0(f)

            return block1

        def block(f: list[Any]) -> Any:
            c = f[0]
            c.ops += count
            if c.ops > c.max_ops:
                ops_exceeded(c, pos)
            r = None
            for s in stmts:
                r = s(f)
                if type(r) is Ctl:
                    return r
            return r

        return block

    def c_if(self, n: If) -> Ev:
        cf, tf, pos = self.cx(n.cond), self.cs(n.then), n.pos
        ef = self.cs(n.other) if n.other is not None else None

        def ev(f: list[Any]) -> Any:
            c = cf(f)
            if c is True:
                return tf(f)
            if c is not False:
                truth(c, pos, "'if' condition")
            if ef is not None:
                return ef(f)
            return None

        return ev

    def c_switch(self, n: Switch) -> Ev:
        """Cases match by :func:`~rhai.ops.switch_key` (hashing, as in Rhai); integer ranges
        are tried, in order, only for numbers that no literal case matched."""
        subj, pos = self.cx(n.subject), n.pos
        table: dict[Any, list[tuple[Ev | None, Ev]]] = {}
        ranges: list[tuple[int, int, bool, Ev | None, Ev]] = []
        for case in n.cases:
            cf = self.cx(case.cond) if case.cond is not None else None
            bf = self.cs(case.body)
            for v in case.values:
                table.setdefault(switch_key(v), []).append((cf, bf))
            for lo, hi, incl in case.ranges:
                # a range case also matches an equal range value (Rhai hashes it too)
                table.setdefault(switch_key(Range(lo, hi, incl)), []).append((cf, bf))
                if (lo <= hi) if incl else (lo < hi):  # empty ranges match no number
                    ranges.append((lo, hi, incl, cf, bf))
        default = self.cs(n.default) if n.default is not None else None

        def ev(f: list[Any]) -> Any:
            v = subj(f)
            t = type(v)
            try:
                entries = table.get((t, v) if t is int or t is str else switch_key(v, f[0]))
            except TypeError:  # an unhashable host value matches no case
                entries = None
            if entries:
                for cf, bf in entries:
                    if cf is None or truth(cf(f), pos, "switch case condition"):
                        return bf(f)
            elif ranges and (t is int or t is float):
                for lo, hi, incl, cf, bf in ranges:
                    if lo <= v and (v <= hi if incl else v < hi):
                        if cf is None or truth(cf(f), pos, "switch case condition"):
                            return bf(f)
            if default is not None:
                return default(f)
            return None

        return ev

    def c_while(self, n: While) -> Ev:
        cf, body, pos = self.cx(n.cond), self.cs(n.body), n.pos

        def ev(f: list[Any]) -> Any:
            c = f[0]
            while True:
                c.ops += 1
                if c.ops > c.max_ops:
                    ops_exceeded(c, pos)
                cv = cf(f)
                if cv is not True:
                    if truth(cv, pos, "'while' condition") is False:
                        return None
                try:
                    r = body(f)
                except CtlExc as e:
                    r = e.ctl
                if type(r) is Ctl:
                    if r.kind == BREAK:
                        return r.value
                    if r.kind == RETURN:
                        return r

        return ev

    def c_loop(self, n: Loop) -> Ev:
        body, pos = self.cs(n.body), n.pos

        def ev(f: list[Any]) -> Any:
            c = f[0]
            while True:
                c.ops += 1
                if c.ops > c.max_ops:
                    ops_exceeded(c, pos)
                try:
                    r = body(f)
                except CtlExc as e:
                    r = e.ctl
                if type(r) is Ctl:
                    if r.kind == BREAK:
                        return r.value
                    if r.kind == RETURN:
                        return r

        return ev

    def c_do(self, n: DoLoop) -> Ev:
        cf, body, until, pos = self.cx(n.cond), self.cs(n.body), n.until, n.pos

        def ev(f: list[Any]) -> Any:
            c = f[0]
            while True:
                c.ops += 1
                if c.ops > c.max_ops:
                    ops_exceeded(c, pos)
                try:
                    r = body(f)
                except CtlExc as e:
                    r = e.ctl
                if type(r) is Ctl:
                    if r.kind == BREAK:
                        return r.value
                    if r.kind == RETURN:
                        return r
                if truth(cf(f), pos, "loop condition") is until:
                    return None

        return ev

    def c_for(self, n: For) -> Ev:
        """One loop variable for the whole loop: closures that capture it share it, so they
        all see its last value (as in Rhai)."""
        var, counter = n.var, n.counter
        assert var is not None
        itf, body, pos = self.cx(n.iterable), self.cs(n.body), n.pos
        slot, cslot = var.slot, (counter.slot if counter else None)
        vcell, ccell = var.captured, bool(counter and counter.captured)
        copy = var.mutated

        def ev(f: list[Any]) -> Any:
            c = f[0]
            seq = iterate(itf(f), pos, c)
            f[slot] = None
            if cslot is not None:
                f[cslot] = None
            i = 0
            for x in seq:
                c.ops += 1
                if c.ops > c.max_ops:
                    ops_exceeded(c, pos)
                if copy and type(x) in (list, dict):
                    x = deep_copy(x, c)
                if vcell and type(f[slot]) is Cell:
                    f[slot].v = x
                else:
                    f[slot] = x
                if cslot is not None:
                    if ccell and type(f[cslot]) is Cell:
                        f[cslot].v = i
                    else:
                        f[cslot] = i
                    i += 1
                try:
                    r = body(f)
                except CtlExc as e:
                    r = e.ctl
                if type(r) is Ctl:
                    if r.kind == BREAK:
                        return r.value
                    if r.kind == RETURN:
                        return r
            return None

        return ev

    def c_break(self, n: Break) -> Ev:
        if n.value is None:
            brk = Ctl(BREAK, None)
            return lambda f: brk
        vf = self.cx(n.value)
        return lambda f: Ctl(BREAK, vf(f))

    def c_continue(self, n: Continue) -> Ev:
        cont = Ctl(CONTINUE, None)
        return lambda f: cont

    def c_return(self, n: Return) -> Ev:
        if n.value is None:
            return lambda f: Ctl(RETURN, None)
        vf = self.cx(n.value)
        return lambda f: Ctl(RETURN, vf(f))

    def c_throw(self, n: Throw) -> Ev:
        vf = self.cx(n.value) if n.value is not None else (lambda f: None)
        pos = n.pos

        def ev(f: list[Any]) -> Any:
            v = vf(f)
            text = to_display(v, f[0]) if v is not None else ""
            e = ThrownError(v, f"Runtime error: {text}" if text else "Runtime error", pos)
            e.depth = f[0].depth  # type: ignore[attr-defined]
            raise e

        return ev

    def c_try(self, n: Try) -> Ev:
        """``try``/``catch`` is a statement: its value is the ``try`` block's, or ``()`` once
        the ``catch`` block ran. Limit errors pass through. A ``throw`` of ``()`` directly in
        the ``catch`` block (``throw;``) re-throws the caught error."""
        body, var, catch, pos = self.cs(n.body), n.var, self.cs(n.catch), n.pos

        def ev(f: list[Any]) -> Any:
            try:
                return body(f)
            except LimitExceeded:
                raise
            except (EvalError, Fail) as e:
                err = to_eval_error(e, pos) if isinstance(e, Fail) else e
                if isinstance(err, LimitExceeded):
                    raise err from None
                if var is not None:
                    f[var.slot] = error_value(err)
                depth = f[0].depth
                try:
                    r = catch(f)
                except ThrownError as t:
                    if t.value is None and getattr(t, "depth", -1) == depth:
                        raise rethrown(err, t) from None
                    raise
                return r if type(r) is Ctl else None

        return ev


def rethrown(err: RhaiError, at: ThrownError) -> RhaiError:
    """The caught error again, at the position of the ``throw`` that re-throws it."""
    err.line, err.column = at.line, at.column
    return err

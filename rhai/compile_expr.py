"""Compiling expressions: values, variables, operators, property and index access."""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from .compile_base import CompilerBase, Ev
from .errors import EvalError, Fail, LimitExceeded, suggest, to_eval_error
from .nodes import (
    And,
    ArrayLit,
    Binary,
    Closure,
    Coalesce,
    Const,
    GlobalVar,
    In,
    Index,
    Interp,
    MapLit,
    Or,
    Prop,
    RangeLit,
    This,
    Unary,
    Var,
)  # fmt: skip
from .ops import arith, contains, get_index, get_prop, truth
from .runtime import UNBOUND, check_str
from .values import (
    INT_MAX,
    INT_MIN,
    STR_CHUNK_BITS,
    Cell,
    FnPtr,
    Range,
    charge_str,
    compare,
    deep_copy,
    to_display,
    type_of,
    values_eq,
)  # fmt: skip


def cell_getter(slot: int) -> Ev:
    """Read a captured variable: its shared cell once a closure captured it."""

    def ev(f: list[Any]) -> Any:
        v = f[slot]
        return v.v if type(v) is Cell else v

    return ev


class ExprCompiler(CompilerBase):
    # -- leaves ----------------------------------------------------------------------
    def c_const(self, n: Const) -> Ev:
        v = n.value
        return lambda f: v

    def c_var(self, n: Var) -> Ev:
        v = n.var
        name, pos = n.name, n.pos
        if v is not None:
            return cell_getter(v.slot) if v.captured else itemgetter(v.slot)
        if n.fn_ptr:  # the name of a script function: a function pointer to it
            return lambda f: FnPtr(name, (), None, (), f[0])
        visible = n.visible

        def missing(f: list[Any]) -> Any:
            raise EvalError(f"Variable not found: {name}{suggest(name, visible)}", pos)

        return missing

    def c_global_var(self, n: GlobalVar) -> Ev:
        name, pos = n.name, n.pos

        def ev(f: list[Any]) -> Any:
            g = f[0].globals
            if name in g:
                v = g[name]
                return deep_copy(v, f[0]) if type(v) in (list, dict) else v
            raise EvalError(f"Variable not found: global::{name}", pos)

        return ev

    def c_this(self, n: This) -> Ev:
        pos = n.pos

        def ev(f: list[Any]) -> Any:
            v = f[1]
            if v is UNBOUND:
                raise EvalError("'this' is not bound (call the function as a method)", pos)
            return v

        return ev

    def c_array(self, n: ArrayLit) -> Ev:
        if all(type(x) is Const for x in n.items):
            consts = [x.value for x in n.items]  # type: ignore[attr-defined]
            return lambda f: list(consts)
        items = [self.cx_copy(x) for x in n.items]
        return lambda f: [e(f) for e in items]

    def c_map(self, n: MapLit) -> Ev:
        pairs = [(k, self.cx_copy(x)) for k, x in zip(n.keys, n.values, strict=True)]
        return lambda f: {k: e(f) for k, e in pairs}

    def c_interp(self, n: Interp) -> Ev:
        parts: list[Any] = [p if isinstance(p, str) else self.cx(p) for p in n.parts]
        pos = n.pos

        def ev(f: list[Any]) -> Any:
            c = f[0]
            out = [p if type(p) is str else to_display(p(f), c) for p in parts]
            s = check_str(c, "".join(out), pos)
            charge_str(c, len(s))
            return s

        return ev

    def c_closure(self, n: Closure) -> Ev:
        fd = n.fn
        sf = self.compile_fndef(fd)
        outer = [o.slot for o, _ in fd.captures]
        name = fd.name

        if not outer:
            return lambda f: FnPtr(name, (), sf, (), f[0])

        def ev(f: list[Any]) -> Any:
            cells = []
            for s in outer:
                cell = f[s]
                if type(cell) is not Cell:  # first capture: the variable becomes shared
                    cell = f[s] = Cell(cell)
                cells.append(cell)
            return FnPtr(name, (), sf, tuple(cells), f[0])

        return ev

    def compile_fndef(self, fd: Any, sf: Any = None) -> Any:
        raise NotImplementedError

    # -- operators -------------------------------------------------------------------
    def c_unary(self, n: Unary) -> Ev:
        op, e, pos = n.op, self.cx(n.operand), n.pos
        if op == "!":

            def ev_not(f: list[Any]) -> Any:
                v = e(f)
                if v is True:
                    return False
                if v is False:
                    return True
                raise EvalError(f"Function not found: ! ({type_of(v)})", pos)

            return ev_not

        def ev(f: list[Any]) -> Any:
            v = e(f)
            t = type(v)
            if t is int:
                if op == "+":
                    return v
                if v == INT_MIN:
                    raise EvalError("Arithmetic overflow in unary '-'", pos)
                return -v
            if t is float:
                return v if op == "+" else -v
            raise EvalError(f"Function not found: {op} ({type_of(v)})", pos)

        return ev

    def c_binary(self, n: Binary) -> Ev:
        op, pos = n.op, n.pos
        if op in ("==", "!="):
            return self.c_eq(n)
        if op in ("<", "<=", ">", ">="):
            return self.c_cmp(n)
        lf, rf = self.cx(n.left), self.cx(n.right)
        if op == "+":

            def add(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    r = a + b
                    if INT_MIN <= r <= INT_MAX:
                        return r
                elif type(a) is str and type(b) is str:
                    s = a + b
                    if len(s) <= f[0].max_str:
                        if len(s) >> STR_CHUNK_BITS:
                            charge_str(f[0], len(s))
                        return s
                    return check_str(f[0], s, pos)
                r = arith("+", a, b, pos, f[0])
                if type(r) is str:
                    check_str(f[0], r, pos)
                elif type(r) is list and len(r) > f[0].max_arr:
                    raise LimitExceeded("Size of array exceeds the maximum limit", pos)
                elif type(r) is dict and len(r) > f[0].max_map:
                    raise LimitExceeded("Size of object map exceeds the maximum limit", pos)
                return r

            return add
        if op == "-":

            def sub(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    r = a - b
                    if INT_MIN <= r <= INT_MAX:
                        return r
                return arith("-", a, b, pos, f[0])

            return sub
        if op == "*":

            def mul(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    r = a * b
                    if INT_MIN <= r <= INT_MAX:
                        return r
                return arith("*", a, b, pos)

            return mul

        def ev(f: list[Any]) -> Any:
            return arith(op, lf(f), rf(f), pos)

        return ev

    def c_eq(self, n: Binary) -> Ev:
        neg = n.op == "!="
        left, right = n.left, n.right
        if type(left) is Const and type(right) is not Const:
            left, right = right, left
        if (
            type(right) is Const
            and type(right.value) in (str, int, bool)
            and not (type(right.value) is str and len(right.value) >> STR_CHUNK_BITS)
        ):  # a long string constant takes the charged path below
            k = right.value
            tk = type(k)
            if (type(left) is Prop and type(left.target) is Var and not left.elvis
                    and left.target.var is not None and not left.target.var.captured):  # fmt: skip
                slot, name, ppos = left.target.var.slot, left.name, left.pos

                def eq_prop(f: list[Any]) -> Any:
                    o = f[slot]
                    v = o.get(name) if type(o) is dict else get_prop(o, name, ppos)
                    if type(v) is tk:
                        return (v == k) is not neg
                    return values_eq(v, k) is not neg

                return eq_prop
            lf = self.cx(left)

            def eq_const(f: list[Any]) -> Any:
                v = lf(f)
                if type(v) is tk:
                    return (v == k) is not neg
                return values_eq(v, k) is not neg

            return eq_const
        lf, rf = self.cx(left), self.cx(right)

        def eq(f: list[Any]) -> Any:
            a = lf(f)
            b = rf(f)
            ta = type(a)
            if ta is type(b) and (ta is int or ta is bool or (ta is str and len(a) < 64)):
                return (a == b) is not neg
            return values_eq(a, b, f[0]) is not neg

        return eq

    def c_cmp(self, n: Binary) -> Ev:
        op, pos = n.op, n.pos
        lf, rf = self.cx(n.left), self.cx(n.right)

        def slow(a: Any, b: Any, c: Any) -> bool:
            try:
                return compare(op, a, b, c)
            except Fail as e:
                raise to_eval_error(e, pos) from None

        if op == "<":

            def lt(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    return a < b
                return slow(a, b, f[0])

            return lt
        if op == ">":

            def gt(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    return a > b
                return slow(a, b, f[0])

            return gt
        if op == "<=":

            def le(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    return a <= b
                return slow(a, b, f[0])

            return le

        def ge(f: list[Any]) -> Any:
            a = lf(f)
            b = rf(f)
            if type(a) is int and type(b) is int:
                return a >= b
            return slow(a, b, f[0])

        return ge

    def c_and(self, n: And) -> Ev:
        lf, rf, pos = self.cx(n.left), self.cx(n.right), n.pos

        def ev(f: list[Any]) -> Any:
            a = lf(f)
            if a is False:
                return False
            if a is not True:
                truth(a, pos, "'&&' operator")
            b = rf(f)
            if b is True or b is False:
                return b
            return truth(b, pos, "'&&' operator")

        return ev

    def c_or(self, n: Or) -> Ev:
        lf, rf, pos = self.cx(n.left), self.cx(n.right), n.pos

        def ev(f: list[Any]) -> Any:
            a = lf(f)
            if a is True:
                return True
            if a is not False:
                truth(a, pos, "'||' operator")
            b = rf(f)
            if b is True or b is False:
                return b
            return truth(b, pos, "'||' operator")

        return ev

    def c_coalesce(self, n: Coalesce) -> Ev:
        lf, rf = self.cx(n.left), self.cx(n.right)

        def ev(f: list[Any]) -> Any:
            a = lf(f)
            return rf(f) if a is None else a

        return ev

    def c_in(self, n: In) -> Ev:
        neg, lf, rf, pos = n.negated, self.cx(n.item), self.cx(n.container), n.pos

        def ev(f: list[Any]) -> Any:
            item = lf(f)
            try:
                return contains(rf(f), item, f[0]) is not neg
            except Fail as e:
                raise to_eval_error(e, pos) from None

        return ev

    def c_range(self, n: RangeLit) -> Ev:
        incl, lf, rf, pos = n.inclusive, self.cx(n.start), self.cx(n.end), n.pos

        def ev(f: list[Any]) -> Any:
            a, b = lf(f), rf(f)
            if type(a) is not int or type(b) is not int:
                raise EvalError(f"Range bounds must be integers, not {type_of(a)}, "
                                f"{type_of(b)}", pos)  # fmt: skip
            return Range(a, b, incl)

        return ev

    # -- property and index access ---------------------------------------------------
    def c_prop(self, n: Prop) -> Ev:
        name, of, pos = n.name, self.cx(n.target), n.pos
        if n.elvis:

            def ev_elvis(f: list[Any]) -> Any:
                o = of(f)
                if o is None:
                    return None
                if type(o) is dict:
                    return o.get(name)
                return get_prop(o, name, pos)

            return ev_elvis

        def ev(f: list[Any]) -> Any:
            o = of(f)
            if type(o) is dict:
                return o.get(name)
            return get_prop(o, name, pos)

        return ev

    def c_index(self, n: Index) -> Ev:
        idx, of, elvis, pos = self.cx(n.index), self.cx(n.target), n.elvis, n.pos

        def ev(f: list[Any]) -> Any:
            o = of(f)
            if o is None and elvis:
                return None
            return get_index(o, idx(f), pos)

        return ev

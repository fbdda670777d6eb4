"""Compiling assignments: ``=``, the compound operators, and the setters that write a value
into a variable, ``this``, a property or an index (string characters and slices, bit-fields)."""

from __future__ import annotations

from typing import Any

from .compile_base import CompilerBase, Ev, Setter, copy_wrap, is_lvalue, needs_copy
from .errors import EvalError, LimitExceeded, suggest
from .nodes import FRESH_VALUES, Assign, Index, Node, Prop, This, Var
from .ops import arith, norm_index, set_bits, str_splice
from .runtime import UNBOUND, check_str
from .values import (
    INT_MAX,
    INT_MIN,
    Cell,
    Char,
    Range,
    charge,
    charge_str,
    deep_copy,
    to_display,
    type_of,
)  # fmt: skip


def var_setter(slot: int, captured: bool) -> Setter:
    if captured:

        def set_cell(f: list[Any], val: Any) -> None:
            cur = f[slot]
            if type(cur) is Cell:  # shared with a closure: write through
                cur.v = val
            else:
                f[slot] = val

        return set_cell

    def set_var(f: list[Any], val: Any) -> None:
        f[slot] = val

    return set_var


def set_str_index(s: str, i: Any, val: Any, pos: tuple[int, int]) -> str:
    """``s[i] = val`` / ``s[a..b] = val`` as Rhai 1.25 does them. A negative index is checked
    like a read but (a quirk of Rhai's kept for fidelity) writes at position ``-i``."""
    if type(i) is Range:
        return str_splice(s, i, to_display(val), pos)
    j = norm_index(i, len(s), "String", pos)
    if type(val) not in (Char, str) or len(val) != 1:
        raise EvalError("Only a character can be assigned into a string", pos)
    if i < 0:
        j = -i
    return s[:j] + val + s[j + 1 :] if j < len(s) else s


class AssignCompiler(CompilerBase):
    def setter(self, n: Node) -> Setter:
        pos = n.pos
        if type(n) is Var:
            v = n.var
            if v is None:
                name, visible = n.name, n.visible

                def set_missing(f: list[Any], val: Any) -> None:
                    raise EvalError(f"Variable not found: {name}{suggest(name, visible)}", pos)

                return set_missing
            if v.const:
                cname = v.name

                def set_const(f: list[Any], val: Any) -> None:
                    raise EvalError(f"Cannot modify constant '{cname}'", pos)

                return set_const
            return var_setter(v.slot, v.captured)
        if type(n) is This:

            def set_this(f: list[Any], val: Any) -> None:
                if f[1] is UNBOUND:
                    raise EvalError("'this' is not bound (call the function as a method)", pos)
                f[1] = val

            return set_this
        if type(n) is Prop:
            return self.prop_setter(n)
        if type(n) is Index:
            return self.index_setter(n)

        def bad(f: list[Any], val: Any) -> None:
            raise EvalError("Cannot assign to this expression", pos)

        return bad

    def prop_setter(self, n: Prop) -> Setter:
        name, of, pos = n.name, self.cx(n.target), n.pos

        def set_prop(f: list[Any], val: Any) -> None:
            o = of(f)
            if isinstance(o, dict):
                if name not in o and len(o) >= f[0].max_map:
                    raise LimitExceeded("Size of object map exceeds the maximum limit", pos)
                o[name] = val
                return
            raise EvalError(f"Cannot set property '{name}' on type {type_of(o)}", pos)

        return set_prop

    def index_setter(self, n: Index) -> Setter:
        idxf, of, pos = self.cx(n.index), self.cx(n.target), n.pos
        parent = self.setter(n.target) if is_lvalue(n.target) else None

        def set_index(f: list[Any], val: Any) -> None:
            o = of(f)
            i = idxf(f)
            t = type(o)
            if t is list:
                o[norm_index(i, len(o), "Array", pos)] = val
            elif isinstance(o, dict):
                if type(i) not in (str, Char):
                    raise EvalError("Object map index must be a string", pos)
                if str(i) not in o and len(o) >= f[0].max_map:
                    raise LimitExceeded("Size of object map exceeds the maximum limit", pos)
                o[str(i)] = val
            elif t is str:
                if parent is None:
                    raise EvalError("Cannot assign into a temporary string", pos)
                charge_str(f[0], len(o))
                parent(f, check_str(f[0], set_str_index(o, i, val, pos), pos))
            elif t is int:
                if parent is None:
                    raise EvalError("Cannot assign into a temporary value", pos)
                if type(i) is Range:
                    parent(f, set_bits(o, i, val, pos))
                    return
                if type(val) is not bool:
                    raise EvalError("Only a bool can be assigned into a bit-field", pos)
                j = i + 64 if type(i) is int and i < 0 else i
                if type(j) is not int or not 0 <= j < 64:
                    raise EvalError(f"Bit-field index {i} out of bounds", pos)
                r = (o | (1 << j)) if val else (o & ~(1 << j))
                parent(f, r - (1 << 64) if r > INT_MAX else r)
            else:
                raise EvalError(f"Indexing is not supported for type {type_of(o)}", pos)

        return set_index

    def c_assign(self, n: Assign) -> Ev:
        op, target, value, pos = n.op, n.target, n.value, n.pos
        setter = self.setter(target)
        if type(target) is Var and target.var is None:

            def unknown(f: list[Any]) -> Any:
                setter(f, None)

            return unknown
        vf = self.cx(value)
        tvar = target.var if type(target) is Var else None
        if op == "=" and (needs_copy(tvar, value) or
                          (tvar is None and not isinstance(value, FRESH_VALUES))):  # fmt: skip
            vf = copy_wrap(vf)
        if op == "=":
            if tvar is not None and not tvar.captured and not tvar.const:
                slot = tvar.slot

                def assign_var(f: list[Any]) -> Any:
                    f[slot] = vf(f)

                return assign_var

            def assign(f: list[Any]) -> Any:
                setter(f, vf(f))

            return assign
        return self.op_assign(op, self.cx(target), vf, setter, pos)

    def op_assign(self, op: str, getter: Ev, vf: Ev, setter: Setter, pos: tuple[int, int]) -> Ev:
        bop = op[:-1]

        def ev(f: list[Any]) -> Any:
            cur = getter(f)
            rhs = vf(f)
            c = f[0]
            t = type(cur)
            if bop == "+" and t is list:
                if type(rhs) is list:
                    if len(cur) + len(rhs) > c.max_arr:
                        raise LimitExceeded("Size of array exceeds the maximum limit", pos)
                    charge(c, len(rhs))
                    cur.extend(deep_copy(rhs, c) if rhs is cur else rhs)
                else:
                    if len(cur) + 1 > c.max_arr:
                        raise LimitExceeded("Size of array exceeds the maximum limit", pos)
                    cur.append(deep_copy(rhs, c))
                return None
            if bop == "+" and t is dict and type(rhs) is dict:
                charge(c, len(rhs))
                cur.update(rhs)
                if len(cur) > c.max_map:
                    raise LimitExceeded("Size of object map exceeds the maximum limit", pos)
                return None
            if t is int and type(rhs) is int and bop in ("+", "-"):
                r = cur + rhs if bop == "+" else cur - rhs
                if not INT_MIN <= r <= INT_MAX:
                    raise EvalError(f"Arithmetic overflow in '{op}'", pos)
            elif t is str and bop == "+":
                r = cur + (rhs if type(rhs) is str else ("" if rhs is None else to_display(rhs, c)))
                check_str(c, r, pos)
                charge_str(c, len(r))
            else:
                r = arith(bop, cur, rhs, pos, c)
            setter(f, r)
            return None

        return ev

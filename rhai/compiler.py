"""Compiles the AST into nested Python closures.

Every node becomes a function ``ev(frame) -> value``. A frame is a Python list: slot 0
holds the runtime :class:`~rhai.runtime.Ctx`, slot 1 ``this``, then parameters and
local variables at the slots the parser resolved. Variables captured by closures live
in :class:`~rhai.values.Cell` objects shared between the frames.

Statements may return a :class:`~rhai.runtime.Ctl` (return / break / continue) which
blocks, loops and function calls propagate; when such a statement sits in an expression
position the signal travels as a :class:`~rhai.runtime.CtlExc` exception instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from .errors import EvalError, Fail, LimitExceeded, Pos, RhaiError, ThrownError
from .parser import LITERAL_KINDS, FnDef, Node, VarInfo, suggest
from .runtime import (
    BREAK,
    BUILTINS,
    CONTINUE,
    M_BUILTIN,
    M_HOST,
    M_MISSING,
    RETURN,
    Ctl,
    CtlExc,
    ScriptFn,
    call_builtin,
    call_host,
    call_method,
    call_named,
    check_str,
    method_result,
    ops_exceeded,
    resolve_method,
    run_vfilter,
    to_eval_error,
)  # fmt: skip
from .values import (
    INT_MAX,
    INT_MIN,
    STR_CHUNK_BITS,
    Cell,
    Char,
    FnPtr,
    Range,
    StepRange,
    charge,
    charge_str,
    compare,
    deep_copy,
    float_eq,
    to_display,
    type_of,
    values_eq,
)  # fmt: skip

Ev = Callable[[list[Any]], Any]
Setter = Callable[[list[Any], Any], None]
NUM = (int, float)


# ---------------------------------------------------------------------------
# operators (slow paths; fast paths are inlined in the closures)


def arith(op: str, a: Any, b: Any, pos: Pos, c: Any = None) -> Any:
    try:
        return _arith(op, a, b, c)
    except Fail as e:
        raise to_eval_error(e, pos) from None
    except (OverflowError, ValueError, ZeroDivisionError, MemoryError) as e:
        raise to_eval_error(e, pos) from None


def _overflow(op: str) -> Fail:
    return Fail(f"Arithmetic overflow in '{op}'")


def int_op(op: str, a: int, b: int) -> Any:
    if op == "+":
        r = a + b
    elif op == "-":
        r = a - b
    elif op == "*":
        r = a * b
    elif op == "/":
        if b == 0:
            raise Fail("Division by zero")
        q = abs(a) // abs(b)
        r = q if (a < 0) == (b < 0) else -q
    elif op == "%":
        if b == 0:
            raise Fail("Division by zero (modulo)")
        if b == -1 and a == INT_MIN:
            raise _overflow(op)
        r = abs(a) % abs(b)
        if a < 0:
            r = -r
    elif op == "**":
        if b < 0:
            raise Fail("Integer raised to a negative power")
        if a in (0, 1):
            r = a if b > 0 else 1
        elif a == -1:
            r = 1 if b % 2 == 0 else -1
        elif b > 63:
            raise _overflow(op)
        else:
            r = a**b
    elif op == "<<" or op == ">>":
        left = op == "<<"
        if b < 0:
            left, b = not left, -b
        if b >= 64:
            raise Fail(f"Shift amount out of range in '{op}'")
        if left:
            r = (a << b) & 0xFFFFFFFFFFFFFFFF
            if r > INT_MAX:
                r -= 1 << 64
            return r
        return a >> b
    elif op == "&":
        return a & b
    elif op == "|":
        return a | b
    elif op == "^":
        return a ^ b
    else:
        raise Fail(f"Function not found: {op} (i64, i64)")
    if INT_MIN <= r <= INT_MAX:
        return r
    raise _overflow(op)


def float_op(op: str, x: float, y: float) -> Any:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        if y == 0.0:
            if x == 0.0 or math.isnan(x):
                return math.nan
            return math.copysign(math.inf, x) * math.copysign(1.0, y)
        return x / y
    if op == "%":
        if y == 0.0:
            return math.nan
        return math.fmod(x, y)
    if op == "**":
        try:
            return math.pow(x, y)
        except OverflowError:
            return math.inf
        except ValueError:
            return math.nan
    raise Fail(f"Function not found: {op} (f64, f64)")


def _arith(op: str, a: Any, b: Any, c: Any = None) -> Any:
    ta, tb = type(a), type(b)
    if ta is int and tb is int:
        return int_op(op, a, b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        return float_op(op, float(a), float(b))
    if op == "+":
        if ta is str or tb is str or (ta is Char and tb is Char):
            s = ("" if a is None else to_display(a, c)) + ("" if b is None else to_display(b, c))
            if c is not None:
                charge_str(c, len(s))
            return s
        if ta is list and tb is list:
            if c is not None:
                charge(c, len(a) + len(b))
            return a + b
        if ta is dict and tb is dict:
            if c is not None:
                charge(c, len(a) + len(b))
            r = dict(a)
            r.update(b)
            return r
    if op == "-" and ta is str and tb in (str, Char):
        if c is not None:
            charge_str(c, len(a))
        return a.replace(b, "")
    if ta is bool and tb is bool and op in ("&", "|", "^"):
        if op == "&":
            return a and b
        if op == "|":
            return a or b
        return a != b
    raise Fail(f"Function not found: {op} ({type_of(a)}, {type_of(b)})")


def contains(container: Any, item: Any, c: Any = None) -> bool:
    t = type(container)
    if t is list:
        if c is not None:
            charge(c, len(container))
        return any(values_eq(x, item, c) for x in container)
    if t is str:
        if type(item) in (str, Char):
            if c is not None:
                charge_str(c, len(container))
            return item in container
        raise Fail(f"Function not found: contains (string, {type_of(item)})")
    if t is dict:
        if type(item) in (str, Char):
            return str(item) in container
        raise Fail(f"Function not found: contains (map, {type_of(item)})")
    if t is Range:
        return item in container
    if t is StepRange:
        for x in container:
            if c is not None:
                charge(c, 1)
            if values_eq(x, item):
                return True
        return False
    raise Fail(f"Function not found: in ({type_of(item)}, {type_of(container)})")


def get_prop(o: Any, name: str, pos: Pos) -> Any:
    t = type(o)
    if t is dict:
        return o.get(name)
    if isinstance(o, dict):
        return dict.get(o, name)  # never a subclass's own get (host code)
    if t is str or t is list:
        if name == "len":
            return len(o)
        if name == "is_empty":
            return len(o) == 0
    elif t is FnPtr:
        if name == "name":
            return o.name
        if name == "is_anonymous":
            return o.is_anonymous
    elif t is Range:
        if name == "start":
            return o.start
        if name == "end":
            return o.end
        if name == "is_inclusive":
            return o.inclusive
        if name == "is_exclusive":
            return not o.inclusive
        if name == "is_empty":
            return len(o.py_range()) == 0
    elif t is int and name in ("is_odd", "is_even", "is_zero"):
        return {"is_odd": o % 2 == 1, "is_even": o % 2 == 0, "is_zero": o == 0}[name]
    elif t is float and name in ("floor", "ceiling", "round", "int", "fraction", "is_nan"):
        return _float_prop(o, name)
    raise EvalError(f"Property '{name}' not found for type {type_of(o)}", pos)


def _float_prop(x: float, name: str) -> Any:
    if name == "is_nan":
        return math.isnan(x)
    if math.isnan(x) or math.isinf(x):
        return x
    if name == "floor":
        return float(math.floor(x))
    if name == "ceiling":
        return float(math.ceil(x))
    if name == "round":
        return float(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)
    if name == "int":
        return float(math.trunc(x))
    return x - math.trunc(x)


def norm_index(i: Any, n: int, what: str, pos: Pos) -> int:
    if type(i) is not int:
        raise EvalError(f"{what} index must be an integer, not {type_of(i)}", pos)
    j = i + n if i < 0 else i
    if 0 <= j < n:
        return j
    raise EvalError(f"{what} index {i} out of bounds: only {n} element(s)", pos)


def get_index(o: Any, i: Any, pos: Pos) -> Any:
    t = type(o)
    if t is list:
        if type(i) is int:
            n = len(o)
            if -n <= i < n:
                return o[i]
        return o[norm_index(i, len(o), "Array", pos)]
    if t is dict or isinstance(o, dict):
        if type(i) not in (str, Char):
            raise EvalError(f"Object map index must be a string, not {type_of(i)}", pos)
        return o.get(str(i))
    if t is str:
        return Char(o[norm_index(i, len(o), "String", pos)])
    if t is int:
        if type(i) is not int:
            raise EvalError("Bit-field index must be an integer", pos)
        j = i + 64 if i < 0 else i
        if not 0 <= j < 64:
            raise EvalError(f"Bit-field index {i} out of bounds: only 64 bits", pos)
        return bool((o >> j) & 1)
    if t is tuple:
        return o[norm_index(i, len(o), "Array", pos)]
    raise EvalError(f"Indexing is not supported for type {type_of(o)}", pos)


def truth(v: Any, pos: Pos, what: str = "condition") -> bool:
    if v is True:
        return True
    if v is False:
        return False
    raise EvalError(f"Boolean value expected for the {what}, not {type_of(v)}", pos)


def iterate(v: Any, pos: Pos, c: Any = None) -> Any:
    t = type(v)
    if t is Range:
        return v.py_range()
    if t is list:
        if c is not None:
            charge(c, len(v))  # the snapshot
        return list(v)
    if t is str:
        return map(Char, v)  # lazily: each iteration is charged by the loop
    if t is StepRange:
        return v
    if t is tuple:
        return list(v)
    raise EvalError(f"Iterator not found for type {type_of(v)}", pos)


def error_value(e: RhaiError) -> Any:
    if isinstance(e, ThrownError):
        return e.value
    return {"message": e.message, "line": e.line, "position": e.column}


# ---------------------------------------------------------------------------


def vars_in(n: Any, out: list[VarInfo]) -> list[VarInfo]:
    if isinstance(n, Node):
        if n.k == "var":
            out.append(n.a)
        elif n.k != "closure":
            for x in (n.a, n.b, n.c, n.d):
                vars_in(x, out)
    elif isinstance(n, (list, tuple)):
        for x in n:
            vars_in(x, out)
    return out


def needs_copy(target: VarInfo | None, init: Node) -> bool:
    if init.k in LITERAL_KINDS:
        return False
    if target is not None and target.mutated:
        return True
    return any(v.mutated for v in vars_in(init, []))


def may_ctl(n: Any) -> bool:
    if not isinstance(n, Node):
        return False
    k = n.k
    if k in ("return", "break", "continue"):
        return True
    if k == "block":
        return any(may_ctl(s) for s in n.a)
    if k == "if":
        return may_ctl(n.b) or may_ctl(n.c)
    if k == "switch":
        return any(may_ctl(c[3]) for c in n.b) or may_ctl(n.c)
    if k in ("while", "loop", "do", "for"):
        return may_ctl(n.b) if k != "for" else may_ctl(n.c)
    if k == "try":
        return may_ctl(n.a) or may_ctl(n.c)
    return False


def has_calls(n: Any) -> bool:
    if isinstance(n, Node):
        if n.k in ("call", "method", "return", "throw", "try", "while", "loop", "do", "for",
                   "closure", "name"):  # fmt: skip
            return True
        return any(has_calls(x) for x in (n.a, n.b, n.c, n.d))
    if isinstance(n, (list, tuple)):
        return any(has_calls(x) for x in n)
    return False


class Compiler:
    def __init__(self) -> None:
        self.fns: dict[tuple[str, int], ScriptFn] = {}

    # -- functions -------------------------------------------------------------------
    def compile_fndef(self, fd: FnDef, sf: ScriptFn | None = None) -> ScriptFn:
        if sf is None:
            sf = ScriptFn(fd.name, fd.params, fd.pos)
        scope = fd.scope
        assert scope is not None and fd.body is not None
        sf.nslots = scope.nslots
        sf.pad = [None] * (scope.nslots - 2 - len(fd.params))
        sf.copy_params = [v.slot for v in fd.param_vars if v.mutated]
        sf.cell_params = [v.slot for v in fd.param_vars if v.captured]
        sf.cap_slots = [inner.slot for _, inner in scope.captures]
        sf.may_ctl = may_ctl(fd.body)
        sf.calls = has_calls(fd.body)
        sf.body = self.cs(fd.body)
        if fd.name.startswith("anon$"):
            sf.fast = make_fast_pred(fd)
        fd.compiled = sf
        return sf

    # -- dispatch ----------------------------------------------------------------------
    def cs(self, n: Node) -> Ev:
        """Compile in statement position (may return a Ctl)."""
        return getattr(self, "c_" + n.k)(n)  # type: ignore[no-any-return]

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

    def copy_wrap(self, ev: Ev) -> Ev:
        def cp(f: list[Any]) -> Any:
            v = ev(f)
            t = type(v)
            if t is list or t is dict:
                return deep_copy(v, f[0])
            return v

        return cp

    # -- leaves ------------------------------------------------------------------------
    def c_const(self, n: Node) -> Ev:
        v = n.a
        return lambda f: v

    def c_var(self, n: Node) -> Ev:
        v: VarInfo = n.a
        slot = v.slot
        if v.captured:
            return lambda f: f[slot].v
        return itemgetter(slot)

    def c_this(self, n: Node) -> Ev:
        return itemgetter(1)

    def c_name(self, n: Node) -> Ev:
        name, visible, pos = n.a, n.b, n.pos

        def ev(f: list[Any]) -> Any:
            raise EvalError(f"Variable not found: {name}{suggest(name, visible)}", pos)

        return ev

    def c_array(self, n: Node) -> Ev:
        items = [self.copy_wrap(self.cx(x)) if needs_copy(None, x) else self.cx(x) for x in n.a]
        if all(x.k == "const" for x in n.a):
            consts = [x.a for x in n.a]
            return lambda f: list(consts)
        return lambda f: [e(f) for e in items]

    def c_map(self, n: Node) -> Ev:
        pairs = [
            (k, self.copy_wrap(self.cx(x)) if needs_copy(None, x) else self.cx(x)) for k, x in n.a
        ]
        return lambda f: {k: e(f) for k, e in pairs}

    def c_interp(self, n: Node) -> Ev:
        parts: list[Any] = [p if isinstance(p, str) else self.cx(p) for p in n.a]
        pos = n.pos

        def ev(f: list[Any]) -> Any:
            c = f[0]
            out = [p if type(p) is str else to_display(p(f), c) for p in parts]
            s = check_str(c, "".join(out), pos)
            charge_str(c, len(s))
            return s

        return ev

    def c_closure(self, n: Node) -> Ev:
        fd: FnDef = n.a
        sf = self.compile_fndef(fd)
        assert fd.scope is not None
        outer = [o.slot for o, _ in fd.scope.captures]
        name = fd.name

        if not outer:
            return lambda f: FnPtr(name, (), sf, (), f[0])

        def ev(f: list[Any]) -> Any:
            cells = []
            for s in outer:
                cell = f[s]
                if type(cell) is not Cell:
                    cell = f[s] = Cell(cell)
                cells.append(cell)
            return FnPtr(name, (), sf, tuple(cells), f[0])

        return ev

    # -- operators ---------------------------------------------------------------------
    def c_unary(self, n: Node) -> Ev:
        op, e, pos = n.a, self.cx(n.b), n.pos
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

    def c_bin(self, n: Node) -> Ev:
        op, pos = n.a, n.pos
        if op in ("==", "!="):
            return self.c_eq(n)
        if op in ("<", "<=", ">", ">="):
            return self.c_cmp(n)
        lf, rf = self.cx(n.b), self.cx(n.c)
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

    def c_eq(self, n: Node) -> Ev:
        neg = n.a == "!="
        left, right = n.b, n.c
        if left.k == "const" and right.k != "const":
            left, right = right, left
        if right.k == "const" and type(right.a) in (str, int, bool):
            k = right.a
            tk = type(k)
            if left.k == "prop" and left.b.k == "var" and not left.c and not left.b.a.captured:
                slot, name, ppos = left.b.a.slot, left.a, left.pos

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
            if ta is type(b) and (ta is str or ta is int or ta is bool):
                return (a == b) is not neg
            return values_eq(a, b, f[0]) is not neg

        return eq

    def c_cmp(self, n: Node) -> Ev:
        op, pos = n.a, n.pos
        lf, rf = self.cx(n.b), self.cx(n.c)

        def slow(a: Any, b: Any) -> bool:
            try:
                return compare(op, a, b)
            except Fail as e:
                raise to_eval_error(e, pos) from None

        if op == "<":

            def lt(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    return a < b
                return slow(a, b)

            return lt
        if op == ">":

            def gt(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    return a > b
                return slow(a, b)

            return gt
        if op == "<=":

            def le(f: list[Any]) -> Any:
                a = lf(f)
                b = rf(f)
                if type(a) is int and type(b) is int:
                    return a <= b
                return slow(a, b)

            return le

        def ge(f: list[Any]) -> Any:
            a = lf(f)
            b = rf(f)
            if type(a) is int and type(b) is int:
                return a >= b
            return slow(a, b)

        return ge

    def c_and(self, n: Node) -> Ev:
        lf, rf, pos = self.cx(n.b), self.cx(n.c), n.pos

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

    def c_or(self, n: Node) -> Ev:
        lf, rf, pos = self.cx(n.b), self.cx(n.c), n.pos

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

    def c_coalesce(self, n: Node) -> Ev:
        lf, rf = self.cx(n.b), self.cx(n.c)

        def ev(f: list[Any]) -> Any:
            a = lf(f)
            return rf(f) if a is None else a

        return ev

    def c_in(self, n: Node) -> Ev:
        neg, lf, rf, pos = n.a, self.cx(n.b), self.cx(n.c), n.pos

        def ev(f: list[Any]) -> Any:
            item = lf(f)
            try:
                return contains(rf(f), item, f[0]) is not neg
            except Fail as e:
                raise to_eval_error(e, pos) from None

        return ev

    def c_range(self, n: Node) -> Ev:
        incl, lf, rf, pos = n.a, self.cx(n.b), self.cx(n.c), n.pos

        def ev(f: list[Any]) -> Any:
            a, b = lf(f), rf(f)
            if type(a) is not int or type(b) is not int:
                raise EvalError(f"Range bounds must be integers, not {type_of(a)}, "
                                f"{type_of(b)}", pos)  # fmt: skip
            return Range(a, b, incl)

        return ev

    # -- property and index access --------------------------------------------------
    def c_prop(self, n: Node) -> Ev:
        name, of, elvis, pos = n.a, self.cx(n.b), n.c, n.pos
        if elvis:

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

    def c_index(self, n: Node) -> Ev:
        idx, of, elvis, pos = self.cx(n.a), self.cx(n.b), n.c, n.pos

        def ev(f: list[Any]) -> Any:
            o = of(f)
            if o is None and elvis:
                return None
            return get_index(o, idx(f), pos)

        return ev

    # -- calls -----------------------------------------------------------------------
    def c_call(self, n: Node) -> Ev:
        name, pos = n.a, n.pos
        args = [self.cx(a) for a in n.b]
        if name == "is_def_fn" and len(args) == 2:
            af, bf = args

            def is_def(f: list[Any]) -> Any:
                return (af(f), bf(f)) in f[0].fns

            return is_def
        if not args:
            return lambda f: call_named(f[0], name, [], pos)
        if len(args) == 1:
            a0 = args[0]
            return lambda f: call_named(f[0], name, [a0(f)], pos)
        return lambda f: call_named(f[0], name, [a(f) for a in args], pos)

    def c_method(self, n: Node) -> Ev:
        name, target, elvis, pos = n.a, n.b, n.d, n.pos
        of = self.cx(target)
        args = [self.cx(a) for a in n.c]
        setter = self.setter(target) if self.is_lvalue(target) else None
        nargs = len(args)
        # what the name resolves to is cached per call site (see resolve_method)
        cache: list[tuple[Any, Any, int, Any]] = [(None, None, M_MISSING, None)]
        # `list.filter(|x| <simple predicate>)`: no function pointer is made at all
        fsf: ScriptFn | None = None
        if name == "filter" and nargs == 1 and n.c[0].k == "closure":
            fsf = n.c[0].a.compiled
            if fsf is None or fsf.fast is None:
                fsf = None
        filter_builtin = BUILTINS.get(("filter", 2))

        a0 = args[0] if nargs else None
        one = nargs == 1

        def ev(f: list[Any]) -> Any:
            o = of(f)
            if o is None and elvis:
                return None
            c = f[0]
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
                    except (RhaiError, CtlExc):
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
            return call_method(c, o, name, [a(f) for a in args], pos, setter, f)

        return ev

    def is_lvalue(self, n: Node) -> bool:
        while n.k in ("prop", "index"):
            if n.c:
                return False
            n = n.b
        return n.k == "this" or (n.k == "var" and not n.a.const)

    # -- assignment ------------------------------------------------------------------
    def setter(self, n: Node) -> Setter:
        pos = n.pos
        if n.k == "var":
            v: VarInfo = n.a
            slot = v.slot
            if v.const:

                def set_const(f: list[Any], val: Any) -> None:
                    raise EvalError(f"Cannot modify constant '{v.name}'", pos)

                return set_const
            if v.captured:

                def set_cell(f: list[Any], val: Any) -> None:
                    f[slot].v = val

                return set_cell

            def set_var(f: list[Any], val: Any) -> None:
                f[slot] = val

            return set_var
        if n.k == "this":

            def set_this(f: list[Any], val: Any) -> None:
                f[1] = val

            return set_this
        if n.k == "prop":
            name, of = n.a, self.cx(n.b)

            def set_prop(f: list[Any], val: Any) -> None:
                o = of(f)
                if isinstance(o, dict):
                    if name not in o and len(o) >= f[0].max_map:
                        raise LimitExceeded("Size of object map exceeds the maximum limit", pos)
                    o[name] = val
                    return
                raise EvalError(f"Cannot set property '{name}' on type {type_of(o)}", pos)

            return set_prop
        if n.k == "index":
            idxf, of = self.cx(n.a), self.cx(n.b)
            parent = self.setter(n.b) if self.is_lvalue(n.b) else None

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
                    j = norm_index(i, len(o), "String", pos)
                    if type(val) not in (Char, str) or len(val) != 1:
                        raise EvalError("Only a character can be assigned into a string", pos)
                    if parent is None:
                        raise EvalError("Cannot assign into a temporary string", pos)
                    charge_str(f[0], len(o))
                    parent(f, o[:j] + val + o[j + 1 :])
                elif t is int:
                    if type(val) is not bool:
                        raise EvalError("Only a bool can be assigned into a bit-field", pos)
                    j = i + 64 if type(i) is int and i < 0 else i
                    if type(j) is not int or not 0 <= j < 64:
                        raise EvalError(f"Bit-field index {i} out of bounds", pos)
                    r = (o | (1 << j)) if val else (o & ~(1 << j))
                    if r > INT_MAX:
                        r -= 1 << 64
                    if parent is None:
                        raise EvalError("Cannot assign into a temporary value", pos)
                    parent(f, r)
                else:
                    raise EvalError(f"Indexing is not supported for type {type_of(o)}", pos)

            return set_index

        def bad(f: list[Any], val: Any) -> None:
            raise EvalError("Cannot assign to this expression", pos)

        return bad

    def c_assign(self, n: Node) -> Ev:
        op, target, value, pos = n.a, n.b, n.c, n.pos
        if target.k == "name":
            name, visible = target.a, target.b

            def unknown(f: list[Any]) -> Any:
                raise EvalError(f"Variable not found: {name}{suggest(name, visible)}", pos)

            return unknown
        vf = self.cx(value)
        tvar = target.a if target.k == "var" else None
        if (op == "=" and needs_copy(tvar if target.k == "var" else None, value)) or (
            op == "=" and target.k != "var" and value.k not in LITERAL_KINDS
        ):
            vf = self.copy_wrap(vf)
        setter = self.setter(target)
        if op == "=":
            if target.k == "var" and not target.a.captured:
                slot = target.a.slot

                def assign_var(f: list[Any]) -> Any:
                    f[slot] = vf(f)

                return assign_var

            def assign(f: list[Any]) -> Any:
                setter(f, vf(f))

            return assign
        bop = op[:-1]
        getter = self.cx(target)

        def op_assign(f: list[Any]) -> Any:
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

        return op_assign

    # -- statements ------------------------------------------------------------------
    def c_let(self, n: Node) -> Ev:
        var: VarInfo = n.a
        nlive, pos = n.c, n.pos
        slot = var.slot
        if n.b is None:
            init: Ev = lambda f: None  # noqa: E731
        else:
            init = self.cx(n.b)
            if needs_copy(var, n.b):
                init = self.copy_wrap(init)
        if var.captured:

            def let_cell(f: list[Any]) -> Any:
                if nlive > f[0].max_vars:
                    raise LimitExceeded("Too many variables defined", pos)
                f[slot] = Cell(init(f))

            return let_cell

        def let(f: list[Any]) -> Any:
            if nlive > f[0].max_vars:
                raise LimitExceeded("Too many variables defined", pos)
            f[slot] = init(f)

        return let

    def c_block(self, n: Node) -> Ev:
        stmts = [self.cs(s) for s in n.a]
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

    def c_if(self, n: Node) -> Ev:
        cf, tf, pos = self.cx(n.a), self.cs(n.b), n.pos
        ef = self.cs(n.c) if n.c is not None else None

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

    def c_switch(self, n: Node) -> Ev:
        subj, pos = self.cx(n.a), n.pos
        table: dict[Any, list[tuple[Ev | None, Ev]]] = {}
        ranges: list[tuple[Any, Any, Any, Ev | None, Ev]] = []
        for values, rngs, cond, body in n.b:
            cf = self.cx(cond) if cond is not None else None
            bf = self.cs(body)
            for v in values:
                table.setdefault((type(v), v), []).append((cf, bf))
            for lo, hi, incl in rngs:
                ranges.append((lo, hi, incl, cf, bf))
        default = self.cs(n.c) if n.c is not None else None

        def ev(f: list[Any]) -> Any:
            v = subj(f)
            try:
                entries = table.get((type(v), v))
            except TypeError:
                entries = None
            if entries:
                for cf, bf in entries:
                    if cf is None or truth(cf(f), pos, "switch case condition"):
                        return bf(f)
            for lo, hi, incl, cf, bf in ranges:
                if lo is None or (type(v) is int and lo <= v and (v <= hi if incl else v < hi)):
                    if cf is None or truth(cf(f), pos, "switch case condition"):
                        return bf(f)
            if default is not None:
                return default(f)
            return None

        return ev

    c_match = c_switch

    def loop_ctl(self, r: Ctl) -> tuple[bool, Any]:
        """(stop, value) for a control signal seen by a loop."""
        if r.kind == CONTINUE:
            return False, None
        return True, r

    def c_while(self, n: Node) -> Ev:
        cf, body, pos = self.cx(n.a), self.cs(n.b), n.pos

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

    def c_loop(self, n: Node) -> Ev:
        body, pos = self.cs(n.b), n.pos

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

    def c_do(self, n: Node) -> Ev:
        cf, body, until, pos = self.cx(n.a), self.cs(n.b), n.c, n.pos

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

    def c_for(self, n: Node) -> Ev:
        (var, counter), itf, body, pos = n.a, self.cx(n.b), self.cs(n.c), n.pos
        slot, cslot = var.slot, (counter.slot if counter else None)
        vcell, ccell = var.captured, bool(counter and counter.captured)
        copy = var.mutated

        def ev(f: list[Any]) -> Any:
            c = f[0]
            seq = iterate(itf(f), pos, c)
            if vcell:
                f[slot] = Cell(None)
            if ccell:
                f[cslot] = Cell(None)  # type: ignore[index]
            i = 0
            for x in seq:
                c.ops += 1
                if c.ops > c.max_ops:
                    ops_exceeded(c, pos)
                if copy and type(x) in (list, dict):
                    x = deep_copy(x, c)
                if vcell:
                    f[slot].v = x
                else:
                    f[slot] = x
                if cslot is not None:
                    if ccell:
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

    def c_break(self, n: Node) -> Ev:
        vf = self.cx(n.a) if n.a is not None else None
        if vf is None:
            brk = Ctl(BREAK, None)
            return lambda f: brk
        return lambda f: Ctl(BREAK, vf(f))

    def c_continue(self, n: Node) -> Ev:
        cont = Ctl(CONTINUE, None)
        return lambda f: cont

    def c_return(self, n: Node) -> Ev:
        if n.a is None:
            return lambda f: Ctl(RETURN, None)
        vf = self.cx(n.a)
        return lambda f: Ctl(RETURN, vf(f))

    def c_throw(self, n: Node) -> Ev:
        vf = self.cx(n.a) if n.a is not None else (lambda f: None)
        pos = n.pos

        def ev(f: list[Any]) -> Any:
            v = vf(f)
            raise ThrownError(v, f"Runtime error: {to_display(v, f[0])}", pos)

        return ev

    def c_try(self, n: Node) -> Ev:
        body, var, catch, pos = self.cs(n.a), n.b, self.cs(n.c), n.pos

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
                    val = error_value(err)
                    f[var.slot] = Cell(val) if var.captured else val
                return catch(f)

        return ev


def float_equal(a: float, b: float) -> bool:
    return float_eq(a, b)


__all__ = ["NUM", "Compiler", "arith", "contains", "get_index", "get_prop", "iterate"]


# ---------------------------------------------------------------------------
# Fast predicates: closures like `|w| w.hive == "gaming-pc" && w.load < 4` are also
# compiled to Python source, so that filter/find/some/all over large arrays need a
# single Python call per element. The generated code checks the types it assumes
# and defers to the generic closure (`slow`) otherwise, so the semantics are those
# of the closure itself. Only literals travel as values (never as source text).

_CMP_SWAP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}
_FLOAT_HELPERS = {"<": "_flt", "<=": "_fle", ">": "_fgt", ">=": "_fge", "==": "_feq",
                  "!=": "_fne"}  # fmt: skip


class _PredGen:
    def __init__(self, param: VarInfo) -> None:
        self.param = param
        self.consts: list[Any] = []
        self.props: dict[str, tuple[str, set[type]]] = {}
        self.uses_param = False

    def const(self, v: Any) -> str:
        self.consts.append(v)
        return f"k{len(self.consts) - 1}"

    def prop(self, n: Node, t: type) -> str | None:
        if n.k != "prop" or n.c or n.b.k != "var" or n.b.a is not self.param:
            return None
        name = n.a
        if name not in self.props:
            self.props[name] = (f"v{len(self.props)}", set())
        var, types = self.props[name]
        types.add(t)
        return var

    def expr(self, n: Node) -> str | None:
        if n.k == "and" or n.k == "or":
            a, b = self.expr(n.b), self.expr(n.c)
            if a is None or b is None:
                return None
            return f"({a} {'and' if n.k == 'and' else 'or'} {b})"
        if n.k == "unary" and n.a == "!":
            a = self.expr(n.b)
            return None if a is None else f"(not {a})"
        if n.k == "bin" and n.a in _CMP_SWAP:
            op, left, right = n.a, n.b, n.c
            if left.k == "const" and right.k != "const":
                left, right, op = right, left, _CMP_SWAP[op]
            if right.k != "const":
                return None
            k = right.a
            t = type(k)
            if t not in (str, int, float, bool) or (t is bool and op not in ("==", "!=")):
                return None
            if t is str and op in ("==", "!=") and left.k == "prop" and not left.c:
                # Python's == on any Rhai value against a str is Rhai's ==: no guard needed
                if left.b.k != "var" or left.b.a is not self.param:
                    return None
                self.uses_param = True
                return f"(GET(p, {self.const(left.a)}) {op} {self.const(k)})"
            v = self.prop(left, t)
            if v is None:
                return None
            self.uses_param = True
            kname = self.const(k)
            if t is float:
                return f"{_FLOAT_HELPERS[op]}({v}, {kname})"
            return f"({v} {op} {kname})"
        return None


def make_fast_pred(fd: FnDef) -> FastPred | None:
    """A factory ``make(slow) -> pred`` for simple one-parameter closures, or None."""
    from .values import float_le, float_lt

    if len(fd.param_vars) != 1 or fd.body is None:
        return None
    param = fd.param_vars[0]
    if param.captured or param.mutated:
        return None
    gen = _PredGen(param)
    expr = gen.expr(fd.body)
    if expr is None or not gen.uses_param or len(gen.props) > 8:
        return None
    guards = []
    for name, (var, types) in gen.props.items():
        if len(types) != 1:
            return None
        (t,) = types
        pk = gen.const(name)
        tn = {str: "tstr", int: "tint", float: "tflt", bool: "tbool"}[t]
        guards.append(f"type({var} := GET(p, {pk})) is {tn}")
    kargs = ", ".join(f"k{i}=K[{i}]" for i in range(len(gen.consts)))
    cond = " and ".join(["type(p) is tdict", *guards]).replace("GET(p, ", "p.get(")
    full = expr.replace("GET(p, ", "p.get(")
    # The quick pass reads properties with the unbound dict.get, which raises TypeError for
    # anything that is not a map (without running any host code), and gives up (_Miss) on
    # the first value of an unexpected type; the full pass then decides every item.
    qexpr = expr.replace("GET(p, ", "dget(p, ")
    if guards:
        qcond = " and ".join(guards).replace("GET(p, ", "dget(p, ")
        qexpr = f"({qexpr} if {qcond} else miss())"
    types_args = "tstr=str, tint=int, tflt=float, tbool=bool, tdict=dict"
    src = "\n".join(
        [
            "def make(slow):",
            f"    def pred(p, {kargs}, {types_args}):",
            f"        if {cond}:",
            f"            return {full}",
            "        return slow(p)",
            "    return pred",
            "",
            f"def vfilter(a, slow, {kargs}, {types_args}, dget=dget, miss=miss, Miss=Miss, TE=TE):",
            "    try:",
            f"        return [p for p in a if {qexpr}]",
            "    except (TE, Miss):",
            "        pass",
            f"    return [p for p in a if ({full} if {cond} else slow(p))]",
        ]
    )
    ns: dict[str, Any] = {
        "K": gen.consts,
        "dget": dict.get,
        "miss": _miss,
        "Miss": _Miss,
        "TE": TypeError,
        "_flt": float_lt,
        "_fle": float_le,
        "_fgt": lambda a, b: float_lt(b, a),
        "_fge": lambda a, b: float_le(b, a),
        "_feq": float_eq,
        "_fne": lambda a, b: not float_eq(a, b),
        "__builtins__": {
            "type": type,
            "str": str,
            "int": int,
            "float": float,
            "bool": bool,
            "dict": dict,
        },
    }
    exec(compile(src, "<rhai fast predicate>", "exec"), ns)  # noqa: S102 - generated above
    return FastPred(ns["make"], ns["vfilter"])


class _Miss(Exception):
    """A fast predicate met a value of a type it does not handle inline."""


def _miss() -> bool:
    raise _Miss


class FastPred:
    """``make(slow)`` gives a per-item predicate; ``vfilter(items, slow)`` filters a list."""

    __slots__ = ("make", "vfilter")

    def __init__(self, make: Any, vfilter: Any) -> None:
        self.make = make
        self.vfilter = vfilter

"""The fast paths: cheap ways to call a function pointer many times, and closures compiled
to Python source.

* :func:`bind_fn` gives a plain Python callable for a simple closure (no locals, no calls,
  no control flow), so ``map``/``filter``/``sort`` pay one Python call per item.
* :func:`make_fast_pred` compiles one-parameter closures that compare properties of their
  parameter with literals (``|w| w.hive == "gaming-pc" && w.load < 0.5``) to a Python list
  comprehension. A first pass reads properties with the unbound ``dict.get`` (no host code
  runs for items that are not maps) and gives up on the first item or value of a type it does
  not handle inline; a second, type-guarded pass then falls back to the real closure for
  those. Only literals travel as values, never as source text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import NOPOS, Fail, Pos
from .nodes import And, Binary, Const, FnDef, Node, Or, Prop, Unary, Var, VarInfo
from .runtime import (
    UNBOUND,
    Ctx,
    ScriptFn,
    call_fnptr,
    call_fnptr_this,
    ops_exceeded,
    script_arities,
)  # fmt: skip
from .values import STR_CHUNK_BITS, FnPtr, float_eq, float_le, float_lt, type_of

# ---------------------------------------------------------------------------
# calling function pointers repeatedly


def bind_fn(c: Ctx, fp: Any, nargs: int, pos: Pos = NOPOS) -> Callable[..., Any]:
    """A fast Python callable for calling ``fp`` repeatedly (used by filter, map, ...)."""
    if type(fp) is not FnPtr:
        raise Fail(f"Expecting a function pointer, not {type_of(fp)}")
    sf = fp.closure
    if sf is None or fp.curry or fp.cells or sf.may_ctl or sf.calls or sf.pad or \
            sf.copy_params or sf.nparams != nargs:  # fmt: skip
        return lambda *a: call_fnptr(c, fp, list(a), pos)
    body = sf.body
    if nargs == 1:

        def call1(x: Any) -> Any:
            c.ops += 1
            if c.ops > c.max_ops:
                ops_exceeded(c, pos)
            return body([c, UNBOUND, x])

        return call1
    if nargs == 2:

        def call2(x: Any, y: Any) -> Any:
            c.ops += 1
            if c.ops > c.max_ops:
                ops_exceeded(c, pos)
            return body([c, UNBOUND, x, y])

        return call2
    return lambda *a: call_fnptr(c, fp, list(a), pos)


def item_caller(c: Ctx, fp: Any, name: str, pos: Pos = NOPOS) -> Callable[[Any, int], Any]:
    """``call(item, index)`` for the callbacks of ``map``, ``filter``, ``find``, ``some``...:
    as in Rhai, a function taking one parameter gets the item, two get the item and its index,
    and none gets the item bound to ``this``."""
    if type(fp) is not FnPtr:
        raise Fail(f"Expecting a function pointer, not {type_of(fp)}")
    arities = script_arities(c, fp)
    if not arities or 1 in arities:
        call1 = bind_fn(c, fp, 1, pos)
        return lambda x, i: call1(x)
    if 2 in arities:
        return bind_fn(c, fp, 2, pos)
    if 0 in arities:
        return lambda x, i: call_fnptr_this(c, fp, [], pos, x, None, [])
    n = min(arities)
    raise Fail(f"The function passed to '{name}' takes {n} parameters: expecting 0, 1 or 2")


# ---------------------------------------------------------------------------
# running compiled predicates


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


# ---------------------------------------------------------------------------
# compiling predicates to Python source

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

    def is_param_prop(self, n: Node) -> bool:
        return (type(n) is Prop and not n.elvis and type(n.target) is Var
                and n.target.var is self.param)  # fmt: skip

    def prop(self, n: Node, t: type) -> str | None:
        if not self.is_param_prop(n):
            return None
        name = n.name  # type: ignore[attr-defined]
        if name not in self.props:
            self.props[name] = (f"v{len(self.props)}", set())
        var, types = self.props[name]
        types.add(t)
        return var

    def expr(self, n: Node) -> str | None:
        if type(n) is And or type(n) is Or:
            a, b = self.expr(n.left), self.expr(n.right)
            if a is None or b is None:
                return None
            return f"({a} {'and' if type(n) is And else 'or'} {b})"
        if type(n) is Unary and n.op == "!":
            a = self.expr(n.operand)
            return None if a is None else f"(not {a})"
        if type(n) is Binary and n.op in _CMP_SWAP:
            op, left, right = n.op, n.left, n.right
            if type(left) is Const and type(right) is not Const:
                left, right, op = right, left, _CMP_SWAP[op]
            if type(right) is not Const:
                return None
            k = right.value
            t = type(k)
            if t not in (str, int, float, bool) or (t is bool and op not in ("==", "!=")):
                return None
            if t is str and len(k) >> STR_CHUNK_BITS:
                return None  # a long constant: the charged path compares it
            if t is str and op in ("==", "!="):
                # Python's == on any Rhai value against a str is Rhai's ==: no guard needed
                if not self.is_param_prop(left):
                    return None
                self.uses_param = True
                return f"(GET(p, {self.const(left.name)}) {op} {self.const(k)})"  # type: ignore[attr-defined]
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


__all__ = ["FastPred", "bind_fn", "fast_filter", "fast_pred", "item_caller", "make_fast_pred"]

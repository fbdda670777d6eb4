"""The typed syntax tree the parser builds.

Every node is a dataclass carrying its source ``line`` and ``column`` (1-based). The parser
fills in the syntax; the resolver (:mod:`rhai.resolver`) then fills in the fields marked
*resolved* (variable slots, captures, constants) before the compiler runs. ``KIND`` names the
compiler method for a node (``c_<KIND>``); ``KIDS`` lists the fields holding sub-nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import Pos


class VarInfo:
    """One variable, as the resolver found it: its frame slot, whether it is a constant,
    captured by a closure (at both ends), or ``mutated`` (its array or map may change in
    place, so values assigned to or from it are copied)."""

    __slots__ = ("captured", "const", "mutated", "name", "outer", "pos", "slot")

    def __init__(self, name: str, slot: int, const: bool, pos: Pos,
                 outer: VarInfo | None = None) -> None:  # fmt: skip
        self.name = name
        self.slot = slot
        self.const = const
        self.pos = pos
        self.captured = False
        self.mutated = False
        self.outer = outer  # for a closure's copy of a captured variable: the original

    def __repr__(self) -> str:
        return f"Var({self.name}@{self.slot})"


@dataclass(slots=True, eq=False)
class Node:
    line: int
    column: int
    KIND: ClassVar[str] = "node"
    KIDS: ClassVar[tuple[str, ...]] = ()

    @property
    def pos(self) -> Pos:
        return (self.line, self.column)


def children(n: Node) -> Iterator[Node]:
    """The direct sub-nodes of ``n`` (closure bodies excluded: they are separate functions)."""
    for name in n.KIDS:
        v = getattr(n, name)
        if isinstance(v, Node):
            yield v
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, Node):
                    yield x


# -- leaves ----------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Const(Node):
    value: Any
    KIND: ClassVar[str] = "const"


@dataclass(slots=True, eq=False)
class Var(Node):
    """A name in expression position. Resolved: ``var`` (a variable), or ``fn_ptr`` (the name
    of a script function: the value is a function pointer), or neither (not found; ``visible``
    lists the names in scope for the error's suggestion)."""

    name: str
    var: VarInfo | None = None
    fn_ptr: bool = False
    visible: list[str] = field(default_factory=list)
    KIND: ClassVar[str] = "var"


@dataclass(slots=True, eq=False)
class GlobalVar(Node):
    """``global::NAME``: a constant declared at the top level of the script."""

    name: str
    KIND: ClassVar[str] = "global_var"


@dataclass(slots=True, eq=False)
class This(Node):
    KIND: ClassVar[str] = "this"


@dataclass(slots=True, eq=False)
class ArrayLit(Node):
    items: list[Node]
    KIND: ClassVar[str] = "array"
    KIDS: ClassVar[tuple[str, ...]] = ("items",)


@dataclass(slots=True, eq=False)
class MapLit(Node):
    keys: list[str]
    values: list[Node]
    KIND: ClassVar[str] = "map"
    KIDS: ClassVar[tuple[str, ...]] = ("values",)


@dataclass(slots=True, eq=False)
class Interp(Node):
    """A back-tick string with ``${...}`` parts: text (``str``) and expressions."""

    parts: list[Any]
    KIND: ClassVar[str] = "interp"
    KIDS: ClassVar[tuple[str, ...]] = ("parts",)


@dataclass(slots=True, eq=False)
class Closure(Node):
    fn: FnDef
    KIND: ClassVar[str] = "closure"


# -- operators -------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Unary(Node):
    op: str
    operand: Node
    KIND: ClassVar[str] = "unary"
    KIDS: ClassVar[tuple[str, ...]] = ("operand",)


@dataclass(slots=True, eq=False)
class Binary(Node):
    """Arithmetic, bitwise and comparison operators (not the short-circuiting ones)."""

    op: str
    left: Node
    right: Node
    KIND: ClassVar[str] = "binary"
    KIDS: ClassVar[tuple[str, ...]] = ("left", "right")


@dataclass(slots=True, eq=False)
class And(Node):
    left: Node
    right: Node
    KIND: ClassVar[str] = "and"
    KIDS: ClassVar[tuple[str, ...]] = ("left", "right")


@dataclass(slots=True, eq=False)
class Or(Node):
    left: Node
    right: Node
    KIND: ClassVar[str] = "or"
    KIDS: ClassVar[tuple[str, ...]] = ("left", "right")


@dataclass(slots=True, eq=False)
class Coalesce(Node):
    left: Node
    right: Node
    KIND: ClassVar[str] = "coalesce"
    KIDS: ClassVar[tuple[str, ...]] = ("left", "right")


@dataclass(slots=True, eq=False)
class In(Node):
    negated: bool
    item: Node
    container: Node
    KIND: ClassVar[str] = "in"
    KIDS: ClassVar[tuple[str, ...]] = ("item", "container")


@dataclass(slots=True, eq=False)
class RangeLit(Node):
    inclusive: bool
    start: Node
    end: Node
    KIND: ClassVar[str] = "range"
    KIDS: ClassVar[tuple[str, ...]] = ("start", "end")


# -- access and calls ------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Prop(Node):
    name: str
    target: Node
    elvis: bool = False
    KIND: ClassVar[str] = "prop"
    KIDS: ClassVar[tuple[str, ...]] = ("target",)


@dataclass(slots=True, eq=False)
class Index(Node):
    index: Node
    target: Node
    elvis: bool = False
    KIND: ClassVar[str] = "index"
    KIDS: ClassVar[tuple[str, ...]] = ("index", "target")


@dataclass(slots=True, eq=False)
class Call(Node):
    """``name(args)``. Resolved for ``is_def_var``/``is_shared``: the names then in scope,
    and the captured variable an ``is_shared(var)`` asks about."""

    name: str
    args: list[Node]
    visible: frozenset[str] = frozenset()
    KIND: ClassVar[str] = "call"
    KIDS: ClassVar[tuple[str, ...]] = ("args",)


@dataclass(slots=True, eq=False)
class MethodCall(Node):
    name: str
    target: Node
    args: list[Node]
    elvis: bool = False
    KIND: ClassVar[str] = "method"
    KIDS: ClassVar[tuple[str, ...]] = ("target", "args")


# -- statements (most are expressions too) ---------------------------------------------


@dataclass(slots=True, eq=False)
class Block(Node):
    stmts: list[Node]
    KIND: ClassVar[str] = "block"
    KIDS: ClassVar[tuple[str, ...]] = ("stmts",)


@dataclass(slots=True, eq=False)
class If(Node):
    cond: Node
    then: Node
    other: Node | None = None
    KIND: ClassVar[str] = "if"
    KIDS: ClassVar[tuple[str, ...]] = ("cond", "then", "other")


@dataclass(slots=True, eq=False)
class Case(Node):
    """One ``switch`` arm: literal ``values`` and integer ``ranges`` ``(lo, hi, inclusive)``,
    an optional ``if`` condition, and the body."""

    values: list[Any]
    ranges: list[tuple[int, int, bool]]
    cond: Node | None
    body: Node
    KIND: ClassVar[str] = "case"
    KIDS: ClassVar[tuple[str, ...]] = ("cond", "body")


@dataclass(slots=True, eq=False)
class Switch(Node):
    subject: Node
    cases: list[Case]
    default: Node | None = None
    KIND: ClassVar[str] = "switch"
    KIDS: ClassVar[tuple[str, ...]] = ("subject", "cases", "default")


@dataclass(slots=True, eq=False)
class While(Node):
    cond: Node
    body: Node
    KIND: ClassVar[str] = "while"
    KIDS: ClassVar[tuple[str, ...]] = ("cond", "body")


@dataclass(slots=True, eq=False)
class Loop(Node):
    body: Node
    KIND: ClassVar[str] = "loop"
    KIDS: ClassVar[tuple[str, ...]] = ("body",)


@dataclass(slots=True, eq=False)
class DoLoop(Node):
    cond: Node
    body: Node
    until: bool
    KIND: ClassVar[str] = "do"
    KIDS: ClassVar[tuple[str, ...]] = ("body", "cond")


@dataclass(slots=True, eq=False)
class For(Node):
    """``for name in iterable`` / ``for (name, counter) in iterable``; resolved: the
    variables."""

    name: str
    name_pos: Pos
    counter_name: str | None
    counter_pos: Pos
    iterable: Node
    body: Node
    var: VarInfo | None = None
    counter: VarInfo | None = None
    KIND: ClassVar[str] = "for"
    KIDS: ClassVar[tuple[str, ...]] = ("iterable", "body")


@dataclass(slots=True, eq=False)
class Break(Node):
    value: Node | None = None
    KIND: ClassVar[str] = "break"
    KIDS: ClassVar[tuple[str, ...]] = ("value",)


@dataclass(slots=True, eq=False)
class Continue(Node):
    KIND: ClassVar[str] = "continue"


@dataclass(slots=True, eq=False)
class Return(Node):
    value: Node | None = None
    KIND: ClassVar[str] = "return"
    KIDS: ClassVar[tuple[str, ...]] = ("value",)


@dataclass(slots=True, eq=False)
class Throw(Node):
    """``throw value``; a bare ``throw`` (value ``()``) inside ``catch`` re-throws."""

    value: Node | None = None
    KIND: ClassVar[str] = "throw"
    KIDS: ClassVar[tuple[str, ...]] = ("value",)


@dataclass(slots=True, eq=False)
class Try(Node):
    body: Node
    catch_name: str | None
    catch_pos: Pos
    catch: Node
    var: VarInfo | None = None
    KIND: ClassVar[str] = "try"
    KIDS: ClassVar[tuple[str, ...]] = ("body", "catch")


@dataclass(slots=True, eq=False)
class Let(Node):
    """``let``/``const``; resolved: the variable, the number of variables then live, and
    whether it is a top-level constant that ``global::`` can see."""

    name: str
    name_pos: Pos
    init: Node | None
    const: bool
    var: VarInfo | None = None
    live: int = 0
    is_global: bool = False
    KIND: ClassVar[str] = "let"
    KIDS: ClassVar[tuple[str, ...]] = ("init",)


@dataclass(slots=True, eq=False)
class Assign(Node):
    op: str
    target: Node
    value: Node
    KIND: ClassVar[str] = "assign"
    KIDS: ClassVar[tuple[str, ...]] = ("target", "value")


# -- functions -------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class FnDef(Node):
    """A script function or closure. Resolved: its parameter variables, the number of frame
    slots it needs and the variables it captures (pairs of the outer variable and the
    closure's own); the compiler stores the compiled function in ``compiled``."""

    name: str
    params: list[str]
    param_pos: list[Pos]
    body: Node | None = None
    param_vars: list[VarInfo] = field(default_factory=list)
    nslots: int = 2
    captures: list[tuple[VarInfo, VarInfo]] = field(default_factory=list)
    compiled: Any = None
    KIND: ClassVar[str] = "fndef"

    @property
    def is_closure(self) -> bool:
        return self.name.startswith("anon$")


# expressions that build a fresh value (never an alias of a variable's array or map)
FRESH_VALUES: tuple[type[Node], ...] = (
    Const, ArrayLit, MapLit, Interp, Binary, Unary, Closure, RangeLit,
)  # fmt: skip
# statements that end without ';' (and switch arms without ',')
SELF_TERMINATED: tuple[type[Node], ...] = (
    Block, If, Switch, While, Loop, For, Try,
)  # fmt: skip

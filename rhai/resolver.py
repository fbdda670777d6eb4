"""Name resolution, a pass between parsing and compiling.

It walks the typed tree in source order with the scopes of each function, and:

* gives every variable a frame slot (slot 0 holds the runtime context, slot 1 ``this``) and
  points each :class:`~rhai.nodes.Var` at its :class:`VarInfo`;
* finds the variables closures capture (both ends are marked ``captured``);
* marks variables whose array or map may change in place (``mutated``), so that the compiler
  copies values assigned to or from them (Rhai values are never shared);
* turns the name of a script function used as a value into a function pointer;
* records the names in scope where ``is_def_var`` asks, and the top-level constants that
  ``global::NAME`` reads;
* rejects assignments to constants (a parse error, as in Rhai).
"""

from __future__ import annotations

from collections.abc import Collection

from .errors import ParseError, Pos
from .nodes import (
    Assign,
    Block,
    Call,
    Closure,
    FnDef,
    For,
    Index,
    Let,
    MethodCall,
    Node,
    Prop,
    Try,
    Var,
    VarInfo,
    children,
)  # fmt: skip

# builtin methods that change their target in place (and `call`/`for_each`, which bind `this`)
MUTATING_METHODS = frozenset(
    """push append insert pop shift remove extract retain drain splice clear truncate chop
    reverse sort sort_desc dedup pad trim trim_start trim_end replace make_upper make_lower
    crop mixin fill_with set set_bit set_bits call for_each""".split()
)


class FnScope:
    """Variables of one function body (script function, closure or the main script)."""

    def __init__(self, parent: FnScope | None, is_closure: bool) -> None:
        self.parent = parent
        self.is_closure = is_closure
        self.nslots = 2  # slot 0: runtime context, slot 1: `this`
        self.blocks: list[dict[str, VarInfo]] = [{}]
        self.live = 0
        self.captures: list[tuple[VarInfo, VarInfo]] = []

    def declare(self, name: str, const: bool, pos: Pos) -> VarInfo:
        v = VarInfo(name, self.nslots, const, pos)
        self.nslots += 1
        self.blocks[-1][name] = v
        self.live += 1
        return v

    def find_local(self, name: str) -> VarInfo | None:
        for b in reversed(self.blocks):
            if name in b:
                return b[name]
        return None

    def lookup(self, name: str) -> VarInfo | None:
        v = self.find_local(name)
        if v is not None or not self.is_closure or self.parent is None:
            return v
        outer = self.parent.lookup(name)
        if outer is None:
            return None
        outer.captured = True
        inner = VarInfo(name, self.nslots, outer.const, outer.pos, outer)
        self.nslots += 1
        inner.captured = True
        self.blocks[0][name] = inner
        self.captures.append((outer, inner))
        return inner

    def local_names(self) -> frozenset[str]:
        return frozenset(n for b in self.blocks for n in b)

    def visible_names(self) -> list[str]:
        names: list[str] = []
        s: FnScope | None = self
        while s is not None:
            for b in s.blocks:
                names.extend(b)
            s = s.parent if s.is_closure else None
        return names


def mark_mutated(v: VarInfo | None) -> None:
    while v is not None:
        v.mutated = True
        v = v.outer


def root_of(n: Node) -> Node:
    while type(n) is Prop or type(n) is Index:
        n = n.target  # type: ignore[union-attr]
    return n


class Resolver:
    """Resolves one program. ``known_methods`` are the builtin and host function names that
    do not change their target (any other method name might: script functions bind ``this``,
    map properties may hold closures)."""

    def __init__(self, fn_names: Collection[str], known_methods: Collection[str]) -> None:
        self.fn_names = frozenset(fn_names)
        self.known = frozenset(known_methods)
        self.scope = FnScope(None, False)
        self.main_scope = self.scope
        self.has_closures = False

    def program(self, body: Block, fns: dict[tuple[str, int], FnDef]) -> FnScope:
        """Resolve the script functions and the top-level statements (in the main scope)."""
        for fd in fns.values():
            self.function(fd)
        self.scope = self.main_scope
        for s in body.stmts:
            self.visit(s)
        return self.main_scope

    def function(self, fd: FnDef, parent: FnScope | None = None) -> None:
        saved = self.scope
        self.scope = FnScope(parent, parent is not None)
        fd.param_vars = [
            self.scope.declare(p, False, where)
            for p, where in zip(fd.params, fd.param_pos, strict=True)
        ]
        assert fd.body is not None
        self.visit(fd.body)
        fd.nslots = self.scope.nslots
        fd.captures = self.scope.captures
        self.scope = saved

    # -- the walk ------------------------------------------------------------------
    def visit(self, n: Node) -> None:
        t = type(n)
        if t is Var:
            self.var(n)  # type: ignore[arg-type]
        elif t is Block:
            self.block(n.stmts)  # type: ignore[attr-defined]
        elif t is Let:
            self.let(n)  # type: ignore[arg-type]
        elif t is Assign:
            self.assign(n)  # type: ignore[arg-type]
        elif t is MethodCall:
            self.method(n)  # type: ignore[arg-type]
        elif t is Closure:
            self.has_closures = True
            self.function(n.fn, self.scope)  # type: ignore[attr-defined]
        elif t is For:
            self.for_(n)  # type: ignore[arg-type]
        elif t is Try:
            self.try_(n)  # type: ignore[arg-type]
        elif t is Call:
            self.call(n)  # type: ignore[arg-type]
        else:
            for k in children(n):
                self.visit(k)

    def call(self, n: Call) -> None:
        if n.name == "is_def_var":
            n.visible = self.scope.local_names()
        for a in n.args:
            self.visit(a)
        # `push(a, 1)` changes `a` as `a.push(1)` does (Rhai passes a variable by reference
        # as the first argument of a builtin)
        if n.args and n.name in MUTATING_METHODS:
            root = root_of(n.args[0])
            if type(root) is Var:
                mark_mutated(root.var)

    def var(self, n: Var) -> None:
        v = self.scope.lookup(n.name)
        if v is not None:
            n.var = v
        elif n.name in self.fn_names:
            n.fn_ptr = True
        else:
            n.visible = self.scope.visible_names()

    def block(self, stmts: list[Node]) -> None:
        scope = self.scope
        scope.blocks.append({})
        live = scope.live
        for s in stmts:
            self.visit(s)
        scope.blocks.pop()
        scope.live = live

    def let(self, n: Let) -> None:
        if n.init is not None:
            self.visit(n.init)
        scope = self.scope
        n.var = scope.declare(n.name, n.const, n.name_pos)
        n.live = scope.live
        n.is_global = n.const and scope is self.main_scope and len(scope.blocks) == 1

    def assign(self, n: Assign) -> None:
        self.visit(n.target)
        self.visit(n.value)
        root = root_of(n.target)
        if type(root) is Var and root.var is not None:
            if root.var.const:
                raise ParseError(f"Cannot assign to constant '{root.name}'", n.target.pos)
            if type(n.target) is not Var or n.op != "=":
                mark_mutated(root.var)

    def method(self, n: MethodCall) -> None:
        self.visit(n.target)
        for a in n.args:
            self.visit(a)
        root = root_of(n.target)
        if type(root) is Var and root.var is not None:
            m = n.name
            if m in MUTATING_METHODS or m in self.fn_names or m not in self.known:
                mark_mutated(root.var)

    def for_(self, n: For) -> None:
        self.visit(n.iterable)
        scope = self.scope
        scope.blocks.append({})
        live = scope.live
        n.var = scope.declare(n.name, False, n.name_pos)
        if n.counter_name is not None:
            n.counter = scope.declare(n.counter_name, False, n.counter_pos)
        self.visit(n.body)
        scope.blocks.pop()
        scope.live = live

    def try_(self, n: Try) -> None:
        self.visit(n.body)
        scope = self.scope
        scope.blocks.append({})
        live = scope.live
        if n.catch_name is not None:
            n.var = scope.declare(n.catch_name, False, n.catch_pos)
        self.visit(n.catch)
        scope.blocks.pop()
        scope.live = live


__all__ = ["MUTATING_METHODS", "FnScope", "Resolver", "VarInfo", "mark_mutated", "root_of"]

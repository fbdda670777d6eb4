"""Recursive-descent parser producing a small AST (:class:`Node`) with variables
resolved to frame slots."""

from __future__ import annotations

from typing import Any

from .errors import ParseError, Pos, suggest
from .lexer import Lexer, Tok
from .values import INT_MIN, Char

BINARY_PREC = {
    "||": 30, "|": 30, "^": 30,
    "&&": 60, "&": 60,
    "==": 90, "!=": 90,
    "in": 110, "!in": 110,
    "<": 130, "<=": 130, ">": 130, ">=": 130,
    "??": 135,
    "..": 140, "..=": 140,
    "+": 150, "-": 150,
    "*": 180, "/": 180, "%": 180,
    "**": 190,
    "<<": 210, ">>": 210,
}  # fmt: skip

ASSIGN_OPS = frozenset(["=", "+=", "-=", "*=", "/=", "%=", "**=", "<<=", ">>=", "&=", "|=", "^="])

# builtin methods that change their target in place
MUTATING_METHODS = frozenset(
    """push append insert pop shift remove extract retain drain splice clear truncate chop
    reverse sort sort_desc dedup pad trim trim_start trim_end replace make_upper make_lower
    crop mixin fill_with set set_bit set_bits""".split()
)

LITERAL_KINDS = frozenset(["const", "array", "map", "interp", "bin", "unary", "closure", "range"])


class Node:
    """An AST node; the meaning of ``a``..``d`` depends on ``k`` (see parser)."""

    __slots__ = ("a", "b", "c", "d", "k", "pos")

    def __init__(self, k: str, pos: Pos, a: Any = None, b: Any = None, c: Any = None,
                 d: Any = None) -> None:  # fmt: skip
        self.k = k
        self.pos = pos
        self.a = a
        self.b = b
        self.c = c
        self.d = d

    def __repr__(self) -> str:
        return f"Node({self.k}, {self.a!r}, {self.b!r}, {self.c!r}, {self.d!r})"


class VarInfo:
    __slots__ = ("captured", "const", "mutated", "name", "pos", "slot")

    def __init__(self, name: str, slot: int, const: bool, pos: Pos) -> None:
        self.name = name
        self.slot = slot
        self.const = const
        self.captured = False
        self.mutated = False
        self.pos = pos

    def __repr__(self) -> str:
        return f"Var({self.name}@{self.slot})"


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
        if v is not None:
            return v
        if self.is_closure and self.parent is not None:
            outer = self.parent.lookup(name)
            if outer is None:
                return None
            outer.captured = True
            inner = VarInfo(name, self.nslots, outer.const, outer.pos)
            self.nslots += 1
            inner.captured = True
            self.blocks[0][name] = inner
            self.captures.append((outer, inner))
            return inner
        return None

    def visible_names(self) -> list[str]:
        names: list[str] = []
        s: FnScope | None = self
        while s is not None:
            for b in s.blocks:
                names.extend(b)
            s = s.parent if s.is_closure else None
        return names


class FnDef:
    """A script function or closure definition."""

    def __init__(self, name: str, params: list[str], pos: Pos) -> None:
        self.name = name
        self.params = params
        self.pos = pos
        self.body: Node | None = None
        self.scope: FnScope | None = None
        self.param_vars: list[VarInfo] = []
        self.compiled: Any = None  # set by the compiler

    def __repr__(self) -> str:
        return f"FnDef({self.name}/{len(self.params)})"


class Parser:
    def __init__(self, src: str, max_expr_depth: int = 64, max_string_size: int = 0,
                 max_array_size: int = 0, max_map_size: int = 0) -> None:  # fmt: skip
        self.toks = Lexer(src, max_string_size=max_string_size).tokens()
        self.i = 0
        self.max_depth = max_expr_depth
        self.max_array = max_array_size
        self.max_map = max_map_size
        self.max_string = max_string_size
        self.depth = 0
        self.scope = FnScope(None, False)
        self.loops = 0
        self.fns: dict[tuple[str, int], FnDef] = {}
        self.method_uses: list[tuple[VarInfo, str]] = []

    # -- token helpers -------------------------------------------------------------
    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Tok:
        j = min(self.i + k, len(self.toks) - 1)
        return self.toks[j]

    def next(self) -> Tok:
        t = self.toks[self.i]
        if self.i < len(self.toks) - 1:
            self.i += 1
        return t

    def is_op(self, op: str) -> bool:
        t = self.tok
        return t.kind == "OP" and t.value == op

    def is_kw(self, kw: str) -> bool:
        t = self.tok
        return t.kind == "KW" and t.value == kw

    def error(self, msg: str, tok: Tok | None = None) -> ParseError:
        t = tok or self.tok
        return ParseError(msg, t.pos)

    def expect_op(self, op: str) -> Tok:
        if not self.is_op(op):
            raise self.error(f"Expecting '{op}' but found {self.describe(self.tok)}")
        return self.next()

    def describe(self, t: Tok) -> str:
        if t.kind == "EOF":
            return "end of script"
        if t.kind in ("STR", "INTERP"):
            return "a string"
        return f"'{t.value}'"

    def ident(self) -> Tok:
        t = self.tok
        if t.kind != "IDENT":
            if t.kind == "KW":
                raise self.error(f"'{t.value}' is a keyword and cannot be used as a name")
            raise self.error(f"Expecting a name but found {self.describe(t)}")
        return self.next()

    def enter(self, t: Tok) -> None:
        self.depth += 1
        if self.max_depth and self.depth > self.max_depth:
            raise ParseError(
                f"Expression exceeds the maximum nesting depth ({self.max_depth})", t.pos
            )

    # -- program -------------------------------------------------------------------
    def parse_program(self) -> tuple[Node, FnScope, dict[tuple[str, int], FnDef]]:
        stmts: list[Node] = []
        start = self.tok.pos
        while self.tok.kind != "EOF":
            if self.is_kw("fn") or (self.is_kw("private") and self.peek().value == "fn"):
                self.parse_fn()
                continue
            stmts.append(self.parse_statement())
        names = {k[0] for k in self.fns}
        for var, m in self.method_uses:
            if m in MUTATING_METHODS or m in names:
                var.mutated = True
        return Node("block", start, stmts), self.scope, self.fns

    def parse_fn(self) -> None:
        if self.is_kw("private"):
            self.next()
        fn_tok = self.next()
        name_tok = self.ident()
        name = name_tok.value
        self.expect_op("(")
        params: list[str] = []
        ptoks: list[Tok] = []
        while not self.is_op(")"):
            p = self.ident()
            if p.value in params:
                raise self.error(f"Duplicated parameter '{p.value}'", p)
            params.append(p.value)
            ptoks.append(p)
            if not self.is_op(")"):
                self.expect_op(",")
        self.next()
        key = (name, len(params))
        if key in self.fns:
            raise ParseError(
                f"Function '{name}' with {len(params)} parameter(s) is already defined",
                name_tok.pos,
            )
        fd = FnDef(name, params, fn_tok.pos)
        self.fns[key] = fd
        saved = (self.scope, self.loops)
        self.scope = FnScope(None, False)
        self.loops = 0
        fd.param_vars = [
            self.scope.declare(p, False, t.pos) for p, t in zip(params, ptoks, strict=True)
        ]
        if not self.is_op("{"):
            raise self.error("Expecting '{' to start the function body")
        fd.body = self.parse_block()
        fd.scope = self.scope
        self.scope, self.loops = saved

    # -- statements ----------------------------------------------------------------
    def parse_block(self) -> Node:
        t = self.expect_op("{")
        self.enter(t)
        self.scope.blocks.append({})
        live = self.scope.live
        stmts: list[Node] = []
        while not self.is_op("}"):
            if self.tok.kind == "EOF":
                raise self.error("Expecting '}' to close the block opened at "
                                 f"{t.line}:{t.col}")  # fmt: skip
            if self.is_kw("fn") or self.is_kw("private"):
                raise self.error("Functions can only be defined at global level")
            stmts.append(self.parse_statement())
        self.next()
        self.scope.blocks.pop()
        self.scope.live = live
        self.depth -= 1
        return Node("block", t.pos, stmts)

    def end_statement(self, node: Node) -> Node:
        if self.is_op(";"):
            self.next()
        elif not (self.is_op("}") or self.tok.kind == "EOF"):
            raise self.error(f"Expecting ';' to terminate the statement but found "
                             f"{self.describe(self.tok)}")  # fmt: skip
        return node

    def parse_statement(self) -> Node:
        t = self.tok
        if t.kind == "OP" and t.value == ";":
            self.next()
            return Node("const", t.pos, None)
        if t.kind == "KW":
            kw = t.value
            if kw in ("let", "const"):
                return self.end_statement(self.parse_let())
            if kw == "try":
                node = self.parse_try()
                if self.is_op(";"):
                    self.next()
                return node
            if kw in ("if", "switch", "match", "while", "loop", "for", "do"):
                node = self.parse_primary_kw()
                if kw == "do":
                    return self.end_statement(node)
                if self.is_op(";"):
                    self.next()
                return node
            if kw == "import":
                raise self.error("'import' is not supported: scripts cannot load modules")
            if kw == "export":
                raise self.error("'export' is not supported")
            if kw == "fn":
                raise self.error("Functions can only be defined at global level")
        if t.kind == "OP" and t.value == "{":
            node = self.parse_block()
            if self.is_op(";"):
                self.next()
            return node
        expr = self.parse_expr()
        if self.tok.kind == "OP" and self.tok.value in ASSIGN_OPS:
            op_tok = self.next()
            value = self.parse_expr()
            expr = self.make_assign(op_tok, expr, value)
        return self.end_statement(expr)

    def make_assign(self, op_tok: Tok, target: Node, value: Node) -> Node:
        op = op_tok.value
        root = target
        while root.k in ("prop", "index"):
            if root.c:
                raise ParseError("Cannot assign through '?.' or '?['", op_tok.pos)
            root = root.b
        if target.k not in ("var", "prop", "index", "this", "name"):
            raise ParseError("Cannot assign to this expression", op_tok.pos)
        if root.k == "var":
            v: VarInfo = root.a
            if v.const:
                raise ParseError(f"Cannot assign to constant '{v.name}'", target.pos)
            if target.k != "var" or op != "=":
                v.mutated = True
        elif root.k not in ("this", "name"):
            raise ParseError("Cannot assign to this expression", op_tok.pos)
        return Node("assign", op_tok.pos, op, target, value)

    def parse_let(self) -> Node:
        kw = self.next()
        is_const = kw.value == "const"
        name = self.ident()
        init: Node | None = None
        if self.is_op("="):
            self.next()
            init = self.parse_expr()
        elif is_const:
            raise self.error("Expecting '=' after the constant name")
        var = self.scope.declare(name.value, is_const, name.pos)
        return Node("let", kw.pos, var, init, self.scope.live)

    # -- expressions ---------------------------------------------------------------
    def parse_expr(self) -> Node:
        t = self.tok
        self.enter(t)
        node = self.parse_binary(0)
        self.depth -= 1
        return node

    def binary_op(self) -> str | None:
        t = self.tok
        if t.kind == "OP":
            if t.value in BINARY_PREC:
                return str(t.value)
            if t.value == "!":
                n = self.peek()
                if n.kind == "KW" and n.value == "in":
                    return "!in"
        elif t.kind == "KW" and t.value == "in":
            return "in"
        return None

    def parse_binary(self, min_prec: int) -> Node:
        left = self.parse_unary()
        chain = 0
        while True:
            op = self.binary_op()
            if op is None:
                return left
            prec = BINARY_PREC[op]
            if prec < min_prec:
                return left
            op_tok = self.next()
            if op == "!in":
                self.next()
            chain += 1
            if self.max_depth and self.depth + chain > self.max_depth * 4:
                raise ParseError(
                    f"Expression exceeds the maximum nesting depth ({self.max_depth})",
                    op_tok.pos,
                )
            right = self.parse_binary(prec if op == "**" else prec + 1)
            left = self.make_binary(op, op_tok.pos, left, right)

    def make_binary(self, op: str, pos: Pos, left: Node, right: Node) -> Node:
        if op == "&&":
            return Node("and", pos, None, left, right)
        if op == "||":
            return Node("or", pos, None, left, right)
        if op == "??":
            return Node("coalesce", pos, None, left, right)
        if op in ("in", "!in"):
            return Node("in", pos, op == "!in", left, right)
        if op in ("..", "..="):
            return Node("range", pos, op == "..=", left, right)
        return Node("bin", pos, op, left, right)

    def parse_unary(self) -> Node:
        t = self.tok
        if t.kind == "OP" and t.value in ("-", "+", "!"):
            self.next()
            self.enter(t)
            operand = self.parse_unary()
            self.depth -= 1
            if t.value == "-" and operand.k == "const" and type(operand.a) in (int, float):
                if type(operand.a) is int and operand.a == INT_MIN:
                    raise ParseError("Integer literal too large", t.pos)
                return Node("const", t.pos, -operand.a)
            if t.value == "+" and operand.k == "const" and type(operand.a) in (int, float):
                return operand
            return Node("unary", t.pos, t.value, operand)
        return self.parse_postfix(self.parse_primary())

    def parse_args(self) -> list[Node]:
        self.expect_op("(")
        args: list[Node] = []
        while not self.is_op(")"):
            args.append(self.parse_expr())
            if not self.is_op(")"):
                self.expect_op(",")
        self.next()
        return args

    def parse_postfix(self, node: Node) -> Node:
        while True:
            t = self.tok
            if t.kind != "OP":
                return node
            if t.value in (".", "?."):
                self.next()
                nt = self.tok
                if nt.kind not in ("IDENT", "KW"):
                    raise self.error(f"Expecting a property name but found {self.describe(nt)}")
                self.next()
                name = nt.value
                elvis = t.value == "?."
                if self.is_op("("):
                    args = self.parse_args()
                    root = node
                    while root.k in ("prop", "index"):
                        root = root.b
                    if root.k == "var":
                        self.method_uses.append((root.a, name))
                    node = Node("method", nt.pos, name, node, args, elvis)
                else:
                    if nt.kind == "KW" and name not in ("type",):
                        raise self.error(f"'{name}' is a keyword", nt)
                    node = Node("prop", nt.pos, name, node, elvis)
            elif t.value in ("[", "?["):
                self.next()
                self.enter(t)
                idx = self.parse_expr()
                self.depth -= 1
                self.expect_op("]")
                node = Node("index", t.pos, idx, node, t.value == "?[")
            else:
                return node

    def parse_primary(self) -> Node:
        t = self.tok
        k = t.kind
        if k == "INT" or k == "FLOAT" or k == "STR" or k == "CHAR":
            self.next()
            return Node("const", t.pos, t.value)
        if k == "INTERP":
            self.next()
            return self.parse_interp(t)
        if k == "IDENT":
            return self.parse_ident()
        if k == "KW":
            return self.parse_primary_kw()
        if k == "OP":
            v = t.value
            if v == "(":
                self.next()
                if self.is_op(")"):
                    self.next()
                    return Node("const", t.pos, None)
                e = self.parse_expr()
                self.expect_op(")")
                return e
            if v == "[":
                return self.parse_array()
            if v == "#{":
                return self.parse_map()
            if v == "{":
                return self.parse_block()
            if v in ("|", "||"):
                return self.parse_closure()
        if k == "EOF":
            raise self.error("Unexpected end of script")
        raise self.error(f"Unexpected {self.describe(t)}")

    def parse_interp(self, t: Tok) -> Node:
        parts: list[Any] = []
        for p in t.value:
            if isinstance(p, str):
                if self.max_string and len(p) > self.max_string:
                    raise ParseError("Length of string literal exceeds the maximum limit", t.pos)
                parts.append(p)
                continue
            src, line, col = p
            sub = Lexer(src, line, col, self.max_string).tokens()
            saved = (self.toks, self.i)
            self.toks, self.i = sub, 0
            self.enter(t)
            if self.tok.kind == "EOF":
                raise self.error("Empty interpolation")
            stmts = []
            while self.tok.kind != "EOF":
                stmts.append(self.parse_statement())
            self.depth -= 1
            self.toks, self.i = saved
            parts.append(stmts[0] if len(stmts) == 1 else Node("block", (line, col), stmts))
        if len(parts) == 1 and isinstance(parts[0], str):
            return Node("const", t.pos, parts[0])
        return Node("interp", t.pos, parts)

    def parse_array(self) -> Node:
        t = self.next()
        self.enter(t)
        items: list[Node] = []
        while not self.is_op("]"):
            items.append(self.parse_expr())
            if not self.is_op("]"):
                self.expect_op(",")
        self.next()
        self.depth -= 1
        if self.max_array and len(items) > self.max_array:
            raise ParseError("Size of array literal exceeds the maximum limit", t.pos)
        return Node("array", t.pos, items)

    def parse_map(self) -> Node:
        t = self.next()
        self.enter(t)
        pairs: list[tuple[str, Node]] = []
        seen: set[str] = set()
        while not self.is_op("}"):
            kt = self.tok
            if kt.kind in ("IDENT", "STR", "KW"):
                key = str(kt.value)
                self.next()
            else:
                raise self.error(f"Expecting a property name but found {self.describe(kt)}")
            if key in seen:
                raise ParseError(f"Duplicated property '{key}' in object map literal", kt.pos)
            seen.add(key)
            self.expect_op(":")
            pairs.append((key, self.parse_expr()))
            if not self.is_op("}"):
                self.expect_op(",")
        self.next()
        self.depth -= 1
        if self.max_map and len(pairs) > self.max_map:
            raise ParseError("Size of object map literal exceeds the maximum limit", t.pos)
        return Node("map", t.pos, pairs)

    def parse_closure(self) -> Node:
        t = self.next()
        params: list[str] = []
        ptoks: list[Tok] = []
        if t.value == "|":
            while not self.is_op("|"):
                p = self.ident()
                if p.value in params:
                    raise self.error(f"Duplicated parameter '{p.value}'", p)
                params.append(p.value)
                ptoks.append(p)
                if not self.is_op("|"):
                    self.expect_op(",")
            self.next()
        fd = FnDef(f"anon${t.line}${t.col}", params, t.pos)
        saved = (self.scope, self.loops)
        self.scope = FnScope(saved[0], True)
        self.loops = 0
        fd.param_vars = [
            self.scope.declare(p, False, pt.pos) for p, pt in zip(params, ptoks, strict=True)
        ]
        self.enter(t)
        fd.body = self.parse_expr()
        self.depth -= 1
        fd.scope = self.scope
        self.scope, self.loops = saved
        return Node("closure", t.pos, fd)

    def parse_ident(self) -> Node:
        t = self.next()
        name = t.value
        if self.is_op("("):
            args = self.parse_args()
            return Node("call", t.pos, name, args)
        if self.is_op("::"):
            raise self.error("Modules and namespaces are not supported", t)
        v = self.scope.lookup(name)
        if v is None:
            return Node("name", t.pos, name, self.scope.visible_names())
        return Node("var", t.pos, v)

    def parse_primary_kw(self) -> Node:
        t = self.tok
        kw = t.value
        if kw == "true" or kw == "false":
            self.next()
            return Node("const", t.pos, kw == "true")
        if kw == "this":
            self.next()
            return Node("this", t.pos)
        if kw == "if":
            return self.parse_if()
        if kw in ("switch", "match"):
            return self.parse_switch()
        if kw == "while":
            self.next()
            cond = self.parse_expr()
            body = self.parse_loop_body()
            return Node("while", t.pos, cond, body)
        if kw == "loop":
            self.next()
            return Node("loop", t.pos, None, self.parse_loop_body())
        if kw == "do":
            self.next()
            body = self.parse_loop_body()
            if self.is_kw("while") or self.is_kw("until"):
                until = self.next().value == "until"
            else:
                raise self.error("Expecting 'while' or 'until' after the 'do' block")
            cond = self.parse_expr()
            return Node("do", t.pos, cond, body, until)
        if kw == "for":
            return self.parse_for()
        if kw == "try":
            raise self.error("'try' is a statement and cannot be used as an expression")
        if kw == "return" or kw == "throw":
            self.next()
            val = None
            if not (self.is_op(";") or self.is_op("}") or self.is_op(",")
                    or self.tok.kind == "EOF"):  # fmt: skip
                val = self.parse_expr()
            return Node(kw, t.pos, val)
        if kw == "break" or kw == "continue":
            self.next()
            if not self.loops:
                raise ParseError(f"'{kw}' used outside of a loop", t.pos)
            val = None
            if kw == "break" and not (self.is_op(";") or self.is_op("}") or self.is_op(",")
                                      or self.tok.kind == "EOF"):  # fmt: skip
                val = self.parse_expr()
            return Node(kw, t.pos, val)
        if kw == "fn":
            raise self.error("Functions can only be defined at global level")
        if kw == "let" or kw == "const":
            raise self.error(f"'{kw}' is a statement and cannot be used as an expression")
        if kw == "import":
            raise self.error("'import' is not supported: scripts cannot load modules")
        raise self.error(f"Unexpected keyword '{kw}'")

    def parse_loop_body(self) -> Node:
        if not self.is_op("{"):
            raise self.error("Expecting '{' to start the loop body")
        self.loops += 1
        body = self.parse_block()
        self.loops -= 1
        return body

    def parse_if(self) -> Node:
        t = self.next()
        cond = self.parse_expr()
        if not self.is_op("{"):
            raise self.error("Expecting '{' after the 'if' condition")
        then = self.parse_block()
        other: Node | None = None
        if self.is_kw("else"):
            self.next()
            if self.is_kw("if"):
                self.enter(self.tok)
                other = self.parse_if()
                self.depth -= 1
            elif self.is_op("{"):
                other = self.parse_block()
            else:
                raise self.error("Expecting '{' or 'if' after 'else'")
        return Node("if", t.pos, cond, then, other)

    def parse_for(self) -> Node:
        t = self.next()
        counter_tok: Tok | None = None
        if self.is_op("("):
            self.next()
            var_tok = self.ident()
            self.expect_op(",")
            counter_tok = self.ident()
            self.expect_op(")")
        else:
            var_tok = self.ident()
        if not self.is_kw("in"):
            raise self.error("Expecting 'in' after the loop variable")
        self.next()
        iterable = self.parse_expr()
        self.scope.blocks.append({})
        live = self.scope.live
        var = self.scope.declare(var_tok.value, False, var_tok.pos)
        counter = (
            self.scope.declare(counter_tok.value, False, counter_tok.pos) if counter_tok else None
        )
        body = self.parse_loop_body()
        self.scope.blocks.pop()
        self.scope.live = live
        return Node("for", t.pos, (var, counter), iterable, body)

    def parse_try(self) -> Node:
        t = self.next()
        if not self.is_op("{"):
            raise self.error("Expecting '{' after 'try'")
        body = self.parse_block()
        if not self.is_kw("catch"):
            raise self.error("Expecting 'catch' after the 'try' block")
        self.next()
        self.scope.blocks.append({})
        live = self.scope.live
        var = None
        if self.is_op("("):
            self.next()
            vt = self.ident()
            var = self.scope.declare(vt.value, False, vt.pos)
            self.expect_op(")")
        if not self.is_op("{"):
            raise self.error("Expecting '{' to start the 'catch' block")
        catch = self.parse_block()
        self.scope.blocks.pop()
        self.scope.live = live
        return Node("try", t.pos, body, var, catch)

    def case_literal(self) -> Any:
        t = self.tok
        e = self.parse_unary()
        if e.k != "const":
            raise ParseError("Expecting a literal value as a switch case", t.pos)
        return e.a

    def parse_switch(self) -> Node:
        t = self.next()
        subject = self.parse_expr()
        self.expect_op("{")
        self.enter(t)
        cases: list[tuple[list[Any], list[Any], Node | None, Node]] = []
        default: Node | None = None
        while not self.is_op("}"):
            ct = self.tok
            if default is not None:
                raise self.error("The default case '_' must be the last case")
            values: list[Any] = []
            ranges: list[Any] = []
            is_default = False
            if ct.kind == "IDENT" and ct.value == "_":
                self.next()
                is_default = True
            else:
                while True:
                    v = self.case_literal()
                    if self.is_op("..") or self.is_op("..="):
                        incl = self.next().value == "..="
                        hi = self.case_literal()
                        if type(v) is not int or type(hi) is not int:
                            raise ParseError("Switch ranges must be integer ranges", ct.pos)
                        ranges.append((v, hi, incl))
                    else:
                        if isinstance(v, float) or type(v) in (list, dict):
                            pass
                        values.append(v)
                    if self.is_op("|"):
                        self.next()
                        continue
                    break
            cond = None
            if self.is_kw("if"):
                self.next()
                cond = self.parse_expr()
            self.expect_op("=>")
            if self.is_op("{"):
                body = self.parse_block()
                if self.is_op(","):
                    self.next()
            else:
                body = self.parse_expr()
                if self.is_op(","):
                    self.next()
                elif not self.is_op("}"):
                    raise self.error("Expecting ',' or '}' after the switch case")
            if is_default and cond is None:
                default = body
            else:
                cases.append((values, ranges, cond, body) if not is_default
                             else ([], [(None, None, None)], cond, body))  # fmt: skip
        self.next()
        self.depth -= 1
        return Node("switch", t.pos, subject, cases, default)


__all__ = ["Char", "FnDef", "FnScope", "Node", "Parser", "VarInfo", "suggest"]

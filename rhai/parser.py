"""The statement parser: the whole program, function definitions, statements and the
keyword constructs. It builds the typed tree of :mod:`rhai.nodes` with names left
unresolved; :mod:`rhai.resolver` resolves them."""

from __future__ import annotations

from typing import Any

from .errors import ParseError
from .nodes import (
    SELF_TERMINATED,
    Assign,
    Block,
    Break,
    Case,
    Const,
    Continue,
    DoLoop,
    FnDef,
    For,
    If,
    Index,
    Let,
    Loop,
    Node,
    Prop,
    Return,
    Switch,
    This,
    Throw,
    Try,
    Var,
    While,
)  # fmt: skip
from .parse_expr import ExprParser

# type names a typed method may use for the engine's own names
TYPE_ALIASES = {"int": "i64", "float": "f64"}

ASSIGN_OPS = frozenset(["=", "+=", "-=", "*=", "/=", "%=", "**=", "<<=", ">>=", "&=", "|=", "^="])

Program = tuple[Block, dict[tuple[str, int], FnDef]]


class Parser(ExprParser):
    def __init__(self, src: str, max_expr_depth: int = 64, max_string_size: int = 0,
                 max_array_size: int = 0, max_map_size: int = 0) -> None:  # fmt: skip
        super().__init__(src, max_expr_depth, max_string_size, max_array_size, max_map_size)
        self.fns: dict[tuple[str, int], FnDef] = {}

    # -- program -------------------------------------------------------------------
    def parse_program(self) -> Program:
        """The top-level statements and the script functions (in definition order)."""
        stmts: list[Node] = []
        start = self.tok
        while self.tok.kind != "EOF":
            if self.is_kw("fn") or (self.is_kw("private") and self.peek().value == "fn"):
                self.parse_fn()
                continue
            stmts.append(self.parse_statement())
        return Block(start.line, start.col, stmts), self.fns

    def parse_fn(self) -> None:
        if self.is_kw("private"):
            self.next()
        fn_tok = self.next()
        this_type = ""
        t = self.tok
        if t.kind in ("IDENT", "STR") and self.peek().kind == "OP" and self.peek().value == ".":
            # `fn int.name(...)`, `fn "Type".name(...)`: a method only for `this` of that type
            self.next()
            self.next()
            this_type = TYPE_ALIASES.get(t.value, t.value) + "."
        name_tok = self.ident()
        name = name_tok.value
        self.expect_op("(")
        params, where = self.parse_params(")")
        key = (this_type + name, len(params))
        if key in self.fns:
            raise ParseError(
                f"Function '{key[0]}' with {len(params)} parameter(s) is already defined",
                name_tok.pos,
            )
        fd = FnDef(fn_tok.line, fn_tok.col, name, params, where)
        self.fns[key] = fd
        saved = self.loops
        self.loops = 0
        if not self.is_op("{"):
            raise self.error("Expecting '{' to start the function body")
        fd.body = self.parse_block()
        self.loops = saved

    # -- statements ----------------------------------------------------------------
    def parse_block(self) -> Block:
        t = self.expect_op("{")
        self.enter(t)
        stmts: list[Node] = []
        while not self.is_op("}"):
            if self.tok.kind == "EOF":
                raise self.error("Expecting '}' to close the block opened at "
                                 f"{t.line}:{t.col}")  # fmt: skip
            if self.is_kw("fn") or self.is_kw("private"):
                raise self.error("Functions can only be defined at global level")
            stmts.append(self.parse_statement())
        self.next()
        self.depth -= 1
        return Block(t.line, t.col, stmts)

    def parse_statement(self) -> Node:
        """A statement and its terminator (``;``, optional after blocks and before ``}``)."""
        t = self.tok
        if t.kind == "OP" and t.value == ";":
            self.next()
            return Const(t.line, t.col, None)
        node = self.parse_stmt_body()
        if isinstance(node, SELF_TERMINATED):
            if self.is_op(";"):
                self.next()
            return node
        if self.is_op(";"):
            self.next()
        elif not (self.is_op("}") or self.tok.kind == "EOF"):
            raise self.error(f"Expecting ';' to terminate the statement but found "
                             f"{self.describe(self.tok)}")  # fmt: skip
        return node

    def parse_stmt_body(self) -> Node:
        """A statement without its terminator (also the body of a closure or switch arm)."""
        t = self.tok
        if t.kind == "KW":
            kw = t.value
            if kw in ("let", "const"):
                return self.parse_let()
            if kw == "try":
                return self.parse_try()
            if kw in ("if", "switch", "match", "while", "loop", "for", "do"):
                return self.parse_primary_kw()
            if kw == "import":
                raise self.error("'import' is not supported: scripts cannot load modules")
            if kw == "export":
                raise self.error("'export' is not supported")
            if kw == "fn":
                raise self.error("Functions can only be defined at global level")
        if t.kind == "OP" and t.value == "{":
            return self.parse_block()
        expr = self.parse_expr()
        if self.tok.kind == "OP" and self.tok.value in ASSIGN_OPS:
            op_tok = self.next()
            value = self.parse_expr()
            return make_assign(op_tok.value, op_tok.pos, expr, value)
        return expr

    def parse_let(self) -> Node:
        kw = self.next()
        name = self.ident()
        init: Node | None = None
        if self.is_op("="):
            self.next()
            init = self.parse_expr()
        elif kw.value == "const":
            raise self.error("Expecting '=' after the constant name")
        return Let(kw.line, kw.col, name.value, name.pos, init, kw.value == "const")

    # -- keyword constructs --------------------------------------------------------
    def parse_primary_kw(self) -> Node:
        t = self.tok
        kw = t.value
        if kw == "true" or kw == "false":
            self.next()
            return Const(t.line, t.col, kw == "true")
        if kw == "this":
            self.next()
            return This(t.line, t.col)
        if kw == "global":
            return self.parse_global()
        if kw == "if":
            return self.parse_if()
        if kw in ("switch", "match"):
            return self.parse_switch()
        if kw == "while":
            self.next()
            cond = self.parse_expr()
            return While(t.line, t.col, cond, self.parse_loop_body())
        if kw == "loop":
            self.next()
            return Loop(t.line, t.col, self.parse_loop_body())
        if kw == "do":
            self.next()
            body = self.parse_loop_body()
            if not (self.is_kw("while") or self.is_kw("until")):
                raise self.error("Expecting 'while' or 'until' after the 'do' block")
            until = self.next().value == "until"
            return DoLoop(t.line, t.col, self.parse_expr(), body, until)
        if kw == "for":
            return self.parse_for()
        if kw == "try":
            raise self.error("'try' is a statement and cannot be used as an expression")
        if kw in ("return", "throw", "break", "continue"):
            return self.parse_jump()
        if kw == "fn":
            raise self.error("Functions can only be defined at global level")
        if kw == "let" or kw == "const":
            raise self.error(f"'{kw}' is a statement and cannot be used as an expression")
        if kw == "import":
            raise self.error("'import' is not supported: scripts cannot load modules")
        raise self.error(f"Unexpected keyword '{kw}'")

    def at_end_of_expr(self) -> bool:
        return (self.is_op(";") or self.is_op("}") or self.is_op(",")
                or self.tok.kind == "EOF")  # fmt: skip

    def parse_jump(self) -> Node:
        t = self.next()
        kw = t.value
        if kw in ("break", "continue") and not self.loops:
            raise ParseError(f"'{kw}' used outside of a loop", t.pos)
        if kw == "continue":
            return Continue(t.line, t.col)
        val = None if self.at_end_of_expr() else self.parse_expr()
        if kw == "break":
            return Break(t.line, t.col, val)
        if kw == "return":
            return Return(t.line, t.col, val)
        return Throw(t.line, t.col, val)

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
        return If(t.line, t.col, cond, then, other)

    def parse_for(self) -> Node:
        t = self.next()
        counter = None
        if self.is_op("("):
            self.next()
            var = self.ident()
            self.expect_op(",")
            counter = self.ident()
            self.expect_op(")")
        else:
            var = self.ident()
        if not self.is_kw("in"):
            raise self.error("Expecting 'in' after the loop variable")
        self.next()
        iterable = self.parse_expr()
        body = self.parse_loop_body()
        return For(t.line, t.col, var.value, var.pos, counter.value if counter else None,
                   counter.pos if counter else (0, 0), iterable, body)  # fmt: skip

    def parse_try(self) -> Node:
        t = self.next()
        if not self.is_op("{"):
            raise self.error("Expecting '{' after 'try'")
        body = self.parse_block()
        if not self.is_kw("catch"):
            raise self.error("Expecting 'catch' after the 'try' block")
        self.next()
        name: str | None = None
        where = (0, 0)
        if self.is_op("("):
            self.next()
            vt = self.ident()
            name, where = vt.value, vt.pos
            self.expect_op(")")
        if not self.is_op("{"):
            raise self.error("Expecting '{' to start the 'catch' block")
        return Try(t.line, t.col, body, name, where, self.parse_block())

    def parse_switch(self) -> Node:
        """``switch`` (or the ``match`` alias): literal, ``a | b``, integer range and
        conditional cases, then an optional default ``_`` that must come last."""
        t = self.next()
        subject = self.parse_expr()
        self.expect_op("{")
        self.enter(t)
        cases: list[Case] = []
        default: Node | None = None
        seen_range = False
        while not self.is_op("}"):
            ct = self.tok
            if default is not None:
                raise self.error("The default case '_' must be the last case")
            values: list[Any] = []
            ranges: list[tuple[int, int, bool]] = []
            is_default = ct.kind == "IDENT" and ct.value == "_"
            if is_default:
                self.next()
                if self.is_kw("if"):
                    raise self.error("The default case '_' cannot have a condition")
            else:
                while True:
                    vt = self.tok
                    v = self.case_literal()
                    if self.is_op("..") or self.is_op("..="):
                        incl = self.next().value == "..="
                        hi = self.case_literal()
                        if type(v) is not int or type(hi) is not int:
                            raise ParseError("Switch ranges must be integer ranges", vt.pos)
                        seen_range = True
                        ranges.append((v, hi, incl))
                    else:
                        if seen_range and type(v) in (int, float):
                            raise ParseError("Numeric switch cases cannot follow range cases",
                                             vt.pos)  # fmt: skip
                        values.append(v)
                    if not self.is_op("|"):
                        break
                    self.next()
            cond = None
            if self.is_kw("if"):
                self.next()
                cond = self.parse_expr()
            self.expect_op("=>")
            body = self.parse_stmt_body()
            if self.is_op(","):
                self.next()
            elif not (self.is_op("}") or isinstance(body, SELF_TERMINATED)):
                raise self.error("Expecting ',' or '}' after the switch case")
            if is_default:
                default = body
            else:
                cases.append(Case(ct.line, ct.col, values, ranges, cond, body))
        self.next()
        self.depth -= 1
        return Switch(t.line, t.col, subject, cases, default)


def make_assign(op: str, pos: tuple[int, int], target: Node, value: Node) -> Node:
    """An assignment, checked for a target that can be assigned (the resolver checks
    constants)."""
    root = target
    while type(root) is Prop or type(root) is Index:
        if root.elvis:
            raise ParseError("Cannot assign through '?.' or '?['", pos)
        root = root.target
    if type(root) is not Var and type(root) is not This:
        raise ParseError("Cannot assign to this expression", pos)
    return Assign(pos[0], pos[1], op, target, value)


__all__ = ["ASSIGN_OPS", "Parser", "Program", "make_assign"]

"""Expression parsing (a recursive-descent / precedence-climbing parser over the tokens),
with the token helpers the statement parser (:mod:`rhai.parser`) shares."""

from __future__ import annotations

from typing import Any

from .errors import ParseError
from .lexer import Lexer, Tok
from .nodes import (
    And,
    ArrayLit,
    Binary,
    Block,
    Call,
    Closure,
    Coalesce,
    Const,
    FnDef,
    GlobalVar,
    In,
    Index,
    Interp,
    MapLit,
    MethodCall,
    Node,
    Or,
    Prop,
    RangeLit,
    This,
    Unary,
    Var,
)  # fmt: skip
from .values import INT_MAX, INT_MIN

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


class ParserBase:
    """Token access, errors and the nesting-depth guard."""

    def __init__(self, src: str, max_expr_depth: int = 64, max_string_size: int = 0,
                 max_array_size: int = 0, max_map_size: int = 0) -> None:  # fmt: skip
        self.toks = Lexer(src, max_string_size=max_string_size).tokens()
        self.i = 0
        self.max_depth = max_expr_depth
        self.max_array = max_array_size
        self.max_map = max_map_size
        self.max_string = max_string_size
        self.depth = 0
        self.loops = 0

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

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
        return ParseError(msg, (tok or self.tok).pos)

    def expect_op(self, op: str) -> Tok:
        if not self.is_op(op):
            raise self.error(f"Expecting '{op}' but found {self.describe(self.tok)}")
        return self.next()

    @staticmethod
    def describe(t: Tok) -> str:
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

    # provided by the statement parser
    def parse_block(self) -> Block:
        raise NotImplementedError

    def parse_stmt_body(self) -> Node:
        raise NotImplementedError

    def parse_statement(self) -> Node:
        raise NotImplementedError

    def parse_primary_kw(self) -> Node:
        raise NotImplementedError


class ExprParser(ParserBase):
    def parse_expr(self) -> Node:
        self.enter(self.tok)
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
            if op in ("..", "..=") and self.range_ends_here():
                right: Node = Const(op_tok.line, op_tok.col, INT_MAX)  # `a..`: to the end
            else:
                right = self.parse_binary(prec if op == "**" else prec + 1)
            left = make_binary(op, op_tok, left, right)

    def range_ends_here(self) -> bool:
        """Whether a range operator has no end expression (``s[2..]``, ``crop(s, ..)``)."""
        t = self.tok
        return t.kind == "OP" and t.value in ("]", ")", "}", ",", ";", "=>")

    def parse_unary(self) -> Node:
        t = self.tok
        if t.kind == "OP" and t.value in ("-", "+", "!"):
            self.next()
            self.enter(t)
            operand = self.parse_unary()
            self.depth -= 1
            if t.value != "!" and type(operand) is Const and type(operand.value) in (int, float):
                if t.value == "+":
                    return operand
                if type(operand.value) is int and operand.value == INT_MIN:
                    raise ParseError("Integer literal too large", t.pos)
                return Const(t.line, t.col, -operand.value)
            return Unary(t.line, t.col, t.value, operand)
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
                elvis = t.value == "?."
                if self.is_op("("):
                    node = MethodCall(nt.line, nt.col, nt.value, node, self.parse_args(), elvis)
                else:
                    if nt.kind == "KW":
                        raise self.error(f"'{nt.value}' is a keyword", nt)
                    node = Prop(nt.line, nt.col, nt.value, node, elvis)
            elif t.value in ("[", "?["):
                self.next()
                self.enter(t)
                idx = self.parse_expr()
                self.depth -= 1
                self.expect_op("]")
                node = Index(t.line, t.col, idx, node, t.value == "?[")
            else:
                return node

    def parse_primary(self) -> Node:
        t = self.tok
        k = t.kind
        if k == "INT" or k == "FLOAT" or k == "STR" or k == "CHAR":
            self.next()
            return Const(t.line, t.col, t.value)
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
                    return Const(t.line, t.col, None)
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
            if v in ("..", "..="):  # `..b`: a range from 0
                return Const(t.line, t.col, 0)
        if k == "EOF":
            raise self.error("Unexpected end of script")
        raise self.error(f"Unexpected {self.describe(t)}")

    def parse_ident(self) -> Node:
        t = self.next()
        if self.is_op("("):
            return Call(t.line, t.col, t.value, self.parse_args())
        if self.is_op("::"):
            raise self.error("Modules and namespaces are not supported", t)
        return Var(t.line, t.col, t.value)

    def parse_global(self) -> Node:
        """``global::NAME`` (a top-level constant) or ``global::name(...)``."""
        t = self.next()
        if not self.is_op("::"):
            raise self.error("Expecting '::' after 'global'")
        self.next()
        name = self.ident()
        if self.is_op("("):
            return Call(name.line, name.col, name.value, self.parse_args())
        return GlobalVar(t.line, t.col, name.value)

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
            parts.append(stmts[0] if len(stmts) == 1 else Block(line, col, stmts))
        if len(parts) == 1 and isinstance(parts[0], str):
            return Const(t.line, t.col, parts[0])
        return Interp(t.line, t.col, parts)

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
        return ArrayLit(t.line, t.col, items)

    def parse_map(self) -> Node:
        t = self.next()
        self.enter(t)
        keys: list[str] = []
        values: list[Node] = []
        while not self.is_op("}"):
            kt = self.tok
            if kt.kind not in ("IDENT", "STR", "KW"):
                raise self.error(f"Expecting a property name but found {self.describe(kt)}")
            key = str(kt.value)
            self.next()
            if key in keys:
                raise ParseError(f"Duplicated property '{key}' in object map literal", kt.pos)
            self.expect_op(":")
            keys.append(key)
            values.append(self.parse_expr())
            if not self.is_op("}"):
                self.expect_op(",")
        self.next()
        self.depth -= 1
        if self.max_map and len(keys) > self.max_map:
            raise ParseError("Size of object map literal exceeds the maximum limit", t.pos)
        return MapLit(t.line, t.col, keys, values)

    def parse_params(self, close: str) -> tuple[list[str], list[tuple[int, int]]]:
        params: list[str] = []
        where: list[tuple[int, int]] = []
        while not self.is_op(close):
            p = self.ident()
            if p.value in params:
                raise self.error(f"Duplicated parameter '{p.value}'", p)
            params.append(p.value)
            where.append(p.pos)
            if not self.is_op(close):
                self.expect_op(",")
        self.next()
        return params, where

    def parse_closure(self) -> Node:
        """``|params| statement``: the body is one statement (``|x| this.n += x`` works)."""
        t = self.next()
        params: list[str] = []
        where: list[tuple[int, int]] = []
        if t.value == "|":
            params, where = self.parse_params("|")
        fd = FnDef(t.line, t.col, f"anon${t.line}${t.col}", params, where)
        saved = self.loops
        self.loops = 0
        self.enter(t)
        fd.body = self.parse_stmt_body()
        self.depth -= 1
        self.loops = saved
        return Closure(t.line, t.col, fd)

    def case_literal(self) -> Any:
        """A ``switch`` case: a literal (scalars, ``()``, and arrays/maps of literals)."""
        t = self.tok
        e = self.parse_unary()
        ok, value = literal_value(e)
        if not ok:
            raise ParseError("Expecting a literal value as a switch case", t.pos)
        return value


def literal_value(e: Node) -> tuple[bool, Any]:
    """``(True, value)`` when ``e`` is a literal, else ``(False, None)``."""
    if type(e) is Const:
        return True, e.value
    if type(e) is ArrayLit:
        items = [literal_value(x) for x in e.items]
        if all(ok for ok, _ in items):
            return True, [v for _, v in items]
    elif type(e) is MapLit:
        vals = [literal_value(x) for x in e.values]
        if all(ok for ok, _ in vals):
            return True, {k: v for k, (_, v) in zip(e.keys, vals, strict=True)}
    return False, None


def make_binary(op: str, t: Tok, left: Node, right: Node) -> Node:
    if op == "&&":
        return And(t.line, t.col, left, right)
    if op == "||":
        return Or(t.line, t.col, left, right)
    if op == "??":
        return Coalesce(t.line, t.col, left, right)
    if op in ("in", "!in"):
        return In(t.line, t.col, op == "!in", left, right)
    if op in ("..", "..="):
        return RangeLit(t.line, t.col, op == "..=", left, right)
    return Binary(t.line, t.col, op, left, right)


__all__ = ["BINARY_PREC", "ExprParser", "ParserBase", "This", "literal_value"]

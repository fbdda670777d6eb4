"""Tokenizer for Rhai source text."""

from __future__ import annotations

from typing import Any

from .errors import ParseError
from .values import INT_MAX, Char

KEYWORDS = frozenset(
    """true false let const if else switch match do while until loop for in break continue
    return throw try catch fn private import export as global this""".split()
)

RESERVED = frozenset(
    """var static shared goto case public protected new use with module package super
    spawn thread go sync async await yield default void null nil""".split()
)

# longest first
OPERATORS = [
    "..=", "**=", "<<=", ">>=", "...",
    "==", "!=", "<=", ">=", "&&", "||", "**", "<<", ">>", "+=", "-=", "*=", "/=", "%=",
    "&=", "|=", "^=", "??", "?.", "?[", "..", "::", "=>", "#{",
    "+", "-", "*", "/", "%", "=", "<", ">", "!", "&", "|", "^", "(", ")", "[", "]", "{", "}",
    ",", ";", ".", ":", "?", "@", "#", "$", "~",
]  # fmt: skip

_OP_FIRST: dict[str, list[str]] = {}
for _op in OPERATORS:
    _OP_FIRST.setdefault(_op[0], []).append(_op)


class Tok:
    __slots__ = ("col", "kind", "line", "value")

    def __init__(self, kind: str, value: Any, line: int, col: int) -> None:
        self.kind = kind  # INT FLOAT STR CHAR INTERP IDENT KW OP EOF
        self.value = value
        self.line = line
        self.col = col

    @property
    def pos(self) -> tuple[int, int]:
        return (self.line, self.col)

    def __repr__(self) -> str:
        return f"Tok({self.kind}, {self.value!r}, {self.line}:{self.col})"


class Lexer:
    def __init__(self, src: str, line: int = 1, col: int = 1, max_string_size: int = 0) -> None:
        self.src = src
        self.i = 0
        self.line = line
        self.col = col
        self.max_string_size = max_string_size

    def error(self, msg: str, line: int | None = None, col: int | None = None) -> ParseError:
        return ParseError(msg, (line or self.line, col or self.col))

    def adv(self, n: int = 1) -> None:
        for _ in range(n):
            if self.i < len(self.src):
                if self.src[self.i] == "\n":
                    self.line += 1
                    self.col = 1
                else:
                    self.col += 1
                self.i += 1

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.src[j] if j < len(self.src) else ""

    def tokens(self) -> list[Tok]:
        out: list[Tok] = []
        src = self.src
        n = len(src)
        while True:
            self.skip_ws()
            if self.i >= n:
                out.append(Tok("EOF", None, self.line, self.col))
                return out
            c = src[self.i]
            line, col = self.line, self.col
            if c.isdigit():
                out.append(self.number())
            elif c.isalpha() or c == "_":
                j = self.i
                while j < n and (src[j].isalnum() or src[j] == "_"):
                    j += 1
                word = src[self.i : j]
                self.adv(j - self.i)
                if word in KEYWORDS:
                    out.append(Tok("KW", word, line, col))
                elif word in RESERVED:
                    raise self.error(f"'{word}' is a reserved keyword", line, col)
                else:
                    out.append(Tok("IDENT", word, line, col))
            elif c == '"':
                out.append(Tok("STR", self.string('"'), line, col))
            elif c == "'":
                s = self.string("'")
                if len(s) != 1:
                    raise self.error("Invalid character literal", line, col)
                out.append(Tok("CHAR", Char(s), line, col))
            elif c == "`":
                out.append(Tok("INTERP", self.backtick(), line, col))
            elif c == "#" and self.peek(1) in ('"', "#"):
                out.append(Tok("STR", self.raw_string(), line, col))
            else:
                for op in _OP_FIRST.get(c, ()):
                    if src.startswith(op, self.i):
                        self.adv(len(op))
                        out.append(Tok("OP", op, line, col))
                        break
                else:
                    raise self.error(f"Unexpected character {c!r}", line, col)

    def skip_ws(self) -> None:
        src = self.src
        n = len(src)
        while self.i < n:
            c = src[self.i]
            if c in " \t\r\n\ufeff":
                self.adv()
            elif c == "/" and self.peek(1) == "/":
                while self.i < n and src[self.i] != "\n":
                    self.adv()
            elif c == "/" and self.peek(1) == "*":
                line, col = self.line, self.col
                self.adv(2)
                depth = 1
                while depth:
                    if self.i >= n:
                        raise self.error("Unterminated block comment", line, col)
                    if src.startswith("/*", self.i):
                        depth += 1
                        self.adv(2)
                    elif src.startswith("*/", self.i):
                        depth -= 1
                        self.adv(2)
                    else:
                        self.adv()
            elif c == "#" and self.i == 0 and self.peek(1) == "!":
                while self.i < n and src[self.i] != "\n":
                    self.adv()
            else:
                return

    def number(self) -> Tok:
        src = self.src
        n = len(src)
        line, col = self.line, self.col
        j = self.i
        if src[j] == "0" and j + 1 < n and src[j + 1] in "xXoObB":
            base = {"x": 16, "o": 8, "b": 2}[src[j + 1].lower()]
            k = j + 2
            while k < n and (src[k].isalnum() or src[k] == "_"):
                k += 1
            text = src[j + 2 : k].replace("_", "")
            self.adv(k - j)
            try:
                v = int(text, base)
            except ValueError:
                raise self.error(f"Invalid number literal '{src[j:k]}'", line, col) from None
            if v > INT_MAX:
                raise self.error(f"Integer literal too large: {src[j:k]}", line, col)
            return Tok("INT", v, line, col)
        k = j
        while k < n and (src[k].isdigit() or src[k] == "_"):
            k += 1
        is_float = False
        if k + 1 < n and src[k] == "." and src[k + 1].isdigit():
            is_float = True
            k += 1
            while k < n and (src[k].isdigit() or src[k] == "_"):
                k += 1
        if k < n and src[k] in "eE":
            m = k + 1
            if m < n and src[m] in "+-":
                m += 1
            if m < n and src[m].isdigit():
                is_float = True
                k = m
                while k < n and src[k].isdigit():
                    k += 1
        text = src[j:k].replace("_", "")
        self.adv(k - j)
        if k < n and (src[k].isalpha() or src[k] == "_"):
            raise self.error(f"Invalid number literal '{src[j : k + 1]}'", line, col)
        if is_float:
            return Tok("FLOAT", float(text), line, col)
        v = int(text)
        if v > INT_MAX:
            raise self.error(f"Integer literal too large: {text}", line, col)
        return Tok("INT", v, line, col)

    def escape(self, line: int, col: int) -> str:
        # at the character after the backslash
        c = self.peek()
        simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
        if c in simple:
            self.adv()
            return simple[c]
        if c in "xuU":
            self.adv()
            if c == "u" and self.peek() == "{":
                self.adv()
                j = self.src.find("}", self.i)
                if j < 0 or j - self.i > 8:
                    raise self.error("Invalid escape sequence", line, col)
                digits = self.src[self.i : j]
                self.adv(j - self.i + 1)
            else:
                width = {"x": 2, "u": 4, "U": 8}[c]
                digits = self.src[self.i : self.i + width]
                if len(digits) != width:
                    raise self.error("Invalid escape sequence", line, col)
                self.adv(width)
            try:
                return chr(int(digits, 16))
            except (ValueError, OverflowError):
                raise self.error(f"Invalid escape sequence '\\{c}{digits}'", line, col) from None
        raise self.error(f"Invalid escape sequence '\\{c}'", line, col)

    def string(self, q: str) -> str:
        """A quoted string or character: escapes, ``""`` for a quote, and (in strings) a
        backslash at the end of a line continuing on the next, whose whitespace up to the
        column of the opening quote is skipped."""
        line, col = self.line, self.col
        self.adv()
        parts: list[str] = []
        src = self.src
        n = len(src)
        while True:
            if self.i >= n:
                raise self.error("Unterminated string literal", line, col)
            c = src[self.i]
            if c == q:
                self.adv()
                if self.peek() != q:
                    break
                parts.append(q)  # a doubled quote stands for the quote
                self.adv()
            elif c == "\\":
                self.adv()
                if q == '"' and (self.peek() == "\n" or src.startswith("\r\n", self.i)):
                    self.adv(2 if self.peek() == "\r" else 1)
                    while self.peek() in (" ", "\t") and self.col <= col:
                        self.adv()
                    continue
                parts.append(self.escape(line, col))
            elif c == "\r" and self.peek(1) == "\n":
                self.adv()
            elif c == "\n":
                raise self.error("Unterminated string literal", line, col)
            else:
                parts.append(c)
                self.adv()
            if self.max_string_size and len(parts) > self.max_string_size:
                raise ParseError("Length of string literal exceeds the maximum limit", (line, col))
        return "".join(parts)

    def raw_string(self) -> str:
        """``#"..."#``, ``##"..."##``...: everything up to a quote followed by as many ``#``
        as opened the string, verbatim (no escapes, line breaks kept)."""
        line, col = self.line, self.col
        src = self.src
        j = self.i
        while j < len(src) and src[j] == "#":
            j += 1
        hashes = j - self.i
        if j >= len(src) or src[j] != '"':
            raise self.error("Expecting '\"' to start a raw string", line, col)
        end = src.find('"' + "#" * hashes, j + 1)
        if end < 0:
            raise self.error("Unterminated raw string literal", line, col)
        text = src[j + 1 : end]
        if self.max_string_size and len(text) > self.max_string_size:
            raise ParseError("Length of string literal exceeds the maximum limit", (line, col))
        self.adv(end + 1 + hashes - self.i)
        return text

    def backtick(self) -> list[Any]:
        """A literal string; returns parts: str, or (src, line, col) for ``${...}``. A line
        break right after the opening back-tick is skipped; a doubled back-tick stands for
        one."""
        line, col = self.line, self.col
        self.adv()
        if self.peek() == "\n":
            self.adv()
        elif self.src.startswith("\r\n", self.i):
            self.adv(2)
        parts: list[Any] = []
        buf: list[str] = []
        src = self.src
        n = len(src)
        while True:
            if self.i >= n:
                raise self.error("Unterminated string literal", line, col)
            c = src[self.i]
            if c == "`":
                self.adv()
                if self.peek() != "`":
                    break
                buf.append("`")
                self.adv()
                continue
            if c == "\r" and self.peek(1) == "\n":
                self.adv()
                continue
            if c == "$" and self.peek(1) == "{":
                if buf:
                    parts.append("".join(buf))
                    buf = []
                self.adv(2)
                eline, ecol = self.line, self.col
                start = self.i
                depth = 1
                while True:
                    if self.i >= n:
                        raise self.error("Unterminated string interpolation", eline, ecol)
                    ch = src[self.i]
                    if ch in "\"'":
                        self.string(ch)
                        continue
                    if ch == "`":
                        self.backtick()
                        continue
                    if ch == "{":
                        depth += 1
                    elif ch == "}":
                        depth -= 1
                        if depth == 0:
                            break
                    self.adv()
                parts.append((src[start : self.i], eline, ecol))
                self.adv()
            else:
                buf.append(c)
                self.adv()
        if buf or not parts:
            parts.append("".join(buf))
        return parts

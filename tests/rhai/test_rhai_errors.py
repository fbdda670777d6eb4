"""Every error the engine raises carries its position as data: ``.line`` and ``.column``
(1-based; 0 when there is no position), so host code never parses messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import rhai


def positions(err: rhai.RhaiError) -> tuple[int, int]:
    assert type(err.line) is int and type(err.column) is int
    assert err.pos == (err.line, err.column)
    assert str(err) == f"{err.line}:{err.column}: {err.message}"
    return err.line, err.column


@pytest.mark.parametrize(
    ("src", "kind", "where"),
    [
        ("let x = ;", rhai.ParseError, (1, 9)),
        ('let x = 1;\nx = #"open', rhai.ParseError, (2, 5)),
        ("const c = 1;\nc = 2;", rhai.ParseError, (2, 1)),
        ("fn f() {}\nfn f() {}", rhai.ParseError, (2, 4)),
        ("let a = [1];\n  a[3]", rhai.EvalError, (2, 4)),
        ("let s = 0;\nfor i in 0..10 {\n  s += 1 / (i - 3);\n}", rhai.EvalError, (3, 10)),
        ("fn f() { this }\n\nf()", rhai.EvalError, (1, 10)),
        ("let x = 1;\n  throw x;", rhai.ThrownError, (2, 3)),
        ("loop {}", rhai.LimitExceeded, (1, 1)),
        ('let x = "a";\nx.no_such()', rhai.EvalError, (2, 3)),
    ],
)
def test_errors_have_line_and_column(src: str, kind: type[rhai.RhaiError],
                                     where: tuple[int, int]) -> None:  # fmt: skip
    e = rhai.Engine(max_operations=10_000)
    with pytest.raises(kind) as info:
        e.eval(src)
    assert positions(info.value) == where


def test_errors_from_call_fn_and_hosts_have_positions() -> None:
    e = rhai.Engine()

    def boom(x: Any) -> Any:
        raise ValueError("nope")

    e.register_fn("boom", boom)
    ast = e.compile("fn f(x) {\n  boom(x)\n}")
    with pytest.raises(rhai.EvalError) as info:
        e.call_fn(ast, "f", 1)
    assert positions(info.value) == (2, 3)
    with pytest.raises(rhai.EvalError) as missing:
        e.call_fn(ast, "nope")
    assert positions(missing.value) == (0, 0)  # no script position for a host-side call


@pytest.mark.parametrize(
    "make",
    [
        lambda: rhai.ParseError("p", (3, 4)),
        lambda: rhai.EvalError("e", (3, 4)),
        lambda: rhai.LimitExceeded("l", (3, 4)),
        lambda: rhai.ThrownError(1, "t", (3, 4)),
    ],
)
def test_every_error_type_keeps_its_position(make: Callable[[], rhai.RhaiError]) -> None:
    assert positions(make()) == (3, 4)

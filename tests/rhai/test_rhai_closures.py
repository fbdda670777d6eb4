"""Closures (Rhai Book: Closures): captured variables are shared, not copied.

Expected values are those of Rhai 1.25 (the Book, and Rhai's tests/closures.rs).
"""

from __future__ import annotations

from typing import Any

import pytest

import rhai


@pytest.mark.parametrize(
    ("src", "want"),
    [
        # the closure sees later changes of the variable...
        ("let x = 1; let f = |y| x + y; x = 40; f.call(2)", 42),
        # ...and its body can change it (the body is a statement)
        ("let a = 41; let foo = |x| { a += x }; foo.call(1); a", 42),
        ("let a = 21; let f = |x| a += x; f.call(a); a", 42),
        ("let x = 1; let f = || x += 1; f.call(); f.call(); x", 3),
        ("let x = 1; let f = || x = x * 10; f.call(); x", 10),
        (
            "let count = 0; let inc = || { count += 1; count }; inc.call(); inc.call(); inc.call()",
            3,
        ),
        ("let a = [1]; let f = || a.push(2); f.call(); a", [1, 2]),
        ("let m = #{n: 1}; let f = || m.n = 5; f.call(); m.n", 5),
        # through nested closures
        ("let x = 1; let f = || { let g = || x += 5; g.call(); x }; f.call() + x", 12),
        (
            "let a = 40; let f = |x| { let f = |x| { let f = |x| a + 1 + x; f.call(x) }; "
            "f.call(x) }; f.call(1)",
            42,
        ),
        # a closure keeps its variables alive after the function that made it returns
        ("fn make() { let n = 0; || { n += 1; n } } let c = make(); c.call(); c.call()", 2),
        (
            "fn counter(start) { || { start += 1; start } } "
            "let c = counter(10); c.call(); c.call()",
            12,
        ),
        # a loop variable is one variable: every closure sees its last value (Book)
        ("let list = []; for i in 0..3 { list.push(|| i); } list.map(|f| f.call())", [2, 2, 2]),
        # a `let` inside the loop is a new variable each time
        (
            "let list = []; for i in 0..3 { let j = i; list.push(|| j); } list.map(|f| f.call())",
            [0, 1, 2],
        ),
        # shadowing after the closure was made does not change what it captured
        ("let x = 1; let f = || x; let x = 2; f.call()", 1),
        # copies made from a shared variable are not shared
        ("let a = [1]; let f = || a.push(2); let b = a; f.call(); [a, b]", [[1, 2], [1]]),
        ("let x = #{}; x.a = || x; type_of(x.a)", "Fn"),
    ],
)
def test_captured_variables_are_shared(src: str, want: Any) -> None:
    assert rhai.Engine().eval(src) == want


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("let x = 1; x.is_shared()", False),
        ("let a = 41; let foo = |x| { a += x }; a.is_shared()", True),
        ("let a = 41; let foo = |x| { a += x }; is_shared(a)", True),
        # a variable becomes shared when a closure captures it (Book)
        (
            "let x = 1; let before = x.is_shared(); let f = |y| x + y; [before, x.is_shared()]",
            [False, True],
        ),
    ],
)
def test_is_shared(src: str, want: Any) -> None:
    assert rhai.Engine().eval(src) == want


def test_closure_returned_to_host_keeps_its_variables() -> None:
    e = rhai.Engine()
    f = e.eval('let test = "hello"; |x| test + x')
    assert f(42) == "hello42"

"""The `global` module, `is_def_var`/`is_def_fn` and `exit` (Rhai Book: Automatic Global
Module, Variables, Functions), with the values Rhai 1.25 gives (its tests/functions.rs,
tests/var_scope.rs and the lang_core package)."""

from __future__ import annotations

from typing import Any

import pytest

import rhai


def run(src: str) -> Any:
    return rhai.Engine().eval(src)


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("const ANSWER = 42; fn foo() { global::ANSWER } foo()", 42),
        ("const CONSTANT = 42; fn foo(x) { x *= global::CONSTANT; x } foo(2)", 84),
        ("const M = #{ a: [1, 2] }; fn f() { global::M.a[1] } f()", 2),
        # a closure reads it too
        ("const K = 2; let f = |x| x * global::K; f.call(21)", 42),
        # the function gets a copy: changing it changes nothing global
        ("const A = [1]; fn f() { let a = global::A; a.push(2); a.len() } f() + f()", 4),
    ],
)
def test_global_constants(src: str, want: Any) -> None:
    assert run(src) == want


@pytest.mark.parametrize(
    "src",
    [
        # only constants declared at the top level (not in a block) are global
        "fn foo() { global::ANSWER } { const ANSWER = 42; foo() }",
        "const CONSTANT = 42; { const INNER = 0; } fn foo(x) { x * global::INNER } foo(1)",
        # variables are not
        "let X = 1; fn f() { global::X } f()",
        # nor constants not yet declared when the function runs
        "fn f() { global::C } f(); const C = 1;",
    ],
)
def test_global_only_sees_top_level_constants(src: str) -> None:
    with pytest.raises(rhai.EvalError, match="Variable not found: global::"):
        run(src)


def test_global_constants_in_call_fn() -> None:
    e = rhai.Engine()
    ast = e.compile("const LIMIT = 10; fn should_admit(task, q) { q <= global::LIMIT }")
    assert e.call_fn(ast, "should_admit", {}, 3) is True
    assert e.call_fn(ast, "should_admit", {}, 11) is False


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ('let x = 42; is_def_var("x")', True),
        ('let x = 42; is_def_var("y")', False),
        ('const x = 42; is_def_var("x")', True),
        ('{ let y = 2; } is_def_var("y")', False),
        ('let y = 0; { let z = is_def_var("y"); z }', True),
        ('fn f(a) { [is_def_var("a"), is_def_var("x")] } let x = 1; f(1)', [True, False]),
        ('let name = "x"; let x = 1; is_def_var(name)', True),
        ('let n = "q"; is_def_var(n + "")', False),
        ('fn foo(x) { x + 1 } is_def_fn("foo", 1)', True),
        ('fn foo(x) { x + 1 } is_def_fn("bar", 1)', False),
        ('fn foo(x) { x + 1 } is_def_fn("foo", 0)', False),
    ],
)
def test_is_def_var_and_is_def_fn(src: str, want: Any) -> None:
    assert run(src) == want


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("let x = 1; exit(42); x", 42),
        ("exit(); 5", None),
        ("fn f() { exit(7); } f(); 9", 7),
        ("for i in 0..10 { if i == 3 { exit(i * 10); } } -1", 30),
        ("[1, 2, 3].map(|x| if x == 2 { exit(x) } else { x })", 2),
        # exit is not an error: try/catch does not stop it
        ("let r = 0; try { exit(3); } catch { r = 1 } r", 3),
        ('exit("done")', "done"),
    ],
)
def test_exit(src: str, want: Any) -> None:
    assert run(src) == want


def test_exit_in_call_fn_is_the_answer() -> None:
    e = rhai.Engine()
    ast = e.compile("fn f(x) { exit(x + 1); 0 }")
    assert e.call_fn(ast, "f", 41) == 42

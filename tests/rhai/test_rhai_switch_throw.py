"""`switch` (Rhai Book: Switch Statement, Switch Expression) and `throw`/`try`/`catch`
(Throw Exception on Error, Catch Exceptions), with the values Rhai 1.25 gives (its
tests/switch.rs and tests/throw.rs)."""

from __future__ import annotations

from typing import Any

import pytest

import rhai


def run(src: str) -> Any:
    return rhai.Engine().eval(src)


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("switch 2 { 1 => (), 2 => 'a', 42 => true }", rhai.Char("a")),
        ("switch 3 { 1 => (), 2 => 'a', 42 => true }", None),
        ("switch 3 { 1 => (), 2 => 'a', 42 => true, _ => 123 }", 123),
        ("let x = 42; switch 2 { 1 => (), 2 if x < 40 => 'a', 42 => true, _ => 123 }", 123),
        (
            "let x = 42; switch 2 { 1 => (), 2 if x > 40 => 'a', 42 => true, _ => 123 }",
            rhai.Char("a"),
        ),
        ("let x = 42; switch x { 1 | 2 | 3 | 5..50 | 'x' | true => 123, 'z' => 'a' }", 123),
        ("let x = 42; switch x { 1 => 123, 42 => { x / 2 }, _ => 999 }", 21),
        ("let y = [1, 2, 3]; switch y { 42 => 1, true => 2, [1, 2, 3] => 3, _ => 9 }", 3),
        (
            "let y = #{a:1, b:true, c:'x'}; "
            "switch y { 42 => 1, true => 2, #{b:true, c:'x', a:1} => 3, _ => 9 }",
            3,
        ),
        # a range case also matches an equal range value
        ("let x = 1..42; switch x { 1 => (), 2 => 'a', 1..42 => true }", True),
        ("switch 42 { 42 => 123, 42 => 999 }", 123),
        # conditions: cases are tried in order, the first whose condition holds wins
        ("let x = 42; switch x / 2 { 21 if x > 40 => 1, 0 if x < 100 => 2, 1 => 3, _ => 9 }", 1),
        ("let x = 42; switch x / 2 { 21 if x < 40 => 1, 0 if x < 100 => 2, 1 => 3, _ => 9 }", 9),
        (
            "let x = 42; switch x { 42 if x < 40 => 1, 42 if x > 40 => 7, 0 if x < 100 => 2, "
            "1 => 3, 42 if x == 10 => 10, _ => 9 }",
            7,
        ),
        # ranges: tried in order, after the literal cases, for numbers only
        (
            "let x = 42; switch x { 10..20 => (), 20..=42 => 'a', 25..45 => 'z', 30..100 => true }",
            rhai.Char("a"),
        ),
        (
            "let x = 42; switch x { 10..20 => (), 20..=42 if x < 40 => 'a', 25..45 => 'z', "
            "30..100 => true }",
            rhai.Char("z"),
        ),
        (
            "let x = 42; switch x { 42 => 'x', 10..20 => (), 20..=42 => 'a', 25..45 => 'z', "
            "30..100 => true, 'w' => true }",
            rhai.Char("x"),
        ),
        ("let x = 42; switch 5 { 'a' => true, 0..10 if x+2==1+2 => 42, _ => 'x' }", rhai.Char("x")),
        (
            "let x = 42; switch x { 1 => 1, 2 => 2, 0..50 if x > 45 => 3, -10..20 => 4, "
            "0..50 => 5, 30..100 => 6, _ => 7 }",
            5,
        ),
        ('switch 10 { 1..10 => "a", 10..=20 => "b", _ => "c" }', "b"),
        ('switch 25 { 1..10 => "a", 10..=20 => "b", _ => "c" }', "c"),
        ('switch 4.5 { 1..10 => "a", _ => "c" }', "a"),
        ('switch "5" { 1..10 => "a", _ => "c" }', "c"),
        # a literal case that matched but whose condition failed skips the ranges
        ('let x = 3; switch x { 3 if false => "a", 0..10 => "range", _ => "def" }', "def"),
        # matching is by value and type: 1.0 is not 1
        ('switch 1.0 { 1 => "int", _ => "other" }', "other"),
        ('switch 1 { 1.0 => "float", _ => "other" }', "other"),
        # arms may be statements
        ("let y = 0; switch 1 { 1 => y = 5, _ => y = 9 } y", 5),
        ("let v = switch 3 { 1 => 10, 3 => { let t = 4; t * 10 } _ => 0 }; v", 40),
        # the `match` alias of this dialect
        ('match "b" { "a" => 1, "b" | "c" => 2, _ => 3 }', 2),
    ],
)
def test_switch(src: str, want: Any) -> None:
    got = run(src)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("let x = 1; switch x { _ => 123, 1 => 42 }", "must be the last"),
        ("let x = 1; switch x { 1 => 123, _ if true => 42 }", "cannot have a condition"),
        (
            "let x = 1; switch x { 10..20 => (), 20..=42 => 'a', 42 => 'x', 30..100 => true }",
            "cannot follow range cases",
        ),
        ("let x = 1; switch x { 10..20 => (), 42.0 => 'x' }", "cannot follow range cases"),
        ("let x = 1; switch x { y => 1 }", "literal"),
    ],
)
def test_switch_parse_errors(src: str, message: str) -> None:
    with pytest.raises(rhai.ParseError, match=message) as info:
        rhai.Engine().compile(src)
    assert info.value.line == 1 and info.value.column > 1


@pytest.mark.parametrize(
    ("src", "want"),
    [
        ("try { throw 42; } catch (x) { return x; }", 42),
        ("try { throw 42; } catch { return 123; }", 123),
        ("let x = 42; try { let y = 123; print(x/0); } catch { x = 0 } x", 0),
        ("fn foo(x) { try { throw 42; } catch (x) { return x; } } foo(0)", 42),
        ("let err = 123; let x = 0; try { throw 42; } catch(err) { return err; }", 42),
        ("let err = 123; let x = 0; try { throw 42; } catch(err) { print(err); } err", 123),
        # the value of try/catch is the try block's, or () once the catch block ran
        ("fn f() { try { 1 } catch { 2 } } f()", 1),
        ("fn f() { try { throw 1; } catch { 2 } } f()", None),
        # re-throwing from catch: `throw e` throws the value again, `throw;` re-throws the error
        ("let r = 0; try { try { throw 42; } catch (e) { throw e; } } catch (e2) { r = e2 } r", 42),
        ("let r = 0; try { try { throw 42; } catch { throw; } } catch (e2) { r = e2 } r", 42),
        ('let r = 0; try { try { throw "x"; } catch (e) { throw; } } catch (e2) { r = e2 } r', "x"),
        (
            "let r = 0; try { try { let z = 1 / 0; } catch (e) { throw; } } catch (e2) "
            "{ r = type_of(e2) } r",
            "map",
        ),
        (
            "let r = 0; try { try { let z = 1 / 0; } catch { throw (); } } catch (e2) "
            '{ r = e2.message.contains("zero") } r',
            True,
        ),
        # an error in the catch block replaces the one caught
        ('let r = 0; try { try { throw 1; } catch { throw "die"; } } catch (e) { r = e } r', "die"),
    ],
)
def test_throw_and_catch(src: str, want: Any) -> None:
    assert run(src) == want


def test_rethrown_error_escapes_as_the_original() -> None:
    with pytest.raises(rhai.EvalError) as info:
        run("try { 42/0; } catch { throw; }")
    assert not isinstance(info.value, rhai.ThrownError)
    assert "Division by zero" in info.value.message
    with pytest.raises(rhai.ThrownError) as thrown:
        run("try {\n  throw #{code: 1};\n} catch {\n  throw;\n}")
    assert thrown.value.value == {"code": 1}
    assert (thrown.value.line, thrown.value.column) == (4, 3)  # where it was re-thrown


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("throw", "Runtime error"),
        ("throw 42", "Runtime error: 42"),
        ('if true { throw "bad" }', "Runtime error: bad"),
    ],
)
def test_uncaught_throw(src: str, message: str) -> None:
    with pytest.raises(rhai.ThrownError) as info:
        run(src)
    assert info.value.message == message
    assert info.value.line == 1 and info.value.column >= 1


@pytest.mark.parametrize(
    ("src", "fields"),
    [
        ("1 / 0", {"error": "ErrorArithmetic", "line": 2, "position": 3}),
        ("let a = [1];\n a[5]", {"error": "ErrorArrayBounds", "line": 3, "position": 3}),
        ("nope + 1", {"error": "ErrorVariableNotFound", "variable": "nope"}),
        ("nope(1)", {"error": "ErrorFunctionNotFound", "function": "nope (i64)"}),
        ("f()", {"error": "ErrorUnboundThis"}),
    ],
)
def test_caught_errors_are_maps(src: str, fields: dict[str, Any]) -> None:
    """A caught error (not a thrown value) is a map with its message, position and kind."""
    got = run(f"fn f() {{ this }} let r = (); try {{\n{src}\n}} catch (e) {{ r = e }} r")
    assert type(got) is dict and type(got["message"]) is str
    assert {k: got[k] for k in fields} == fields

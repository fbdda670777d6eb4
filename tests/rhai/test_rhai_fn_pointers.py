"""Function pointers (Rhai Book: Function Pointers, Currying, Anonymous Functions, `this`).

Expected values are those of Rhai 1.25: the Book's examples and the assertions of Rhai's own
tests (tests/fn_ptr.rs, tests/closures.rs).
"""

from __future__ import annotations

from typing import Any

import pytest

import rhai


def run(src: str) -> Any:
    return rhai.Engine().eval(src)


@pytest.mark.parametrize(
    ("src", "want"),
    [
        # `Fn("name")`, the short-hand (a script function's name is a pointer to it), `call`
        ('fn foo(x) { 41 + x } let func = Fn("foo"); func.call(1)', 42),
        ("fn foo(x) { 41 + x } let func = foo; func.call(1)", 42),
        ("fn foo(x) { 41 + x } let func = foo; [func.name, type_of(func)]", ["foo", "Fn"]),
        ('fn foo(x) { 41 + x } call(Fn("foo"), 1)', 42),
        ("fn foo(x) { 41 + x } `${foo}`", "Fn(foo)"),
        ('let len = Fn("len"); len.call("hello")', 5),
        ("fn is_even(n) { n % 2 == 0 } [1, 2, 3, 4, 5].filter(is_even)", [2, 4]),
        ('fn is_even(n) { n % 2 == 0 } [1, 2, 3, 4, 5].filter(Fn("is_even"))', [2, 4]),
        ("fn foo(x) { x + 1 } let f = foo; let g = 42; g = foo; call(f, 39) + call(g, 1)", 42),
        # dynamic dispatch through an array of pointers
        (
            "fn m1(x) { x - 1 } fn m2(x) { x } fn m3(x) { x + 1 } "
            "let map = [m1, m2, m3]; map[sign(5) + 1].call(42)",
            43,
        ),
        # `obj.call(fp, ...)` binds `this` to obj, and changes to `this` stay
        ("fn add(x) { this += x; } let func = add; let x = 41; x.call(func, 1); x", 42),
        ('fn foo(x) { this += x; } let f = Fn("foo"); let x = 40; x.call(f, 2); x', 42),
        ("let foo = #{ x: 42 }; let f = || { this.x }; foo.call(f)", 42),
        ("let a = 1; let b = 40; let foo = |x| { this += a + x }; b.call(foo, 1); b", 42),
        ('let s = "ab"; s.call(|x| this += x, "c"); s', "abc"),
        # currying, in method and function style
        ("fn mul(x, y) { x * y } let func = mul; func.call(21, 2)", 42),
        ("fn mul(x, y) { x * y } let func = mul; func.curry(21).call(2)", 42),
        ("fn mul(x, y) { x * y } let curried = curry(mul, 21); curried.call(2)", 42),
        ("let addition = |x, y| { x + y }; let curried = addition.curry(2); curried.call(40)", 42),
        (
            "let x = 8; let res = |y, z| { let w = 12; return (|| x + y + z + w).call(); }"
            ".curry(15).call(2); res + (|| x - 3).call()",
            42,
        ),
        ('let f = |x| x; [f.is_anonymous, Fn("abs").is_anonymous]', [True, False]),
    ],
)
def test_function_pointers(src: str, want: Any) -> None:
    assert run(src) == want


@pytest.mark.parametrize(
    ("src", "want"),
    [
        # the Book's OOP example: functions, then closures, as methods of a map
        (
            "fn obj_inc(x, y) { this.data += x * y; } fn obj_dec(x) { this.data -= x; } "
            "let obj = #{ data: 42, increment: obj_inc, decrement: obj_dec }; "
            "obj.increment(1, 2); obj.decrement(4); obj.data",
            40,
        ),
        (
            "let obj = #{ data: 42, increment: |x, y| this.data += x * y, "
            "decrement: |x| this.data -= x }; obj.increment(1, 2); obj.decrement(4); obj.data",
            40,
        ),
        ("let obj = #{ data: 42, print_obj: || { this.data + 1 } }; obj.print_obj()", 43),
        # a property holding a pointer wins over a builtin of the same name
        ("let obj = #{ data: 1, print: || this.data + 1 }; obj.print()", 2),
        ("let obj = #{ v: 2, scale: |x| this.v * x }; obj.scale(5)", 10),
        # assigning `this` replaces the map in its variable
        ("let obj = #{ v: 1, set: |x| this = x }; obj.set(5); obj", 5),
        # value semantics: calling the method on a copy changes only the copy
        ("let a = #{ v: 1, inc: || this.v += 1 }; let b = a; b.inc(); [a.v, b.v]", [1, 2]),
        # curried arguments come first
        ("let obj = #{ n: 1, add: (|a, b| this.n += a * b).curry(10) }; obj.add(2); obj.n", 21),
        # nested maps
        ("let o = #{ inner: #{ n: 1, inc: || this.n += 1 } }; o.inner.inc(); o.inner.n", 2),
    ],
)
def test_this_in_methods_held_by_maps(src: str, want: Any) -> None:
    assert run(src) == want


@pytest.mark.parametrize(
    ("src", "message"),
    [
        # `this` is only bound in method-call style
        ("fn add(x) { this += x; } let func = add; func.call(1)", "'this' is not bound"),
        ("fn change() { this = 42; } change()", "'this' is not bound"),
        ("let f = || this; f.call()", "'this' is not bound"),
        (
            "fn add(x) { this += x; } let func = add; let x = 41; func.call(x, 1)",
            "Function not found: add (i64, i64)",
        ),
        # the function does not have to exist when the pointer is made
        ('let hello = Fn("hello" + "_world"); hello.call(0)', "hello_world (i64)"),
        ("let g = bar; g", "Variable not found: bar"),
        ('let x = 1; x.call("not a pointer")', "Function not found: call"),
        # `Fn` only in function-call style
        ('"foo".Fn()', "Function not found: Fn (string)"),
        # binding `this` to a variable the closure itself captures is a data race in Rhai
        ("let x = 20; let f = |a| this += x + a; x.call(f, 2)", "Data race"),
    ],
)
def test_function_pointer_errors(src: str, message: str) -> None:
    with pytest.raises(rhai.EvalError) as info:
        run(src)
    assert message in str(info.value)
    assert info.value.line == 1 and info.value.column > 0


@pytest.mark.parametrize(
    ("src", "want"),
    [
        # map/filter/...: one parameter gets the item, two the item and its index, none
        # binds the item to `this`
        ("[1, 2, 3].map(|x| x * 2)", [2, 4, 6]),
        ("[1, 2, 3].map(|x, i| x * i)", [0, 2, 6]),
        ("[1, 2, 3].map(|| this * 10)", [10, 20, 30]),
        ("[1, 2, 3, 4].filter(|| this % 2 == 0)", [2, 4]),
        ("fn double(x) { 2 * x } [1, 2, 3].map(double)", [2, 4, 6]),
        ('fn square(x) { x * x } [1, 2, 3].map(Fn("square"))', [1, 4, 9]),
        # for_each binds each item to `this` (changes stay); one parameter gets the index
        ("let x = [1, 2, 3, 4, 5]; x.for_each(|| this *= this); x", [1, 4, 9, 16, 25]),
        ("let x = [1, 4, 9, 16, 25]; x.for_each(|i| this *= i); x", [0, 4, 18, 48, 100]),
        ("[1, 2, 3].reduce(|sum, x| sum + x, 0)", 6),
        ("[1, 2, 3].reduce(|sum, x, i| sum + x * i, 0)", 8),
    ],
)
def test_callback_conventions(src: str, want: Any) -> None:
    assert run(src) == want


def test_pointer_to_script_function_is_callable_from_the_host() -> None:
    e = rhai.Engine()
    f = e.eval("fn triple(x) { 3 * x } triple")
    assert isinstance(f, rhai.FnPtr) and f.name == "triple"
    assert f(14) == 42


def test_typed_methods() -> None:
    """`fn int.name()`: a method only for `this` of that type (Book: Simulating an Object
    Method); the blanket version serves the other types."""
    src = """
        fn do_update(x, y) { this = `${this}, ${x}, ${y}`; }
        fn int.do_update(x, y) { this += x * y }
        fn "string".shout() { this.to_upper() + "!" }
        let x = 42; x.do_update(42, 123);
        let b = true; b.do_update(1, 2);
        [x, b, "hi".shout(), is_def_fn("int", "do_update", 2),
         is_def_fn("float", "do_update", 2), is_def_fn("do_update", 2)]
    """
    assert run(src) == [42 + 42 * 123, "true, 1, 2", "HI!", True, False, True]
    assert run('fn int.f() { 1 } fn f() { 2 } ["x".f(), 5.f()]') == [2, 1]
    with pytest.raises(rhai.EvalError, match="Function not found: f"):
        run("fn int.f() { 1 } f()")  # not callable in function style
    with pytest.raises(rhai.EvalError, match=r"Function not found: f \(string\)"):
        run('fn int.f() { 1 } "x".f()')
    with pytest.raises(rhai.ParseError, match="already defined"):
        rhai.Engine().compile("fn int.f() { 1 } fn int.f() { 2 }")


def test_method_changes_this_in_place() -> None:
    assert run("fn change() { this = 42; } let x = 500; x.change(); x") == 42

"""Engine API: host functions, conversions, call_fn, fn_params, hooks, errors, sandbox."""

from __future__ import annotations

from typing import Any

import pytest

import rhai


def test_register_fn_function_and_method_syntax() -> None:
    e = rhai.Engine()
    e.register_fn("least_loaded", lambda ws: min(ws, key=lambda w: w["load"]))
    e.register_fn("shout", lambda s: s.upper() + "!")
    e.register_fn("size", lambda m: len(m))
    src = (
        "let ws = [#{id: 1, load: 5}, #{id: 2, load: 1}]; "
        "[least_loaded(ws).id, ws.least_loaded().id]"
    )
    assert e.eval(src) == [2, 2]
    assert e.eval('"hi".shout()') == "HI!"
    assert e.eval("#{a: 1, b: 2}.size()") == 2


def test_register_fn_overloading_by_arity() -> None:
    e = rhai.Engine()
    e.register_fn("admit", lambda: {"admitted": True})
    e.register_fn("admit", lambda reason: {"admitted": True, "note": reason})
    assert e.eval("admit()") == {"admitted": True}
    assert e.eval('admit("ok").note') == "ok"


def test_host_map_result_supports_property_access() -> None:
    e = rhai.Engine()
    e.register_fn("reject", lambda reason: {"admitted": False, "reason": reason})
    assert e.eval('let r = reject("full"); r.admitted == false && r.reason == "full"') is True


def test_host_values_converted() -> None:
    e = rhai.Engine()
    e.register_fn("pair", lambda: (1, 2.5))
    e.register_fn("nested", lambda: {"xs": (1, 2), "n": None})
    assert e.eval("pair()") == [1, 2.5]
    assert e.eval("nested().xs.len()") == 2
    assert e.eval("nested().xs[1]") == 2
    assert e.eval("nested().n ?? 7") == 7


def test_host_int_out_of_range() -> None:
    e = rhai.Engine()
    e.register_fn("huge", lambda: 1 << 70)
    with pytest.raises(rhai.EvalError):
        e.eval("huge()")


def test_host_exception_becomes_eval_error_with_position() -> None:
    e = rhai.Engine()

    def boom(x: Any) -> Any:
        raise ValueError("nope")

    e.register_fn("boom", boom)
    with pytest.raises(rhai.EvalError) as info:
        e.eval("let a = 1;\nlet b = boom(a);")
    assert (info.value.line, info.value.column) == (2, 9)
    assert "nope" in str(info.value)
    assert str(info.value).startswith("2:9: ")


def test_host_exception_is_catchable_in_script() -> None:
    e = rhai.Engine()
    e.register_fn("boom", lambda: 1 / 0)
    assert e.eval('let r = ""; try { boom() } catch (err) { r = "caught" } r') == "caught"


def test_call_fn_and_fn_params() -> None:
    e = rhai.Engine()
    ast = e.compile(
        """
        let counter = 0;
        print("top level");
        fn route_task(task, workers) { workers.filter(|w| w.gpu == task.gpu).len() }
        fn should_admit(task, queue_depth) { queue_depth <= 10 }
        """
    )
    printed: list[str] = []
    e.on_print = printed.append
    workers = [{"gpu": "H100"}, {"gpu": "A100"}, {"gpu": "H100"}]
    assert e.call_fn(ast, "route_task", {"gpu": "H100"}, workers) == 2
    assert printed == []  # top-level statements are not re-run by call_fn
    assert ast.has_fn("should_admit", 2)
    assert not ast.has_fn("should_admit", 1)
    assert ast.fn_params("should_admit") == ["task", "queue_depth"]
    assert ast.fn_params("should_admit")[1] == "queue_depth"
    with pytest.raises(KeyError):
        ast.fn_params("nope")
    with pytest.raises(rhai.EvalError, match="Function not found: route_task"):
        e.call_fn(ast, "route_task", 1)


def test_call_fn_does_not_mutate_host_arguments() -> None:
    e = rhai.Engine()
    ast = e.compile("fn f(ws) { ws.push(1); ws[0].x = 9; ws.len() }")
    ws = [{"x": 1}]
    assert e.call_fn(ast, "f", ws) == 2
    assert ws == [{"x": 1}]


def test_eval_ast_reuse() -> None:
    e = rhai.Engine()
    ast = e.compile("let x = 40; x + 2")
    assert e.eval_ast(ast) == 42
    assert e.eval_ast(ast) == 42


def test_print_and_debug_hooks() -> None:
    e = rhai.Engine()
    out: list[str] = []
    dbg: list[str] = []
    e.on_print = out.append
    e.on_debug = dbg.append
    e.eval('print("hello"); print(42); debug("s"); debug([1, \'c\'])')
    assert out == ["hello", "42"]
    assert dbg == ['"s"', "[1, 'c']"]


def test_print_default_does_not_write_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    rhai.Engine().eval('print("quiet")')
    assert capsys.readouterr().out == ""


def test_error_formatting() -> None:
    e = rhai.Engine()
    with pytest.raises(rhai.ParseError) as p:
        e.compile("let x = ;")
    assert str(p.value) == f"{p.value.line}:{p.value.column}: {p.value.message}"
    assert (p.value.line, p.value.column) == (1, 9)
    with pytest.raises(rhai.EvalError) as ev:
        e.eval("let workers = 1;\nworkrs + 1")
    assert str(ev.value) == "2:1: Variable not found: workrs (did you mean `workers`?)"


def test_error_hierarchy() -> None:
    assert issubclass(rhai.LimitExceeded, rhai.EvalError)
    assert issubclass(rhai.EvalError, rhai.RhaiError)
    assert issubclass(rhai.ParseError, rhai.RhaiError)
    with pytest.raises(rhai.ThrownError) as info:
        rhai.Engine().eval("throw #{code: 3};")
    assert info.value.value == {"code": 3}


def test_no_access_to_python_internals() -> None:
    class Secret:
        password = "hunter2"

        def __repr__(self) -> str:
            return "Secret"

    e = rhai.Engine()
    e.register_fn("get_secret", lambda: Secret())
    e.register_fn("get_fn", lambda: print)
    for src in [
        "get_secret().password",
        "get_secret().__class__",
        'get_secret()["password"]',
        '"abc".__class__',
        "[].__len__",
        "get_fn().__globals__",
        "get_secret().__dict__",
    ]:
        with pytest.raises(rhai.EvalError):
            e.eval(src)
    assert e.eval("type_of(get_secret())") == "Secret"


def test_dunder_keys_are_just_map_keys() -> None:
    e = rhai.Engine()
    assert e.eval('let m = #{}; m["__class__"] = 1; m.__class__') == 1


def test_limits_default_and_zero_unlimited() -> None:
    e = rhai.Engine()
    assert e.max_operations > 0 and e.max_call_levels == 64 and e.max_expr_depth == 64
    e0 = rhai.Engine(max_operations=0)
    assert e0.eval("let n = 0; for i in 0..20000 { n += 1 } n") == 20000


def test_fn_ptr_returned_to_host_is_callable() -> None:
    e = rhai.Engine()
    f = e.eval("let k = 10; |x| x + k")
    assert isinstance(f, rhai.FnPtr)
    assert f(5) == 15


def test_char_type() -> None:
    e = rhai.Engine()
    c = e.eval("'x'")
    assert isinstance(c, rhai.Char) and isinstance(c, str) and str(c) == "x"
    assert e.eval("type_of(x)".replace("x", "'x'")) == "char"


def test_range_value() -> None:
    r = rhai.Engine().eval("1..=3")
    assert isinstance(r, rhai.Range) and list(r.py_range()) == [1, 2, 3]


def test_deep_nesting_is_a_clean_error() -> None:
    e = rhai.Engine()
    for src in ["(" * 5000 + "1" + ")" * 5000, "[" * 5000 + "]" * 5000, "-" * 5000 + "1",
                "{" * 3000 + "}" * 3000, "1" + " + 1" * 20000]:  # fmt: skip
        with pytest.raises((rhai.ParseError, rhai.LimitExceeded)):
            e.eval(src)
    unlimited = rhai.Engine(max_expr_depth=0, max_call_levels=0)
    with pytest.raises((rhai.ParseError, rhai.LimitExceeded)):
        unlimited.eval("(" * 50000 + "1" + ")" * 50000)
    with pytest.raises(rhai.LimitExceeded):
        unlimited.eval("fn f(n) { f(n + 1) } f(0)")


def test_thread_of_engines_independent() -> None:
    a = rhai.Engine(max_operations=100)
    b = rhai.Engine(max_operations=0)
    ast = a.compile("let n = 0; for i in 0..1000 { n += 1 } n")
    with pytest.raises(rhai.LimitExceeded):
        a.eval_ast(ast)
    assert b.eval_ast(ast) == 1000


def test_registration_after_first_call_is_seen_by_compiled_call_sites() -> None:
    e = rhai.Engine()
    ast = e.compile("fn f(ws) { ws.pick() }")
    with pytest.raises(rhai.EvalError, match="Function not found: pick"):
        e.call_fn(ast, "f", [1, 2])
    e.register_fn("pick", lambda ws: ws[0])
    assert e.call_fn(ast, "f", [1, 2]) == 1
    e.register_fn("pick", lambda ws: ws[-1])
    assert e.call_fn(ast, "f", [1, 2]) == 2
    other = rhai.Engine().register_fn("pick", lambda ws: len(ws))
    assert other.call_fn(ast, "f", [1, 2]) == 2
    assert e.call_fn(ast, "f", [7, 8, 9]) == 9


def test_host_filter_override_wins_over_builtin() -> None:
    e = rhai.Engine()
    ast = e.compile('fn f(ws) { ws.filter(|w| w.hive == "a") }')
    ws = [{"hive": "a"}, {"hive": "b"}]
    assert e.call_fn(ast, "f", ws) == [{"hive": "a"}]
    e.register_fn("filter", lambda items, fp: "host")
    assert e.call_fn(ast, "f", ws) == "host"


def test_fast_filter_never_runs_host_item_code() -> None:
    from collections import defaultdict

    class Opaque:
        def __getitem__(self, k: Any) -> Any:
            raise AssertionError("host __getitem__ called")

        def get(self, k: Any, d: Any = None) -> Any:
            raise AssertionError("host get called")

    dd: defaultdict[str, Any] = defaultdict(lambda: "a")
    e = rhai.Engine()
    ast = e.compile('fn f(ws) { ws.filter(|w| w.hive == "a") }')
    assert e.call_fn(ast, "f", [dd, {"hive": "a"}]) == [{"hive": "a"}]
    assert dict(dd) == {}  # no key was inserted into the host's defaultdict
    with pytest.raises(rhai.EvalError, match="Property 'hive' not found"):
        e.call_fn(ast, "f", [{"hive": "a"}, Opaque()])
    ast2 = e.compile("fn f(ws) { ws.filter(|w| w.load < 0.5) }")
    assert e.call_fn(ast2, "f", [{"load": 0.1}, {"load": 1}, {"x": 1}, {"load": 0.9}]) == [
        {"load": 0.1}
    ]
    assert e.call_fn(ast2, "f", [{"load": 0.1}, {"load": "x"}]) == [{"load": 0.1}]

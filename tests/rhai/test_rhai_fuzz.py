"""Fuzzing: arbitrary input never crashes the engine with anything but its own errors,
and never runs past its limits."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rhai

TOKENS = [
    "let", "const", "x", "y", "f", "fn", "(", ")", "{", "}", "[", "]", "#{", ",", ";", ":",
    "=", "+=", "-", "+", "*", "/", "%", "**", "<<", ">>", "&", "|", "^", "&&", "||", "!",
    "==", "!=", "<", ">", "..", "..=", "??", "?.", "?[", ".", "=>", "if", "else", "while",
    "loop", "do", "until", "for", "in", "break", "continue", "return", "throw", "try", "catch",
    "switch", "match", "_", "0", "1", "-1", "9223372036854775807", "2.5", "1e308", '"s"',
    "'c'", "`a${x}b`", "true", "false", "this", "len", "push", "filter", "map", "|x|", "||",
    "Fn", "call", "curry", "x.len()", "x.push(x)", "x += x", "s += s", "print", "type_of",
    "pad", "sort", "range", "import", "global", "::",
]  # fmt: skip

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def engine() -> rhai.Engine:
    e = rhai.Engine(
        max_operations=10_000,
        max_call_levels=32,
        max_expr_depth=32,
        max_string_size=10_000,
        max_array_size=1_000,
        max_map_size=1_000,
        max_variables=100,
    )
    e.on_print = None
    e.on_debug = None
    return e


def check(src: str) -> None:
    e = engine()
    t0 = time.perf_counter()
    try:
        e.eval(src)
    except rhai.RhaiError as err:
        assert isinstance(err, (rhai.ParseError, rhai.EvalError, rhai.LimitExceeded))
        assert isinstance(err.line, int) and isinstance(err.column, int)
        str(err)
    assert time.perf_counter() - t0 < 5.0


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    check(data.decode("utf-8", errors="replace"))


@SETTINGS
@given(st.text(max_size=200))
def test_random_text(src: str) -> None:
    check(src)


@SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_random_token_sequences(toks: list[str]) -> None:
    check(" ".join(toks))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30))
def test_random_tokens_in_a_loop_body(toks: list[str]) -> None:
    check('let x = [1, 2]; let s = "ab"; loop { ' + " ".join(toks) + " }")


def test_runaway_scripts_stop_at_limits() -> None:
    for src in [
        "loop {}",
        'let s = "x"; loop { s += s; }',
        "let a = [1]; loop { a += a; }",
        "fn f(n) { f(n) } f(1)",
        "let f = |g| g.call(g); f.call(f)",
        "let a = []; for i in 0..1000000000 { a.push(i) }",
        "let m = #{}; let i = 0; loop { m[`${i}`] = i; i += 1 }",
        'let s = "x"; s.pad(100000000000, "y")',
        "let a = [1, 2, 3]; loop { a.sort(|x, y| y - x) }",
        "range(0, 1000000000).reduce(|a, b| a + b, 0)",
        "let x = [1, 2]; loop { x.push(x) }",
        'let s = ""; s.pad(900000, "ab"); loop { s.replace("a", "bb"); s.replace("bb", "a") }',
        "let a = []; a.pad(90000, [1, 2]); loop { a == a }",
        "-1 in range(0, 1000000000000, 1)",
    ]:
        t0 = time.perf_counter()
        try:
            engine().eval(src)
            raise AssertionError(f"no limit hit: {src}")
        except rhai.LimitExceeded:
            pass
        except rhai.EvalError:
            pass
        assert time.perf_counter() - t0 < 5.0, src

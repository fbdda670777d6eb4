"""Work proportional to a value's size costs operations in proportion, and a wall-clock
limit stops a script whatever it spends: a script cannot hold its host for long."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rhai

# The scheduler's limit (inference/scheduler.py: OPS_LIMIT).
SCHEDULER_OPS = 200_000

# One Rhai string of 2**19 characters, an array of 60,000 references to it (one operation
# each to build and to scan), and an equal string that is another object and differs at the
# very end: every comparison scans half a megabyte. Without charging the characters
# compared this stayed under 200,000 operations and held the CPU for about a second.
INDEX_OF_LONG_STRINGS = """
let s = "x";
for i in 0..19 { s += s; }
let a = [];
a.pad(60000, s);
let t = s.sub_string(1) + "y";
a.index_of(t)
"""


def test_index_of_over_long_strings_stops_by_the_operation_limit_quickly() -> None:
    engine = rhai.Engine(max_operations=SCHEDULER_OPS)
    started = time.perf_counter()
    with pytest.raises(rhai.LimitExceeded) as exc:
        engine.eval(INDEX_OF_LONG_STRINGS)
    elapsed = time.perf_counter() - started
    assert "Too many operations" in exc.value.message
    assert elapsed < 0.5, f"ran {elapsed:.2f} s before its operation limit stopped it"


@pytest.mark.parametrize("search", ["a.contains(t)", "t in a", "a == a.map(|x| t)"])
def test_other_searches_over_long_strings_stop_quickly_too(search: str) -> None:
    engine = rhai.Engine(max_operations=SCHEDULER_OPS)
    started = time.perf_counter()
    with pytest.raises(rhai.LimitExceeded, match="Too many operations"):
        engine.eval(INDEX_OF_LONG_STRINGS.replace("a.index_of(t)", search))
    assert time.perf_counter() - started < 0.5


# --- operations grow with the size of what they touch ----------------------------------

# Each takes two equal strings that are distinct objects (so that comparing them scans them).
CASES = {
    "string ==": "a == b",
    "string !=": "a != b",
    "string <": "a < b",
    "string >=": "a >= b",
    "array ==": "[a] == [b]",
    "map ==": "#{x: a} == #{x: b}",
    "array contains": "[a].contains(b)",
    "in array": "b in [a]",
    "array index_of": "[a].index_of(b)",
    "string index_of": "a.index_of(b)",
    "string contains": "a.contains(b)",
    "string replace": 'a.replace(b, "z"); a',
    "string split": 'a.split("q")',
    "concat": "a + b",
    "sort strings": "let x = [b, a]; x.sort(); x",
    "map keys": 'let m = #{}; m[a] = 1; m[b + "z"] = 2; m.keys()',
    "switch on an array": "switch [a] { [1] => 1, _ => 2 }",
    "to_debug": "to_debug(a)",
}


def ops_needed(ast: rhai.AST, a: str, b: str) -> int:
    """The smallest max_operations under which `f(a, b)` completes (binary search)."""
    lo, hi = 1, 1 << 22
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            rhai.Engine(max_operations=mid).call_fn(ast, "f", a, b)
        except rhai.LimitExceeded:
            lo = mid + 1
        else:
            hi = mid
    return lo


def pair(n: int) -> tuple[str, str]:
    a = "p" * n
    b = "".join(["p" * (n - 1), "p"])  # equal, another object
    assert a == b and a is not b
    return a, b


@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=4, deadline=None)
@given(small=st.integers(1, 8), factor=st.integers(8, 32))
def test_operations_charged_grow_with_input_size(name: str, small: int, factor: int) -> None:
    ast = rhai.Engine().compile(f"fn f(a, b) {{ {CASES[name]} }}")
    n_small, n_big = small * 1024, small * 1024 * factor
    ops_small = ops_needed(ast, *pair(n_small))
    ops_big = ops_needed(ast, *pair(n_big))
    # at least one operation per 64 characters touched, so a bigger input costs more
    assert ops_big >= n_big // 64, (name, ops_big)
    assert ops_big > ops_small, (name, ops_small, ops_big)


# --- a wall-clock limit --------------------------------------------------------------------


def test_a_script_past_its_time_limit_is_stopped_with_a_clear_error() -> None:
    engine = rhai.Engine(max_operations=0, max_time=0.05)
    started = time.perf_counter()
    with pytest.raises(rhai.LimitExceeded) as exc:
        engine.eval("let n = 0; loop { n += 1; }")
    elapsed = time.perf_counter() - started
    assert exc.value.message == "Script timed out: it ran for more than 0.05 s"
    assert (exc.value.line, exc.value.column) != (0, 0)
    assert 0.05 <= elapsed < 1.0


def test_the_time_limit_holds_in_call_fn_callbacks_and_cannot_be_caught() -> None:
    engine = rhai.Engine(max_operations=0, max_time=0.05)
    ast = engine.compile(
        """
        fn spin(xs) { try { loop { xs = xs.map(|x| x + 1); } } catch { 0 } }
        """
    )
    started = time.perf_counter()
    with pytest.raises(rhai.LimitExceeded, match="timed out"):
        engine.call_fn(ast, "spin", list(range(10)))
    assert time.perf_counter() - started < 1.0
    # each call has its own clock: a quick call after a slow one runs
    assert engine.eval("40 + 2") == 42


def test_without_a_time_limit_the_operation_limit_alone_decides() -> None:
    engine = rhai.Engine(max_operations=1000)
    with pytest.raises(rhai.LimitExceeded, match="Too many operations: the limit is 1000"):
        engine.eval("loop { }")
    timed = rhai.Engine(max_operations=1000, max_time=60)
    with pytest.raises(rhai.LimitExceeded, match="Too many operations: the limit is 1000"):
        timed.eval("loop { }")
    assert timed.eval("let s = 0; for i in 0..100 { s += i; } s") == 4950


def test_on_progress_is_called_as_operations_go_and_can_stop_the_script() -> None:
    engine = rhai.Engine(max_operations=0)
    seen: list[int] = []
    engine.on_progress = lambda ops: seen.append(ops) if len(seen) < 5 else "enough"
    with pytest.raises(rhai.LimitExceeded, match="terminated"):
        engine.eval("loop { }")
    assert len(seen) == 5 and seen == sorted(seen) and seen[0] >= 1024

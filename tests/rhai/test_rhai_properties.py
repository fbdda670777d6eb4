"""Property tests: INT and FLOAT arithmetic follow Rhai's documented rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rhai

INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
ints = st.integers(INT_MIN, INT_MAX)
small = st.integers(-1000, 1000)
ENGINE = rhai.Engine()
SETTINGS = settings(max_examples=150, deadline=None)


def lit(n: int) -> str:
    if n == INT_MIN:
        return "(-9223372036854775807 - 1)"
    return f"({n})"


def flit(x: float) -> str:
    return f"({x!r})"


def run(src: str) -> object:
    return ENGINE.eval(src)


def in_range(n: int) -> bool:
    return INT_MIN <= n <= INT_MAX


@SETTINGS
@given(ints, ints, st.sampled_from(["+", "-", "*"]))
def test_checked_add_sub_mul(a: int, b: int, op: str) -> None:
    exact = {"+": a + b, "-": a - b, "*": a * b}[op]
    src = f"{lit(a)} {op} {lit(b)}"
    if in_range(exact):
        assert run(src) == exact
    else:
        with pytest.raises(rhai.EvalError, match="overflow"):
            run(src)


@SETTINGS
@given(ints, ints)
def test_truncating_division(a: int, b: int) -> None:
    src = f"{lit(a)} / {lit(b)}"
    if b == 0:
        with pytest.raises(rhai.EvalError, match="Division by zero"):
            run(src)
        return
    q = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    if not in_range(q):
        with pytest.raises(rhai.EvalError, match="overflow"):
            run(src)
        return
    assert run(src) == q


@SETTINGS
@given(ints, ints)
def test_remainder_sign_follows_dividend(a: int, b: int) -> None:
    src = f"{lit(a)} % {lit(b)}"
    if b == 0:
        with pytest.raises(rhai.EvalError):
            run(src)
        return
    if a == INT_MIN and b == -1:
        with pytest.raises(rhai.EvalError):
            run(src)
        return
    r = run(src)
    assert isinstance(r, int)
    assert abs(r) < abs(b)
    assert r == 0 or (r > 0) == (a > 0)
    q = run(f"{lit(a)} / {lit(b)}")
    assert isinstance(q, int) and q * b + r == a


@SETTINGS
@given(st.integers(-20, 20), st.integers(-3, 70))
def test_power(a: int, b: int) -> None:
    src = f"{lit(a)} ** {lit(b)}"
    if b < 0:
        with pytest.raises(rhai.EvalError):
            run(src)
        return
    exact = a**b
    if in_range(exact):
        assert run(src) == exact
    else:
        with pytest.raises(rhai.EvalError, match="overflow"):
            run(src)


@SETTINGS
@given(ints, st.integers(-70, 70), st.sampled_from(["<<", ">>"]))
def test_shifts(a: int, n: int, op: str) -> None:
    src = f"{lit(a)} {op} {lit(n)}"
    if abs(n) >= 64:
        with pytest.raises(rhai.EvalError):
            run(src)
        return
    left = (op == "<<") == (n >= 0)
    k = abs(n)
    if left:
        want = (a << k) & ((1 << 64) - 1)
        if want > INT_MAX:
            want -= 1 << 64
    else:
        want = a >> k
    assert run(src) == want


@SETTINGS
@given(ints)
def test_negation(a: int) -> None:
    if a == INT_MIN:
        with pytest.raises(rhai.EvalError):
            run(f"let x = {lit(a)}; -x")
    else:
        assert run(f"let x = {lit(a)}; -x") == -a


@SETTINGS
@given(small, st.floats(-1e6, 1e6, allow_nan=False))
def test_int_float_mix_gives_float(a: int, x: float) -> None:
    r = run(f"{lit(a)} + {flit(x)}")
    assert isinstance(r, float) and r == a + x
    r2 = run(f"{lit(a)} * {flit(x)}")
    assert isinstance(r2, float) and r2 == a * x


@SETTINGS
@given(st.floats(-1e12, 1e12, allow_nan=False), st.floats(-1e12, 1e12, allow_nan=False))
def test_float_comparisons_epsilon(x: float, y: float) -> None:
    eq = run(f"{flit(x)} == {flit(y)}")
    lt = run(f"{flit(x)} < {flit(y)}")
    gt = run(f"{flit(x)} > {flit(y)}")
    # exactly one of <, ==, > holds under the epsilon rules
    assert [eq, lt, gt].count(True) == 1
    if x == y:
        assert eq is True
    if abs(x - y) > 1e-6 * max(abs(x), abs(y), 1.0):
        assert eq is False and lt == (x < y)


EPS = 2.220446049250313e-16


@SETTINGS
@given(st.floats(1e-3, 1e9), st.integers(-3, 3))
def test_float_equality_follows_the_book_formula(x: float, ulps: int) -> None:
    y = x
    for _ in range(abs(ulps)):
        y = math.nextafter(y, math.inf if ulps > 0 else -math.inf)
    want = abs(x - y) < max(abs(x), abs(y)) * EPS
    assert run(f"{flit(x)} == {flit(y)}") is want
    assert run(f"{flit(x)} != {flit(y)}") is (not want)
    if ulps == 1 and x != 2 ** math.floor(math.log2(x)):
        assert want  # one ulp apart counts as equal (except exactly at a power of two)


def test_float_examples_from_the_book() -> None:
    assert run("0.1 + 0.2 == 0.3") is True
    assert run("let x = 1e-16; [x > 0, x == 0]") == [False, True]
    assert run("let x = 1e-15; [x > 0, x == 0]") == [True, False]
    assert run("1e-28 > 1e-29") is True


@SETTINGS
@given(small, small)
def test_int_comparisons_match_python(a: int, b: int) -> None:
    got = run(f"[{lit(a)} < {lit(b)}, {lit(a)} <= {lit(b)}, {lit(a)} == {lit(b)}, "
              f"{lit(a)} != {lit(b)}, {lit(a)} > {lit(b)}, {lit(a)} >= {lit(b)}]")  # fmt: skip
    assert got == [a < b, a <= b, a == b, a != b, a > b, a >= b]


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15))
def test_to_int_truncates(x: float) -> None:
    assert run(f"{flit(x)}.to_int()") == math.trunc(x)


prop_values = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False),
    st.sampled_from(["a", "b", "gaming-pc"]),
    st.sampled_from([rhai.Char("a"), True, False]),
    st.lists(st.integers(0, 2), max_size=2),
)
workers = st.lists(
    st.one_of(
        st.dictionaries(st.sampled_from(["hive", "load", "gpu"]), prop_values, max_size=3),
        st.integers(0, 3),
    ),
    max_size=8,
)


@SETTINGS
@given(workers, st.sampled_from([
    'w.hive == "a"', 'w.hive != "a"', 'w.load < 2', 'w.load >= 1.5', 'w.gpu == true',
    '"a" == w.hive && w.load > 0', 'w.hive == "a" || !(w.load <= 1)', 'w.load == 2',
]))  # fmt: skip
def test_fast_predicates_agree_with_closures(ws: list, body: str) -> None:
    """Closures compiled to Python source behave exactly like the general closure path."""
    e = rhai.Engine()
    fast = f"ws.filter(|w| {body})"
    slow = f"ws.filter(|w| {{ let r = {body}; r }})"  # a block body is never specialised
    outcomes = []
    for src in (fast, slow):
        try:
            outcomes.append(("ok", e.call_fn(e.compile(f"fn f(ws) {{ {src} }}"), "f", ws)))
        except rhai.EvalError as err:
            outcomes.append(("err", err.message))
    assert outcomes[0] == outcomes[1]

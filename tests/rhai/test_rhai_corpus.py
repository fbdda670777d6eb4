"""Runs every script under tests/rhai/ and checks the expectation written beside it.

Each script ends with comment lines:
  // expect: <Python literal>                 the value of the script
  // expect error: <ErrorType>: <substring>   the error type and a substring of str(err)
  // engine: max_operations=1000, ...         optional Engine keyword arguments
"""

from __future__ import annotations

import ast as pyast
import math
import pathlib
import re
from typing import Any

import pytest

import rhai

CORPUS = pathlib.Path(__file__).parent
SCRIPTS = sorted(CORPUS.rglob("*.rhai"))


def parse_meta(text: str) -> tuple[dict[str, Any], str, str]:
    opts: dict[str, Any] = {}
    kind, expect = "", ""
    for line in text.splitlines():
        m = re.match(r"\s*// engine:\s*(.*)$", line)
        if m:
            for part in m.group(1).split(","):
                k, v = part.split("=")
                opts[k.strip()] = int(v.strip())
        m = re.match(r"\s*// expect error:\s*(.*)$", line)
        if m:
            kind, expect = "error", m.group(1).strip()
        m = re.match(r"\s*// expect:\s*(.*)$", line)
        if m:
            kind, expect = "value", m.group(1).strip()
    return opts, kind, expect


def plain(v: Any) -> Any:
    if isinstance(v, rhai.Char):
        return str(v)
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) < 1e-12
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def test_corpus_is_large_enough() -> None:
    assert len(SCRIPTS) >= 150


@pytest.mark.parametrize("path", SCRIPTS, ids=[str(p.relative_to(CORPUS)) for p in SCRIPTS])
def test_script(path: pathlib.Path) -> None:
    text = path.read_text()
    opts, kind, expect = parse_meta(text)
    assert kind, f"{path} has no expectation"
    printed: list[str] = []
    engine = rhai.Engine(**opts)
    engine.on_print = printed.append
    engine.on_debug = printed.append
    if kind == "value":
        if expect.startswith("float("):
            want = float(expect[7:-2])
        else:
            want = pyast.literal_eval(expect)
        got = plain(engine.eval(text))
        assert same(got, want), f"got {got!r}, want {want!r}"
    else:
        etype, _, msg = expect.partition(":")
        with pytest.raises(rhai.RhaiError) as info:
            engine.eval(text)
        err = info.value
        assert isinstance(err, getattr(rhai, etype.strip())), f"{type(err).__name__}: {err}"
        assert msg.strip() in str(err), str(err)
        assert re.match(r"^\d+:\d+: ", str(err))

"""A real Prometheus for tests (Debian's `prometheus` package), and the PromQL of rbee's
Grafana dashboard and alert rules (docker/).

`Prometheus` starts /usr/bin/prometheus with a generated configuration (storage in a
temporary directory, loopback only, a free port) and answers PromQL over its HTTP API.
A missing binary is a clear failure, never a skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from testkit.live import ROOT, free_port, stop_process

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "rbee.json"
ALERTS = ROOT / "docker" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "docker" / "prometheus" / "prometheus.yml"
MISSING = "{} is missing: install Debian's `prometheus` package (apt-get install prometheus)"


def require(binary: str) -> str:
    if not Path(binary).is_file():
        raise AssertionError(MISSING.format(binary))
    return binary


class Prometheus:
    """One Prometheus process scraping `jobs` (scrape_configs entries) every `interval`."""

    def __init__(
        self,
        jobs: list[dict[str, Any]],
        *,
        interval: str = "1s",
        rule_files: tuple[Path, ...] = (),
    ) -> None:
        require(PROMETHEUS)
        self.dir = Path(tempfile.mkdtemp(prefix="rbee-prometheus-"))
        self.port = free_port()
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": jobs,
        }
        # JSON is YAML: no YAML writer needed.
        (self.dir / "prometheus.yml").write_text(json.dumps(config, indent=1))
        self.log = self.dir / "prometheus.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready in {timeout}s:\n{self.log.read_text()}")

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/PATH; its `data` (an AssertionError with Prometheus' own error
        otherwise: a PromQL parse error is a 400)."""
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {r.status_code} {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{"metric": {...}, "value": [time, "value"]}]."""
        data = self.api("query", query=expr)
        return list(data["result"]) if data["resultType"] == "vector" else [data]

    def values(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query as {sorted labels: value}."""
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in self.query(expr)}

    def value(self, expr: str) -> float | None:
        """The one value of a query (None when it returns nothing)."""
        got = self.query(expr)
        if not got:
            return None
        assert len(got) == 1, (expr, got)
        return float(got[0]["value"][1])

    def wait_for(
        self, expr: str, check: Callable[[float | None], bool], timeout: float = 60
    ) -> float | None:
        """Poll `expr` until `check(value)` holds (scrapes come every interval)."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            last = self.value(expr)
            if check(last):
                return last
            time.sleep(0.25)
        raise AssertionError(f"{expr} stayed {last} for {timeout}s:\n{self.targets()}")

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def close(self) -> None:
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- the PromQL in docker/ ----------------------------------------------------------------

# Grafana's built-in intervals, as a query in a panel sees them.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*$")


def grafana_to_promql(expr: str) -> str:
    """A panel's query as Prometheus receives it: the intervals replaced by durations,
    template variables (multi-value, regex matchers) by `.*`."""

    def substitute(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return GRAFANA_INTERVALS.get(name, ".*")

    return _VARIABLE.sub(substitute, expr)


def _targets(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for panel in panels:
        for target in panel.get("targets", ()):
            if target.get("expr"):
                yield (
                    f"panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}",
                    str(target["expr"]),
                )
        yield from _targets(panel.get("panels", []))


def dashboard_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """Every PromQL expression of a Grafana dashboard, as Prometheus would receive it:
    (where, expression) for each panel target, and for each query variable the series
    selector of its `label_values(...)`."""
    doc = json.loads(path.read_text())
    found = [(where, grafana_to_promql(e)) for where, e in _targets(doc.get("panels", []))]
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        m = _LABEL_VALUES.match(text)
        assert m, f"variable {var.get('name')}: {text!r} is not label_values(...)"
        if m.group(1):
            found.append((f"variable {var['name']}", grafana_to_promql(m.group(1))))
    return found


def alert_queries(path: Path = ALERTS) -> list[tuple[str, str]]:
    """Every rule's expression in a Prometheus rules file: (where, expression)."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    return [
        (f"rule {rule.get('alert') or rule.get('record')}", str(rule["expr"]))
        for group in doc["groups"]
        for rule in group["rules"]
    ]


_NAME = re.compile(r"(?<![\w:\"'])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[|\)|$|\s|>|<|=|!|/|\*|\+|-)")
_KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "rate", "irate", "increase", "delta", "idelta",
    "histogram_quantile", "absent", "abs", "clamp_min", "clamp_max", "time", "vector",
    "label_replace", "label_join", "sort", "sort_desc", "le", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects (its identifiers that are not PromQL's
    functions, operators or keywords, nor label names inside by/without/on (...))."""
    text = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges
    names = set()
    for m in _NAME.finditer(text):
        word = m.group(1)
        following = text[m.end() :].lstrip()[:1]
        if word.lower() in _KEYWORDS or following == "(":
            continue
        names.add(word)
    return names

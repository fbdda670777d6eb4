"""docker/'s Prometheus and Grafana files, checked by Prometheus' own promtool (Debian's
`prometheus` package): the alert rules load and fire as intended, the scrape
configuration is valid, every PromQL expression of the Grafana dashboard parses, and
every series they use is one a queen exports."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit.prometheus import (
    ALERTS,
    DASHBOARD,
    PROMETHEUS_CONFIG,
    PROMTOOL,
    alert_queries,
    dashboard_queries,
    metric_names,
    require,
)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "docker" / "grafana"


def promtool(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run(
        [require(PROMTOOL), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def test_the_alert_rules_load() -> None:
    out = promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(alert_queries())} rules found" in out
    names = {where.removeprefix("rule ") for where, _ in alert_queries()}
    for wanted in (
        "RbeeHiveDown",
        "RbeeHiveHeartbeatStale",
        "RbeeQueueWaitHigh",
        "RbeeErrorRateHigh",
        "RbeeGpuMemoryNearFull",
        "RbeeAuditCheckpointStale",
    ):
        assert wanted in names


def test_the_alerts_fire_when_they_should_and_only_then() -> None:
    """tests/docker/alerts_test.yml: synthetic series from two queens, the alerts expected."""
    assert "SUCCESS" in promtool("test", "rules", "tests/docker/alerts_test.yml")


def test_a_broken_rule_is_caught(tmp_path: Path) -> None:
    """The check is not a formality: a rule that does not parse fails it."""
    bad = tmp_path / "alerts.yml"
    bad.write_text(ALERTS.read_text().replace("max without (instance) (rbee_hive_up)", "max(("))
    proc = subprocess.run(
        [require(PROMTOOL), "check", "rules", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "parse error" in proc.stdout + proc.stderr


def test_the_scrape_configuration_is_valid_with_its_token_file(tmp_path: Path) -> None:
    """Both queens on the compose network, the bearer token from a file (never inline),
    and the alert rules beside it. promtool checks the token file exists, so the check
    runs on a copy pointing at a real one."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rbee"]
    assert job["static_configs"] == [{"targets": ["queen1:7833", "queen2:7833"]}]
    assert job["metrics_path"] == "/metrics"
    auth = job["authorization"]
    assert auth == {"type": "Bearer", "credentials_file": "/run/secrets/rbee_metrics_token"}
    assert config["rule_files"] == ["alerts.yml"]
    token = tmp_path / "token"
    token.write_text("metrics-" + "t" * 32)
    copy = tmp_path / "prometheus.yml"
    copy.write_text(
        PROMETHEUS_CONFIG.read_text().replace("/run/secrets/rbee_metrics_token", str(token))
    )
    (tmp_path / "alerts.yml").write_text(ALERTS.read_text())
    out = promtool("check", "config", str(copy))
    assert "SUCCESS" in out and f"{len(alert_queries())} rules found" in out


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """Each panel's PromQL (Grafana's variables replaced as Grafana does) as a recording
    rule, so promtool parses every one of them."""
    queries = dashboard_queries()
    assert len(queries) >= 50
    rules = [
        {"record": f"rbee_dashboard:q{i}", "expr": expr, "labels": {"where": where[:60]}}
        for i, (where, expr) in enumerate(queries)
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in promtool("check", "rules", str(path))


def _exported_names() -> set[str]:
    """Every sample name a queen's /metrics can carry: django-prometheus' and the
    process's (prometheus_client's default registry), the request path's, the fleet's."""
    suffixes = {
        "counter": ("_total",),  # no `_created`: inference/metrics.py turns them off
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count"),
    }
    names = {"up"}
    for family in _families():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def _families() -> list[Any]:
    """The families of a queen's /metrics, the fleet's from a fleet where every series
    has a sample."""
    import importlib

    import prometheus_client
    from django_prometheus.middleware import Metrics

    from gdpr.selectors import AuditSigning
    from hives.selectors import FleetHive, FleetWorker
    from inference.metrics import REGISTRY
    from rbee.metrics import Checkpointed, Fleet, FleetCollector

    now = datetime.now(UTC)
    fleet = Fleet(
        at=now,
        hives=[
            FleetHive(
                name="h",
                region="eu",
                version="1",
                state="online",
                connected=True,
                last_seen_at=now,
                devices=[
                    {"kind": "cpu", "memory_total_mb": 2, "memory_used_mb": 1, "utilization": 1}
                ],
            )
        ],
        workers=[FleetWorker("h", "cpu", "m", "ready", 1)],
        models=["m"],
        outbox_pending=0,
        outbox_oldest=None,
        overdue={"export": 0},
        checkpoint=Checkpointed(1, now),
        audit=AuditSigning(tree_size=1, oldest_unsigned_at=None),
    )
    for module in ("django_prometheus.db.metrics", "django_prometheus.cache.metrics"):
        importlib.import_module(module)  # each registers its series when imported
    Metrics.get_instance()  # the middleware's series are made on first use
    return [
        *prometheus_client.REGISTRY.collect(),
        *REGISTRY.collect(),
        *FleetCollector(fleet).collect(),
    ]


def test_the_dashboard_and_the_alerts_use_only_series_a_queen_exports() -> None:
    """A misspelt series parses and silently matches nothing: every name is checked
    against what the registries declare."""
    exported = _exported_names()
    used: dict[str, str] = {}
    for where, expr in [*dashboard_queries(), *alert_queries()]:
        for name in metric_names(expr):
            used.setdefault(name, where)
    unknown = {name: where for name, where in used.items() if name not in exported}
    assert not unknown, unknown
    # what the issue asks the dashboard to show
    for name in (
        "rbee_requests_total",
        "rbee_request_duration_seconds_bucket",
        "rbee_time_to_first_token_seconds_bucket",
        "rbee_inter_token_latency_seconds_bucket",
        "rbee_queue_wait_seconds_bucket",
        "rbee_queue_waiting",
        "rbee_tokens_total",
        "rbee_hive_up",
        "rbee_hive_heartbeat_age_seconds",
        "rbee_device_memory_used_bytes",
        "rbee_device_memory_total_bytes",
        "rbee_device_utilization_ratio",
        "rbee_worker_state",
        "rbee_scheduler_decisions_total",
        "rbee_scheduler_script_errors_total",
        "rbee_refusals_total",
        "rbee_stripe_outbox_lag_seconds",
        "rbee_audit_oldest_unsigned_event_age_seconds",
        "django_http_requests_latency_seconds_by_view_method_bucket",
        "django_db_execute_total",
    ):
        assert name in used, name


def test_metric_names_reads_selectors_not_functions_or_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, model) (rate(rbee_x_bucket{model=~"a|b"}[5m]))) '
        "/ on (hive) group_left (region) max without (instance) (rbee_y) > 0.5 and rbee_z"
    )
    assert metric_names(expr) == {"rbee_x_bucket", "rbee_y", "rbee_z"}


def test_grafana_provisioning_points_at_the_dashboard_and_the_datasource() -> None:
    dash = json.loads(DASHBOARD.read_text())
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "rbee.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "rbee-fleet"
    for panel in dash["panels"]:
        for target in panel.get("targets", ()):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            # fleet gauges are the same from every queen: never summed over them
            fleet = re.findall(r"rbee_(?:hive|device|worker|audit|stripe)_\w+", target["expr"])
            if fleet and "without (instance)" not in target["expr"]:
                pytest.fail(f"{panel['title']}: {target['expr']} adds up every queen's copy")


def test_the_dashboard_counts_the_script_versions_the_queens_run(tmp_path: Path) -> None:
    """'Script versions across queens' is the number of distinct versions in force (the
    version is the gauge's value, not a label): 2 while the queens run different ones."""
    (expr,) = [e for where, e in dashboard_queries() if "'Script versions across queens'" in where]

    def case(versions: tuple[int, int], distinct: int) -> dict[str, object]:
        name = "rbee_scheduler_script_version"
        return {
            "interval": "15s",
            "input_series": [
                {
                    "series": f'{name}{{job="rbee", instance="queen{i}:7833"}}',
                    "values": f"{v}x10",
                }
                for i, v in enumerate(versions, 1)
            ],
            "promql_expr_test": [
                {
                    "expr": expr,
                    "eval_time": "1m",
                    "exp_samples": [{"labels": "{}", "value": distinct}],
                }
            ],
        }

    path = tmp_path / "dashboard_test.yml"
    tests = [case((3, 4), 2), case((4, 4), 1)]
    path.write_text(
        yaml.safe_dump({"rule_files": [], "evaluation_interval": "15s", "tests": tests})
    )
    assert "SUCCESS" in promtool("test", "rules", str(path))


def _readme_series() -> list[tuple[list[str], str, set[str], str]]:
    """README "Metrics"'s table: (series names, type, label names, what) per row."""
    section = (ROOT / "README.md").read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 4 and cells[0].startswith("`rbee_"):
            names = re.findall(r"`(rbee_\w+)`", cells[0])
            rows.append((names, cells[1], set(re.findall(r"`(\w+)`", cells[2])), cells[3]))
    return rows


def test_the_readme_table_is_what_a_queen_exports() -> None:
    """Every rbee series a queen exports is in README's table with its type and labels,
    and nothing else is; the words its labels take are listed in full."""
    import asyncio

    from hives.protocol import WorkerState
    from hives.selectors import HIVE_STATES
    from inference import metrics, queueing

    metrics.MODELS.learn("m")
    metrics.request_done(model="m", endpoint="chat", status=200, seconds=0.1)
    metrics.queue_waited("m", 0.1)
    metrics.job_done(
        model="m",
        outcome="ok",
        ttft=0.1,
        inter_token=0.01,
        prompt_tokens=1,
        completion_tokens=1,
        images=1,
        audio_seconds=1.0,
        characters=1,
    )
    metrics.refused("queue_full")
    asyncio.run(
        queueing.acquire("m", capacity=1, priority="interactive", max_waiting=1, timeout=1)
    ).release()
    exported: dict[str, tuple[str, set[str]]] = {}
    for family in _families():
        if family.name.startswith("rbee_"):
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = {k for s in family.samples for k in s.labels} - {"le"}
            exported[name] = (family.type, labels)
    documented: dict[str, tuple[str, set[str]]] = {}
    words: dict[str, str] = {}
    for names, kind, labels, what in _readme_series():
        for name in names:
            documented[name] = (kind, labels)
            words[name] = what
    assert documented == exported
    listed = set(re.findall(r"`(\w+)`", words["rbee_refusals_total"]))
    assert listed == metrics.REFUSAL_REASONS
    assert set(re.findall(r"`(\w+)`", words["rbee_jobs_total"])) == set(metrics.JOB_OUTCOMES)
    assert set(re.findall(r"`(\w+)`", words["rbee_worker_state"])) == {s.value for s in WorkerState}
    assert set(re.findall(r"`(\w+)`", words["rbee_hives"])) == set(HIVE_STATES)

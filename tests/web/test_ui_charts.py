"""/ui/charts: any operator sees it (signed out: the login page; not an operator: 403);
the JSON of each chart (charts.js's format) and the table beside it carry exact figures
from the per-minute sums and device samples, grouped by the range's buckets."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from hives.models import DeviceSample, Hive
from inference.models import RequestStat
from web.ui.charts import chart_data, totals

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 5, 8, 14, 30, tzinfo=UTC)
M = [datetime(2026, 12, 5, 8, m, tzinfo=UTC) for m in range(15)]  # 08:00 ... 08:14


def figures() -> None:
    RequestStat.objects.create(
        minute=M[14],
        model="chat",
        requests=6,
        errors=1,
        ttft_ms_sum=600.0,
        ttft_count=5,
        output_tokens=200,
        generation_seconds=4.0,
        queue_wait_ms_sum=30.0,
    )
    RequestStat.objects.create(
        minute=M[12],
        model="chat",
        requests=3,
        ttft_ms_sum=90.0,
        ttft_count=3,
        output_tokens=30,
        generation_seconds=3.0,
        queue_wait_ms_sum=0.0,
    )
    RequestStat.objects.create(minute=M[14], model="embed", requests=12)
    # Outside the 15-minute range (07:59): not shown there.
    RequestStat.objects.create(minute=M[0] - timedelta(minutes=1), model="chat", requests=99)
    hive = Hive.objects.create(name="box", token_prefix="tp-c", token_hash="x")
    for minute, used in ((M[13], 2048), (M[14], 3072)):
        DeviceSample.objects.create(
            hive=hive, device="cuda:0", minute=minute, memory_used_mb=used, memory_total_mb=24564
        )
    DeviceSample.objects.create(
        hive=hive, device="cpu", minute=M[14], memory_used_mb=10240, memory_total_mb=65536
    )


def test_request_charts_carry_exact_figures_per_bucket() -> None:
    figures()
    xs = [int(m.timestamp()) for m in M]
    none12 = [None] * 12
    assert chart_data("rps", "15m", NOW) == {
        "x": xs,
        "unit": "req/s",
        "series": [
            {"label": "chat", "values": [0.0] * 12 + [0.05, 0.0, 0.1]},
            {"label": "embed", "values": [0.0] * 14 + [0.2]},
        ],
    }
    assert chart_data("ttft", "15m", NOW)["series"] == [
        {"label": "chat", "values": [*none12, 30.0, None, 120.0]},
        {"label": "embed", "values": [None] * 15},
    ]
    assert chart_data("tps", "15m", NOW)["series"][0] == {
        "label": "chat",
        "values": [*none12, 10.0, None, 50.0],
    }
    assert chart_data("queue", "15m", NOW)["series"][0] == {
        "label": "chat",
        "values": [*none12, 0.0, None, 5.0],
    }
    assert chart_data("memory", "15m", NOW) == {
        "x": xs,
        "unit": "GiB",
        "series": [
            {"label": "box/cpu", "values": [None] * 14 + [10.0]},
            {"label": "box/cuda:0", "values": [None] * 13 + [2.0, 3.0]},
        ],
    }


def test_a_longer_range_sums_minutes_into_its_buckets() -> None:
    figures()
    data = chart_data("rps", "6h", NOW)
    assert len(data["x"]) == 72 and data["x"][-1] == int(
        datetime(2026, 12, 5, 8, 10, tzinfo=UTC).timestamp()
    )
    chat = data["series"][0]
    assert chat["label"] == "chat"
    # 08:10-08:15 holds 3 + 6 requests: 9 / 300 s; 07:55-08:00 the 99 of 07:59.
    assert chat["values"][-4:] == [0.33, 0.0, 0.0, 0.03]
    ttft = chart_data("ttft", "6h", NOW)["series"][0]["values"]
    assert ttft[-1] == 86.2  # (600 + 90) / (5 + 3)
    assert totals("15m", NOW) == [
        {
            "model": "chat",
            "requests": 9,
            "errors": 1,
            "rps": 0.01,
            "ttft": 86.2,
            "tps": 32.9,  # 230 tokens / 7 s
            "queue": 3.3,  # 30 ms / 9 requests
        },
        {
            "model": "embed",
            "requests": 12,
            "errors": 0,
            "rps": 0.0133,
            "ttft": None,
            "tps": None,
            "queue": 0.0,
        },
    ]


def operator(*codenames: str) -> Client:
    user = User.objects.create_user("ops", "ops@example.com", "pw-123456789")
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


def test_the_charts_need_an_operator() -> None:
    response = Client().get("/ui/charts")
    assert response.status_code == 302
    assert response["Location"] == "/ui/login?next=%2Fui%2Fcharts"
    response = Client().get("/ui/charts/data?metric=rps&range=1h")
    assert response.status_code == 302
    plain = operator()  # no operator permission at all
    assert plain.get("/ui/charts").status_code == 403
    assert plain.get("/ui/charts/data?metric=rps&range=1h").status_code == 403


def test_any_operator_gets_the_json_and_the_page_with_its_tables() -> None:
    # Two minutes back: the 15-minute window still holds it if the clock passes a minute
    # boundary between here and the request.
    minute = (timezone.now() - timedelta(minutes=2)).replace(second=0, microsecond=0)
    RequestStat.objects.create(
        minute=minute,
        model="chat",
        requests=30,
        ttft_ms_sum=1500.0,
        ttft_count=30,
        output_tokens=600,
        generation_seconds=12.0,
        queue_wait_ms_sum=90.0,
    )
    client = operator("read_audit")  # any operator area will do
    response = client.get("/ui/charts/data?metric=ttft&range=15m")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = json.loads(response.content)
    assert data["unit"] == "ms" and len(data["x"]) == 15
    at = data["x"].index(int(minute.timestamp()))
    assert at >= 12
    expected = [None] * 15
    expected[at] = 50.0
    assert data["series"] == [{"label": "chat", "values": expected}]
    bad = client.get("/ui/charts/data?metric=nope&range=15m")
    assert bad.status_code == 400
    assert client.get("/ui/charts/data?metric=rps&range=2y").status_code == 400

    page = client.get("/ui/charts?range=15m")
    assert page.status_code == 200
    body = page.content.decode()
    assert "<title>Charts · rbee</title>" in body
    assert '<option value="15m" selected>15 minutes</option>' in body
    for metric in ("rps", "ttft", "tps", "queue", "memory"):
        assert f'data-src="/ui/charts/data?metric={metric}&amp;range=15m"' in body
    total = re.search(r'<tr data-model="chat">(.*?)</tr>', body, re.S)
    assert total is not None
    cells = [html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", total.group(1))]
    assert cells == ["chat", "30", "0", "0.0333", "50.0", "50.0", "3.0"]
    # The page computes no chart's figures: each table loads them when it is opened.
    assert "<table data-table" not in body
    for metric in ("rps", "ttft", "tps", "queue", "memory"):
        assert (
            f'<details hx-get="/ui/charts/table?metric={metric}&amp;range=15m" '
            f'hx-trigger="toggle once" hx-target="#table-{metric}">'
        ) in body and f'<div id="table-{metric}" aria-live="polite">' in body
    fragment = client.get("/ui/charts/table?metric=ttft&range=15m")
    assert fragment.status_code == 200
    ttft_table = re.search(
        r'<table data-table="ttft">(.*?)</table>', fragment.content.decode(), re.S
    )
    assert ttft_table is not None
    rows = re.findall(r"<tr><th scope=\"row\">(.*?)</th><td>(.*?)</td></tr>", ttft_table.group(1))
    assert rows == [(minute.strftime("%H:%M"), "50.0")]
    assert client.get("/ui/charts/table?metric=nope&range=15m").status_code == 400
    assert client.get("/ui/charts/table?metric=ttft&range=2y").status_code == 400
    # An unknown range falls back to the default one.
    assert '<option value="1h" selected>' in client.get("/ui/charts?range=x").content.decode()


def test_a_week_of_samples_is_grouped_by_the_database_and_the_page_reads_none() -> None:
    """7 days in hourly buckets: the database returns one row per device and hour (the
    largest use), not 10,080 samples per device; the page itself reads no samples."""
    now = datetime(2026, 12, 5, 8, 30, tzinfo=UTC)
    hour = now.replace(minute=0)
    hive = Hive.objects.create(name="box", token_prefix="tp-w", token_hash="x")
    DeviceSample.objects.bulk_create(
        DeviceSample(
            hive=hive,
            device=f"cuda:{d}",
            minute=hour - timedelta(minutes=m),
            memory_used_mb=1024 * (1 + m % 60) * (d + 1),
            memory_total_mb=80 * 1024,
        )
        for d in range(2)
        for m in range(166 * 60 + 1)  # back to the second-oldest hour: the oldest is empty
    )
    with CaptureQueriesContext(connection) as queries:
        data = chart_data("memory", "7d", now)
    (query,) = [q["sql"] for q in queries.captured_queries]
    assert "GROUP BY" in query.upper()
    assert [s["label"] for s in data["series"]] == ["box/cuda:0", "box/cuda:1"]
    cuda0, cuda1 = (s["values"] for s in data["series"])
    assert len(data["x"]) == 168 and data["x"][-1] == int(hour.timestamp())
    # The newest bucket holds only hour's first minute (m = 0: 1 GiB); full hours hold
    # every m % 60, whose largest is 60 GiB; the oldest bucket has no sample.
    assert cuda0[-1] == 1.0 and cuda1[-1] == 2.0
    assert set(cuda0[1:-1]) == {60.0} and set(cuda1[1:-1]) == {120.0}
    assert cuda0[0] is None and cuda1[0] is None

    with CaptureQueriesContext(connection) as page_queries:
        assert operator("read_audit").get("/ui/charts?range=7d").status_code == 200
    assert not [q for q in page_queries.captured_queries if "devicesample" in q["sql"].lower()]

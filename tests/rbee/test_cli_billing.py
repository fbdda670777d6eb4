"""`rbee billing usage TENANT [--by day|model|key|modality] [--csv] [--start] [--end]`:
the tenant's usage and its cost at its plan's prices, read from real usage rows.

acme (plan "pro") and globex (no plan) both use the queen in March 2025; acme also
uses it today. What is shown for one tenant never includes the other's usage.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner, Result

from billing.models import Price, UsageEvent
from billing.services import Usage, usage_record
from rbee.cli import main
from tenants.models import ApiKey, Plan, Tenant
from tenants.services import api_key_create
from testkit.live import Deployment

pytestmark = pytest.mark.django_db

MARCH = ["--start", "2025-03-01", "--end", "2025-03-31"]


def record(
    tenant: Tenant,
    request_id: str,
    when: datetime | None,
    model: str,
    modality: str,
    key: ApiKey | None = None,
    **usage: Any,
) -> None:
    event = usage_record(
        request_id=request_id,
        tenant_id=tenant.pk,
        api_key_id=key.pk if key else None,
        model=model,
        modality=modality,
        usage=Usage(**usage),
        latency_ms=42,
    )
    if when is not None:
        UsageEvent.objects.filter(pk=event.pk).update(created_at=when)


@pytest.fixture
def acme() -> Tenant:
    pro = Plan.objects.create(name="pro")
    for model, unit, price, plan in [
        ("*", "prompt_tokens", "0.000001", None),
        ("*", "completion_tokens", "0.000002", None),
        ("llama", "prompt_tokens", "0.0000004", pro),  # acme's plan price beats the list price
        ("llama", "completion_tokens", "0.000003", None),
        ("sdxl", "images", "0.04", None),
        ("whisper", "audio_seconds", "0.0001", None),
        # characters: unpriced
    ]:
        Price.objects.create(model=model, unit=unit, unit_price=price, plan=plan)
    acme = Tenant.objects.create(name="acme", tier="pro", plan=pro)
    globex = Tenant.objects.create(name="globex")
    k1, _ = api_key_create(tenant=acme, name="one")
    theirs, _ = api_key_create(tenant=globex, name="theirs")
    march = [datetime(2025, 3, d, h, tzinfo=UTC) for d, h in [(1, 10), (1, 23), (2, 12), (3, 8)]]
    record(acme, "a1", march[0], "llama", "chat", k1, prompt_tokens=1000, completion_tokens=500)
    record(acme, "a2", march[1], "llama", "chat", None, prompt_tokens=2000, completion_tokens=100)
    record(acme, "a3", march[2], "sdxl", "image", k1, images=2)
    record(acme, "a4", march[3], "whisper", "transcription", k1, audio_seconds=12.5)
    record(acme, "a5", march[3], "tts", "speech", k1, characters=1234)
    record(acme, "a-april", datetime(2025, 4, 1, tzinfo=UTC), "llama", "chat", k1, images=9)
    record(acme, "a-today", None, "llama", "chat", k1, prompt_tokens=7, completion_tokens=3)
    for i, when in enumerate(march):
        record(globex, f"g{i}", when, "llama", "chat", theirs, prompt_tokens=10**6)
    record(globex, "g-today", None, "sdxl", "image", theirs, images=50)
    return acme


def rbee(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def table(result: Result) -> dict[str, list[str]]:
    """The printed table as {first cell: the other cells}, the header under "header"."""
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    return {"header": lines[0].split(), **rows}


def test_by_model_with_cost_at_the_plan_prices(acme: Tenant) -> None:
    out = table(rbee("billing", "usage", "acme", "--by", "model", *MARCH))
    assert out["header"][0] == "model"
    assert out["header"][-2:] == ["cost", "(usd)"]
    # requests, prompt, completion, images, audio s, characters, cost
    # llama: 3000 x 0.0000004 (pro's price) + 600 x 0.000003 = 0.0012 + 0.0018
    assert out["llama"] == ["2", "3000", "600", "0", "0.00", "0", "0.003000"]
    assert out["sdxl"] == ["1", "0", "0", "2", "0.00", "0", "0.080000"]
    assert out["whisper"] == ["1", "0", "0", "0", "12.50", "0", "0.001250"]
    assert out["tts"] == ["1", "0", "0", "0", "0.00", "1234", "0.000000"]  # unpriced
    assert out["total"] == ["5", "3000", "600", "2", "12.50", "1234", "0.084250"]
    assert set(out) == {"header", "llama", "sdxl", "whisper", "tts", "total"}


def test_by_day_key_and_modality(acme: Tenant) -> None:
    days = table(rbee("billing", "usage", "acme", *MARCH))  # --by day is the default
    assert days["header"][0] == "day"
    assert [days[d][0] for d in ("2025-03-01", "2025-03-02", "2025-03-03")] == ["2", "1", "2"]
    assert days["2025-03-01"][-1] == "0.003000"

    keys = table(rbee("billing", "usage", "acme", "--by", "key", *MARCH))
    one = ApiKey.objects.get(name="one")
    assert keys[f"sk-rbee-{one.prefix}-…"][0] == "4"
    assert keys["-"][:3] == ["1", "2000", "100"]  # the request made without a key

    modalities = table(rbee("billing", "usage", "acme", "--by", "modality", *MARCH))
    assert {m: r[0] for m, r in modalities.items() if m != "header"} == {
        "chat": "2",
        "image": "1",
        "transcription": "1",
        "speech": "1",
        "total": "5",
    }


def test_this_month_by_default(acme: Tenant) -> None:
    result = rbee("billing", "usage", "acme", "--by", "model")
    out = table(result)
    assert out["llama"][:3] == ["1", "7", "3"]  # today's request only
    assert set(out) == {"header", "llama", "total"}
    month = datetime.now(UTC).strftime("%Y-%m")
    assert f"{month}-01 .. {month}-" in result.stderr


def test_csv_streams_one_line_per_request(acme: Tenant) -> None:
    result = rbee("billing", "usage", "acme", "--csv", *MARCH)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["request_id"] for r in rows] == ["a1", "a2", "a3", "a4", "a5"]
    assert rows[0]["cost"] == "0.001900"  # 1000 x 0.0000004 + 500 x 0.000003
    assert rows[0]["api_key"].startswith("sk-rbee-")
    assert rows[1]["api_key"] == ""
    assert rows[3]["audio_seconds"] == "12.5"
    assert {r["currency"] for r in rows} == {"usd"}


def test_a_period_without_usage(acme: Tenant) -> None:
    result = rbee("billing", "usage", "acme", "--start", "2024-01-01", "--end", "2024-01-31")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no usage in this period" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "error: no tenant named 'nobody'"),
        (["acme", "--start", "2025-13-01"], "error: bad date for --start: '2025-13-01'"),
        (["acme", "--end", "yesterday"], "error: bad date for --end: 'yesterday'"),
        (["acme", "--start", "2025-03-10", "--end", "2025-03-01"], "ends (2025-03-01) before"),
        (["nobody", "--csv"], "error: no tenant named 'nobody'"),
    ],
)
def test_errors_exit_1(acme: Tenant, args: list[str], message: str) -> None:
    result = rbee("billing", "usage", *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stdout == ""


def test_the_installed_command() -> None:
    """`python -m rbee.cli`, as users and `rbee up` run it, on a fresh database."""
    dep = Deployment(embedded=True)  # SQLite: a fresh database migrates fastest
    try:
        dep.rbee("tenant", "create", "acme")
        out = dep.rbee("billing", "usage", "acme", "--csv").stdout
        assert out.splitlines() == [
            "created_at,request_id,model,modality,api_key,prompt_tokens,completion_tokens,"
            "images,audio_seconds,characters,video_seconds,latency_ms,outcome,cost,currency"
        ]
        missing = dep.rbee("billing", "usage", "nobody", check=False)
        assert missing.returncode == 1
        assert "error: no tenant named 'nobody'" in missing.stderr
    finally:
        dep.close()

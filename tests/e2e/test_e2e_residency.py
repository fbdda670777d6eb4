"""EU-only routing fails closed, with a real queen and two real hives (eu, us).

The us hive says of itself that it is in the EU (`--region eu` at start): only what the
operator set counts. An EU tenant's requests, made with the official `openai` client, all
run on the eu hive; once the eu hive is gone they get 503 with Retry-After and never the
us hive, which meanwhile still serves a tenant without a data region. `rbee gdpr
residency` then reports where each request ran: none outside the EU.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import openai
import pytest

from testkit.live import Deployment, Hive, Queen

pytestmark = pytest.mark.e2e

MODEL = "shared"


def client(queen: Queen, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0, timeout=30)


def ask(c: openai.OpenAI, region: str = "") -> tuple[str, str]:
    """(the hive that served it, the request id)."""
    raw = c.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "where am I?"}],
        extra_headers={"X-Rbee-Region": region} if region else None,
    )
    raw.parse()
    return raw.headers["x-rbee-worker"].split("/")[0], raw.headers["x-request-id"]


def test_eu_tenant_runs_only_in_the_eu_and_fails_closed(deployment: Deployment) -> None:
    dep = deployment
    queen = Queen(dep, env={"RBEE_HIVE_HEARTBEAT": "1"})
    eu = Hive(dep, queen, "eu-box", [f"{MODEL}=echo:"], region="eu")
    us_token = dep.rbee(
        "hive", "token", "--name", "us-box", "--trust-models", "--region", "us"
    ).stdout.strip()
    Hive(dep, queen, "us-box", [f"{MODEL}=echo:"], token=us_token, extra_args=["--region", "eu"])
    assert dict(dep.sql("select name, region from hives_hive")) == {"eu-box": "eu", "us-box": "us"}

    dep.rbee("tenant", "create", "euco", "--data-region", "eu", "--jurisdiction", "DE")
    dep.rbee("tenant", "create", "anyco")
    # Operator keys, so that the answers name the hive that served them.
    eu_key = dep.rbee("key", "create", "--tenant", "euco", "--operator").stdout.strip()
    any_key = dep.rbee("key", "create", "--tenant", "anyco", "--operator").stdout.strip()
    # A key may narrow its tenant's region, never widen it.
    widened = dep.rbee("key", "create", "--tenant", "euco", "--data-region", "us", check=False)
    assert widened.returncode != 0 and "only narrow" in widened.stderr

    eu_client, any_client = client(queen, eu_key), client(queen, any_key)
    served = [ask(eu_client) for _ in range(20)]
    assert {hive for hive, _ in served} == {"eu-box"}
    # The us hive serves: a tenant without a data region may ask for it.
    assert ask(any_client, "us")[0] == "us-box"

    # The header may narrow, never widen.
    with pytest.raises(openai.BadRequestError) as wide:
        eu_client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Rbee-Region": "us"},
        )
    assert wide.value.code == "region_not_allowed"

    # The eu hive goes away: 503 + Retry-After, never the us hive.
    eu.stop()
    deadline = time.monotonic() + 30
    while True:
        try:
            hive, _ = ask(eu_client)
        except openai.APIStatusError as exc:
            refused = exc
            break
        assert hive == "eu-box", "an EU request ran on the us hive"
        assert time.monotonic() < deadline, "the queen never noticed the eu hive was gone"
        time.sleep(0.2)
    for _ in range(10):
        assert refused.status_code == 503, refused.response.text
        assert refused.response.headers["retry-after"] == "5"
        body = refused.response.json()["error"]
        assert body["type"] == "server_error" and body["code"] == "region_unavailable"
        assert "region 'eu'" in body["message"]
        with pytest.raises(openai.APIStatusError) as again:
            ask(eu_client)
        refused = again.value
    assert ask(any_client)[0] == "us-box"  # the us hive was there all along, unasked

    # Usage rows record the operator-set region; none of the EU tenant's ran elsewhere.
    rows = dep.sql(
        "select u.region, u.worker from billing_usageevent u join tenants_tenant t "
        "on t.id = u.tenant_id where t.name = 'euco' and u.worker <> ''"
    )
    assert rows and {r for r, _ in rows} == {"eu"}
    assert {w.split("/")[0] for _, w in rows} == {"eu-box"}

    month = datetime.now(UTC).strftime("%Y-%m")
    report = dep.rbee("gdpr", "residency", "--tenant", "euco", "--month", month, "--json")
    doc = json.loads(report.stdout)
    assert doc["data_region"] == "eu" and doc["outside_data_region"] == []
    assert doc["by_hive"] == [
        {"region": "eu", "hive": "eu-box", "requests": len(rows), "within_data_region": True}
    ]
    assert doc["requests"] == len(rows) + doc["not_run"]
    any_report = dep.rbee("gdpr", "residency", "--tenant", "anyco", "--month", month).stdout
    assert "us-box" in any_report and "outside the data region: 0" in any_report

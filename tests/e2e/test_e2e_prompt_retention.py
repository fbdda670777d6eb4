"""Prompts and responses are kept only under a recorded consent or the tenant's contract,
with a real queen and hive and the official `openai` client (streaming and not): off by
default; under "consent" only the end user who consented; withdrawn, no longer; purged
by retention once expired; part of the end user's export."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from testkit.live import Deployment, Hive, Queen

pytestmark = pytest.mark.e2e

MODEL = "talker"


def chat(c: openai.OpenAI, user: str, text: str, stream: bool = False) -> str:
    kwargs = {"user": user} if user else {}
    if stream:
        out = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], stream=True, **kwargs
        )
        return "".join(ch.choices[0].delta.content or "" for ch in out if ch.choices)
    r = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **kwargs
    )
    return r.choices[0].message.content or ""


def kept(dep: Deployment) -> list[tuple[str, str, str, str]]:
    return [
        tuple(r)  # type: ignore[misc]
        for r in dep.sql(
            "select subject, basis, prompt, response from gdpr_storedexchange order by id"
        )
    ]


def kept_eventually(
    dep: Deployment, n: int, timeout: float = 10.0
) -> list[tuple[str, str, str, str]]:
    """The kept exchanges once there are `n` of them (or whatever there is at the deadline)."""
    deadline = time.monotonic() + timeout
    rows = kept(dep)
    while len(rows) < n and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = kept(dep)
    return rows


def test_prompts_are_kept_only_under_consent_or_contract(deployment: Deployment) -> None:
    dep = deployment
    queen = Queen(dep)
    Hive(dep, queen, "box", [f"{MODEL}=echo:"])
    dep.rbee("tenant", "create", "shop")
    key = dep.rbee("key", "create", "--tenant", "shop").stdout.strip()
    c = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)

    # Off by default, consent or not.
    text = Path(dep.home) / "consent.txt"
    text.write_text("Keep my prompts for 30 days to debug.\n")
    dep.rbee("gdpr", "consent", "grant", "--subject", "shop:bob", "--purpose",
             "prompt_retention", "--text-file", str(text))  # fmt: skip
    chat(c, "bob", "marker-default-off")
    assert kept(dep) == []

    # Under "consent": bob (who consented) is kept, carol and anonymous requests are not.
    dep.rbee("tenant", "set", "shop", "--prompt-retention", "consent")
    answer = chat(c, "bob", "marker-bob-1")
    chat(c, "carol", "marker-carol")
    chat(c, "", "marker-anon")
    streamed = chat(c, "bob", "marker-bob-2", stream=True)
    # A stream's exchange is stored once its last chunk went out: the client may read
    # that chunk a moment before the row is written.
    rows = kept_eventually(dep, 2)
    assert [(s, b) for s, b, _, _ in rows] == [("enduser:shop:bob", "consent")] * 2
    assert "marker-bob-1" in rows[0][2] and rows[0][3] == answer
    assert "marker-bob-2" in rows[1][2] and rows[1][3] == streamed and streamed

    # Withdrawn: one call, and the next request is no longer kept.
    dep.rbee("gdpr", "consent", "withdraw", "--subject", "shop:bob",
             "--purpose", "prompt_retention")  # fmt: skip
    chat(c, "bob", "marker-bob-3")
    assert len(kept(dep)) == 2

    # Under the tenant's contract: every request.
    dep.rbee("tenant", "set", "shop", "--prompt-retention", "contract")
    chat(c, "carol", "marker-contract")
    assert kept(dep)[-1][:2] == ("enduser:shop:carol", "contract")
    assert not any("marker-carol" in p or "marker-anon" in p for _, _, p, _ in kept(dep))

    # Expired ones are purged by the retention run (an audit event).
    _expire_all(dep)
    out = dep.rbee("gdpr", "retention", "run").stdout
    assert "gdpr.exchanges" in out and kept(dep) == []
    runs = (
        "select count(*) from gdpr_audit_event "
        "where action = 'retention.run' and actor like 'cli:%'"
    )
    assert dep.sql(runs) == [(1,)]


def _expire_all(dep: Deployment) -> None:
    query = "update gdpr_storedexchange set expires_at = '2000-01-01 00:00:00+00:00'"
    if dep.db_name:
        import psycopg

        with psycopg.connect(dep.env["RBEE_DATABASE_URL"]) as conn:
            conn.execute(query)
    else:
        import sqlite3

        conn = sqlite3.connect(dep.home / "rbee.sqlite3")
        try:
            conn.execute("update gdpr_storedexchange set expires_at = '2000-01-01 00:00:00'")
            conn.commit()
        finally:
            conn.close()

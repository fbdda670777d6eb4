"""The audit log on a live deployment: real requests through a real queen and hive
become inference audit events (off the request path), the queen's periodic work (a
thread on the embedded default; `rbee billing worker`'s Celery beat with Redis) sequences
them and writes signed checkpoints, and `rbee audit verify` passes."""

from __future__ import annotations

import json
import re
import time

import openai
import pytest

from testkit.live import Deployment, Hive, Queen
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e


def test_verify_passes_after_real_requests() -> None:
    dep = Deployment()
    env = {"RBEE_AUDIT_CHECKPOINT_SECONDS": "3"}
    try:
        queen = Queen(dep, env=env)
        if not dep.embedded:  # Celery beat does the periodic work with Redis
            dep.spawn(["billing", "worker", "--concurrency", "1"], "celery", env)
        Hive(dep, queen, "hive-eu", [CHAT_MODEL], region="eu")
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
        ids = []
        for i, user in enumerate(["alice-e2e", "", "alice-e2e"]):
            extra = {"user": user} if user else {}
            raw = client.chat.completions.with_raw_response.create(
                model=CHAT_MODEL,
                messages=[{"role": "user", "content": f"Say {i} SECRET-PROMPT-{i}"}],
                max_tokens=4,
                **extra,
            )
            raw.parse()
            ids.append(raw.headers["x-request-id"])

        q = ", ".join(f"'{r}'" for r in ids)
        deadline = time.monotonic() + 90
        size = 0
        while time.monotonic() < deadline:
            found = dep.sql(f"SELECT COUNT(*) FROM gdpr_audit_event WHERE request_id IN ({q})")
            cps = sorted((dep.home / "audit-checkpoints").glob("*.json"))
            size = json.loads(cps[-1].read_text())["size"] if cps else 0
            total = dep.sql("SELECT COUNT(*) FROM gdpr_audit_event")[0][0]
            if found[0][0] == 3 and size == total:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"events or checkpoint missing: {found}, size {size}")

        rows = dep.sql(
            "SELECT action, actor, region, outcome, data, subject_key FROM gdpr_audit_event "
            f"WHERE request_id IN ({q}) ORDER BY request_id"
        )
        m = re.search(r"-([a-z0-9]{10})-", key)
        assert m is not None
        prefix = m.group(1)  # the key's public prefix, never the key
        for action, actor, region, outcome, data, _ in rows:
            assert (action, actor, region, outcome) == ("inference", f"key:{prefix}", "eu", "ok")
            assert json.loads(data)["model"] == CHAT_MODEL
            assert json.loads(data)["hive"] == "hive-eu"
        assert sum(1 for r in rows if r[5]) == 2  # the two with an end user are sealed
        dump = repr(dep.sql("SELECT * FROM gdpr_audit_event"))
        assert "alice-e2e" not in dump and "SECRET-PROMPT" not in dump and key not in dump

        proc = dep.rbee("audit", "verify", check=False)
        assert proc.returncode == 0, proc.stderr
        assert re.fullmatch(r"ok: \d+ events, root [0-9a-f]{64}\n", proc.stdout), proc.stdout
        assert int(proc.stdout.split()[1]) >= size >= 3
        assert "signed checkpoint(s) verified" in proc.stderr
    finally:
        dep.close()

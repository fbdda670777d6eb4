"""GDPR on a live deployment: a tenant's end user, named by the OpenAI `user` field in
real requests (the official `openai` client, a real queen and hive, llama.cpp), is
exported and erased with the operators' CLI; then every table of the deployment's own
database (SQLite file or PostgreSQL database, listed from its catalogue), every file
under its RBEE_HOME (the queen's and the hive's logs among them) is scanned: the end
user's id is in no table and in no log line about them (another tenant's end user of
the same id keeps theirs; a file that is not a log is never read), the audit log still
verifies, and the queen keeps serving and logging."""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import openai
import pytest

from testkit.live import Deployment, Hive, Queen
from tests.conftest import CHAT_MODEL

pytestmark = pytest.mark.e2e

MSG = [{"role": "user", "content": "Say hi."}]


def _cell(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def database_hits(dep: Deployment, marker: str) -> list[tuple[str, str]]:
    if dep.db_name:
        tables = [
            r[0] for r in dep.sql("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        ]
    else:
        tables = [r[0] for r in dep.sql("SELECT name FROM sqlite_master WHERE type='table'")]
    assert len(tables) > 30
    needle = marker.lower().encode()
    hits = []
    for table in tables:
        for row in dep.sql(f'SELECT * FROM "{table}"'):
            for i, value in enumerate(row):
                if needle in _cell(value).lower():
                    hits.append((table, str(i)))
    return sorted(set(hits))


def file_hits(root: Path, marker: str) -> list[str]:
    needle = marker.lower().encode()
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes().lower()
    )


def test_an_end_user_of_a_live_queen_is_exported_and_erased(tmp_path: Path) -> None:
    dep = Deployment()
    try:
        queen = Queen(dep)
        Hive(dep, queen, "hive-eu", [CHAT_MODEL], region="eu")
        dep.rbee("tenant", "create", "shop")
        key = dep.rbee("key", "create", "--tenant", "shop").stdout.strip()
        client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
        uid = f"enduser-{uuid.uuid4().hex[:10]}"
        ids = []
        for user in (uid, uid, "someone-else"):
            r = client.chat.completions.with_raw_response.create(
                model=CHAT_MODEL,
                messages=MSG,
                max_tokens=4,
                user=user,  # type: ignore[arg-type]
            )
            ids.append(r.headers["x-request-id"])
            r.parse()
        rows = dep.sql("SELECT request_id, end_user, region FROM billing_usageevent")
        assert sorted(rows) == sorted(
            [(ids[0], uid, "eu"), (ids[1], uid, "eu"), (ids[2], "someone-else", "eu")]
        )
        # A log line naming the end user and their tenant, appended to the live queen's
        # own log file; a line of another tenant's end user of the same id (not theirs:
        # it stays); the same id in a file that is not a log (never read).
        other_line = f"support note: tenant=globex user={uid} asked for a refund"
        with open(queen.log, "ab") as fh:
            fh.write(
                f"support note: tenant=shop complaint from user={uid} about request {ids[0]}\n"
                f"{other_line}\n".encode()
            )
        (dep.home / "operator-notes.txt").write_text(f"shop {uid}\n")
        assert "queen.log" in file_hits(dep.home, uid)
        dep.rbee("audit", "checkpoint")

        archive = tmp_path / "export.zip"
        out = dep.rbee("gdpr", "export", "--subject", f"shop:{uid}", "--out", str(archive))
        assert out.stdout.strip() == str(archive)
        with zipfile.ZipFile(archive) as zf:
            usage = json.loads(zf.read("data/billing.usage.json"))["records"]
            lines = json.loads(zf.read("data/gdpr.files.json"))["records"]
            manifest = json.loads(zf.read("manifest.json"))
        assert sorted(u["request_id"] for u in usage) == sorted(ids[:2])
        assert {u["region"] for u in usage} == {"eu"}
        assert [line["file"] for line in lines] == ["queen.log"]
        assert manifest["subject"] == f"enduser:shop:{uid}"
        assert manifest["signature"]["alg"] == "Ed25519"

        erased = dep.rbee("gdpr", "erase", "--subject", f"shop:{uid}", "--yes")
        receipt = json.loads(erased.stdout)
        assert receipt["complete"] is True
        assert uid not in erased.stdout
        stores = {s["store"]: s for s in receipt["stores"]}
        assert stores["billing.usage"]["pseudonymised"] == 2
        assert stores["gdpr.files"]["pseudonymised"] == 1

        assert database_hits(dep, uid) == []
        assert file_hits(dep.home, uid) == ["operator-notes.txt", "queen.log"]
        assert other_line in queen.log.read_text().splitlines()
        assert (dep.home / "operator-notes.txt").read_text() == f"shop {uid}\n"
        # The signed checkpoints were not touched: the audit log still verifies.
        assert dep.rbee("audit", "verify", check=False).returncode == 0
        # The usage rows stay (the tenant is billed for them), naming no one.
        rows = dep.sql("SELECT request_id, end_user FROM billing_usageevent")
        assert sorted(rows) == sorted([(ids[0], ""), (ids[1], ""), (ids[2], "someone-else")])
        # The queen serves on, and its log (rewritten in place) goes on growing.
        size = queen.log.stat().st_size
        client.chat.completions.create(model=CHAT_MODEL, messages=MSG, max_tokens=2)  # type: ignore[arg-type]
        assert queen.log.stat().st_size >= size
        assert "[erased]" in queen.log.read_text()
        listed = dep.rbee("gdpr", "requests").stdout
        assert listed.count(" done ") == 2 and "OVERDUE" not in listed
        assert uid not in listed
    finally:
        dep.close()

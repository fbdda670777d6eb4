"""The S3 sink (gdpr/sinks.py) against moto's S3 server (a real HTTP endpoint): checkpoints
land as object-locked objects (COMPLIANCE retention) that cannot be overwritten or deleted,
and the real `rbee audit verify` reads them back and names an edited row."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

boto3 = pytest.importorskip("boto3", reason="the s3 extra (boto3) is not installed")
moto_server = pytest.importorskip("moto.server", reason="moto[server] (dev extra) is missing")

from botocore.exceptions import ClientError  # noqa: E402

from gdpr.sinks import Checkpoint, S3Sink  # noqa: E402
from testkit.live import Deployment, free_port  # noqa: E402

CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object]]:
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="audit", ObjectLockEnabledForBucket=True)
    try:
        yield endpoint, client
    finally:
        server.stop()


def _cp(seq: int, size: int, prev: int) -> Checkpoint:
    return Checkpoint(
        seq=seq,
        size=size,
        root=b"r" * 32,
        time="2026-01-01T00:00:00.000000Z",
        prev_size=prev,
        signature=b"s" * 64,
        public_key="k",
    )


def test_objects_are_locked_and_never_overwritten(s3) -> None:  # type: ignore[no-untyped-def]
    _endpoint, client = s3
    sink = S3Sink("audit", "ckpt", client=client, retain_days=30)
    assert sink.latest() is None
    sink.write(_cp(1, 2, 0), b"h" * 64)
    sink.write(_cp(2, 3, 2), b"i" * 32)
    assert [c.seq for c in sink.all()] == [1, 2] and sink.latest() == _cp(2, 3, 2)
    assert sink.leaves(_cp(1, 2, 0)) == b"h" * 64
    head = client.head_object(Bucket="audit", Key="ckpt/0000000001.json")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=29)
    with pytest.raises(FileExistsError):
        sink.write(_cp(2, 9, 3), b"x" * 192)
    assert sink.latest() == _cp(2, 3, 2)
    version = head["VersionId"]
    with pytest.raises(ClientError):
        client.delete_object(Bucket="audit", Key="ckpt/0000000001.json", VersionId=version)


def test_verify_reads_checkpoints_from_s3_and_names_an_edit(s3) -> None:  # type: ignore[no-untyped-def]
    endpoint, _client = s3
    dep = Deployment()
    env = {
        **CREDS,
        "RBEE_AUDIT_CHECKPOINT_S3": "s3://audit/rbee",
        "RBEE_AUDIT_S3_ENDPOINT": endpoint,
    }
    dep.env.update(env)
    try:
        dep.rbee("audit", "verify")  # migrates
        from tests.gdpr.test_tamper import Db, event_at, populate, rehash

        populate(dep, 0, 9)
        out = dep.rbee("audit", "checkpoint")
        assert "written to s3://audit/rbee/" in out.stderr
        assert not (dep.home / "audit-checkpoints").exists()
        ok = dep.rbee("audit", "verify")
        assert re.fullmatch(r"ok: 9 events, root [0-9a-f]{64}\n", ok.stdout)
        db = Db(dep)
        eid = event_at(db, 3)
        db.tamper(("UPDATE gdpr_audit_event SET region = %s WHERE id = %s", ("us", eid)))
        db.tamper(rehash(db, 3))
        bad = dep.rbee("audit", "verify", check=False)
        assert bad.returncode == 1 and f"index 3 (event {eid})" in bad.stderr, bad.stderr
    finally:
        dep.close()

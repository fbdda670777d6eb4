"""Where signed checkpoints live: outside the database, append-only.

A sink keeps, per checkpoint, the signed (size, root, time) and the leaf hashes added
since the previous checkpoint (so `rbee audit verify` can name the first bad index even
when an attacker also rewrote the hashes stored in the database). Nothing is ever
rewritten: a file (or object) is created exclusively, once.

* `DirectorySink` (the default): `RBEE_AUDIT_CHECKPOINT_DIR`, by default
  `RBEE_HOME/audit-checkpoints`; `NNNNNNNNNN.leaves` then `NNNNNNNNNN.json`, both 0400.
  Put it on storage the database's superuser cannot write (another host, a WORM mount).

* `S3Sink` (`RBEE_AUDIT_CHECKPOINT_S3=s3://bucket/prefix`; `RBEE_AUDIT_S3_ENDPOINT` for
  MinIO, Ceph, R2...; credentials the usual AWS way): the same two objects per checkpoint,
  written with `If-None-Match: *` (never over an existing one) and, unless
  `RBEE_AUDIT_S3_RETAIN_DAYS=0`, a COMPLIANCE object-lock retention (default 7 years, the
  audit log's), so not even the bucket's owner can delete or overwrite them. The bucket
  must have object lock enabled. Needs `boto3` (the `s3` extra).

No Django import: tools and tests use it on its own.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

MAGIC = "rbee-audit-checkpoint/v1"


def signed_message(size: int, root: bytes, time: str) -> bytes:
    """What the Ed25519 signature covers (the standalone verifier builds the same)."""
    return f"{MAGIC}\n{size}\n{root.hex()}\n{time}\n".encode()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    size: int
    root: bytes
    time: str  # ISO 8601, UTC
    prev_size: int
    signature: bytes
    public_key: str  # base64 of the raw Ed25519 public key
    # The roots of the perfect subtrees that make up the tree (merkle.Stream.frontier):
    # the next checkpoint starts from these, so it signs only an extension of this one.
    # Not signed itself: it is checked against the signed root before use. Empty in
    # checkpoints written before it existed.
    frontier: tuple[bytes, ...] = ()

    @property
    def name(self) -> str:
        return f"#{self.seq}"

    def as_json(self) -> dict[str, object]:
        return {
            "format": MAGIC,
            "seq": self.seq,
            "size": self.size,
            "root": self.root.hex(),
            "time": self.time,
            "prev_size": self.prev_size,
            "signature": base64.b64encode(self.signature).decode(),
            "public_key": self.public_key,
            **({"frontier": [h.hex() for h in self.frontier]} if self.frontier else {}),
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Checkpoint:
        return cls(
            seq=int(str(doc["seq"])),
            size=int(str(doc["size"])),
            root=bytes.fromhex(str(doc["root"])),
            time=str(doc["time"]),
            prev_size=int(str(doc["prev_size"])),
            signature=base64.b64decode(str(doc["signature"])),
            public_key=str(doc["public_key"]),
            frontier=tuple(bytes.fromhex(str(h)) for h in doc.get("frontier") or ()),  # type: ignore[attr-defined]
        )


class Sink(Protocol):
    where: str  # for people: a directory or s3://bucket/prefix

    def latest(self) -> Checkpoint | None: ...

    def all(self) -> list[Checkpoint]:
        """Every checkpoint, oldest first."""
        ...

    def leaves(self, cp: Checkpoint) -> bytes:
        """The leaf hashes of indexes [cp.prev_size, cp.size), concatenated."""
        ...

    def write(self, cp: Checkpoint, leaves: bytes) -> None:
        """Store a new checkpoint; FileExistsError when its number is taken."""
        ...


class DirectorySink:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def _ensure(self) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _seqs(self) -> list[int]:
        if not self.path.is_dir():
            return []
        return sorted(int(p.stem) for p in self.path.glob("*.json") if p.stem.isdigit())

    def _read(self, seq: int) -> Checkpoint:
        return Checkpoint.from_json(json.loads((self.path / f"{seq:010d}.json").read_text()))

    def latest(self) -> Checkpoint | None:
        seqs = self._seqs()
        return self._read(seqs[-1]) if seqs else None

    def all(self) -> list[Checkpoint]:
        return [self._read(s) for s in self._seqs()]

    def leaves(self, cp: Checkpoint) -> bytes:
        return (self.path / f"{cp.seq:010d}.leaves").read_bytes()

    def _create(self, name: str, content: bytes) -> None:
        fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())

    def write(self, cp: Checkpoint, leaves: bytes) -> None:
        self._ensure()
        # Leaves first: a checkpoint file is only ever seen with its leaves beside it.
        self._create(f"{cp.seq:010d}.leaves", leaves)
        self._create(f"{cp.seq:010d}.json", json.dumps(cp.as_json(), indent=1).encode())
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class S3Sink:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: object | None = None,
        endpoint: str | None = None,
        retain_days: int = 7 * 366,
    ) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint or None)
        self.s3: Any = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retain_days = retain_days
        self.where = f"s3://{bucket}/{self.prefix}"

    def _key(self, seq: int, ext: str) -> str:
        return f"{self.prefix}{seq:010d}.{ext}"

    def _seqs(self) -> list[int]:
        seqs: list[int] = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.prefix) :]
                stem, _, ext = name.partition(".")
                if ext == "json" and stem.isdigit():
                    seqs.append(int(stem))
        return sorted(seqs)

    def _get(self, key: str) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def _read(self, seq: int) -> Checkpoint:
        return Checkpoint.from_json(json.loads(self._get(self._key(seq, "json"))))

    def latest(self) -> Checkpoint | None:
        seqs = self._seqs()
        return self._read(seqs[-1]) if seqs else None

    def all(self) -> list[Checkpoint]:
        return [self._read(s) for s in self._seqs()]

    def leaves(self, cp: Checkpoint) -> bytes:
        return self._get(self._key(cp.seq, "leaves"))

    def _put(self, key: str, body: bytes) -> None:
        from botocore.exceptions import ClientError

        extra: dict[str, Any] = {}
        if self.retain_days > 0:
            extra["ObjectLockMode"] = "COMPLIANCE"
            extra["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=self.retain_days
            )
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                IfNoneMatch="*",
                ChecksumAlgorithm="SHA256",
                **extra,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise FileExistsError(key) from exc
            raise

    def write(self, cp: Checkpoint, leaves: bytes) -> None:
        self._put(self._key(cp.seq, "leaves"), leaves)
        self._put(self._key(cp.seq, "json"), json.dumps(cp.as_json(), indent=1).encode())


def default_dir() -> Path:
    from kernel.paths import rbee_home

    raw = os.environ.get("RBEE_AUDIT_CHECKPOINT_DIR")
    return Path(raw).expanduser() if raw else rbee_home() / "audit-checkpoints"


def get_sink() -> Sink:
    """The sink configured by the environment: S3 when RBEE_AUDIT_CHECKPOINT_S3 is set,
    else the directory."""
    url = os.environ.get("RBEE_AUDIT_CHECKPOINT_S3", "")
    if url:
        if not url.startswith("s3://"):
            raise ValueError(f"RBEE_AUDIT_CHECKPOINT_S3 is s3://BUCKET[/PREFIX], not {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        return S3Sink(
            bucket,
            prefix,
            endpoint=os.environ.get("RBEE_AUDIT_S3_ENDPOINT") or None,
            retain_days=int(os.environ.get("RBEE_AUDIT_S3_RETAIN_DAYS", str(7 * 366))),
        )
    return DirectorySink(default_dir())

"""Where signed checkpoints live: outside the database, append-only.

A sink keeps, per checkpoint, the signed (size, root, time) and the leaf hashes added
since the previous checkpoint (so `rbee audit verify` can name the first bad index even
when an attacker also rewrote the hashes stored in the database). Nothing is ever
rewritten: a file (or object) is created exclusively, once.

* `DirectorySink` (the default): `RBEE_AUDIT_CHECKPOINT_DIR`, by default
  `RBEE_HOME/audit-checkpoints`; `NNNNNNNNNN.leaves` then `NNNNNNNNNN.json`, both 0400.
  Put it on storage the database's superuser cannot write (another host, a WORM mount).

No Django import: tools and tests use it on its own.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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
        )


class Sink(Protocol):
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


def default_dir() -> Path:
    from kernel.paths import rbee_home

    raw = os.environ.get("RBEE_AUDIT_CHECKPOINT_DIR")
    return Path(raw).expanduser() if raw else rbee_home() / "audit-checkpoints"


def get_sink() -> Sink:
    return DirectorySink(default_dir())

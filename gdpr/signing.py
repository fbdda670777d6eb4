"""The deployment's Ed25519 key for GDPR manifests and erasure receipts.

It is the audit log's checkpoint key (`RBEE_HOME/audit_signing_key`, PKCS#8 PEM, 0600),
so one public key (`rbee audit pubkey`) verifies checkpoints, export manifests and
erasure receipts alike. Until the audit engineer's `gdpr.crypto` is merged this module
creates the same file in the same format; afterwards it delegates to it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kernel.paths import rbee_home

SIGNING_FILE = "audit_signing_key"


def _create_once(path: Path, content: bytes) -> bytes:
    if path.exists():
        return path.read_bytes()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
    try:
        os.link(tmp, path)  # atomic: a concurrent creator loses and reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


@lru_cache(maxsize=4)
def _key(home: str) -> Ed25519PrivateKey:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = serialization.load_pem_private_key(
        _create_once(Path(home) / SIGNING_FILE, pem), password=None
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"{Path(home) / SIGNING_FILE} is not an Ed25519 key")
    return key


def signing_key() -> Ed25519PrivateKey:
    return _key(str(rbee_home()))


def public_key_b64() -> str:
    raw = signing_key().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode()


def canonical(doc: Any) -> bytes:
    """The bytes a signature covers: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_document(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with a `signature` block: Ed25519 over canonical(doc without `signature`)."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    sig = signing_key().sign(canonical(body))
    return {
        **body,
        "signature": {
            "alg": "Ed25519",
            "public_key": public_key_b64(),
            "value": base64.b64encode(sig).decode(),
            "covers": "canonical JSON (sorted keys, no spaces, UTF-8) of this object "
            "without its 'signature' member",
        },
    }


def verify_document(doc: dict[str, Any], public_key: str | None = None) -> bool:
    """Whether a signed document is intact (against `public_key`, base64, or its own)."""
    sig = doc.get("signature") or {}
    try:
        pub = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(public_key or sig.get("public_key", ""))
        )
        body = {k: v for k, v in doc.items() if k != "signature"}
        pub.verify(base64.b64decode(sig.get("value", "")), canonical(body))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True

"""Signatures on GDPR documents: export manifests and erasure receipts.

They use the deployment's Ed25519 key, the one that signs the audit log's checkpoints
(gdpr.crypto: `RBEE_HOME/audit_signing_key`), so one public key (`rbee audit pubkey`)
verifies checkpoints, manifests and receipts alike.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gdpr import crypto


def public_key_b64() -> str:
    return crypto.public_key_b64()


def canonical(doc: Any) -> bytes:
    """The bytes a signature covers: JSON with sorted keys, no spaces, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_document(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with a `signature` block: Ed25519 over canonical(doc without `signature`)."""
    body = {k: v for k, v in doc.items() if k != "signature"}
    sig = crypto.signing_key().sign(canonical(body))
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

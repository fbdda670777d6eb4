"""Bearer secrets (API keys, hive tokens): made once, shown once, stored as a hash.

A secret looks like ``<kind>-<prefix>-<body>``: the prefix is public, unique and
indexed so a lookup is one query; the body carries 240 bits of randomness. Only
SHA-256 of the whole secret is stored (the secret is high-entropy, so a slow
password hash would add cost without adding safety), and hashes are compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX_LEN = 10
_BODY_BYTES = 30
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class NewSecret:
    plaintext: str
    prefix: str
    digest: str


def _random_token(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def make(kind: str) -> NewSecret:
    prefix = _random_token(PREFIX_LEN)
    body = secrets.token_urlsafe(_BODY_BYTES)
    plaintext = f"{kind}-{prefix}-{body}"
    return NewSecret(plaintext=plaintext, prefix=prefix, digest=digest(plaintext))


def parse_prefix(kind: str, plaintext: str) -> str | None:
    """The public prefix of a well-formed secret of this kind, else None."""
    m = re.fullmatch(
        rf"{re.escape(kind)}-([a-z0-9]{{{PREFIX_LEN}}})-[A-Za-z0-9_\-]{{20,100}}", plaintext
    )
    return m.group(1) if m else None


def matches(plaintext: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(plaintext), stored_digest)

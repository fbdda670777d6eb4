"""The audit log's keys, kept outside the database in RBEE_HOME (0600).

* `audit_master_key` (32 random bytes): wraps every data subject's AES-256-GCM key (a
  database dump alone decrypts nothing) and derives the HMAC key that finds a subject's
  key row (a dump alone does not say whose a key is).
* `audit_signing_key` (Ed25519, PKCS#8 PEM): signs checkpoints; its public key is what
  customers and auditors pin (`rbee audit pubkey`).

Both are created on first use by whichever process gets there first (written to a
temporary name, then linked into place, so a concurrent reader never sees half a key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernel.paths import rbee_home

MASTER_FILE = "audit_master_key"
SIGNING_FILE = "audit_signing_key"
NONCE = 12


def _create_once(path: Path, content: bytes) -> bytes:
    """`content` written to `path` (0600) unless someone else already made it; the
    file's content either way."""
    if path.exists():
        return path.read_bytes()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # atomic; fails if another process won
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _home_id() -> str:
    """Which RBEE_HOME is meant, without touching the disk (keys are cached per home)."""
    return os.environ.get("RBEE_HOME", "") + "\0" + os.environ.get("XDG_DATA_HOME", "")


class MissingKey(RuntimeError):
    """A key the audit log already depends on is gone from RBEE_HOME."""


@lru_cache(maxsize=4)
def _master(home_id: str) -> bytes:
    path = rbee_home() / MASTER_FILE
    if not path.exists():
        from gdpr.models import AuditKey

        if AuditKey.objects.exists():
            # A new master key would not unwrap one existing subject key: every event
            # about them would fail, and their sealed fields would be lost for good.
            raise MissingKey(
                f"{path} is missing but the audit log holds subject keys wrapped by it: "
                "restore it from your backup of RBEE_HOME (every queen and worker needs "
                "the same file)"
            )
    raw = _create_once(path, secrets.token_bytes(32))
    if len(raw) != 32:
        raise RuntimeError(f"{path} is not a 32-byte key")
    return raw


def master_key() -> bytes:
    return _master(_home_id())


@lru_cache(maxsize=16)
def _derived_cached(home_id: str, label: bytes) -> bytes:
    return hmac.new(_master(home_id), b"rbee-audit/" + label, hashlib.sha256).digest()


def _derived(label: bytes) -> bytes:
    return _derived_cached(_home_id(), label)


def subject_lookup(subject: str) -> str:
    """HMAC of a subject's canonical form: the key row's index, which names no one."""
    return hmac.new(_derived(b"subject-lookup"), subject.encode(), hashlib.sha256).hexdigest()


def wrap(dek: bytes, key_id: str) -> bytes:
    nonce = secrets.token_bytes(NONCE)
    return nonce + AESGCM(_derived(b"wrap")).encrypt(nonce, dek, key_id.encode())


def unwrap(blob: bytes, key_id: str) -> bytes:
    return AESGCM(_derived(b"wrap")).decrypt(blob[:NONCE], blob[NONCE:], key_id.encode())


def seal(dek: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE)
    return nonce + AESGCM(dek).encrypt(nonce, plaintext, aad)


def open_sealed(dek: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(dek).decrypt(blob[:NONCE], blob[NONCE:], aad)


@lru_cache(maxsize=4)
def _signing(home_id: str) -> Ed25519PrivateKey:
    path = rbee_home() / SIGNING_FILE
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = serialization.load_pem_private_key(_create_once(path, pem), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RuntimeError(f"{path} is not an Ed25519 key")
    return key


def signing_key() -> Ed25519PrivateKey:
    return _signing(_home_id())


def public_key() -> Ed25519PublicKey:
    return signing_key().public_key()


def public_key_b64() -> str:
    raw = public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()

"""Certificates made at run time for tests (trustme): a private CA, an intermediate CA,
and a server certificate, written as the files a queen and its hives are given."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import trustme


@dataclass(frozen=True)
class TLSFiles:
    ca: Path  # the root CA's certificate: what clients are told to trust (--ca)
    cert: Path  # the server's certificate, then the intermediate that issued it
    key: Path  # the server's private key, mode 0600

    def context(self) -> ssl.SSLContext:
        """A client context trusting only this CA (for httpx, openai, websockets)."""
        return ssl.create_default_context(cafile=str(self.ca))


def issue(
    directory: Path,
    *names: str,
    ca: trustme.CA | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> TLSFiles:
    """A certificate for `names` (DNS names or IP addresses) from an intermediate of `ca`
    (a new CA when None), written under `directory`: ca.pem, cert.pem (with the
    intermediate), key.pem (0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    root = ca or trustme.CA()
    leaf = root.create_child_ca().issue_cert(*names, not_before=not_before, not_after=not_after)
    files = TLSFiles(
        ca=directory / "ca.pem", cert=directory / "cert.pem", key=directory / "key.pem"
    )
    root.cert_pem.write_to_path(files.ca)
    files.cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(leaf.private_key_pem.bytes())
    return files

"""TLS between the queen and whatever talks to it.

The server side (`rbee queen start --tls-cert FILE --tls-key FILE`): `check_server_files`
reads the certificate and its key before the queen listens and says clearly what is
wrong with them (unreadable, not PEM, a key with a passphrase, a key readable by every
user of the machine, a key that is not the certificate's, a certificate outside its
validity), so that a mistake is an error at start and not a failed handshake for every
client afterwards. Each file is read once: what was checked is what the queen serves
(`ServerCert` carries the bytes), so a key handed over through a pipe works and a file
changed after the check cannot slip past it.

The client side (hives, the CLI): `client_context` verifies the queen's certificate
chain and host name against this machine's CAs, or only against the CA certificates in
a file (`--ca FILE`, for a private or self-signed CA), and `verify_failure` turns a
failed check into a sentence that names the reason.

Nothing here imports Django or an app: the hive agent uses the client side.
"""

from __future__ import annotations

import os
import ssl
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# OpenSSL's X509_V_ERR_* codes a person can act on (x509_vfy.h).
_UNTRUSTED = {
    2,  # unable to get issuer certificate
    18,  # self-signed certificate
    19,  # self-signed certificate in certificate chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
}
_EXPIRED, _NOT_YET_VALID = 10, 9
_NAME_MISMATCH = {62, 64}  # host name mismatch, IP address mismatch


class TLSFilesError(ValueError):
    """A certificate, key or CA file that cannot be used; the message says why."""


@dataclass(frozen=True)
class ServerCert:
    """A certificate and key that passed `check_server_files`."""

    cert: Path
    key: Path
    names: tuple[str, ...]  # the DNS names and IP addresses it is valid for
    not_after: datetime
    chain: tuple[bytes, ...]  # PEM of the certificates after the first (intermediates)
    cert_pem: bytes  # PEM of the server's own certificate, as checked
    key_pem: bytes = field(repr=False)  # its private key (PKCS#8 PEM), as checked; never shown

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSFilesError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from exc


def _open_to_others(path: Path) -> str:
    """'' when only its owner (and group) may read and write `path`; else its mode."""
    mode = path.stat().st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        return oct(stat.S_IMODE(mode))[2:].rjust(4, "0")
    return ""


def _spki(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def cert_names(cert: Any) -> tuple[str, ...]:
    """The DNS names and IP addresses in a certificate's subjectAltName."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return (*dns, *ips)


def check_server_files(
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    *,
    now: datetime | None = None,
    cert_option: str = "--tls-cert",
    key_option: str = "--tls-key",
) -> ServerCert:
    """The queen's certificate file (PEM: its own certificate first, then any
    intermediates) and private key file (PEM, unencrypted), checked; TLSFilesError
    naming the option and the file otherwise."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = Path(cert).expanduser(), Path(key).expanduser()
    cert_pem = _read(cert_path, cert_option)
    key_pem = _read(key_path, key_option)
    for path, option, pem in ((key_path, key_option, key_pem), (cert_path, cert_option, cert_pem)):
        if b"PRIVATE KEY-----" not in pem:
            continue
        mode = _open_to_others(path)
        if mode:
            raise TLSFilesError(
                f"{option} {path} holds a private key and every user of this machine may "
                f"read or change it (mode {mode}): `chmod 600 {path}` (or 640 with a group "
                "the queen's user is in) and start again"
            )
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise TLSFilesError(
            f"{cert_option} {cert_path}: no PEM certificate in it (expected "
            "'-----BEGIN CERTIFICATE-----', the server's certificate first)"
        ) from exc
    leaf = certs[0]
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise TLSFilesError(
            f"{key_option} {key_path}: the key is encrypted with a passphrase; the queen "
            f"needs it unencrypted (`openssl pkey -in {key_path} -out NEW.key`, mode 600)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise TLSFilesError(
            f"{key_option} {key_path}: no PEM private key in it (expected "
            "'-----BEGIN PRIVATE KEY-----' or an RSA/EC key)"
        ) from exc
    if _spki(private_key.public_key()) != _spki(leaf.public_key()):
        raise TLSFilesError(
            f"{key_option} {key_path} is not the key of the certificate in {cert_path} "
            f"({leaf.subject.rfc4514_string() or 'no subject'}): the two must be a pair "
            "(and the server's own certificate must come first in the file)"
        )
    moment = now or datetime.now(UTC)
    for i, c in enumerate(certs):
        which = (
            "the certificate"
            if i == 0
            else f"certificate {i + 1} in the file ({c.subject.rfc4514_string()})"
        )
        if c.not_valid_after_utc <= moment:
            raise TLSFilesError(
                f"{cert_option} {cert_path}: {which} expired on "
                f"{c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; renew it"
            )
        if c.not_valid_before_utc > moment:
            raise TLSFilesError(
                f"{cert_option} {cert_path}: {which} is not valid before "
                f"{c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this machine's clock right?)"
            )
    return ServerCert(
        cert=cert_path,
        key=key_path,
        names=cert_names(leaf),
        not_after=leaf.not_valid_after_utc,
        chain=tuple(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]),
        cert_pem=leaf.public_bytes(serialization.Encoding.PEM),
        key_pem=private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def client_context(
    ca: str | os.PathLike[str] | None = None, *, option: str = "--ca"
) -> ssl.SSLContext:
    """A client context that verifies the peer's certificate chain and host name: against
    the CA certificates in `ca` only, when given, else this machine's CAs (OpenSSL's
    default paths; SSL_CERT_FILE and SSL_CERT_DIR move them). TLS 1.2 at least.
    TLSFilesError for a CA file that cannot be read or holds no certificate."""
    if ca is None:
        ctx = ssl.create_default_context()
    else:
        path = Path(ca).expanduser()
        pem = _read(path, option)
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise TLSFilesError(
                f"{option} {path}: no PEM certificate in it (expected the CA's certificate, "
                "'-----BEGIN CERTIFICATE-----')"
            )
        try:
            ctx = ssl.create_default_context(cadata=pem.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise TLSFilesError(f"{option} {path}: not a usable CA certificate: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def verify_failure(exc: BaseException | None, *, ca: str | os.PathLike[str] | None = None) -> str:
    """What a failed TLS connection says, for people ('' when `exc`, or what caused it, is
    not a TLS failure)."""
    while exc is not None and not isinstance(exc, ssl.SSLError):
        exc = exc.__cause__ or exc.__context__
    if exc is None:
        return ""
    trust = f"the CA certificates in {ca}" if ca else "this machine's CAs"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code, message = exc.verify_code, exc.verify_message
        if code in _NAME_MISMATCH:
            return (
                f"its certificate is for another name ({message}); connect to a name the "
                "certificate lists, or issue one for this name"
            )
        if code in _UNTRUSTED:
            return (
                f"its certificate is not signed by {trust} ({message}); pass the CA that "
                "issued it with --ca FILE"
                if not ca
                else f"its certificate is not signed by {trust} ({message})"
            )
        if code == _EXPIRED:
            return f"its certificate has expired ({message})"
        if code == _NOT_YET_VALID:
            return f"its certificate is not valid yet ({message}; check the clocks)"
        return f"its certificate was refused: {message}"
    reason = (getattr(exc, "reason", None) or "").upper()
    if reason in {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}:
        return (
            "it does not speak TLS on this port (was it started with --tls-cert? if it "
            "serves plain http, the URL is http://)"
        )
    return f"the TLS handshake failed: {exc}"

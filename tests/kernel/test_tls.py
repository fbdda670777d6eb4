"""The queen's certificate and key checked at start, and the client side's verification
with its reasons (kernel/tls.py). Certificates are made at run time (trustme); the
verification failures come from real handshakes between two in-memory TLS ends."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from kernel.tls import TLSFilesError, check_server_files, client_context, verify_failure
from testkit.tls import TLSFiles, issue


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return issue(tmp_path / "tls", "queen.example", "10.0.0.5")


def test_a_good_pair_is_described(files: TLSFiles) -> None:
    cert = check_server_files(files.cert, files.key)
    assert cert.names == ("queen.example", "10.0.0.5")
    assert cert.cert == files.cert and cert.key == files.key
    # The intermediate after the server's certificate, for the queen to send.
    assert len(cert.chain) == 1 and cert.chain[0].startswith(b"-----BEGIN CERTIFICATE-----")
    assert cert.days_left() > 300


def test_the_bytes_checked_are_kept_for_serving_and_the_key_is_never_shown(
    files: TLSFiles,
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = check_server_files(files.cert, files.key)
    # The queen serves these bytes (rbee/server.py), not the files read a second time.
    assert (
        x509.load_pem_x509_certificate(cert.cert_pem)
        == x509.load_pem_x509_certificates(files.cert.read_bytes())[0]
    )
    key = serialization.load_pem_private_key(cert.key_pem, password=None)
    original = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert key.private_numbers() == original.private_numbers()  # type: ignore[union-attr]
    # A ServerCert in a log line or a traceback shows no key material.
    assert "PRIVATE" not in repr(cert) and "key_pem" not in repr(cert)


def test_a_missing_file_is_named(files: TLSFiles, tmp_path: Path) -> None:
    with pytest.raises(TLSFilesError, match=r"--tls-cert .*nope\.pem: cannot read it"):
        check_server_files(tmp_path / "nope.pem", files.key)
    with pytest.raises(TLSFilesError, match=r"--tls-key .*nope\.key: cannot read it"):
        check_server_files(files.cert, tmp_path / "nope.key")


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602])
def test_a_key_other_users_may_read_or_change_is_refused(files: TLSFiles, mode: int) -> None:
    files.key.chmod(mode)
    with pytest.raises(
        TLSFilesError, match=rf"every user of this machine.*mode 0{mode:o}.*chmod 600"
    ):
        check_server_files(files.cert, files.key)
    files.key.chmod(0o640)  # the ssl-cert group's way is fine
    assert check_server_files(files.cert, files.key).names


def test_a_certificate_file_that_holds_the_key_is_held_to_the_same_rule(
    files: TLSFiles, tmp_path: Path
) -> None:
    both = tmp_path / "both.pem"
    both.write_bytes(files.cert.read_bytes() + files.key.read_bytes())
    both.chmod(0o644)
    with pytest.raises(TLSFilesError, match=r"--tls-cert .*holds a private key"):
        check_server_files(both, files.key)
    both.chmod(0o600)
    assert check_server_files(both, both).names == ("queen.example", "10.0.0.5")


def test_files_that_are_not_pem_are_refused(files: TLSFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("hello\n")
    junk.chmod(0o600)
    with pytest.raises(TLSFilesError, match=r"--tls-cert .*no PEM certificate"):
        check_server_files(junk, files.key)
    with pytest.raises(TLSFilesError, match=r"--tls-key .*no PEM private key"):
        check_server_files(files.cert, junk)
    # The certificate given as the key (a common slip).
    with pytest.raises(TLSFilesError, match=r"--tls-key .*no PEM private key"):
        check_server_files(files.cert, files.cert)


def test_a_key_with_a_passphrase_is_refused(files: TLSFiles, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    locked.chmod(0o600)
    with pytest.raises(TLSFilesError, match="encrypted with a passphrase"):
        check_server_files(files.cert, locked)


def test_a_key_of_another_certificate_is_refused(files: TLSFiles, tmp_path: Path) -> None:
    other = issue(tmp_path / "other", "queen.example")
    with pytest.raises(TLSFilesError, match="is not the key of the certificate"):
        check_server_files(files.cert, other.key)
    # The intermediate first (the order reversed) is the same mistake, named the same way.
    chain = files.cert.read_bytes().split(b"-----END CERTIFICATE-----\n")
    reversed_ = tmp_path / "reversed.pem"
    reversed_.write_bytes(
        chain[1] + b"-----END CERTIFICATE-----\n" + chain[0] + b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(TLSFilesError, match="own certificate must come first"):
        check_server_files(reversed_, files.key)


def test_a_certificate_outside_its_validity_is_refused(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old = issue(
        tmp_path / "old",
        "q.example",
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )
    with pytest.raises(
        TLSFilesError, match=r"the certificate expired on \d{4}-\d\d-\d\d .*renew it"
    ):
        check_server_files(old.cert, old.key)
    soon = issue(tmp_path / "soon", "q.example", not_before=now + timedelta(days=2))
    with pytest.raises(TLSFilesError, match=r"is not valid before .*clock"):
        check_server_files(soon.cert, soon.key)
    # Checked against the moment given (what a clock that is right would say).
    assert check_server_files(soon.cert, soon.key, now=now + timedelta(days=3)).names


# --- the client side ---------------------------------------------------------------------


def handshake(server: TLSFiles, client: ssl.SSLContext, name: str) -> None:
    """A full TLS handshake between a server with `server`'s certificate and `client`,
    through memory: raises what the client's check raises."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(server.cert, server.key)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    s = sctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for end, out, peer_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                if end is s:  # the server hears the client's alert: the client's error counts
                    done += 1
                else:
                    raise
            peer_in.write(out.read())
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def test_the_ca_file_is_what_the_client_trusts(files: TLSFiles, tmp_path: Path) -> None:
    handshake(files, client_context(files.ca), "queen.example")
    handshake(files, client_context(files.ca), "10.0.0.5")
    stranger = issue(tmp_path / "stranger", "queen.example")
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(files, client_context(stranger.ca), "queen.example")
    why = verify_failure(caught.value, ca=stranger.ca)
    assert why.startswith(f"its certificate is not signed by the CA certificates in {stranger.ca}")
    # Without --ca: this machine's CAs, which do not know a private CA; the hint says --ca.
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(files, client_context(None), "queen.example")
    assert "this machine's CAs" in verify_failure(caught.value) and "--ca FILE" in verify_failure(
        caught.value
    )


def test_another_name_is_refused_with_the_name(files: TLSFiles) -> None:
    for name, says in (("other.example", "'other.example'"), ("10.0.0.6", "10.0.0.6")):
        with pytest.raises(ssl.SSLCertVerificationError) as caught:
            handshake(files, client_context(files.ca), name)
        why = verify_failure(caught.value, ca=files.ca)
        assert why.startswith("its certificate is for another name"), why
        assert says in why


def test_an_expired_certificate_is_named_as_such(tmp_path: Path) -> None:
    ca = trustme.CA()
    now = datetime.now(UTC)
    old = issue(
        tmp_path / "old",
        "q.example",
        ca=ca,
        not_before=now - timedelta(days=9),
        not_after=now - timedelta(days=1),
    )
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(old, client_context(old.ca), "q.example")
    assert verify_failure(caught.value).startswith("its certificate has expired")


def test_a_ca_file_that_cannot_be_used_is_named(files: TLSFiles, tmp_path: Path) -> None:
    with pytest.raises(TLSFilesError, match=r"--ca .*missing\.pem: cannot read it"):
        client_context(tmp_path / "missing.pem")
    with pytest.raises(TLSFilesError, match=r"--ca .*key\.pem: no PEM certificate"):
        client_context(files.key)
    with pytest.raises(TLSFilesError, match=r"RBEE_HIVE_CA .*missing\.pem"):
        client_context(tmp_path / "missing.pem", option="RBEE_HIVE_CA")
    assert client_context(files.ca).minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_failure_that_is_not_tls_says_nothing() -> None:
    assert verify_failure(ConnectionRefusedError(111, "Connection refused")) == ""
    assert verify_failure(None) == ""


def test_a_server_that_answers_in_clear_is_named(files: TLSFiles) -> None:
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client_context(files.ca).wrap_bio(c_in, c_out, server_hostname="queen.example")
    with pytest.raises(ssl.SSLWantReadError):
        c.do_handshake()
    c_in.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ssl.SSLError) as caught:
        c.do_handshake()
    wrapped = OSError("connect failed")
    wrapped.__cause__ = caught.value  # as a client library re-raises it
    assert "does not speak TLS on this port" in verify_failure(wrapped)

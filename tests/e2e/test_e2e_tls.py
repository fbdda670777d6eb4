"""TLS end to end: a real queen serving https:// and wss:// itself (`rbee queen start
--tls-cert --tls-key`), real hives verifying it (`--ca`), and real clients.

The certificates are made at run time (testkit/tls.py, trustme): a private root CA, an
intermediate, and a server certificate for 127.0.0.1 only. Clients trust the root alone,
so every successful connection also shows that the queen sends the intermediate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from testkit.live import ROOT, Deployment, Hive, Queen, free_port, stop_process
from testkit.rawhttp import post
from testkit.tls import TLSFiles, issue

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2-135m-instruct"
MSG = [{"role": "user", "content": "Say hello."}]
BODY_LIMIT = 3 * 2**20  # RBEE_MAX_BODY_BYTES: /v1's uploads
JSON_LIMIT = 256 * 1024  # RBEE_MAX_JSON_BYTES: every other body


@dataclass
class Stack:
    dep: Deployment
    files: TLSFiles
    queen: Queen
    hive: Hive
    api_key: str

    def client(self, **kw: object) -> openai.OpenAI:
        http = httpx.Client(verify=self.files.context())
        return openai.OpenAI(
            base_url=f"{self.queen.url}/v1",
            api_key=self.api_key,
            max_retries=0,
            http_client=http,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    dep = Deployment()
    try:
        files = issue(dep.home / "tls", "127.0.0.1")
        limits = {"RBEE_MAX_BODY_BYTES": str(BODY_LIMIT), "RBEE_MAX_JSON_BYTES": str(JSON_LIMIT)}
        queen = Queen(dep, tls=files, env=limits)
        hive = Hive(dep, queen, "hive-tls", [CHAT_MODEL])
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        yield Stack(dep=dep, files=files, queen=queen, hive=hive, api_key=key)
    finally:
        dep.close()


def wait_for_log(path: Path, pattern: str, *, count: int = 1, timeout: float = 60) -> list[str]:
    """The log's lines matching `pattern` once there are `count` of them."""
    deadline = time.monotonic() + timeout
    found: list[str] = []
    while time.monotonic() < deadline:
        found = [ln for ln in path.read_text().splitlines() if re.search(pattern, ln)]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{count}x {pattern!r} not in {path.name}:\n{path.read_text()}")


def hive_names(queen: Queen) -> set[str]:
    return {h["name"] for h in queen.wait_healthy()["hives"]}


# --- the happy path ----------------------------------------------------------------------


def test_the_openai_sdk_is_served_over_https_by_a_hive_on_wss(stack: Stack) -> None:
    queen = stack.queen
    assert queen.url.startswith("https://")
    assert f"queen listening on https://127.0.0.1:{queen.port}" in queen.log.read_text()
    hive_log = stack.hive.log.read_text()
    assert f"connected to the queen at wss://127.0.0.1:{queen.port}/hive/ws" in hive_log
    client = stack.client()
    r = client.chat.completions.create(model=CHAT_MODEL, messages=MSG, max_tokens=8)
    assert r.choices[0].message.content
    assert r.usage is not None and r.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(model=CHAT_MODEL, messages=MSG, max_tokens=8, stream=True)
    )
    assert len(chunks) > 2 and chunks[-1].choices[0].finish_reason is not None
    assert [m.id for m in client.models.list().data] == [CHAT_MODEL]


def test_a_tls_queen_sets_secure_cookies_and_hsts(stack: Stack) -> None:
    page = httpx.get(f"{stack.queen.url}/admin/login/", verify=stack.queen.verify)
    assert page.status_code == 200
    assert page.headers["strict-transport-security"] == "max-age=31536000"
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("csrftoken=") and "Secure" in cookie


def test_the_queen_speaks_tls_1_2_or_later_and_http_1_1_only(stack: Stack) -> None:
    """What the README promises: TLS 1.2 or later, HTTP/1.1 (HTTP/2 would bypass the
    edge's checks, rbee/server.py)."""

    def connect(lowest: ssl.TLSVersion, highest: ssl.TLSVersion) -> tuple[str, str | None]:
        ctx = stack.files.context()
        with warnings.catch_warnings():  # TLSv1/TLSv1_1 are deprecated names: on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version, ctx.maximum_version = lowest, highest
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client would offer TLS 1.0/1.1
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with (
            socket.create_connection(("127.0.0.1", stack.queen.port)) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return str(tls.version()), tls.selected_alpn_protocol()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ssl.SSLError) as refused:
        connect(*old)
    # The queen's alert, not this client declining to offer them.
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    assert connect(v12, v12) == ("TLSv1.2", "http/1.1")
    assert connect(v13, v13) == ("TLSv1.3", "http/1.1")


# --- what is refused -------------------------------------------------------------------


def test_plain_http_to_the_tls_port_is_told_to_use_https(stack: Stack) -> None:
    port = stack.queen.port
    r = httpx.get(f"http://127.0.0.1:{port}/v1/models")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "tls_required" and "use https://" in error["message"]
    plain = openai.OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=stack.api_key, max_retries=0
    )
    with pytest.raises(openai.BadRequestError, match="speaks HTTPS only"):
        plain.models.list()
    # A hive given http:// (allowed on loopback) hears the same, and says so.
    hive = Hive(
        stack.dep,
        stack.queen,
        "hive-plain",
        [CHAT_MODEL],
        url=f"http://127.0.0.1:{port}",
        wait=False,
    )
    try:
        wait_for_log(hive.log, r"serves TLS on this port: start the hive with --queen https://")
        assert hive.proc.poll() is None  # still retrying
        assert "hive-plain" not in hive_names(stack.queen)
    finally:
        hive.kill()
    assert "refused a plain HTTP request from 127.0.0.1 on the TLS port" in (
        stack.queen.log.read_text()
    )


def test_odd_openings_on_the_tls_port_are_answered_or_closed_and_it_keeps_serving(
    stack: Stack,
) -> None:
    """What reaches the TLS port before (or instead of) a handshake: each connection is
    answered or closed at once, none is kept waiting for more, and the port serves on."""

    def first_answer(opening: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", stack.queen.port), timeout=30) as s:
            with contextlib.suppress(ConnectionError):
                s.sendall(opening)
            try:
                return s.recv(200)
            except ConnectionResetError:
                return b""  # closed without a word: also not waiting

    # One letter is enough to know it is not TLS: the 400 comes without the rest.
    assert first_answer(b"G").startswith(b"HTTP/1.1 400 Bad Request\r\n")
    # A megabyte of it is not buffered first.
    assert first_answer(b"A" * 2**20).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    # Not HTTP and not TLS (an SSLv2 hello, binary, a digit): closed.
    for opening in (b"\x80\x2e\x01\x03\x01" + bytes(40), b"\xff" * 10, b"1234\r\n\r\n"):
        assert first_answer(opening) == b"", opening
    # A TLS record with a length no record has: TLS's own alert (0x15), then closed.
    assert first_answer(b"\x16\x03\x01\xff\xff" + b"A" * 100).startswith(b"\x15\x03")
    assert httpx.get(f"{stack.queen.url}/healthz", verify=stack.queen.verify).status_code == 200


def test_a_hive_trusting_another_ca_refuses_the_queen_and_keeps_retrying(stack: Stack) -> None:
    other = issue(stack.dep.home / "other-ca", "127.0.0.1")
    hive = Hive(stack.dep, stack.queen, "hive-wrong-ca", [CHAT_MODEL], ca=other.ca, wait=False)
    try:
        lines = wait_for_log(hive.log, r"refusing the queen at wss://", count=2)
        assert all(
            f"its certificate is not signed by the CA certificates in {other.ca}" in ln
            for ln in lines
        ), lines
        assert all("retrying in" in ln for ln in lines)
        assert hive.proc.poll() is None  # it keeps trying (with backoff), as for a queen down
        # It never connected: the queen never saw it, not even for a moment.
        assert "hive-wrong-ca" not in hive_names(stack.queen)
        assert stack.dep.sql(
            "SELECT connected_at, last_seen_at FROM hives_hive WHERE name = 'hive-wrong-ca'"
        ) == [(None, None)]
        assert "connected to the queen" not in hive.log.read_text()
    finally:
        hive.kill()
    # The same for an HTTP client trusting that CA.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{stack.queen.url}/healthz", verify=other.context())


def test_a_certificate_for_another_name_is_refused(stack: Stack) -> None:
    # The certificate is for 127.0.0.1 only; `localhost` is this machine too, but another name.
    url = f"https://localhost:{stack.queen.port}"
    hive = Hive(stack.dep, stack.queen, "hive-by-name", [CHAT_MODEL], url=url, wait=False)
    try:
        (line,) = wait_for_log(hive.log, r"refusing the queen at wss://localhost")
        assert "its certificate is for another name" in line
        assert "not valid for 'localhost'" in line
        assert hive.proc.poll() is None
        assert "hive-by-name" not in hive_names(stack.queen)
    finally:
        hive.kill()
    with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
        httpx.get(f"{url}/healthz", verify=stack.files.context())


# --- the edge's checks (rbee/server.py) over TLS ---------------------------------------------


def test_the_edge_refuses_large_bodies_before_reading_them_over_tls(stack: Stack) -> None:
    port, tls = stack.queen.port, stack.files.context()
    auth = {"Authorization": f"Bearer {stack.api_key}"}
    big = 25 * 1000 * 1000  # declared; a server that read it all would take it all

    async def refusals() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(
            post(
                port,
                "/v1/chat/completions",
                {**auth, "Content-Type": "application/json"},
                big,
                tls=tls,
            ),
            post(
                port,
                "/v1/audio/transcriptions",
                {**auth, "Content-Type": "multipart/form-data; boundary=x"},
                big,
                tls=tls,
            ),
            post(port, "/v1/chat/completions", {"Content-Type": "application/json"}, big, tls=tls),
        )

    json_413, upload_413, no_key = asyncio.run(refusals())
    for answer, limit in ((json_413, JSON_LIMIT), (upload_413, BODY_LIMIT)):
        assert answer.status == 413
        assert answer.body["error"] == {
            "message": f"The request body is larger than this server accepts ({limit} bytes).",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    assert no_key.status == 401 and no_key.body["error"]["code"] == "invalid_api_key"
    # Answered from the headers: what left the clients was TLS and socket buffers' worth.
    assert max(a.sent for a in (json_413, upload_413, no_key)) < big / 2
    # Through the official SDK too: OpenAI's error, status and code.
    long = [{"role": "user", "content": "x" * (JSON_LIMIT + 1024)}]
    with pytest.raises(openai.APIStatusError) as caught:
        stack.client().chat.completions.create(model=CHAT_MODEL, messages=long)
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "request_too_large"  # type: ignore[index]
    # And the queen still serves over the same port.
    r = stack.client().chat.completions.create(model=CHAT_MODEL, messages=MSG, max_tokens=4)
    assert r.choices[0].message.content is not None


# --- rbee up with TLS: the local hive checks the certificate's name on loopback ------------------


def test_rbee_up_serves_tls_and_its_hive_checks_the_certificate(tmp_path: Path) -> None:
    files = issue(tmp_path / "tls", "rbee.example")  # not a loopback name
    dep = Deployment(embedded=True)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rbee.cli",
            "up",
            "--port",
            str(port),
            "--model",
            CHAT_MODEL,
            "--tls-cert",
            str(files.cert),
            "--tls-key",
            str(files.key),
            "--ca",
            str(files.ca),
        ],
        env=dep.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        key = None
        while time.monotonic() < deadline and key is None:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.match(r"API key: (sk-rbee-\S+)", line)
            key = m.group(1) if m else None
        out = "".join(lines)
        assert key, out
        assert f"rbee is up: https://rbee.example:{port}/v1" in out
        assert f"wss://127.0.0.1:{port}/hive/ws" in out  # the local hive, connected
        # Reached on loopback, checked for the certificate's name (as `--server-name` does).
        with httpx.Client(verify=files.context()) as client:
            r = client.get(
                f"https://127.0.0.1:{port}/v1/models",
                headers={"Authorization": f"Bearer {key}"},
                extensions={"sni_hostname": "rbee.example"},
            )
        assert r.status_code == 200 and CHAT_MODEL in [m["id"] for m in r.json()["data"]]
    finally:
        stop_process(proc)
        dep.close()


def test_a_hive_checks_the_name_given_by_server_name(stack: Stack) -> None:
    """`--server-name`: the certificate is checked for that name instead of the URL's host
    (here a name the certificate does not have, so it is refused)."""
    hive = Hive(
        stack.dep,
        stack.queen,
        "hive-server-name",
        [CHAT_MODEL],
        extra_args=["--server-name", "queen.example"],
        wait=False,
    )
    try:
        (line,) = wait_for_log(hive.log, r"refusing the queen at wss://127\.0\.0\.1")
        assert "not valid for 'queen.example'" in line
    finally:
        hive.kill()


# --- what is served is what was checked ----------------------------------------------------


def test_the_queen_serves_the_files_it_checked_read_once(stack: Stack) -> None:
    """The certificate and key are read once, checked, and those bytes are served: a key
    handed over through a pipe (`--tls-key <(vault read ...)`, /dev/stdin), which cannot
    be read twice, works, and no file read later can differ from the one checked."""
    read, write = os.pipe()
    os.write(write, stack.files.key.read_bytes())  # a few hundred bytes: the pipe holds them
    os.close(write)
    port = free_port()
    log = stack.dep.home / "queen-pipe.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "rbee.cli", "queen", "start", "--no-migrate"),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--tls-cert", str(stack.files.cert), "--tls-key", f"/dev/fd/{read}"),
            ],
            env=stack.dep.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            pass_fds=(read,),
        )
    os.close(read)
    stack.dep.processes.append(proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the queen exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not serving in 60 s:\n{log.read_text()}"
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=stack.files.context())
                break
            except httpx.ConnectError:
                time.sleep(0.2)
        assert r.status_code == 200  # the intermediate is sent: the client trusts the root only
        assert "Traceback" not in log.read_text()
    finally:
        stop_process(proc)

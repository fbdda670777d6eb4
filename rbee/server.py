"""Daphne, with the checks that must come before a request body is read.

What Daphne does with a body (daphne/http_protocol.py, on Twisted's http.Request): Twisted
writes the whole body to a buffer (memory under 100 kB, a temporary file above), and
only once the last byte is in does Daphne's `process()` read all of it back into the
application's queue, in memory, before the ASGI application runs. So nothing the
application checks can protect the server from a large body: by the time the view sees
the request, the body has been received, stored and copied into memory in full.

This request class therefore decides from the request line and the headers, at the
moment Twisted knows the body's length (`gotLength`), before any of the body is read:

* the server's ceiling (RBEE_MAX_BODY_BYTES) for /v1's multipart uploads, and the JSON
  ceiling (RBEE_MAX_JSON_BYTES) for every other body (/v1 JSON, the management and
  portal APIs, the admin, Stripe's webhook): 413 from the declared length, or as soon
  as a chunked body passes it. The path is classified as Django will route it: Daphne
  percent-decodes it (/%76%31/... is /v1/...) and Django strips Daphne-Root-Path, which
  only a trusted proxy may send;
* on /v1, for a body over EARLY_AUTH_BYTES (or of unknown length): a missing or
  malformed bearer key is a 401 at once; a well-formed key nobody has seen lately is
  looked up in the database while the connection is paused (nothing more is read),
  and an unknown, revoked or expired one is a 401. Smaller bodies go to the view,
  which authenticates every request anyway;
* bytes in flight per client (RBEE_MAX_INFLIGHT_BYTES_PER_CLIENT; an IPv4 address, an
  IPv6 /64): the declared lengths of a client's requests still being received or
  served; a request that would pass it is a 429 without reading it.

A refusal is written with `Connection: close`, reading stops, the write side is shut
(the client sees the answer and the end of the stream) and the connection is dropped
shortly after, so a client that keeps sending is neither read nor buffered.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from daphne import http_protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web import http as twisted_http

from kernel.logs import safe
from kernel.secrets import parse_prefix
from kernel.tls import ServerCert

logger = logging.getLogger("rbee.server")

EARLY_AUTH_BYTES = 64 * 1024
"""Bodies at most this large are read before the key is checked (the view checks it)."""
LINGER_S = 2.0
"""How long a refused connection stays half-open for the client to read the answer."""
KEY_CACHE_S = 60.0
"""How long a key found valid is let through the edge without another lookup."""
KEY_CACHE_MAX = 10_000
API_KEY_KIND = "sk-rbee"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KeyCheck = Callable[[str], Awaitable[str | None]]  # None: valid; else the refusal message


@dataclass
class Edge:
    body_limit: int  # any request
    json_limit: int  # /v1 bodies that are not multipart
    inflight_per_client: int  # 0: no cap
    anonymous: bool  # an open queen: keyless /v1 requests to a loopback Host go through
    trusted_proxies: list[Network] = field(default_factory=list)
    check_key: KeyCheck | None = None
    inflight: dict[str, int] = field(default_factory=dict)
    valid_keys: dict[str, float] = field(default_factory=dict)

    def remember(self, key: str) -> None:
        if len(self.valid_keys) >= KEY_CACHE_MAX:
            now = time.monotonic()
            for k in [k for k, t in self.valid_keys.items() if t < now] or list(self.valid_keys):
                del self.valid_keys[k]
        self.valid_keys[_digest(key)] = time.monotonic() + KEY_CACHE_S

    def known(self, key: str) -> bool:
        until = self.valid_keys.get(_digest(key))
        return until is not None and until > time.monotonic()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def parse_networks(values: Iterable[str]) -> list[Network]:
    """RBEE_TRUSTED_PROXIES' addresses and CIDR blocks (ValueError on a bad one)."""
    return [ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip()]


def _in(host: str, networks: list[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in n for n in networks)


def client_group(address: str) -> str:
    """What the per-client byte cap counts a client address under: an IPv4 address
    itself, an IPv6 address's /64 (one subscriber's prefix: anyone with a /64 has 2**64
    addresses to spread requests over), an IPv4-mapped IPv6 address as its IPv4 one;
    anything that is not an address (a UNIX socket's peer) as it is."""
    try:
        addr = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def app_path(target: bytes, root_path: bytes | None = None) -> str:
    """The path Django routes a request-target by, as Daphne hands it over: the part
    before '?', percent-decoded (so /%76%31/chat/completions is /v1/chat/completions),
    less the Daphne-Root-Path prefix, which Django strips. "" for a target Daphne
    refuses (not ASCII)."""
    try:
        path = unquote(target.split(b"?", 1)[0].decode("ascii"))
        root = unquote(root_path.decode("ascii")) if root_path else ""
    except UnicodeDecodeError:
        return ""
    return path.removeprefix(root) if root else path


def client_address(peer: str, forwarded_for: list[bytes] | None, proxies: list[Network]) -> str:
    """The client a request comes from: the peer, or, when the peer is a trusted proxy,
    the last X-Forwarded-For hop that is not one (hops before it are the client's word)."""
    if not forwarded_for or not _in(peer, proxies):
        return peer
    hops = [h.strip() for h in b",".join(forwarded_for).decode("latin-1").split(",")]
    for hop in reversed(hops):
        if hop and not _in(hop, proxies):
            return hop
    return peer


# Daphne-Root-Path is a proxy's too: Django strips it from the path it routes.
_FORWARDED = (
    b"X-Forwarded-For",
    b"X-Forwarded-Proto",
    b"X-Forwarded-Port",
    b"Forwarded",
    b"Daphne-Root-Path",
)


def _error(status: int, reason: str, message: str, type_: str, code: str, extra: str = "") -> bytes:
    body = json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode()
    return head + body


def too_large(limit: int, api: bool = True) -> bytes:
    message = f"The request body is larger than this server accepts ({limit} bytes)."
    if not api:  # the management/portal API's own envelope (rbee/api_errors.py)
        body = json.dumps({"error": {"message": message, "code": "request_too_large"}})
        return (
            f"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
        ).encode()
    return _error(
        413,
        "Request Entity Too Large",
        message,
        "invalid_request_error",
        "request_too_large",
    )


def unauthorized(message: str, code: str = "invalid_api_key") -> bytes:
    return _error(401, "Unauthorized", message, "invalid_request_error", code)


def too_many_bytes(cap: int) -> bytes:
    return _error(
        429,
        "Too Many Requests",
        f"Too many request bytes in flight from this client (at most {cap} at once); wait "
        "for its other requests to finish.",
        "rate_limit_error",
        "rate_limit_exceeded",
        extra="Retry-After: 1\r\n",
    )


MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
MALFORMED_KEY = "Incorrect API key provided: the key is not in rbee's format (sk-rbee-...)."


def _loopback_host(host: bytes) -> bool:
    name = host.decode("latin-1").strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else ""
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name in {"localhost", "::1"} or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def install(edge: Edge) -> None:
    """Make Daphne build every HTTP request with the edge's checks (idempotent).

    The checks see HTTP/1.1 requests: Twisted's HTTP/2 streams (offered over TLS when
    the `h2` package is installed) would bypass them, so HTTP/2 is never offered."""
    twisted_http.H2_ENABLED = False  # read by Daphne's ALPN list (acceptableProtocols)
    base: Any = http_protocol.WebRequest
    while getattr(base, "rbee_edge", None) is not None:
        base = base.__mro__[1]

    class EdgeWebRequest(base):  # type: ignore[misc, valid-type]
        rbee_edge = edge

        def gotLength(self, length: int | None) -> None:
            # Twisted would parse every multipart body into request.args (another full
            # copy of an upload, which Daphne never reads, and its own bare 400 for a form
            # it cannot parse); Django parses the forms that reach a view.
            self._parsePOSTFormSubmission = False
            self._rbee_refused = False
            self._rbee_gone = False
            self._rbee_received = 0
            self._rbee_reserved = 0
            self._rbee_chunked = length is None
            headers = self.requestHeaders
            peer = str(getattr(self.channel.transport.getPeer(), "host", "?"))
            self._rbee_client = client_group(
                client_address(
                    peer, headers.getRawHeaders(b"X-Forwarded-For"), edge.trusted_proxies
                )
            )
            if not _in(peer, edge.trusted_proxies):
                # Only a configured proxy may say who the client is, or that it used TLS.
                for name in _FORWARDED:
                    headers.removeHeader(name)
            elif headers.hasHeader(b"X-Forwarded-For"):
                # Daphne takes the first hop, which the client writes; keep only the one
                # the proxies vouch for.
                headers.setRawHeaders(b"X-Forwarded-For", [self._rbee_client.encode()])
            # Classified by the path Django will route, not the raw one: Daphne
            # percent-decodes it (and Django strips Daphne-Root-Path).
            target = bytes(getattr(self.channel, "_path", b"") or b"")
            root = (headers.getRawHeaders(b"Daphne-Root-Path") or [None])[0]
            routed = app_path(target, root)
            path = target.split(b"?", 1)[0]
            api = routed == "/v1" or routed.startswith("/v1/")
            self._rbee_api = api
            ctype = (headers.getRawHeaders(b"Content-Type") or [b""])[0]
            multipart = ctype.split(b";", 1)[0].strip().lower() == b"multipart/form-data"
            # Uploads go to /v1's multipart endpoints only: every other body (the
            # management and portal APIs, the admin, Stripe's events) is small.
            small = min(edge.json_limit, edge.body_limit)
            self._rbee_limit = edge.body_limit if api and multipart else small
            key = ""
            if api and (length is None or length > EARLY_AUTH_BYTES):
                auth = (headers.getRawHeaders(b"Authorization") or [b""])[0]
                scheme, _, value = auth.decode("latin-1").partition(" ")
                key = value.strip() if scheme.lower() == "bearer" else ""
                if not auth:
                    host = (headers.getRawHeaders(b"Host") or [b""])[0]
                    if not (edge.anonymous and _loopback_host(host)):
                        return self._refuse(unauthorized(MISSING_KEY), "no API key", path)
                elif not key:
                    return self._refuse(unauthorized(MISSING_KEY), "no bearer key", path)
                elif parse_prefix(API_KEY_KIND, key) is None:
                    return self._refuse(unauthorized(MALFORMED_KEY), "a malformed key", path)
            super().gotLength(length)
            if key and edge.check_key is not None and not edge.known(key):
                self._check(key, length, path)  # the size is judged once the key is known
            else:
                self._admit(length, path)

        def _admit(self, length: int | None, path: bytes) -> bool:
            """The body's size and the client's bytes in flight (False: refused)."""
            if length is not None and length > self._rbee_limit:
                self._refuse(too_large(self._rbee_limit, self._rbee_api), f"{length} bytes", path)
                return False
            if not self._reserve(length or 0):
                self._refuse(too_many_bytes(edge.inflight_per_client), "in flight", path)
                return False
            return True

        def _reserve(self, n: int) -> bool:
            cap = edge.inflight_per_client
            held = edge.inflight.get(self._rbee_client, 0)
            if cap and n and held + n > cap:
                return False
            if n:
                edge.inflight[self._rbee_client] = held + n
                self._rbee_reserved += n
            return True

        def _release(self) -> None:
            n = getattr(self, "_rbee_reserved", 0)
            if not n:
                return
            self._rbee_reserved = 0
            left = edge.inflight.get(self._rbee_client, 0) - n
            if left > 0:
                edge.inflight[self._rbee_client] = left
            else:
                edge.inflight.pop(self._rbee_client, None)

        def _check(self, key: str, length: int | None, path: bytes) -> None:
            """Look the key up with the connection paused: no more of the body is read
            until it is known to be a key of ours."""
            transport = self.channel.transport
            transport.pauseProducing()
            assert edge.check_key is not None
            task = asyncio.ensure_future(edge.check_key(key))

            def checked(fut: asyncio.Future[str | None]) -> None:
                if self._rbee_gone or self._rbee_refused:
                    return
                refusal, verified = None, False
                if not fut.cancelled():
                    if fut.exception() is not None:
                        # The view decides (and answers 503 if the database is down);
                        # the key is not remembered: it was never verified.
                        logger.warning("edge key check failed: %r", fut.exception())
                    else:
                        refusal = fut.result()
                        verified = refusal is None
                if refusal is not None:
                    self._refuse(unauthorized(refusal), "an unknown key", path)
                    return
                if verified:
                    edge.remember(key)
                if self._admit(length, path):
                    transport.resumeProducing()

            task.add_done_callback(checked)

        def handleContentChunk(self, data: bytes) -> None:
            if self._rbee_refused:
                return
            self._rbee_received += len(data)
            if self._rbee_received > self._rbee_limit:
                self._refuse(too_large(self._rbee_limit, self._rbee_api), "a chunked body", b"")
                return
            if self._rbee_chunked and not self._reserve(len(data)):
                self._refuse(too_many_bytes(edge.inflight_per_client), "in flight", b"")
                return
            super().handleContentChunk(data)

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            if getattr(self, "_rbee_refused", False):
                return  # answered already; the connection is closing
            super().requestReceived(command, path, version)

        def finish(self) -> Any:
            self._release()
            return super().finish()

        def connectionLost(self, reason: Any) -> None:
            self._rbee_gone = True
            self._release()
            super().connectionLost(reason)

        def _refuse(self, answer: bytes, why: str, path: bytes) -> None:
            self._rbee_refused = True
            self._release()
            # Twisted would otherwise say "100 Continue" after this answer.
            self.requestHeaders.removeHeader(b"Expect")
            transport = self.channel.transport
            logger.info(
                "refused %s from %s before reading its body: %s",
                safe(path.decode("latin-1")) or "a request",
                self._rbee_client,
                why,
            )
            transport.write(answer)
            transport.pauseProducing()  # read nothing more of this request
            half_close = getattr(transport, "loseWriteConnection", None)
            if self.isSecure() or half_close is None:
                # Over TLS the answer waits in the TLS layer's write buffer: shutting the
                # TCP write side beneath it would drop it. Closing the TLS layer sends the
                # answer, then TLS's own end of the stream (close_notify).
                transport.loseConnection()
            else:
                half_close()

            def drop() -> None:
                if getattr(transport, "connected", False):
                    transport.abortConnection()

            # Daphne runs Twisted on asyncio's loop.
            asyncio.get_event_loop().call_later(LINGER_S, drop)

    http_protocol.WebRequest = EdgeWebRequest  # looked up per connection by Daphne


# --- plain HTTP sent to the TLS port -------------------------------------------------


PLAIN_HTTP_ON_TLS = (
    "This port speaks HTTPS only and the request came as plain HTTP: use https:// (wss:// "
    "for websockets) instead of http://."
)


class TLSOnlyProtocol(ProtocolWrapper):
    """Below the TLS layer of one connection: a TLS connection starts with a handshake
    record (0x16); one that starts with a letter is an HTTP request sent in clear (a
    client given http://), answered with a 400 that says so, in clear, as nginx, Caddy
    and Go's servers do, instead of a connection dropped without a word."""

    _sniffed = False

    def dataReceived(self, data: bytes) -> None:
        if not self._sniffed and data:
            self._sniffed = True
            if data[:1].isalpha():
                transport: Any = self.transport  # the TCP connection, beneath TLS
                peer = str(getattr(transport.getPeer(), "host", "?"))
                logger.info("refused a plain HTTP request from %s on the TLS port", peer)
                transport.write(
                    _error(
                        400,
                        "Bad Request",
                        PLAIN_HTTP_ON_TLS,
                        "invalid_request_error",
                        "tls_required",
                    )
                )
                transport.loseConnection()
                return
        super().dataReceived(data)


class TLSOnlyFactory(WrappingFactory):
    protocol = TLSOnlyProtocol


def queen_server(*, tls: ServerCert | None = None, **kwargs: Any) -> Any:
    """Daphne's Server (same arguments). With `tls`, every port it listens on (a `tcp:`
    endpoint) serves TLS with exactly the certificate, intermediates and key that were
    checked (kernel/tls.py; Twisted's `ssl:` endpoint would read the files again), and
    answers plain HTTP with a clear 400 (TLSOnlyProtocol). Daphne installs its reactor
    when daphne.server is imported, so it is imported here, when the queen starts."""
    from daphne.server import Server
    from twisted.internet import ssl
    from twisted.protocols.tls import TLSMemoryBIOFactory

    options: Any = None  # a CertificateOptions (an IOpenSSLServerConnectionCreator)
    if tls is not None:
        # What Twisted's `ssl:` endpoint builds from its files (TLS 1.2 at least, its
        # ciphers), built from the checked bytes: a mistake here stops the queen before
        # it listens.
        pair = ssl.PrivateCertificate.loadPEM(tls.cert_pem + b"\n" + tls.key_pem)
        options = ssl.CertificateOptions(
            privateKey=pair.privateKey.original,
            certificate=pair.original,
            extraCertChain=[ssl.Certificate.loadPEM(c).original for c in tls.chain] or None,
        )

    class QueenServer(Server):  # type: ignore[misc]
        @property
        def http_factory(self) -> Any:
            return self._rbee_http_factory

        @http_factory.setter
        def http_factory(self, factory: Any) -> None:
            # Daphne's run() makes its HTTPFactory here and listens with it next: with TLS
            # the factory every port is opened with speaks TLS from the first byte.
            if options is not None:
                factory = TLSOnlyFactory(TLSMemoryBIOFactory(options, False, factory))
            self._rbee_http_factory = factory

        def listen_success(self, port: Any) -> None:
            if options is not None and not isinstance(
                getattr(port, "factory", None), TLSOnlyFactory
            ):
                # Fail closed: never plain HTTP on a port meant for TLS (a Daphne that no
                # longer makes its factory through `http_factory`). Daphne's listen_error
                # then stops the server before it runs.
                port.stopListening()
                raise RuntimeError("the port would serve plain HTTP, not TLS: not listening")
            super().listen_success(port)

    return QueenServer(**kwargs)


async def check_api_key(key: str) -> str | None:
    """None for a key that lets its caller in; otherwise what the 401 says."""
    from kernel.aio import db
    from tenants.errors import KeyRejected
    from tenants.selectors import caller_from_key

    try:
        await db(caller_from_key, key)
    except KeyRejected as exc:
        return exc.message
    return None


def install_from_settings() -> Edge:
    """The edge as the settings configure it, installed."""
    from django.conf import settings

    edge = Edge(
        body_limit=max(settings.RBEE_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
        json_limit=settings.RBEE_MAX_JSON_BYTES,
        inflight_per_client=settings.RBEE_MAX_INFLIGHT_BYTES_PER_CLIENT,
        anonymous=bool(settings.RBEE_ANONYMOUS_TENANT),
        trusted_proxies=parse_networks(settings.RBEE_TRUSTED_PROXIES),
        check_key=check_api_key,
    )
    install(edge)
    return edge


def install_body_limit(limit: int) -> None:
    """Only the body ceiling (kept for callers that want no more)."""
    install(Edge(body_limit=limit, json_limit=limit, inflight_per_client=0, anonymous=True))

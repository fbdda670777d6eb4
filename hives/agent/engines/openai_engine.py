"""A model served by another OpenAI-compatible server (Ollama, llama-server, vLLM, a cloud
API): the worker relays each job to it.

    rbee hive start --model 'NAME=openai:http://127.0.0.1:11434/v1?model=llama3.1&api_key_env=VAR'

SOURCE is the upstream's base URL (the one that ends in /v1); the options after `?` are
this engine's (all optional):

    model              the upstream's name for the model (default: NAME)
    api_key_env        the hive's environment variable that holds the upstream's key; the
                       key is read by this worker alone: never sent to the queen, never
                       logged. An `api_key` option is refused (it would be stored).
    connect_timeout    seconds to open a connection (default 5, RBEE_OPENAI_CONNECT_TIMEOUT)
    read_timeout       seconds to wait for the next bytes (default 300,
                       RBEE_OPENAI_READ_TIMEOUT): a first token, a whole image
    max_connections    jobs (and connections) at once (default 32,
                       RBEE_OPENAI_MAX_CONNECTIONS); more wait at the queen
    health_interval    seconds between two looks at the upstream's /models (default 5)
    check_model        whether /models must list `model` (default true; false for APIs
                       that list a few of many)
    max_response_bytes the most one answer may be (default 64 MiB,
                       RBEE_OPENAI_MAX_RESPONSE_BYTES; one line of a stream: 8 MiB):
                       a larger one is a 502, never a worker out of memory

A NAME serves one capability (text-gen by default; `#embedding`, `#image-gen`,
`#audio-transcription`, `#audio-gen` for the others), as for every engine: the queen
routes by it. Usage comes from the upstream's `usage` (streams ask for it with
`stream_options.include_usage`); an upstream that sends none is metered by counting
(one token per streamed chunk, a quarter of the prompt's characters).

Upstream errors become OpenAI errors: the caller's mistakes (400, 413, 422, 429) keep
their status and the upstream's message; the upstream refusing rbee's own key (401, 403)
or not knowing the model (404) is the operator's problem, a 502; a 5xx is a 502 (503 and
504 stay); an upstream that cannot be reached is a 503, one that stops answering a 504.
The upstream's /models feeds the worker's state (hives/agent/worker.py polls `health`):
unreachable, refusing the key, or not listing the model -> `failed` with the reason;
answering again -> `ready`. A job whose client went away closes its upstream request
once the worker sees the cancel (a thread watches open requests and shuts their
connection, so a silent upstream does not hold the job until read_timeout). The key is
sent only to the upstream's own origin (an image `url` elsewhere is fetched without it,
and must be an image) and is masked in every message.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from hives.agent.engines.base import Cancelled, Engine, EngineError
from hives.protocol import Capability, EventKind, new_tool_call_id
from hives.spec import ModelSpec

logger = logging.getLogger("hives.engines.openai")

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 300.0
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_HEALTH_INTERVAL = 5.0
HEALTH_TIMEOUT = 5.0
MAX_ERROR_MESSAGE = 2000
MAX_ERROR_BODY = 64 * 1024  # bytes of an error answer read (its message is cut to the above)
# Bytes of one answer read from the upstream (RBEE_OPENAI_MAX_RESPONSE_BYTES): an answer
# travels to the hive as one line of at most 64 MiB anyway (hives/agent/supervisor.py).
DEFAULT_MAX_RESPONSE = 64 * 2**20
MAX_SSE_LINE = 8 * 2**20  # one line of an event stream
CANCEL_CHECK = 0.1  # seconds between two looks at whether open jobs were cancelled
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # what an Authorization header can carry
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF")
MAX_TOOL_CALLS = 128  # calls in one answer (the queen's limit too)
# What a job carries only when the client asked (docs/tools.md), relayed as it is.
_TOOL_KEYS = ("tools", "tool_choice", "parallel_tool_calls")

# Upstream statuses that are the caller's own mistake: passed on with the upstream's
# words (OpenAI never answers 422: a bad parameter is a 400).
_CALLER_STATUS = {400: 400, 409: 409, 413: 413, 415: 400, 422: 400, 429: 429}


def _option(spec: ModelSpec, key: str, env: str, default: float) -> float:
    raw = spec.options.get(key)
    if raw is None:
        raw = os.environ.get(env) or default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise EngineError(
            f"bad option {key}={raw!r} for {spec.name!r}: expected a number", code="bad_option"
        ) from None
    if value <= 0:
        raise EngineError(
            f"bad option {key}={raw!r} for {spec.name!r}: must be positive", code="bad_option"
        )
    return value


def upstream_base(source: str) -> str:
    """The upstream's base URL, checked: http(s), a host, no credentials in it."""
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineError(
            f"the openai engine needs the upstream's base URL as its source "
            f"(http://HOST:PORT/v1), not {source!r}",
            code="bad_source",
        )
    if parts.username or parts.password:
        raise EngineError(
            "credentials in the upstream URL would be stored by the queen: put the key in "
            "an environment variable of the hive and name it with api_key_env=VAR",
            code="bad_source",
        )
    return source.rstrip("/")


def _redact(text: str, secret: str) -> str:
    """`text` without the upstream's key in it (some servers quote the key they refused)."""
    return text.replace(secret, "***") if secret else text


def _upstream_message(
    resp: httpx.Response, raw: bytes, secret: str
) -> tuple[str, str | None, str | None]:
    """The upstream's error message, code and param (from OpenAI's envelope, or
    whatever text it sent)."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "")
        code = err.get("code") if isinstance(err.get("code"), str) else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
    elif isinstance(err, str):  # some servers: {"error": "..."}
        message, code, param = err, None, None
    elif isinstance(body, dict) and isinstance(body.get("detail"), str):  # FastAPI's
        message, code, param = body["detail"], None, None
    else:
        message, code, param = raw.decode("utf-8", "replace"), None, None
    message = _redact(" ".join(message.split()), secret)[:MAX_ERROR_MESSAGE] or resp.reason_phrase
    return message, code, param


def status_error(resp: httpx.Response, body: bytes, *, secret: str = "") -> EngineError:
    """The OpenAI error for an upstream's error response, whose `body` was read."""
    message, code, param = _upstream_message(resp, body, secret)
    status = resp.status_code
    if status in _CALLER_STATUS:
        return EngineError(
            message,
            status=_CALLER_STATUS[status],
            code=code or ("rate_limit_exceeded" if status == 429 else "invalid_request"),
            param=param,
        )
    if status in (401, 403):
        return EngineError(
            f"the upstream server refused this model's credentials ({status}): {message}",
            status=502,
            code="upstream_auth_failed",
        )
    if status == 404:
        return EngineError(
            f"the upstream server does not serve this (404): {message}",
            status=502,
            code="upstream_not_found",
        )
    if status in (503, 504):
        return EngineError(
            f"the upstream server is unavailable ({status}): {message}",
            status=status,
            code="upstream_unavailable" if status == 503 else "upstream_timeout",
        )
    return EngineError(
        f"the upstream server failed ({status}): {message}", status=502, code="upstream_error"
    )


def transport_error(exc: httpx.HTTPError, *, secret: str = "") -> EngineError:
    """The OpenAI error for a request that got no (complete) answer."""
    said = _redact(str(exc), secret)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return EngineError(
            f"the upstream server cannot be reached: {said}",
            status=503,
            code="upstream_unavailable",
        )
    if isinstance(exc, httpx.PoolTimeout):
        return EngineError(
            "every connection to the upstream server is busy", status=503, code="upstream_busy"
        )
    if isinstance(exc, httpx.TimeoutException):
        return EngineError(
            f"the upstream server did not answer in time ({type(exc).__name__})",
            status=504,
            code="upstream_timeout",
        )
    return EngineError(
        f"the upstream server broke off: {type(exc).__name__}: {said}",
        status=502,
        code="upstream_error",
    )


def too_large(limit: int, what: str = "answer") -> EngineError:
    return EngineError(
        f"the upstream server's {what} is over {limit} bytes; refused",
        status=502,
        code="upstream_too_large",
    )


def read_capped(resp: httpx.Response, limit: int, *, cut: bool = False) -> bytes:
    """A response's body, at most `limit` bytes: more is refused (a hostile or broken
    upstream must not fill the worker's memory), or, `cut`, left unread."""
    body = bytearray()
    for chunk in resp.iter_bytes():
        body += chunk
        if len(body) > limit:
            if cut:
                return bytes(body[:limit])
            raise too_large(limit)
    return bytes(body)


def _lines(resp: httpx.Response, limit: int) -> Iterator[str]:
    """The lines of an event stream, each at most MAX_SSE_LINE bytes and all of them at
    most `limit`."""
    pending = b""
    total = 0
    for chunk in resp.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise too_large(limit, "stream")
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
        if len(pending) > MAX_SSE_LINE:
            raise too_large(MAX_SSE_LINE, "stream line")
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream, up to `[DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # comments (keep-alives), event names, blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield data


class _CallPieces:
    """An upstream's streamed tool-call pieces in the contract's shape (docs/tools.md):
    calls numbered 0, 1, ... in the order they start; a call's first piece carries its
    `id` (one is made when the upstream sends none), `type` and `function.name`, later
    ones only `function.arguments` (text). Servers differ: some send each call whole in
    one piece, some leave out `index` (a call is then known by its id, and a piece with
    neither continues the call before), some send the arguments as an object. A piece
    that fits none of these is dropped and logged; the queen checks them again."""

    def __init__(self) -> None:
        self._ours: dict[Any, int] = {}  # the upstream's index (or id) -> ours
        self._last: Any = None
        self.count = 0

    def feed(self, raw: Any) -> list[dict[str, Any]]:
        out = []
        for piece in raw if isinstance(raw, list) else []:
            ours = self._piece(piece) if isinstance(piece, dict) else None
            if ours is not None:
                out.append(ours)
        return out

    def _piece(self, piece: dict[str, Any]) -> dict[str, Any] | None:
        raw_fn = piece.get("function")
        fn: dict[str, Any] = raw_fn if isinstance(raw_fn, dict) else {}
        arguments = fn.get("arguments")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        elif arguments is None:
            arguments = ""
        elif not isinstance(arguments, str):
            logger.warning("the upstream sent a tool call whose arguments are not text; dropped")
            return None
        name = fn.get("name") if isinstance(fn.get("name"), str) else ""
        cid = piece.get("id") if isinstance(piece.get("id"), str) else ""
        index = piece.get("index")
        if type(index) is int:
            key: Any = index
        elif cid:
            key = ("id", cid)
        elif name:
            key = ("new", len(self._ours))
        else:
            key = self._last
        if key in self._ours:
            self._last = key
            if not arguments:
                return None
            return {"index": self._ours[key], "function": {"arguments": arguments}}
        if not name or len(self._ours) >= MAX_TOOL_CALLS:
            logger.warning("the upstream sent a tool-call piece that starts no call; dropped")
            return None
        ours = self._ours[key] = len(self._ours)
        self._last = key
        self.count += 1
        return {
            "index": ours,
            "id": cid or new_tool_call_id(),
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }


def _token_logprob(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    token, logprob = raw.get("token"), raw.get("logprob")
    if not isinstance(token, str) or isinstance(logprob, bool):
        return None
    if not isinstance(logprob, int | float):
        return None
    entry: dict[str, Any] = {"token": token, "logprob": float(logprob)}
    if isinstance(raw.get("bytes"), list):
        entry["bytes"] = raw["bytes"]
    return entry


def _chat_logprobs(raw: Any) -> list[dict[str, Any]]:
    """A chat chunk's `logprobs.content` entries (the queen checks each again)."""
    content = raw.get("content") if isinstance(raw, dict) else None
    out = []
    for item in content if isinstance(content, list) else []:
        entry = _token_logprob(item)
        if entry is not None:
            tops = item.get("top_logprobs")
            entry["top_logprobs"] = [
                t for t in map(_token_logprob, tops if isinstance(tops, list) else []) if t
            ]
            out.append(entry)
    return out


def _completion_logprobs(raw: Any) -> list[dict[str, Any]]:
    """The legacy completions shape (tokens, token_logprobs, top_logprobs maps) as the
    chat-shaped entries the contract carries."""
    if not isinstance(raw, dict):
        return []
    tokens, logprobs, tops = raw.get("tokens"), raw.get("token_logprobs"), raw.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(logprobs, list):
        return []
    tops = tops if isinstance(tops, list) else []
    out = []
    for i, (token, logprob) in enumerate(zip(tokens, logprobs, strict=False)):
        entry = _token_logprob({"token": token, "logprob": logprob})
        if entry is None:
            continue
        top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        alternatives = [_token_logprob({"token": t, "logprob": v}) for t, v in top.items()]
        entry["top_logprobs"] = sorted(
            [a for a in alternatives if a is not None], key=lambda a: -float(a["logprob"])
        )
        out.append(entry)
    return out


def _tokens(value: Any, counted: int) -> int:
    """A count from the upstream's usage, or ours where it sent none (or something that
    is not a count: a string, a negative number)."""
    if type(value) is int and value >= 0:
        return value
    return counted


def _response_format(rf: Any) -> dict[str, Any] | None:
    """The job's response_format (inference/schemas.py) as OpenAI spells it again."""
    if not isinstance(rf, dict):
        return None
    if rf.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": rf["schema"]}}
    return {"type": "json_object"}


class _Guarded(httpx.SyncByteStream):
    """A response's body whose close (which gives the connection back to the pool) waits
    for the watcher: it never shuts down a connection that another job may be using."""

    def __init__(self, inner: httpx.SyncByteStream, watch: _Watch, sock: socket.socket) -> None:
        self.inner = inner
        self.watch = watch
        self.sock = sock
        self.aborted = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.inner

    def close(self) -> None:
        self.watch.forget(self)
        self.inner.close()

    def abort(self) -> None:
        """Wake the job's thread from a read that waits on a silent upstream (a shutdown
        of a duplicate of the socket: the TLS layer, if any, is not touched)."""
        self.aborted = True
        try:
            with socket.fromfd(self.sock.fileno(), self.sock.family, self.sock.type) as dup:
                dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


class _Watch:
    """One thread that closes the upstream connection of a job whose client went away,
    while the job's own thread waits for bytes that may not come for minutes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[_Guarded, Cancelled] = {}
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, resp: httpx.Response, cancelled: Cancelled) -> None:
        stream = resp.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket) or not isinstance(resp.stream, httpx.SyncByteStream):
            return
        guard = _Guarded(resp.stream, self, sock)
        resp.stream = guard
        with self._lock:
            self._open[guard] = cancelled
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="upstream-cancel", daemon=True
                )
                self._thread.start()
            self._busy.set()

    def forget(self, guard: _Guarded) -> None:
        with self._lock:
            self._open.pop(guard, None)

    def _run(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(CANCEL_CHECK)
            with self._lock:
                if not self._open:
                    self._busy.clear()
                for guard, cancelled in list(self._open.items()):
                    if cancelled():
                        del self._open[guard]
                        guard.abort()


def _aborted(resp: httpx.Response) -> bool:
    return isinstance(resp.stream, _Guarded) and resp.stream.aborted


class OpenAIEngine(Engine):
    name = "openai"
    capabilities = tuple(Capability)
    slots = DEFAULT_MAX_CONNECTIONS
    health_interval = DEFAULT_HEALTH_INTERVAL

    def __init__(self) -> None:
        self.client: httpx.Client | None = None
        self.model = ""
        self.check_model = True
        self._warned_usage = False
        self._secret = ""  # the upstream's key: never in a message
        self.max_response = DEFAULT_MAX_RESPONSE
        self._watch = _Watch()
        # When bytes last arrived from the upstream for a job: a server that generates
        # one request at a time (llama.cpp's) may not answer /models meanwhile, and
        # answers arriving are proof enough that it serves.
        self._progress = 0.0

    # --- loading ------------------------------------------------------------------------

    def load(self, spec: ModelSpec) -> None:
        if "api_key" in spec.options:
            raise EngineError(
                f"{spec.name!r}: an api_key option would be stored by the queen and shown "
                "in listings: put the key in an environment variable of the hive and name "
                "it with api_key_env=VAR",
                code="bad_option",
            )
        base = upstream_base(spec.source)
        # httpx logs every request at INFO: a line per job and per health check.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        headers = {}
        key_env = str(spec.options.get("api_key_env") or "")
        if key_env:
            key = os.environ.get(key_env, "").strip()
            if not key:
                raise EngineError(
                    f"{spec.name!r} reads its upstream key from ${key_env}, which is not set "
                    "in the hive's environment (set it where `rbee hive start` runs)",
                    status=503,
                    code="upstream_key_missing",
                )
            if not _HEADER_SAFE.fullmatch(key):
                raise EngineError(
                    f"{spec.name!r}: the upstream key in ${key_env} holds characters an "
                    "HTTP header cannot carry (spaces, line breaks, non-ASCII)",
                    code="bad_option",
                )
            self._secret = key
            headers["Authorization"] = f"Bearer {key}"
        self.model = str(spec.options.get("model") or spec.name)
        self.check_model = bool(spec.options.get("check_model", True))
        self.slots = int(
            _option(spec, "max_connections", "RBEE_OPENAI_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)
        )
        self.health_interval = _option(
            spec, "health_interval", "RBEE_OPENAI_HEALTH_INTERVAL", DEFAULT_HEALTH_INTERVAL
        )
        connect = _option(spec, "connect_timeout", "RBEE_OPENAI_CONNECT_TIMEOUT", 5.0)
        read = _option(spec, "read_timeout", "RBEE_OPENAI_READ_TIMEOUT", DEFAULT_READ_TIMEOUT)
        self.max_response = int(
            _option(
                spec, "max_response_bytes", "RBEE_OPENAI_MAX_RESPONSE_BYTES", DEFAULT_MAX_RESPONSE
            )
        )
        self.client = httpx.Client(
            base_url=base + "/",
            headers=headers,
            # pool: a job waits this long for a free connection (the queen sends at most
            # `slots` at once, so only a crowd of health checks would wait).
            timeout=httpx.Timeout(connect=connect, read=read, write=read, pool=connect),
            limits=httpx.Limits(
                max_connections=self.slots + 1,  # one more for health checks
                max_keepalive_connections=self.slots + 1,
            ),
            follow_redirects=False,
            trust_env=False,  # no proxy settings from the environment (workerenv.py)
        )

    def unload(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def health(self) -> str:
        """'' when the upstream answers /models (listing our model, unless told not to
        check); else why it does not serve."""
        assert self.client is not None
        if time.monotonic() - self._progress < self.health_interval:
            return ""  # answers are arriving: it serves
        try:
            body = self._read(self._open("GET", "models", timeout=HEALTH_TIMEOUT))
        except EngineError as exc:
            return exc.message
        if not self.check_model:
            return ""
        try:
            ids = [
                str(m.get("id")) for m in json.loads(body).get("data") or [] if isinstance(m, dict)
            ]
        except (ValueError, AttributeError):
            return "the upstream server's /models is not an OpenAI model list"
        if self.model not in ids:
            listed = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
            return (
                f"the upstream server does not list the model {self.model!r} "
                f"(it lists: {listed or 'none'}); set model=... or check_model=false"
            )
        return ""

    # --- requests -----------------------------------------------------------------------

    def _open(
        self, method: str, url: str, cancelled: Cancelled | None = None, **kw: Any
    ) -> httpx.Response:
        """Send a request and return its response, open for streaming (closed at once on
        the watcher's thread when `cancelled` turns true); an error response or no
        response raises the OpenAI error for it."""
        assert self.client is not None
        request = self.client.build_request(method, url, **kw)
        base = self.client.base_url
        if (request.url.scheme, request.url.host, request.url.port) != (
            base.scheme,
            base.host,
            base.port,
        ):
            request.headers.pop("Authorization", None)  # the key goes to its server alone
        try:
            resp = self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise transport_error(exc, secret=self._secret) from exc
        if resp.status_code >= 400:
            try:
                body = read_capped(resp, MAX_ERROR_BODY, cut=True)
            except httpx.HTTPError as exc:
                raise transport_error(exc, secret=self._secret) from exc
            finally:
                resp.close()
            raise status_error(resp, body, secret=self._secret)
        if cancelled is not None:
            self._watch.watch(resp, cancelled)
        return resp

    def _read(self, resp: httpx.Response, cancelled: Cancelled | None = None) -> bytes:
        """The whole body of an open response, at most `max_response` bytes."""
        try:
            return read_capped(resp, self.max_response)
        except httpx.HTTPError as exc:
            if cancelled is not None and cancelled():
                raise EngineError(
                    "the request was cancelled", status=499, code="cancelled"
                ) from None
            raise transport_error(exc, secret=self._secret) from exc
        finally:
            resp.close()

    def _json(self, path: str, cancelled: Cancelled, **kw: Any) -> dict[str, Any]:
        raw = self._read(self._open("POST", path, cancelled, **kw), cancelled)
        self._progress = time.monotonic()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise EngineError(
                "the upstream server answered something that is not a JSON object",
                status=502,
                code="upstream_error",
            )
        return body

    def _sampling(self, request: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model}
        for key in ("max_tokens", "temperature", "top_p", "seed"):
            if request.get(key) is not None:
                body[key] = request[key]
        for key in ("presence_penalty", "frequency_penalty"):
            if request.get(key):
                body[key] = request[key]
        if request.get("stop"):
            body["stop"] = list(request["stop"])
        return body

    def chat(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        messages = list(request.get("messages") or [])
        body = self._sampling(request)
        body["messages"] = messages
        rf = _response_format(request.get("response_format"))
        if rf is not None:
            body["response_format"] = rf
        for key in _TOOL_KEYS:
            if key in request:
                body[key] = request[key]
        if request.get("logprobs"):
            body["logprobs"] = True
            body["top_logprobs"] = int(request.get("top_logprobs") or 0)
        chars = sum(len(str(m.get("content") or "")) for m in messages)
        return self._stream("chat/completions", body, cancelled, chars, chat=True)

    def complete(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        prompt = str(request.get("prompt") or "")
        body = self._sampling(request)
        body["prompt"] = prompt
        if request.get("logprobs"):  # the legacy API's `logprobs` is the count of alternatives
            body["logprobs"] = int(request.get("top_logprobs") or 0)
        return self._stream("completions", body, cancelled, len(prompt), chat=False)

    def _stream(
        self, path: str, body: dict[str, Any], cancelled: Cancelled, chars: int, *, chat: bool
    ) -> Iterator[dict[str, Any]]:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        # Opened here, not in the generator: an upstream's 400 is the caller's error
        # before any event, not a broken stream.
        resp = self._open("POST", path, cancelled, json=body)
        return self._relay(resp, cancelled, chars, chat=chat, logprobs="logprobs" in body)

    def _relay(
        self,
        resp: httpx.Response,
        cancelled: Cancelled,
        chars: int,
        *,
        chat: bool,
        logprobs: bool = False,
    ) -> Iterator[dict[str, Any]]:
        prompt_estimate = max(1, chars // 4)
        chunks = 0
        finish = "stop"
        usage: dict[str, Any] | None = None
        calls = _CallPieces()
        try:
            for data in _sse_data(_lines(resp, self.max_response)):
                if cancelled():
                    finish = "cancelled"
                    break
                self._progress = time.monotonic()
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise EngineError(
                        "the upstream server sent a stream chunk that is not JSON",
                        status=502,
                        code="upstream_error",
                    ) from None
                if not isinstance(chunk, dict):
                    continue
                if isinstance(chunk.get("error"), dict | str):
                    message = chunk["error"]
                    if isinstance(message, dict):
                        message = message.get("message") or json.dumps(message)
                    raise EngineError(
                        f"the upstream server failed mid-stream: {message}",
                        status=502,
                        code="upstream_error",
                    )
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    event: dict[str, Any] = {"kind": EventKind.DELTA}
                    if chat:
                        delta = choice.get("delta")
                        delta = delta if isinstance(delta, dict) else {}
                        text = delta.get("content")
                        pieces = calls.feed(delta.get("tool_calls"))
                        if pieces:
                            event["tool_calls"] = pieces
                    else:
                        text = choice.get("text")
                    if text:
                        event["text"] = str(text)
                    if logprobs:
                        read = _chat_logprobs if chat else _completion_logprobs
                        entries = read(choice.get("logprobs"))
                        if entries:
                            event["logprobs"] = entries
                    if choice.get("finish_reason"):
                        finish = str(choice["finish_reason"])
                    if len(event) > 1:
                        chunks += 1
                        # Running counts: a stream cut short is still metered.
                        event["prompt_tokens"] = prompt_estimate
                        event["completion_tokens"] = chunks
                        yield event
        except httpx.HTTPError as exc:
            if not _aborted(resp):
                raise transport_error(exc, secret=self._secret) from exc
            finish = "cancelled"  # the watcher closed it: the client went away
        finally:
            resp.close()  # a cancelled job closes its upstream request here
        if usage is None:
            if not self._warned_usage:
                logger.warning(
                    "the upstream of %r sent no usage: metering by counting chunks", self.model
                )
                self._warned_usage = True
            usage = {"prompt_tokens": prompt_estimate, "completion_tokens": chunks}
        if calls.count and finish in ("stop", "function_call"):
            finish = "tool_calls"  # some servers end an answer of calls with "stop"
        elif not calls.count and finish in ("tool_calls", "function_call"):
            finish = "stop"  # "tool_calls" without a call (its pieces were dropped)
        yield {
            "kind": EventKind.DONE,
            "finish_reason": finish,
            "usage": {
                "prompt_tokens": _tokens(usage.get("prompt_tokens"), prompt_estimate),
                "completion_tokens": _tokens(usage.get("completion_tokens"), chunks),
            },
        }

    def embed(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        inputs = list(request.get("input") or [])
        body: dict[str, Any] = {"model": self.model, "input": inputs, "encoding_format": "float"}
        if request.get("dimensions"):
            body["dimensions"] = request["dimensions"]
        answer = self._json("embeddings", cancelled, json=body)
        data = sorted(
            (d for d in answer.get("data") or [] if isinstance(d, dict)),
            key=lambda d: int(d.get("index") or 0),
        )
        vectors = [d.get("embedding") for d in data]
        if len(vectors) != len(inputs) or not all(isinstance(v, list) for v in vectors):
            raise EngineError(
                f"the upstream server answered {len(vectors)} embeddings for {len(inputs)} inputs",
                status=502,
                code="upstream_error",
            )
        usage = answer.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        counted = sum(len(str(s)) for s in inputs) // 4
        tokens = _tokens(usage.get("prompt_tokens"), counted) or counted  # 0: some servers
        yield {
            "kind": EventKind.DONE,
            "result": {"embeddings": vectors},
            "usage": {"prompt_tokens": tokens},
        }

    def _images(self, answer: dict[str, Any], cancelled: Cancelled) -> list[str]:
        images = []
        for d in answer.get("data") or []:
            if isinstance(d, dict) and isinstance(d.get("b64_json"), str):
                images.append(d["b64_json"])
            elif isinstance(d, dict) and isinstance(d.get("url"), str):
                # An upstream that ignores response_format=b64_json: fetch its URL (with
                # the key only when it is on the upstream itself), and take only an image
                # (what the URL names is the upstream's say, not ours to pass on).
                if urlsplit(d["url"]).scheme not in ("http", "https"):
                    raise EngineError(
                        "the upstream server answered an image URL that is not http(s)",
                        status=502,
                        code="upstream_error",
                    )
                image = self._read(self._open("GET", d["url"], cancelled), cancelled)
                if not image.startswith(_IMAGE_MAGIC):
                    raise EngineError(
                        "the upstream server's image URL did not give an image",
                        status=502,
                        code="upstream_error",
                    )
                images.append(base64.b64encode(image).decode("ascii"))
        if not images:
            raise EngineError(
                "the upstream server answered no image", status=502, code="upstream_error"
            )
        return images

    def generate_image(
        self, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.get("prompt"),
            "n": int(request.get("n") or 1),
            "response_format": "b64_json",
        }
        if request.get("size"):
            body["size"] = request["size"]
        images = self._images(self._json("images/generations", cancelled, json=body), cancelled)
        yield {
            "kind": EventKind.DONE,
            "result": {"images": images},
            "usage": {"images": len(images)},
        }

    def vary_image(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        form = {"model": self.model, "n": str(int(request.get("n") or 1))}
        form["response_format"] = "b64_json"
        if request.get("size"):
            form["size"] = str(request["size"])
        image = base64.b64decode(str(request.get("image_b64") or ""))
        answer = self._json(
            "images/variations",
            cancelled,
            data=form,
            files={"image": ("image.png", image, "image/png")},
        )
        images = self._images(answer, cancelled)
        yield {
            "kind": EventKind.DONE,
            "result": {"images": images},
            "usage": {"images": len(images)},
        }

    def transcribe(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        return self._audio_text("audio/transcriptions", request, cancelled)

    def translate(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        return self._audio_text("audio/translations", request, cancelled)

    def _audio_text(
        self, path: str, request: dict[str, Any], cancelled: Cancelled
    ) -> Iterator[dict[str, Any]]:
        form: dict[str, str | list[str]] = {"model": self.model, "response_format": "verbose_json"}
        for key in ("language", "prompt", "temperature"):
            if key == "language" and not path.endswith("transcriptions"):
                continue  # a translation is always into English
            if request.get(key) is not None:
                form[key] = str(request[key])
        if request.get("word_timestamps"):
            form["timestamp_granularities[]"] = ["word", "segment"]
        audio = base64.b64decode(str(request.get("audio_b64") or ""))
        name = str(request.get("filename") or "audio.wav")
        answer = self._json(
            path, cancelled, data=form, files={"file": (name, audio, "application/octet-stream")}
        )
        duration = float(answer.get("duration") or 0.0)
        result = {
            "text": str(answer.get("text") or ""),
            "language": str(answer.get("language") or request.get("language") or ""),
            "duration": duration,
            "segments": [s for s in answer.get("segments") or [] if isinstance(s, dict)],
            "words": [w for w in answer.get("words") or [] if isinstance(w, dict)],
        }
        yield {"kind": EventKind.DONE, "result": result, "usage": {"seconds": duration}}

    def speak(self, request: dict[str, Any], cancelled: Cancelled) -> Iterator[dict[str, Any]]:
        text = str(request.get("input") or "")
        body = {
            "model": self.model,
            "input": text,
            "voice": request.get("voice"),
            "response_format": request.get("response_format") or "mp3",
            "speed": request.get("speed") or 1.0,
        }
        resp = self._open("POST", "audio/speech", cancelled, json=body)
        return self._audio(resp, cancelled, len(text))

    def _audio(
        self, resp: httpx.Response, cancelled: Cancelled, characters: int
    ) -> Iterator[dict[str, Any]]:
        try:
            total = 0
            for data in resp.iter_bytes(64 * 1024):
                if cancelled():
                    break
                total += len(data)
                if total > self.max_response:
                    raise too_large(self.max_response)
                if data:
                    yield {"kind": EventKind.AUDIO, "b64": base64.b64encode(data).decode("ascii")}
        except httpx.HTTPError as exc:
            if not _aborted(resp):
                raise transport_error(exc, secret=self._secret) from exc
        finally:
            resp.close()
        yield {"kind": EventKind.DONE, "usage": {"characters": characters, "seconds": 0.0}}

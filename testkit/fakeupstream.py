"""A small, fast fake OpenAI-compatible server: the upstream of the openai engine's tests
and of bench/gateway.py.

Plain asyncio HTTP/1.1 with keep-alive, no framework, so it costs next to nothing per
request (the bench measures what rbee adds on top of it). It answers at once:

    GET  /v1/models                 the models it was started with
    POST /v1/chat/completions       16 words ("w1 ... w16"), as JSON or as 16 SSE chunks,
    POST /v1/completions            usage in the JSON, or in a last chunk when the request
                                    asks stream_options.include_usage
    POST /v1/embeddings             one 8-dimensional vector per input
    POST /v1/images/generations     n tiny PNGs, b64_json
    POST /v1/audio/transcriptions   verbose_json of a fixed text
    POST /v1/audio/speech           4 chunks of bytes

Faults, asked for in the prompt (the last message's content, or `prompt`, or `input`):

    !status N      answer N with OpenAI's error envelope ("injected N")
    !sleep S       wait S seconds before answering
    !slow S        stream with S seconds between two chunks
    !drop          stream 2 chunks, then close the connection
    !nousage       no usage anywhere (an upstream that never meters)
    !stall         stream 2 chunks, then say nothing (for a minute) and keep the connection
    !huge N        answer with a JSON object of N bytes (non-streamed answers)
    !longline N    stream one `data:` line of N bytes that never ends
    !imageurl URL  answer images as `url`s (URL), not b64_json; GET /files/pixel.png is a
                   PNG (and answers the fake's state on any other /files/ path)
    !badusage      usage whose counts are not counts ("n/a", -5)
    !loosecalls    tool calls as some servers send them: each whole in one piece, with
                   no `index`, and finish_reason "stop"

Tools: with `tools` (and tool_choice not "none"), it calls when tool_choice is
"required" or names a function, or when the last message is the user's and starts with
"call " (the functions named after it, else the first; one when parallel_tool_calls is
false), arguments built from each schema's required properties; after a `tool` message it
answers that message's words. `logprobs` (chat: with top_logprobs; completions: an int)
adds each word's log probability (-0.1, -0.2, ...) and an alternative " alt" at -5.

With `api_key`, every request must carry `Authorization: Bearer API_KEY` (else 401).
`FakeUpstream` runs it on a thread of its own for in-process tests (`requests` keeps what
it received; `closed_early` counts streams the client left before their end); `python -m
testkit.fakeupstream --port N` runs it as a process (the bench).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hives.agent.engines.tools import arguments_json, sample_arguments

WORDS = [f"w{i}" for i in range(1, 17)]
# The smallest valid PNG (1x1, transparent).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
TRANSCRIPT = "the quick brown fox"

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class Seen:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _State:
    models: list[str]
    api_key: str = ""
    requests: list[Seen] = field(default_factory=list)
    closed_early: int = 0
    answering: int = 0  # requests being answered now (a `!sleep` included)
    streamed: int = 0  # streams sent to their end
    posts: int = 0  # inference requests (health checks are GETs)
    keep: int = 1000  # requests remembered


def _prompt(path: str, body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    if path.endswith("/chat/completions"):
        messages = body.get("messages") or [{}]
        return str(messages[-1].get("content") or "")
    for key in ("prompt", "input"):
        value = body.get(key)
        if isinstance(value, list):
            value = value[0] if value else ""
        if isinstance(value, str):
            return value
    return ""


def _fault(prompt: str, name: str) -> str | None:
    """The argument of a `!name ARG` fault in the prompt ('' if it has none); None if
    it asks no such fault."""
    marker = f"!{name}"
    at = prompt.find(marker)
    if at < 0:
        return None
    rest = prompt[at + len(marker) :].split()
    return rest[0] if rest else ""


class _Conn:
    def __init__(
        self, state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.state = state
        self.reader = reader
        self.writer = writer

    async def serve(self) -> None:
        try:
            while await self._one():
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writer.close()

    async def _one(self) -> bool:
        line = await self.reader.readline()
        if not line:
            return False
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            h = await self.reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length") or 0)
        body = await self.reader.readexactly(length) if length else b""
        seen = Seen(method, path.split("?")[0], headers, body)
        self.state.posts += method == "POST"
        if self.state.keep:
            self.state.requests.append(seen)
            if len(self.state.requests) > self.state.keep:
                del self.state.requests[0]
        self.state.answering += 1
        try:
            await self._route(seen)
        finally:
            self.state.answering -= 1
        return headers.get("connection", "").lower() != "close"

    # --- writing ------------------------------------------------------------------------

    def _head(self, status: int, content_type: str, length: int | None) -> bytes:
        head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
        head += f"content-type: {content_type}\r\n"
        head += (
            f"content-length: {length}\r\n"
            if length is not None
            else "transfer-encoding: chunked\r\n"
        )
        return (head + "\r\n").encode()

    async def send(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.writer.write(self._head(status, content_type, len(data)) + data)
        await self.writer.drain()

    async def error(self, status: int, message: str, code: str | None = None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        await self.send(
            status, {"error": {"message": message, "type": kind, "param": None, "code": code}}
        )

    async def start_chunks(self, content_type: str) -> None:
        self.writer.write(self._head(200, content_type, None))

    async def chunk(self, data: bytes) -> None:
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.writer.drain()

    async def end_chunks(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    # --- routes -------------------------------------------------------------------------

    async def _route(self, req: Seen) -> None:
        if self.state.api_key and req.headers.get("authorization") != (
            f"Bearer {self.state.api_key}"
        ):
            # Some servers quote the key they refuse (OpenAI masks most of it).
            got = req.headers.get("authorization", "").removeprefix("Bearer ")
            await self.error(401, f"Incorrect API key provided: {got}", "invalid_api_key")
            return
        if req.method == "GET" and req.path.startswith("/files/"):
            if req.path == "/files/pixel.png":
                await self.send(200, PNG, "image/png")
            else:
                await self.send(200, {"models": self.state.models})
            return
        if req.method == "GET" and req.path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                for m in self.state.models
            ]
            await self.send(200, {"object": "list", "data": data})
            return
        routes: dict[str, Callable[[Seen, Any, str], Awaitable[None]]] = {
            "/v1/chat/completions": self._text,
            "/v1/completions": self._text,
            "/v1/embeddings": self._embeddings,
            "/v1/images/generations": self._images,
            "/v1/audio/transcriptions": self._transcription,
            "/v1/audio/translations": self._transcription,
            "/v1/audio/speech": self._speech,
        }
        handler = routes.get(req.path) if req.method == "POST" else None
        if handler is None:
            await self.error(404, f"no route {req.method} {req.path}")
            return
        try:
            body = (
                req.json()
                if req.headers.get("content-type", "").startswith("application/json")
                else None
            )
        except ValueError:
            await self.error(400, "the body is not JSON")
            return
        prompt = _prompt(req.path, body) if body is not None else req.body.decode("latin-1")
        status = _fault(prompt, "status")
        if status:
            await self.error(int(status), f"injected {status}", f"injected_{status}")
            return
        huge = _fault(prompt, "huge")
        if huge:
            await self.send(200, {"pad": "x" * int(huge)})
            return
        sleep = _fault(prompt, "sleep")
        if sleep:
            await asyncio.sleep(float(sleep))
        if isinstance(body, dict) and body.get("model") not in self.state.models:
            await self.error(
                404, f"The model '{body.get('model')}' does not exist", "model_not_found"
            )
            return
        await handler(req, body, prompt)

    async def _text(self, req: Seen, body: Any, prompt: str) -> None:
        chat = req.path.endswith("/chat/completions")
        messages = body.get("messages") or [{}] if chat else [{}]
        calls = _calls(body, messages[-1]) if chat else []
        if calls:
            await self._calls(body, calls, loose=_fault(prompt, "loosecalls") is not None)
            return
        said = WORDS
        if messages[-1].get("role") == "tool":
            said = str(messages[-1].get("content") or "").split()
        n = min(len(said), int(body.get("max_tokens") or len(said)))
        words = [w if i == 0 else " " + w for i, w in enumerate(said[:n])]
        finish = "length" if n < len(said) else "stop"
        top = _top_logprobs(body, chat)
        usage: dict[str, Any] = {
            "prompt_tokens": max(1, len(prompt.split())),
            "completion_tokens": n,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + n
        metered = _fault(prompt, "nousage") is None
        if _fault(prompt, "badusage") is not None:
            usage = {"prompt_tokens": "n/a", "completion_tokens": -5}
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        base = {"id": "fake-1", "created": created, "model": body["model"]}
        if not body.get("stream"):
            text = "".join(words)
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            answer = {**base, "object": kind, "choices": [choice]}
            if metered:
                answer["usage"] = usage
            await self.send(200, answer)
            return
        await self.start_chunks("text/event-stream")
        kind += ".chunk" if chat else ""
        slow = _fault(prompt, "slow")
        try:
            for i, word in enumerate(words):
                if i == 0 and _fault(prompt, "longline"):
                    await self.chunk(b"data: ")
                    for _ in range(int(_fault(prompt, "longline") or 0) // 65536):
                        await self.chunk(b"x" * 65536)
                    await self.end_chunks()
                    return
                if i == 2 and _fault(prompt, "stall") is not None:
                    await asyncio.sleep(60)
                if i == 2 and _fault(prompt, "drop") is not None:
                    self.writer.transport.abort()
                    return
                if i and slow:
                    await asyncio.sleep(float(slow))
                piece: dict[str, Any] = {"index": 0, "finish_reason": None, "logprobs": None}
                if top is not None:
                    piece["logprobs"] = _logprobs(word, i, top, chat)
                if chat:
                    piece["delta"] = {"content": word}
                else:
                    piece["text"] = word
                await self.chunk(_sse({**base, "object": kind, "choices": [piece]}))
            last: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            last["delta" if chat else "text"] = {} if chat else ""
            await self.chunk(_sse({**base, "object": kind, "choices": [last]}))
            if metered and (body.get("stream_options") or {}).get("include_usage"):
                await self.chunk(_sse({**base, "object": kind, "choices": [], "usage": usage}))
            await self.chunk(b"data: [DONE]\n\n")
            await self.end_chunks()
        except ConnectionError:
            self.state.closed_early += 1
            raise
        self.state.streamed += 1

    async def _calls(self, body: Any, calls: list[tuple[str, str]], *, loose: bool) -> None:
        """Answer with tool calls: OpenAI's pieces (a head, then the arguments in two
        halves), or, `loose`, each whole call in one piece with no index."""
        base = {"id": "fake-1", "created": int(time.time()), "model": body["model"]}
        whole: list[dict[str, Any]] = [
            {"id": f"call_fake{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ]
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": len(calls),
            "total_tokens": 1 + len(calls),
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": whole}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            answer = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            await self.send(200, answer)
            return
        pieces: list[list[dict[str, Any]]] = []
        for i, call in enumerate(whole):
            if loose:
                pieces.append([call])
                continue
            args = call["function"]["arguments"]
            head = {"index": i, **call, "function": {**call["function"], "arguments": ""}}
            half = len(args) // 2
            pieces.append([head])
            pieces += [
                [{"index": i, "function": {"arguments": p}}] for p in (args[:half], args[half:])
            ]
        await self.start_chunks("text/event-stream")
        kind = "chat.completion.chunk"
        for piece in pieces:
            choice = {"index": 0, "delta": {"tool_calls": piece}, "finish_reason": None}
            await self.chunk(_sse({**base, "object": kind, "choices": [choice]}))
        last = {"index": 0, "delta": {}, "finish_reason": "stop" if loose else "tool_calls"}
        await self.chunk(_sse({**base, "object": kind, "choices": [last]}))
        if (body.get("stream_options") or {}).get("include_usage"):
            await self.chunk(_sse({**base, "object": kind, "choices": [], "usage": usage}))
        await self.chunk(b"data: [DONE]\n\n")
        await self.end_chunks()
        self.state.streamed += 1

    async def _embeddings(self, req: Seen, body: Any, prompt: str) -> None:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = int(body.get("dimensions") or 8)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [round((len(s) + k) / (dims + len(s)), 4) for k in range(dims)],
            }
            for i, s in enumerate(inputs)
        ]
        tokens = sum(len(str(s).split()) for s in inputs)
        await self.send(
            200,
            {
                "object": "list",
                "model": body["model"],
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    async def _images(self, req: Seen, body: Any, prompt: str) -> None:
        n = int(body.get("n") or 1)
        url = _fault(prompt, "imageurl")
        if url:
            await self.send(200, {"created": int(time.time()), "data": [{"url": url}] * n})
            return
        b64 = base64.b64encode(PNG).decode()
        await self.send(200, {"created": int(time.time()), "data": [{"b64_json": b64}] * n})

    async def _transcription(self, req: Seen, body: Any, prompt: str) -> None:
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": 1.5,
            "text": TRANSCRIPT,
            "tokens": [1, 2, 3, 4],
            "temperature": 0.0,
            "avg_logprob": -0.2,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.01,
        }
        await self.send(
            200,
            {
                "task": "transcribe",
                "language": "english",
                "duration": 1.5,
                "text": TRANSCRIPT,
                "segments": [segment],
            },
        )

    async def _speech(self, req: Seen, body: Any, prompt: str) -> None:
        await self.start_chunks("audio/mpeg")
        for i in range(4):
            await self.chunk(bytes([i]) * 1024)
        await self.end_chunks()


def _calls(body: dict[str, Any], last: dict[str, Any]) -> list[tuple[str, str]]:
    """The calls the fake makes: [(name, arguments JSON)], or none."""
    tools = [t["function"] for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice") or "auto"
    if not tools or choice == "none":
        return []
    text = str(last.get("content") or "") if last.get("role") == "user" else ""
    if isinstance(choice, dict):
        chosen = [f for f in tools if f.get("name") == choice["function"]["name"]]
    elif text.startswith("call "):
        words = text[5:].replace(",", " ").split()
        chosen = [f for w in words for f in tools if f.get("name") == w] or tools[:1]
    elif choice == "required":
        chosen = tools[:1]
    else:
        return []
    if body.get("parallel_tool_calls") is False:
        chosen = chosen[:1]
    return [(f["name"], arguments_json(sample_arguments(f.get("parameters")))) for f in chosen]


def _top_logprobs(body: dict[str, Any], chat: bool) -> int | None:
    """How many alternatives to give per word; None when no log probabilities were asked."""
    if chat:
        return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
    value = body.get("logprobs")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _logprobs(word: str, i: int, top: int, chat: bool) -> dict[str, Any]:
    logprob = -round(0.1 * (i + 1), 3)
    alternatives = [(word, logprob), (" alt", -5.0)][:top]
    if not chat:
        return {
            "tokens": [word],
            "token_logprobs": [logprob],
            "top_logprobs": [dict(alternatives)],
            "text_offset": [0],
        }

    def entry(token: str, lp: float) -> dict[str, Any]:
        return {"token": token, "logprob": lp, "bytes": list(token.encode())}

    return {
        "content": [{**entry(word, logprob), "top_logprobs": [entry(*a) for a in alternatives]}],
        "refusal": None,
    }


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def serve(
    state: _State, host: str, port: int, started: Callable[[asyncio.Server], None] | None = None
) -> None:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _Conn(state, reader, writer).serve()

    server = await asyncio.start_server(on_connect, host, port, reuse_address=True)
    if started is not None:
        started(server)
    async with server:
        await server.serve_forever()


class FakeUpstream:
    """The fake on a thread of its own, for in-process tests. `down()` stops listening
    and drops every connection (an upstream that died); `up()` listens again on the same
    port."""

    def __init__(self, models: list[str], *, api_key: str = "", port: int = 0) -> None:
        self.state = _State(models=list(models), api_key=api_key)
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[Seen]:
        return self.state.requests

    def last(self, path: str) -> Seen:
        """The last request to `path` (/v1/...): health checks come and go meanwhile."""
        return next(r for r in reversed(self.state.requests) if r.path == path)

    def posts(self) -> int:
        """How many inference requests (not health checks) it received."""
        return self.state.posts

    @property
    def closed_early(self) -> int:
        return self.state.closed_early

    def quiet(self, timeout: float = 30) -> None:
        """Wait until it answers no request (one a client gave up on may still be going)."""
        deadline = time.monotonic() + timeout
        while self.state.answering and time.monotonic() < deadline:
            time.sleep(0.05)

    def up(self) -> None:
        ready = threading.Event()

        def started(server: asyncio.Server) -> None:
            self._server = server
            self.port = int(server.sockets[0].getsockname()[1])
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(serve(self.state, "127.0.0.1", self.port, started))
            except asyncio.CancelledError:
                pass
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start")

    def down(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        def stop() -> None:
            for task in asyncio.all_tasks(loop):
                task.cancel()

        loop.call_soon_threadsafe(stop)
        thread.join(10)
        self._loop = self._thread = self._server = None

    def close(self) -> None:
        self.down()


def main() -> None:
    ap = argparse.ArgumentParser(description="a fake OpenAI-compatible upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--models", default="fake-model", help="comma-separated model ids")
    ap.add_argument("--api-key", default="")
    args = ap.parse_args()
    state = _State(models=args.models.split(","), api_key=args.api_key, keep=0)
    try:
        asyncio.run(serve(state, args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""A small Hugging Face Hub of our own on loopback, for download tests (no internet here).

It answers the two endpoints rbee uses, as the Hub documents them: the file tree
(`GET /api/models/{repo}/tree/{revision}?recursive=true`, paginated with a Link
header) and file downloads (`GET /{repo}/resolve/{revision}/{path}`, with Range).
It records the Range headers it was sent, can serve slowly (to interrupt a
download half-way) and can lie about a file's checksum. It also answers the model info
of a revision (`GET /api/models/{repo}/revision/{revision}`, huggingface_hub's
model_info) with the commit that revision names (FakeHub.commit), unless `commits` is
off (a mirror without that endpoint).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], *, page_size: int = 2) -> None:
        self.repos = repos
        self.page_size = page_size
        self.gated: set[str] = set()
        self.corrupt: set[str] = set()  # paths whose bytes do not match their checksum
        self.rate = 0  # bytes per second per response; 0 = as fast as possible
        self.ranges: list[tuple[str, str]] = []
        self.revisions: list[str] = []  # the revision of every tree and file request
        self.sent: dict[str, int] = {}
        self.commits = True  # answer /api/models/{repo}/revision/{rev} with its commit
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hub._get(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def lfs(path: str) -> bool:
        return path.endswith((".bin", ".safetensors", ".gguf"))

    def _tree(self, repo: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path, data in sorted(self.repos[repo].items()):
            entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": "x"}
            if self.lfs(path):
                entry["size"] = 134  # the pointer file's size, as the Hub reports it
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            out.append(entry)
        out.append({"type": "directory", "path": "sub", "oid": "y", "size": 0})
        return out

    @staticmethod
    def commit(repo: str, revision: str) -> str:
        """The commit a branch or tag names here (a commit names itself)."""
        if re.fullmatch(r"[0-9a-f]{40}", revision):
            return revision
        return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", parts.path)
        if m:
            repo, revision = m.group(1), unquote(m.group(2))
            if not self.commits or repo not in self.repos:
                return self._send(h, 404, b'{"error": "Repository not found"}')
            info = {"id": repo, "sha": self.commit(repo, revision)}
            return self._send(h, 200, json.dumps(info).encode())
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", parts.path)
        if m:
            repo = m.group(1)
            with self._lock:
                self.revisions.append(m.group(2))
            if repo in self.gated and not h.headers.get("Authorization"):
                return self._send(h, 401, b'{"error": "gated"}')
            if repo not in self.repos:
                return self._send(h, 404, b'{"error": "Repository not found"}')
            cursor = int(parse_qs(parts.query).get("cursor", ["0"])[0])
            tree = self._tree(repo)
            page = tree[cursor : cursor + self.page_size]
            headers = {}
            if cursor + self.page_size < len(tree):
                nxt = f"{self.url}{parts.path}?recursive=true&cursor={cursor + self.page_size}"
                headers["Link"] = f'<{nxt}>; rel="next"'
            return self._send(h, 200, json.dumps(page).encode(), headers)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", parts.path)
        if m:
            with self._lock:
                self.revisions.append(m.group(2))
        if m and m.group(1) in self.repos and m.group(3) in self.repos[m.group(1)]:
            path = m.group(3)
            data = self.repos[m.group(1)][path]
            if path in self.corrupt:
                data = bytes(len(data))
            rng = h.headers.get("Range", "")
            with self._lock:
                self.ranges.append((path, rng))
            start = 0
            status = 200
            if rng:
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))  # type: ignore[union-attr]
                status = 206
            body = data[start:]
            headers = {"Content-Length": str(len(body))}
            if status == 206:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            step = 64 * 1024
            try:
                for i in range(0, len(body), step):
                    h.wfile.write(body[i : i + step])
                    h.wfile.flush()
                    with self._lock:
                        self.sent[path] = self.sent.get(path, 0) + len(body[i : i + step])
                    if self.rate:
                        time.sleep(step / self.rate)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return None
        return self._send(h, 404, b'{"error": "Entry not found"}')

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

"""What a hive refuses to run whoever asks: its own operator's opt-ins, checked here.

* A model whose spec asks `trust_remote_code=true` runs Python from the model's
  repository: only on a hive started with `--allow-remote-code`.
* A model spec from the queen (`rbee model add NAME=ENGINE:/some/path --hive H`) with a
  local path as its source (or tokenizer) is honoured only when the path is under the
  hive's models directory (RBEE_MODELS_DIR, where downloads go) or under a path named in
  the hive's own `--model` arguments: the queen cannot make a hive read arbitrary files.
* A model spec from the queen served by an upstream server (`NAME=openai:URL`) makes the
  hive send requests to URL: honoured only when URL is under a base URL the hive's
  operator granted (RBEE_HIVE_UPSTREAM_URLS, comma-separated, or a URL named in the
  hive's own `--model` arguments), so the queen cannot make a hive reach its internal
  network (or a cloud's metadata service) for it.
* `ws://` (or `http://`) to a queen that is not on this machine sends the hive token
  and every prompt in clear: refused unless the hive is started with `--insecure`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from hives.spec import REMOTE_ENGINES, ModelSpec

# The hive's setting: the upstream base URLs a model the queen assigns may use.
GRANTED_UPSTREAMS_ENV = "RBEE_HIVE_UPSTREAM_URLS"

REMOTE_CODE_REFUSAL = (
    "{name} asks trust_remote_code=true (it would run Python from the model's repository); "
    "this hive refuses that: start it with `rbee hive start --allow-remote-code` to allow it"
)


def remote_code_refusal(spec: ModelSpec, *, allow: bool) -> str:
    """Why the hive will not load `spec` ('' when it may)."""
    if allow or not spec.options.get("trust_remote_code"):
        return ""
    return REMOTE_CODE_REFUSAL.format(name=spec.name)


def _is_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).exists()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def local_path_refusal(spec: ModelSpec, *, roots: Iterable[Path]) -> str:
    """Why a spec from the queen may not use its local path(s) ('' when it may): each must
    resolve (symlinks and `..` followed) to a place under one of `roots`."""
    resolved_roots = [Path(r).expanduser().resolve() for r in roots]
    for ref in (spec.source, str(spec.options.get("tokenizer") or "")):
        if not ref or not _is_local(ref):
            continue
        path = Path(ref).expanduser().resolve()
        if not any(_inside(path, root) for root in resolved_roots):
            return (
                f"{spec.name}: the queen asks for the local path {ref[:200]!r}, which is not "
                "under this hive's models directory (RBEE_MODELS_DIR) nor named at its start "
                "(`rbee hive start --model`); refused"
            )
    return ""


def _origin_and_path(url: str) -> tuple[str, str, int, str] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port, parts.path.rstrip("/") + "/"


def upstream_url_refusal(spec: ModelSpec, *, granted: Iterable[str]) -> str:
    """Why a spec from the queen may not use its upstream URL ('' when it may, or when
    its engine has none): the URL must be one of `granted` or under it (same scheme,
    host and port; its path under the granted one's)."""
    if spec.engine not in REMOTE_ENGINES:
        return ""
    wanted = _origin_and_path(spec.source)
    for base in granted:
        allowed = _origin_and_path(base)
        if wanted and allowed and wanted[:3] == allowed[:3] and wanted[3].startswith(allowed[3]):
            return ""
    return (
        f"{spec.name}: the queen asks this hive to send requests to {spec.source[:200]!r}, "
        f"an upstream its operator did not grant ({GRANTED_UPSTREAMS_ENV}, or `rbee hive "
        "start --model`); refused"
    )


def granted_upstreams(environ: Mapping[str, str], start_models: Iterable[ModelSpec]) -> list[str]:
    """The upstream base URLs a model the queen assigns may use: the operator's setting
    and the upstreams of the hive's own start models."""
    listed = [u.strip() for u in environ.get(GRANTED_UPSTREAMS_ENV, "").split(",") if u.strip()]
    return listed + [m.source for m in start_models if m.engine in REMOTE_ENGINES]


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure_queen_refusal(ws_url: str, *, insecure: bool) -> str:
    """Why the hive will not connect to `ws_url` ('' when it may): ws:// beyond loopback
    needs --insecure."""
    parts = urlsplit(ws_url)
    if parts.scheme == "wss" or insecure:
        return ""
    if parts.scheme != "ws":
        return f"unsupported queen URL scheme {parts.scheme!r}: use https:// (wss://) or http://"
    if _loopback(parts.hostname or ""):
        return ""
    return (
        f"refusing to connect to {parts.hostname} without TLS: the hive token and every "
        "prompt would cross the network in clear; use https:// (wss://), or start the hive "
        "with --insecure to accept that"
    )

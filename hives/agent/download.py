"""Fetch a model's files from a Hugging Face repo, resumably, or accept a local path.

`rbee model download org/name --hive H` asks the hive to fetch the repo into its
models directory (RBEE_MODELS_DIR, else RBEE_HOME/models) while the CLI shows the
progress the hive reports. Only the Hub's two public HTTP endpoints are used: the
file tree (`/api/models/{repo}/tree/{revision}?recursive=true`, paginated with
Link headers) and the file download (`/{repo}/resolve/{revision}/{path}`, which
accepts Range requests). So:

* a file is written to `NAME.part` and renamed when complete; an interrupted
  download (the hive restarted, the network dropped) resumes from the bytes
  already on disk with a Range request;
* large (LFS) files are checked against the SHA-256 the tree gives for them, and
  every file against its size: a corrupted file is never renamed into place;
* `HF_ENDPOINT` points at a mirror, `HF_TOKEN` is sent for gated repos.

A local path (a directory or a file) needs no download: it is checked and used as it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hives.protocol import DownloadState, Op

logger = logging.getLogger("hives.download")

REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
REVISION_RE = re.compile(r"^[\w][\w./-]{0,199}$")  # a tag, branch or commit; no `..`
REVISION_FILE = ".rbee-revision"  # in a downloaded model's directory: what was fetched
CHUNK = 1 << 20

Progress = Callable[[int, int], Awaitable[None]]  # (bytes done, bytes total)


class DownloadError(Exception):
    pass


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str  # for LFS files; '' when the Hub gives none


def is_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or os.path.exists(source)


def local_dir_for(models_dir: Path, repo: str, revision: str = "") -> Path:
    """org/name -> MODELS/org--name (the same name every time, so a retry resumes);
    a pinned revision gets a directory of its own (org--name@rev), so files of two
    revisions never mix."""
    name = repo.replace("/", "--")
    if revision:
        name += "@" + re.sub(r"[^\w.-]", "_", revision)
    return models_dir / name


# Weights in a pickle format (torch.load runs code from them): skipped where the repo
# has the same weights as safetensors, which only hold tensors.
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# A variant of a weights file (diffusers' x.fp16.safetensors, x.fp16-00001-of-00002.bin).
_VARIANT = re.compile(r"\.(fp16|fp32|bf16|fp8|int8|ema|non[_-]ema)(?=\.[^.]+$|-\d+-of-\d+)")


def weight_group(path: str) -> tuple[str, str]:
    """The weights a file belongs to: its directory (a diffusers component: unet/,
    text_encoder/, ...; the repo's root) and its variant ('' for none)."""
    directory, _, name = path.rpartition("/")
    found = _VARIANT.search(name)
    return directory, found.group(1) if found else ""


def select_files(files: list[RemoteFile]) -> list[RemoteFile]:
    """The files of a repo listing to fetch: all of them, except a pickle-format weights
    file (.bin, .pt, .pth, ...) whose directory has safetensors weights of the same
    variant. Decided per directory: a diffusers repo whose unet has safetensors and whose
    text encoder has only a .bin keeps that .bin (the pipeline needs it)."""
    covered = {weight_group(f.path) for f in files if f.path.endswith(".safetensors")}
    return [
        f
        for f in files
        if not (f.path.lower().endswith(PICKLE_WEIGHTS) and weight_group(f.path) in covered)
    ]


def safetensors_everywhere(paths: list[str]) -> bool:
    """Whether every directory of a repo that holds weights has safetensors ones (with no
    variant): then a loader can be told to take safetensors only (diffusers'
    use_safetensors=True, which fails a component that has pickles only)."""
    weights = [p for p in paths if p.lower().endswith((*PICKLE_WEIGHTS, ".safetensors"))]
    safe = {weight_group(p) for p in weights if p.endswith(".safetensors")}
    return bool(weights) and all((weight_group(p)[0], "") in safe for p in weights)


def split_revision(source: str) -> tuple[str, str]:
    """`org/name@rev` -> ("org/name", "rev"); no @: ("org/name", "")."""
    repo, _, rev = source.partition("@")
    return repo, rev


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _headers() -> dict[str, str]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    headers = {"User-Agent": "rbee-hive"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _safe_path(rel: str) -> str:
    """A repo path that stays inside the destination (no absolute paths, no `..`)."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or ".." in parts:
        raise DownloadError(f"refusing the unsafe path {rel!r} in the repo listing")
    return rel


COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


async def resolve_commit(client: Any, repo: str, revision: str) -> str:
    """The commit `revision` (a branch, a tag or a commit) of the repo names now, from the
    Hub's model info (`/api/models/{repo}/revision/{revision}`, what huggingface_hub's
    model_info reads); '' when the endpoint (a mirror, say) gives none. Listing and
    fetching at that commit pins the download: files of two commits never mix, and what
    is recorded is the commit, not a branch that moves."""
    if COMMIT_RE.match(revision):
        return revision
    url = f"{_endpoint()}/api/models/{repo}/revision/{quote(revision, safe='')}"
    try:
        resp = await client.get(url)
        if resp.status_code != 200:
            return ""
        sha = str(resp.json().get("sha") or "")
    except (ValueError, AttributeError) as exc:
        logger.warning("no commit for %s@%s from %s: %s", repo, revision, url, exc)
        return ""
    return sha if COMMIT_RE.match(sha) else ""


async def list_files(client: Any, repo: str, revision: str) -> list[RemoteFile]:
    url: str | None = f"{_endpoint()}/api/models/{repo}/tree/{revision}?recursive=true"
    out: list[RemoteFile] = []
    while url:
        resp = await client.get(url)
        if resp.status_code in (401, 403):
            raise DownloadError(
                f"{repo} is gated or private: set HF_TOKEN on the hive to a token with access"
            )
        if resp.status_code == 404:
            raise DownloadError(f"no model repo {repo!r} (revision {revision!r}) on {_endpoint()}")
        resp.raise_for_status()
        for entry in resp.json():
            if entry.get("type") != "file":
                continue
            lfs = entry.get("lfs") or {}
            out.append(
                RemoteFile(
                    path=_safe_path(str(entry["path"])),
                    size=int(lfs.get("size") or entry.get("size") or 0),
                    sha256=str(lfs.get("oid") or ""),
                )
            )
        url = resp.links.get("next", {}).get("url")
    if not out:
        raise DownloadError(f"{repo} has no files")
    return out


async def _fetch(
    client: Any, repo: str, revision: str, f: RemoteFile, dest: Path, step: Callable[[int], Any]
) -> None:
    final = dest / f.path
    if final.exists() and final.stat().st_size == f.size:
        step(f.size)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > f.size:
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    step(have)
    url = f"{_endpoint()}/{repo}/resolve/{revision}/{f.path}"
    if have < f.size or f.size == 0:
        async with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 200 and have:
                # The server ignored the range: start this file again.
                step(-have)
                have = 0
                part.unlink(missing_ok=True)
            elif resp.status_code not in (200, 206):
                raise DownloadError(f"{f.path}: HTTP {resp.status_code} from {url}")
            # Disk writes happen off the event loop, which also relays the hive's jobs.
            # Unbuffered: what was received is on disk even if the hive is killed.
            fh = await asyncio.to_thread(open, part, "ab", 0)
            try:
                async for chunk in resp.aiter_bytes():
                    await asyncio.to_thread(fh.write, chunk)
                    step(len(chunk))
            finally:
                await asyncio.to_thread(fh.close)
    size = part.stat().st_size
    if f.size and size != f.size:
        raise DownloadError(f"{f.path}: got {size} bytes, expected {f.size}; retry to resume")
    if f.sha256:
        digest = await asyncio.to_thread(_sha256, part)
        if digest != f.sha256:
            part.unlink()
            raise DownloadError(f"{f.path}: checksum mismatch (the partial file was removed)")
    os.replace(part, final)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


async def download(
    source: str, models_dir: Path, progress: Progress, *, revision: str = "main"
) -> Path:
    """Fetch `source` (org/name[@revision]) into models_dir, or check a local path.
    Returns where the model is. Raises DownloadError with a message for people."""
    if is_local(source):
        path = await asyncio.to_thread(_existing, source)
        size = await asyncio.to_thread(tree_size, path)
        await progress(size, size)
        return path
    repo, rev = split_revision(source)
    if not REPO_RE.match(repo) or (rev and (not REVISION_RE.match(rev) or ".." in rev)):
        raise DownloadError(f"{source!r} is neither a local path nor a repo id (org/name[@rev])")
    import httpx

    # A named revision (a tag, a branch or a commit) is pinned: the listing and every
    # file come from it, into a directory of its own, which records it.
    dest = local_dir_for(models_dir, repo, rev)
    dest.mkdir(parents=True, exist_ok=True)
    timeout = httpx.Timeout(30.0, read=120.0)
    async with httpx.AsyncClient(
        headers=_headers(), follow_redirects=True, timeout=timeout
    ) as client:
        named = rev or revision
        commit = await resolve_commit(client, repo, named)
        at = commit or named
        files = select_files(await list_files(client, repo, at))
        total = sum(f.size for f in files)
        done = 0
        last = 0.0
        loop = asyncio.get_running_loop()

        def step(n: int) -> None:
            nonlocal done
            done += n

        async def report(force: bool = False) -> None:
            nonlocal last
            now = loop.time()
            if force or now - last >= 0.5:
                last = now
                await progress(done, total)

        for f in files:
            task = asyncio.ensure_future(_fetch(client, repo, at, f, dest, step))
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                await report()
            task.result()
        await report(force=True)
    # The commit when the Hub named one, else the revision asked for.
    (dest / REVISION_FILE).write_text(f"{at}\n")
    return dest


def _existing(source: str) -> Path:
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise DownloadError(f"{path} does not exist on this hive")
    return path


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Downloads:
    """The hive's side of `rbee model download`: each order from the queen runs as a task
    of its own (a resent order joins the running one) and reports its progress through
    `send` (the session's socket; reports while disconnected are dropped, and the queen
    resends unfinished orders when the hive reconnects, so they resume)."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.send = send
        self._running: dict[int, asyncio.Future[None]] = {}

    def start(self, download_id: int, source: str) -> None:
        if download_id in self._running:
            return  # already running (the queen resent it)
        task = asyncio.ensure_future(self._download(download_id, source))
        self._running[download_id] = task
        task.add_done_callback(lambda _t: self._running.pop(download_id, None))

    async def _report(
        self, download_id: int, state: DownloadState, done: int = 0, total: int = 0, **extra: Any
    ) -> None:
        msg: dict[str, Any] = {"op": Op.DOWNLOAD, "id": download_id, "state": state}
        msg.update(done=done, total=total, **extra)
        await self.send(msg)

    async def _download(self, download_id: int, source: str) -> None:
        from hives.agent.catalog import models_dir

        async def progress(done: int, total: int) -> None:
            await self._report(download_id, DownloadState.RUNNING, done, total)

        logger.info("downloading %s, as the queen asks", source)
        try:
            path = await download(source, await asyncio.to_thread(models_dir), progress)
        except DownloadError as exc:
            logger.error("download of %s failed: %s", source, exc)
            await self._report(download_id, DownloadState.FAILED, message=str(exc))
        except Exception as exc:  # the network, the disk: say so, and a retry resumes
            logger.exception("download of %s failed", source)
            await self._report(
                download_id, DownloadState.FAILED, message=f"{type(exc).__name__}: {exc}"
            )
        else:
            logger.info("downloaded %s to %s", source, path)
            size = await asyncio.to_thread(tree_size, path)
            revision = ""
            if not is_local(source):
                pinned = path / REVISION_FILE
                revision = (
                    await asyncio.to_thread(pinned.read_text) if pinned.is_file() else ""
                ).strip() or (split_revision(source)[1] or "main")
            await self._report(
                download_id, DownloadState.DONE, size, size, path=str(path), revision=revision
            )

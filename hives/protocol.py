"""The wire protocol between a hive and the queen (JSON frames over one websocket).

No Django here: the hive agent imports this module on machines with no database.
Every word that travels is a member of one of the enums below (``StrEnum``s, so a
member is the string itself on the wire, in the database and in comparisons).

hive -> queen
    hello      {op, protocol, name, version, region, devices: [...], workers: [...]}
    heartbeat  {op, devices: [...], workers: [...], inflight}
    ack        {op, id}                         a job was received
    events     {op, id, events: [{...}, ...]}   see EventKind; in order
    event      {op, id, event: {...}}           one event (same as events of one)
    batch      {op, jobs: [[id, [{...}, ...]], ...]}   (protocol 2) the events of several
               jobs that were ready at the same moment, in one binary frame
    download   {op, id, state, done, total, path?, message?}   a download's progress
queen -> hive
    welcome    {op, hive, heartbeat_interval}
    job        {op, id, model, device, task, request}
    cancel     {op, id}
    spawn      {op, spec, device, pinned}       load a model (`rbee model add --hive`)
    stop       {op, model, device}              unload a model the queen had assigned
    worker     {op, action, model, device}      an operator's order (`rbee worker restart`)
    download   {op, id, source}                 fetch a model's files (`rbee model download`)
    refused    {op, reason}                     sent just before closing

`protocol` in the hello is PROTOCOL_VERSION: queen and hives are deployed separately,
so the queen refuses a hive whose version it does not speak (`refused`, then the
close code CLOSE_BAD_VERSION) and the hive exits, as for a bad token. The queen speaks
every version from OLDEST_COMPATIBLE up, and its welcome says which one this session
uses (`protocol`: the hive's own, when the queen speaks it): a hive sends `batch`
frames only when the welcome says 2 or more, so an older hive with a newer queen works
as before, and a newer hive with an older queen is refused with what to upgrade.

Version 2 (the relay at proxy speed): the events of every job that were ready when the
hive's reader would block travel in one `batch` frame, binary (UTF-8 JSON in a binary
websocket frame, which the queen's server does not validate as text twice), up to
FRAME_BUDGET bytes a frame. Both sides read text and binary frames alike.

A worker entry is {model, capability, engine, source, device, state, pinned, inflight,
...}. Events of one job arrive in order; the last is a `done` or an `error`.

Between the hive and each of its worker processes (JSON lines on the worker's stdin
and stdout), see PipeOp. The worker writes the lines of the events that are ready in one
write, and the hive reads whatever is in the pipe at once (pipe_lines).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

import orjson

# Bump when a change would confuse the other side; keep OLDEST_COMPATIBLE at the oldest
# version this side still speaks.
# 2: `batch` frames (several jobs' events in one binary frame), and chat jobs may carry
# `tools`, `tool_choice`, `parallel_tool_calls`, `logprobs` and `top_logprobs`
# (docs/tools.md). A version-1 hive's engines would ignore those and answer as if none
# were sent (a silent drop), so version 1 is refused, with what to do.
PROTOCOL_VERSION: Final = 2
OLDEST_COMPATIBLE: Final = 2
# The first version with `batch` frames.
BATCH_VERSION: Final = 2
# A `batch` frame holds the events of as many jobs as fit in this many bytes; the events
# of one job that are larger travel alone (the frame limit is the server's, >= 64 MiB).
FRAME_BUDGET: Final = 2**20
HIVE_WS_PATH: Final = "/hive/ws"

# websocket close codes (4000-4999 are for applications)
CLOSE_BAD_TOKEN: Final = 4001
CLOSE_BAD_HELLO: Final = 4002
CLOSE_REPLACED: Final = 4003
CLOSE_BAD_VERSION: Final = 4004
# The operator disabled the hive (`rbee hive disable`): the hive keeps retrying with
# backoff, and is let in again once enabled.
CLOSE_DISABLED: Final = 4005


class Op(StrEnum):
    """The `op` of a websocket frame."""

    # hive -> queen
    HELLO = "hello"
    HEARTBEAT = "heartbeat"
    ACK = "ack"
    EVENTS = "events"
    EVENT = "event"
    BATCH = "batch"
    # both ways: the queen's order, then the hive's progress reports
    DOWNLOAD = "download"
    # queen -> hive
    WELCOME = "welcome"
    JOB = "job"
    CANCEL = "cancel"
    SPAWN = "spawn"
    STOP = "stop"
    WORKER = "worker"
    REFUSED = "refused"


class PipeOp(StrEnum):
    """The `op` of a JSON line between the hive and one of its worker processes."""

    JOB = "job"  # hive -> worker: {op, id, task, request}
    CANCEL = "cancel"  # hive -> worker: {op, id}
    READY = "ready"  # worker -> hive: {op, load_seconds, memory_bytes, slots, pid}
    FAILED = "failed"  # worker -> hive: {op, message}; the model did not load
    EVENT = "event"  # worker -> hive: {op, id, event}
    # worker -> hive: {op, message}; the engine's backend (an upstream server) stopped
    # serving (message says why) or serves again (message ''): failed <-> ready.
    HEALTH = "health"


class EventKind(StrEnum):
    """The `kind` of one event of a job."""

    # {kind, text?, tool_calls?, logprobs?}: tool_calls are OpenAI's streaming pieces,
    # logprobs chat-shaped entries, one per token of `text` (docs/tools.md)
    DELTA = "delta"
    # {kind, finish_reason, usage: {prompt_tokens, completion_tokens}}; finish_reason
    # "tool_calls" when the answer ended in calls
    DONE = "done"
    ERROR = "error"  # {kind, message, code, status}
    AUDIO = "audio"  # {kind, b64}: bytes of a synthesised audio stream, in order
    LOADING = "loading"  # {kind, model}: the model is being loaded (keeps the job alive)
    PROGRESS = "progress"  # {kind, progress}: a long one-shot job's percent done (video)
    # A `done` of a non-streaming task carries {result: {...}} (see engines/base.py).


# The kinds that end a job: exactly one of them is its last event. (A tuple: `in` on it
# never raises, whatever a peer put in `kind`.)
FINAL_KINDS: Final = (EventKind.DONE, EventKind.ERROR)


class WorkerState(StrEnum):
    """A worker's state, as the hive reports it (and the queen's Worker rows store).

    starting --> ready --(idle, unpinned)--> unloaded --(a job)--> starting
        |          |                            ^
        |          +--(room needed, LRU)--------+
        +--> refused (does not fit; the message says what uses the memory)
    ready --(crash)--> failed --(backoff)--> starting;  ready --> stopping --> stopped
    """

    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"
    STOPPING = "stopping"
    # Unloaded after being idle (or to make room): still placeable, reloaded on the
    # next job for it.
    UNLOADED = "unloaded"
    # The device had no room for it (the message says what uses the memory).
    REFUSED = "refused"


class WorkerAction(StrEnum):
    """An operator's order for one worker (`op: worker`)."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"


class DownloadState(StrEnum):
    """Where a model download is (`op: download` reports from the hive)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Task(StrEnum):
    """What a job asks a worker to do (the job's `task`)."""

    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    IMAGE = "image"
    IMAGE_VARIATION = "image_variation"
    TRANSCRIPTION = "transcription"
    TRANSLATION = "translation"
    SPEECH = "speech"
    VIDEO = "video"


class Capability(StrEnum):
    """What a model does; every task is served by models of one capability."""

    TEXT_GEN = "text-gen"
    IMAGE_GEN = "image-gen"
    AUDIO_TRANSCRIPTION = "audio-transcription"
    AUDIO_GEN = "audio-gen"
    EMBEDDING = "embedding"
    VIDEO_GEN = "video-gen"


TASK_CAPABILITY: Final[Mapping[Task, Capability]] = MappingProxyType(
    {
        Task.CHAT: Capability.TEXT_GEN,
        Task.COMPLETION: Capability.TEXT_GEN,
        Task.EMBEDDING: Capability.EMBEDDING,
        Task.IMAGE: Capability.IMAGE_GEN,
        Task.IMAGE_VARIATION: Capability.IMAGE_GEN,
        Task.TRANSCRIPTION: Capability.AUDIO_TRANSCRIPTION,
        Task.TRANSLATION: Capability.AUDIO_TRANSCRIPTION,
        Task.SPEECH: Capability.AUDIO_GEN,
        Task.VIDEO: Capability.VIDEO_GEN,
    }
)


def dumpb(msg: Any) -> bytes:
    """A frame (or a pipe line) as UTF-8 JSON. Only finite numbers travel (the other side
    refuses NaN and the infinities, see loads): a non-finite float, such as a
    log-probability of -inf in a transcript, is sent as null rather than losing the whole
    frame."""
    try:
        return orjson.dumps(msg)  # NaN and the infinities as null
    except TypeError:  # a key that is not a plain str, an int beyond 64 bits
        return _stdlib_dumps(msg).encode()


def dumps(msg: Mapping[str, Any]) -> str:
    """A frame as JSON text (dumpb's, decoded)."""
    return dumpb(msg).decode()


def _stdlib_dumps(msg: Any) -> str:
    try:
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_nulls_for_non_finite(msg), separators=(",", ":"), ensure_ascii=False)


def _nulls_for_non_finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _nulls_for_non_finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nulls_for_non_finite(v) for v in value]
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"a protocol message has only finite numbers, not {name}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf
        raise ValueError(f"a protocol message has only finite numbers, not {text[:32]}")
    return value


def loads(raw: str | bytes) -> dict[str, Any]:
    """A peer's frame: a JSON object with an 'op'. ValueError on anything else, and on a
    number that is not finite (NaN, Infinity, 1e400: they would reach usage counts and
    the database; orjson refuses them all)."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Malformed: the standard parser says why, in the words the logs have used.
        msg = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ValueError("a protocol message is a JSON object with an 'op'")
    return msg


def batch_frames(outbox: Iterable[tuple[str, list[dict[str, Any]]]]) -> list[bytes]:
    """`batch` frames (protocol 2) carrying each job's events, in order, as few frames as
    FRAME_BUDGET allows: one job's events are never split across frames, and a job whose
    events alone exceed the budget gets a frame of its own."""
    frames: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for job_id, events in outbox:
        part = dumpb([job_id, events])
        if parts and size + len(part) > FRAME_BUDGET:
            frames.append(_batch(parts))
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        frames.append(_batch(parts))
    return frames


def _batch(parts: list[bytes]) -> bytes:
    return b'{"op":"batch","jobs":[' + b",".join(parts) + b"]}"


def batch_jobs(msg: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """The (job id, events) pairs of a peer's `batch` frame that are well formed (a list
    of [string, list] pairs); anything else in it is dropped. The events themselves are
    the receiver's to check, as for an `events` frame."""
    jobs = msg.get("jobs")
    if not isinstance(jobs, list):
        return []
    return [
        (pair[0], pair[1])
        for pair in jobs
        if isinstance(pair, list)
        and len(pair) == 2
        and isinstance(pair[0], str)
        and isinstance(pair[1], list)
    ]


def pipe_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines in what was read from a pipe so far, and the partial rest."""
    *lines, rest = buffer.split(b"\n")
    return lines, rest


def negotiated(hello: Mapping[str, Any]) -> int:
    """The protocol version a session with the hive that sent `hello` uses: the hive's
    own (version_refusal has checked that the queen speaks it)."""
    theirs = hello.get("protocol")
    if isinstance(theirs, int) and not isinstance(theirs, bool):
        return max(OLDEST_COMPATIBLE, min(theirs, PROTOCOL_VERSION))
    return OLDEST_COMPATIBLE


def error_event(message: str, *, code: str = "worker_error", status: int = 500) -> dict[str, Any]:
    return {"kind": EventKind.ERROR, "message": message, "code": code, "status": status}


def refused(reason: str) -> dict[str, Any]:
    return {"op": Op.REFUSED, "reason": reason}


def version_refusal(hello: Mapping[str, Any], *, queen_version: str) -> str:
    """Why the queen cannot talk to the hive that sent `hello` ('' when it can).

    The reason names both protocol versions (and both rbee versions) and what to do."""
    theirs: object = hello.get("protocol")
    number = theirs if isinstance(theirs, int) and not isinstance(theirs, bool) else None
    if number is not None and OLDEST_COMPATIBLE <= number <= PROTOCOL_VERSION:
        return ""
    hive_version = str(hello.get("version") or "unknown")[:32]
    ours = (
        f"protocol version {PROTOCOL_VERSION}"
        if OLDEST_COMPATIBLE == PROTOCOL_VERSION
        else f"protocol versions {OLDEST_COMPATIBLE} to {PROTOCOL_VERSION}"
    )
    if theirs is None:
        what = "sent no protocol version"
    else:
        what = f"speaks protocol version {str(theirs)[:20]}"
    install = (
        f"install rbee {queen_version} on the hive (`rbee hive install HOST` installs "
        "the queen's own version) and start it again"
    )
    if number is not None and number > PROTOCOL_VERSION:
        todo = f"upgrade the queen to rbee {hive_version}, or {install}"
    else:
        todo = f"upgrade the hive: {install}"
    return (
        f"incompatible hive: this hive (rbee {hive_version}) {what} and the queen "
        f"(rbee {queen_version}) speaks {ours}; {todo}"
    )


def new_tool_call_id() -> str:
    """An id for one tool call, in OpenAI's form (`call_` and 24 characters): made by the
    engine, or by the queen for a call that arrived without one."""
    return f"call_{uuid.uuid4().hex[:24]}"

"""The wire protocol between a hive and the queen (JSON text frames over one websocket).

No Django here: the hive agent imports this module on machines with no database.

hive -> queen
    hello      {op, name, version, region, devices: [...], workers: [...]}
    heartbeat  {op, devices: [...], workers: [...], inflight}
    ack        {op, id}                         a job was received
    events     {op, id, events: [{...}, ...]}   see EVENT_* below; in order
    event      {op, id, event: {...}}           one event (same as events of one)
queen -> hive
    welcome    {op, hive, heartbeat_interval}
    job        {op, id, model, task, request}
    cancel     {op, id}
    spawn      {op, spec, device, pinned}       load a model (`rbee model add --hive`)
    stop       {op, model, device}              unload a model the queen had assigned
    refused    {op, reason}                     sent just before closing

A worker entry is {model, capability, engine, source, device, state, pinned, inflight}.
Events of one job arrive in order; the last is a `done` or an `error`.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
HIVE_WS_PATH = "/hive/ws"

# websocket close codes (4000-4999 are for applications)
CLOSE_BAD_TOKEN = 4001
CLOSE_BAD_HELLO = 4002
CLOSE_REPLACED = 4003

EVENT_DELTA = "delta"  # {kind, text}
EVENT_DONE = "done"  # {kind, finish_reason, usage: {prompt_tokens, completion_tokens}}
EVENT_ERROR = "error"  # {kind, message, code, status}
EVENT_AUDIO = "audio"  # {kind, b64}: bytes of a synthesised audio stream, in order
# A `done` of a non-streaming task carries {result: {...}} (see engines/base.py).

# A job's task, and the model capability that serves it.
TASK_CHAT = "chat"
TASK_COMPLETION = "completion"
TASK_EMBEDDING = "embedding"
TASK_IMAGE = "image"
TASK_IMAGE_VARIATION = "image_variation"
TASK_TRANSCRIPTION = "transcription"
TASK_TRANSLATION = "translation"
TASK_SPEECH = "speech"

TASK_CAPABILITY = {
    TASK_CHAT: "text-gen",
    TASK_COMPLETION: "text-gen",
    TASK_EMBEDDING: "embedding",
    TASK_IMAGE: "image-gen",
    TASK_IMAGE_VARIATION: "image-gen",
    TASK_TRANSCRIPTION: "audio-transcription",
    TASK_TRANSLATION: "audio-transcription",
    TASK_SPEECH: "audio-gen",
}


def dumps(msg: dict[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)


def loads(raw: str | bytes) -> dict[str, Any]:
    msg = json.loads(raw)
    if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
        raise ValueError("a protocol message is a JSON object with an 'op'")
    return msg


def error_event(message: str, *, code: str = "worker_error", status: int = 500) -> dict[str, Any]:
    return {"kind": EVENT_ERROR, "message": message, "code": code, "status": status}

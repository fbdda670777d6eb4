"""The queen's end of a hive's websocket: registration, telemetry and job relay.

One consumer instance holds one hive's socket. Views anywhere (any queen
replica) reach it through the channel layer by the channel name stored on the
Hive row; the consumer relays each job to the hive and each event of the job
back to the view's reply channel, many jobs multiplexed by id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from gdpr import audit
from gdpr.actions import AuditAction
from hives import selectors, services
from hives.protocol import (
    CLOSE_BAD_HELLO,
    CLOSE_BAD_TOKEN,
    CLOSE_BAD_VERSION,
    CLOSE_DISABLED,
    CLOSE_REPLACED,
    FINAL_KINDS,
    Op,
    batch_jobs,
    dumps,
    error_event,
    loads,
    negotiated,
    refused,
    version_refusal,
)
from kernel import __version__
from kernel.addresses import address_net

logger = logging.getLogger("hives.consumer")

# Largest usage count a `done` may carry (tokens, images, characters, seconds).
MAX_USAGE = 10**9


def heartbeat_interval() -> float:
    """Seconds between a hive's heartbeats (RBEE_HIVE_HEARTBEAT, default 5), told to the
    hive in the welcome; a revoked or disabled hive's socket is closed within one."""
    return float(settings.RBEE_HIVE_HEARTBEAT)


def bad_usage(event: dict[str, Any]) -> str:
    """Why the usage a hive's event carries cannot be metered ('' when it can): every
    count a non-negative number up to MAX_USAGE (loads already refused the non-finite)."""
    usage = event.get("usage")
    if usage is None:
        return ""
    if not isinstance(usage, dict):
        return "usage is not an object"
    for key, value in usage.items():
        if isinstance(value, dict):  # e.g. prompt_tokens_details
            nested = bad_usage({"usage": value})
            if nested:
                return nested
            continue
        if isinstance(value, bool) or not isinstance(value, int | float | None):
            return f"usage {str(key)[:40]} is not a number"
        if isinstance(value, int | float) and (
            not math.isfinite(value) or value < 0 or value > MAX_USAGE
        ):
            return f"usage {str(key)[:40]} is {str(value)[:40]}, outside [0, {MAX_USAGE}]"
    return ""


def _reported_workers(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """The workers a hive's report lists, as many as the queen takes (the services log
    the excess): the orders it gets back are bounded too."""
    workers = msg.get("workers")
    if not isinstance(workers, list):
        return []
    return [w for w in workers[: services.MAX_REPORTED_WORKERS] if isinstance(w, dict)]


def _bearer(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            if text.lower().startswith("bearer "):
                return text[7:].strip()
    return ""


class HiveConsumer(AsyncWebsocketConsumer):
    hive_id: int | None = None
    hive_name: str = ""
    ready: bool = False
    token_hash: str = ""
    watchdog: asyncio.Task[None] | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """channels' dispatch without its `aclose_old_connections()` before every message: a
        hop to a thread and back for each frame from the hive and each job message (the
        largest single cost on the queen's event loop per request, bench/README.md, issue
        15). This consumer touches the database only through `database_sync_to_async`,
        which closes old connections around each call itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.jobs: dict[str, str] = {}  # job id -> reply channel
        self.hive_id = None
        self.ready = False
        client = self.scope.get("client") or ("?", 0)
        token = _bearer(self.scope)
        hive = await database_sync_to_async(selectors.hive_for_token)(token) if token else None
        await self.accept()
        if hive is None:
            logger.warning(
                "refused hive connection from %s: %s",
                client[0],
                "invalid hive token" if token else "no hive token",
            )
            await self._refused(None, "invalid token" if token else "no token", client[0])
            await self.send(dumps(refused("invalid hive token")))
            await self.close(code=CLOSE_BAD_TOKEN, reason="invalid hive token")
            return
        if hive.disabled:
            logger.warning(
                "refused hive %s from %s: disabled by the operator", hive.name, client[0]
            )
            await self._refused(hive.name, "disabled", client[0], region=hive.region)
            await self.close(code=CLOSE_DISABLED, reason="hive disabled by the operator")
            return
        self.hive_id = hive.pk
        self.hive_name = hive.name
        self.token_hash = hive.token_hash

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.hive_id is None:
            return
        try:
            msg = loads(text_data if text_data is not None else (bytes_data or b""))
        except (ValueError, json.JSONDecodeError):
            logger.warning("hive %s sent a malformed frame; ignored", self.hive_name)
            return
        op = msg["op"]
        if not self.ready and op != Op.HELLO:
            # Nothing counts before the hello: its version and name are checked first.
            logger.warning("hive %s sent %r before its hello; ignored", self.hive_name, op)
            return
        try:
            if op == Op.BATCH:
                for job_id, events in batch_jobs(msg):
                    await self._relay_events(job_id, events)
            elif op == Op.EVENTS:
                await self._relay_events(str(msg.get("id")), msg.get("events"))
            elif op == Op.EVENT:
                await self._relay_events(str(msg.get("id")), [msg.get("event")])
            elif op == Op.ACK:
                reply = self.jobs.get(str(msg.get("id")))
                if reply:
                    await self.channel_layer.send(
                        reply, {"type": "job.ack", "hive_id": self.hive_id}
                    )
            elif op == Op.HEARTBEAT:
                if not await self._still_allowed():
                    return
                owned = await database_sync_to_async(services.hive_heartbeat)(
                    hive_id=self.hive_id, channel_name=self.channel_name, beat=msg
                )
                if not owned:
                    logger.info(
                        "hive %s reconnected elsewhere; closing this socket", self.hive_name
                    )
                    await self.close(code=CLOSE_REPLACED)
                elif "workers" in msg:
                    await self._sync_assignments(_reported_workers(msg))
            elif op == Op.HELLO:
                await self._hello(msg)
            elif op == Op.DOWNLOAD:
                await database_sync_to_async(services.model_download_progress)(
                    hive_id=self.hive_id, report=msg
                )
            else:
                logger.warning("hive %s sent unknown op %r; ignored", self.hive_name, op)
        except Exception:
            logger.exception("error handling %r from hive %s", op, self.hive_name)

    async def _hello(self, msg: dict[str, Any]) -> None:
        # Queen and hives are deployed separately: a hive that speaks another version of
        # the protocol is told so, with what to do, rather than misunderstood.
        reason = version_refusal(msg, queen_version=__version__)
        if reason:
            logger.warning("refused hive %s: %s", self.hive_name, reason)
            await self._refused(self.hive_name, "protocol version", "")
            await self.send(dumps(refused(reason)))
            self.hive_id = None  # never marked online, so nothing to undo
            await self.close(code=CLOSE_BAD_VERSION, reason="incompatible protocol version")
            return
        name = msg.get("name")
        if name and name != self.hive_name:
            logger.warning(
                "refused hive connection: token belongs to %r but hive says it is %r",
                self.hive_name,
                name,
            )
            await self._refused(self.hive_name, "token of another hive", "")
            await self.send(dumps(refused(f"this token belongs to hive {self.hive_name!r}")))
            self.hive_id = None  # never marked online, so nothing to undo
            await self.close(code=CLOSE_BAD_HELLO)
            return
        assert self.hive_id is not None
        previous = await database_sync_to_async(services.hive_connected)(
            hive_id=self.hive_id, channel_name=self.channel_name, hello=msg
        )
        if previous:
            # The hive restarted before its old socket timed out: fail that socket's jobs
            # now instead of after the ping timeout.
            await self.channel_layer.send(previous, {"type": "hive.replaced"})
        self.ready = True
        self.watchdog = asyncio.ensure_future(self._watch())
        # A hive connects while its start models load: say which are still `starting`.
        workers = [
            f"{str(w.get('model'))[:200]} {str(w.get('state'))[:16]}"
            for w in _reported_workers(msg)
        ]
        logger.info("hive %s connected (%s)", self.hive_name, ", ".join(workers) or "no models")
        await self.send(
            dumps(
                {
                    "op": Op.WELCOME,
                    "hive": self.hive_name,
                    "heartbeat_interval": heartbeat_interval(),
                    # The version this session speaks (the hive's: checked above).
                    "protocol": negotiated(msg),
                }
            )
        )
        # After the welcome, which the hive expects first.
        await self._sync_assignments(_reported_workers(msg))

    async def _refused(self, hive: str | None, reason: str, address: str, region: str = "") -> None:
        """A refused connection, in the audit log (once per connection attempt, never on
        the relay loop). A homelab's IP may be personal data, and a refused peer is no
        data subject to seal it under: the log keeps its network only."""
        net = address_net(address) if address else ""
        await audit.arecord(
            AuditAction.HIVE_REFUSED,
            actor=f"hive:{hive}" if hive else "anonymous",
            data={"hive": hive, "reason": reason, **({"address_net": net} if net else {})},
            region=region,
            outcome="denied",
        )

    async def _still_allowed(self) -> bool:
        """Close the socket (and return False) when the operator revoked the token it was
        opened with or gave the hive a new one (the hive is told, and exits: retrying
        cannot help), or disabled the hive (it retries with backoff until enabled)."""
        if self.hive_id is None:
            return False
        access = await database_sync_to_async(services.hive_access)(
            hive_id=self.hive_id, token_hash=self.token_hash
        )
        if access == services.Access.OK:
            return True
        logger.warning("hive %s: %s by the operator; closing its socket", self.hive_name, access)
        if access == services.Access.REVOKED:
            await self.send(dumps(refused("this hive's token was revoked")))
            code = CLOSE_BAD_TOKEN
        else:
            code = CLOSE_DISABLED
        await self.close(code=code, reason=f"hive {access}")
        await self.disconnect(code)
        self.hive_id = None  # nothing it sends counts any more
        return False

    async def _watch(self) -> None:
        """Check the hive is still allowed once per heartbeat interval, whether or not it
        beats: a revoked or disabled hive's socket closes within one interval. A failed
        check (the database restarting, say) is logged and tried again next interval: the
        watchdog never stops while the socket is open."""
        while self.hive_id is not None:
            await asyncio.sleep(heartbeat_interval())
            try:
                if not await self._still_allowed():
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception(
                    "hive %s: the token check failed; trying again in %ss",
                    self.hive_name,
                    heartbeat_interval(),
                )

    async def _sync_assignments(self, workers: list[dict[str, Any]]) -> None:
        """Start what the queen assigned and the hive lacks (pinned models come back after
        a hive restart); stop what was assigned and no longer is."""
        if self.hive_id is None:
            return
        for order in await database_sync_to_async(services.assignments_to_send)(
            hive_id=self.hive_id, workers=workers
        ):
            logger.info(
                "hive %s: %s %s%s%s",
                self.hive_name,
                order["op"],
                order.get("action", "") + " " if order.get("action") else "",
                order.get("spec") or order.get("model") or order.get("source"),
                f" on {order['device']}" if order.get("device") else "",
            )
            await self.send(dumps(order))

    async def _relay_events(self, job_id: str, events: Any) -> None:
        if not isinstance(events, list):
            return
        events = [e for e in events if isinstance(e, dict)]
        if not events:
            return
        for i, event in enumerate(events):
            problem = bad_usage(event)
            if problem:
                # Never metered: the job fails rather than bill a negative or absurd count.
                logger.warning(
                    "hive %s sent a bad usage for job %.64s (%s); the job fails",
                    self.hive_name,
                    job_id,
                    problem,
                )
                events[i] = error_event(
                    f"hive {self.hive_name!r} reported an invalid usage: {problem}",
                    code="hive_protocol_error",
                    status=502,
                )
        final = any(e.get("kind") in FINAL_KINDS for e in events)
        reply = self.jobs.pop(job_id, None) if final else self.jobs.get(job_id)
        if reply:
            await self.channel_layer.send(
                reply, {"type": "job.events", "hive_id": self.hive_id, "events": events}
            )

    # --- messages from views, through the channel layer ------------------------------

    async def job_dispatch(self, message: dict[str, Any]) -> None:
        job_id = str(message["id"])
        reply = str(message["reply"])
        if not self.ready:
            await self.channel_layer.send(
                reply,
                {
                    "type": "job.events",
                    "hive_id": self.hive_id,
                    "events": [
                        error_event("hive is not connected", code="hive_unavailable", status=503)
                    ],
                },
            )
            return
        self.jobs[job_id] = reply
        await self.send(
            dumps(
                {
                    "op": Op.JOB,
                    "id": job_id,
                    "model": message["model"],
                    "device": message.get("device", ""),
                    "task": message["task"],
                    "request": message["request"],
                }
            )
        )

    async def hive_replaced(self, message: dict[str, Any]) -> None:
        logger.info("hive %s connected again elsewhere; closing the old socket", self.hive_name)
        await self.close(code=CLOSE_REPLACED)
        await self.disconnect(CLOSE_REPLACED)

    async def job_cancel(self, message: dict[str, Any]) -> None:
        job_id = str(message["id"])
        if self.jobs.pop(job_id, None) is not None and self.ready:
            await self.send(dumps({"op": Op.CANCEL, "id": job_id}))

    async def disconnect(self, code: int) -> None:
        self.ready = False
        watchdog, self.watchdog = self.watchdog, None
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
        if self.hive_id is None:
            return
        lost = list(self.jobs.items())
        self.jobs.clear()
        failure = error_event(
            f"hive {self.hive_name!r} disconnected while running the request",
            code="hive_disconnected",
            status=502,
        )
        try:
            for job_id, reply in lost:
                try:
                    await self.channel_layer.send(
                        reply, {"type": "job.events", "hive_id": self.hive_id, "events": [failure]}
                    )
                except Exception:  # one failed send must not stop the others or the cleanup
                    logger.exception("could not fail job %s of hive %s", job_id, self.hive_name)
        finally:
            await database_sync_to_async(services.hive_disconnected)(
                hive_id=self.hive_id, channel_name=self.channel_name, code=code
            )
        logger.info(
            "hive %s disconnected (code %s, %d jobs failed)", self.hive_name, code, len(lost)
        )

"""The queen's end of a hive's websocket: registration, telemetry and job relay.

One consumer instance holds one hive's socket. Views anywhere (any queen
replica) reach it through the channel layer by the channel name stored on the
Hive row; the consumer relays each job to the hive and each event of the job
back to the view's reply channel, many jobs multiplexed by id.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from hives import selectors, services
from hives.protocol import (
    CLOSE_BAD_HELLO,
    CLOSE_BAD_TOKEN,
    CLOSE_BAD_VERSION,
    CLOSE_REPLACED,
    FINAL_KINDS,
    Op,
    dumps,
    error_event,
    loads,
    refused,
    version_refusal,
)
from kernel import __version__

logger = logging.getLogger("hives.consumer")

HEARTBEAT_INTERVAL = 5.0


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
            await self.send(dumps(refused("invalid hive token")))
            await self.close(code=CLOSE_BAD_TOKEN, reason="invalid hive token")
            return
        self.hive_id = hive.pk
        self.hive_name = hive.name

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
            if op == Op.EVENTS:
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
                owned = await database_sync_to_async(services.hive_heartbeat)(
                    hive_id=self.hive_id, channel_name=self.channel_name, beat=msg
                )
                if not owned:
                    logger.info(
                        "hive %s reconnected elsewhere; closing this socket", self.hive_name
                    )
                    await self.close(code=CLOSE_REPLACED)
                elif "workers" in msg:
                    await self._sync_assignments(list(msg.get("workers") or []))
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
        workers = [w.get("model") for w in msg.get("workers") or []]
        logger.info(
            "hive %s connected (%s)", self.hive_name, ", ".join(map(str, workers)) or "no models"
        )
        await self.send(
            dumps(
                {"op": Op.WELCOME, "hive": self.hive_name, "heartbeat_interval": HEARTBEAT_INTERVAL}
            )
        )
        # After the welcome, which the hive expects first.
        await self._sync_assignments(list(msg.get("workers") or []))

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
                hive_id=self.hive_id, channel_name=self.channel_name
            )
        logger.info(
            "hive %s disconnected (code %s, %d jobs failed)", self.hive_name, code, len(lost)
        )

"""The relay's framing on the hive's side (issue 15): the worker's pipe writes what is
ready in one write, the hive reads a pipe full of lines at once, and the events of every
job that were ready together leave in one `batch` frame, or one `events` frame per job to
a queen of protocol version 1. A small websocket server stands in for the queen."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
import websockets

from hives.agent.agent import HiveAgent
from hives.agent.supervisor import MAX_LINE, WorkerProcess
from hives.agent.worker import Pipe
from hives.protocol import PROTOCOL_VERSION, PipeOp, WorkerState, dumpb
from hives.spec import CPU, ModelSpec

pytestmark = pytest.mark.asyncio

SPEC = ModelSpec(name="m", engine="echo", source="", device=CPU)
DONE = {"kind": "done", "usage": {"completion_tokens": 3}}


class BlockingOut:
    """A pipe whose first write blocks until released, as a full pipe would."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.release = threading.Event()
        self.first = threading.Event()

    def write(self, data: bytes) -> int:
        self.writes.append(data)
        self.first.set()
        self.release.wait(10)
        return len(data)

    def flush(self) -> None:
        pass


async def test_the_worker_pipe_writes_the_lines_queued_meanwhile_in_one_write() -> None:
    out = BlockingOut()
    pipe = Pipe(out)  # type: ignore[arg-type]
    pipe.put(b"one\n")
    assert out.first.wait(5)  # the writer took the first line and is writing it
    for i in range(100):
        pipe.put(b"%d\n" % i)
    out.release.set()
    pipe.close()
    assert out.writes == [b"one\n", b"".join(b"%d\n" % i for i in range(100))]


async def test_the_worker_pipe_writes_everything_before_it_closes() -> None:
    out = BlockingOut()
    out.release.set()
    pipe = Pipe(out)  # type: ignore[arg-type]
    for i in range(1000):
        pipe.put(b"%d\n" % i)
    pipe.close()
    assert b"".join(out.writes) == b"".join(b"%d\n" % i for i in range(1000))
    assert not pipe.writer.is_alive()


def line(job_id: str, event: dict[str, Any]) -> bytes:
    return dumpb({"op": PipeOp.EVENT, "id": job_id, "event": event}) + b"\n"


async def test_the_hive_reads_a_pipe_full_of_lines_in_order_and_a_line_split_across_reads() -> None:
    worker = WorkerProcess(SPEC)
    got: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}

    def sink(job_id: str) -> Any:
        async def deliver(event: dict[str, Any]) -> None:
            got[job_id].append(event)

        return deliver

    worker.sinks = {"a": sink("a"), "b": sink("b")}
    stdout = asyncio.StreamReader()
    data = line("a", {"kind": "delta", "text": "1"}) + b"not json\n\n"
    data += line("b", {"kind": "delta", "text": "x"}) + line("a", {"kind": "delta", "text": "2"})
    final = line("a", {"kind": "done", "usage": {}})
    stdout.feed_data(data + final[:7])  # the last line arrives in two reads
    reading = asyncio.create_task(worker._read(stdout))
    await asyncio.sleep(0.05)
    assert [e["text"] for e in got["a"]] == ["1", "2"]
    stdout.feed_data(final[7:] + dumpb({"op": PipeOp.READY, "slots": 3}) + b"\n")
    stdout.feed_eof()
    assert await reading is True  # it had been ready
    assert [e["kind"] for e in got["a"]] == ["delta", "delta", "done"]
    assert got["b"] == [{"kind": "delta", "text": "x"}]
    assert set(worker.sinks) == {"b"}  # a's ended with its done
    assert (worker.state, worker.slots) == (WorkerState.READY, 3)


async def test_a_worker_line_over_the_limit_fails_the_worker_rather_than_growing() -> None:
    worker = WorkerProcess(SPEC)
    stdout = asyncio.StreamReader()
    stdout.feed_data(b"x" * (MAX_LINE + 1))
    with pytest.raises(ValueError, match="line over"):
        await worker._read(stdout)


class EmittingWorker(WorkerProcess):
    """A ready worker that answers the second job it is given by emitting the events of
    both jobs at once, as a worker's pipe read with lines of two jobs in it does."""

    def __init__(self) -> None:
        super().__init__(SPEC)
        self._state = WorkerState.READY

    async def submit(self, job_id: str, task: str, request: dict[str, Any], sink: Any) -> bool:
        self.sinks[job_id] = sink
        if len(self.sinks) == 2:
            for n in range(3):
                for jid, deliver in list(self.sinks.items()):
                    await deliver({"kind": "delta", "text": f"{jid}{n}"})
            for jid, deliver in list(self.sinks.items()):
                await deliver({"kind": "done", "usage": {"completion_tokens": 3}})
        return True


async def fake_queen(welcome: dict[str, Any]) -> tuple[Any, list[Any], asyncio.Event]:
    """Welcomes the hive with `welcome`, sends it two jobs, records what it sends."""
    frames: list[Any] = []
    both_done = asyncio.Event()

    async def handler(ws: Any) -> None:
        json.loads(await ws.recv())  # the hello
        await ws.send(json.dumps({"op": "welcome", "hive": "h", **welcome}))
        for job_id in ("a", "b"):
            await ws.send(json.dumps({"op": "job", "id": job_id, "model": "m", "task": "chat"}))
        dones = 0
        async for frame in ws:
            frames.append(frame)
            dones += (frame.decode() if isinstance(frame, bytes) else frame).count('"done"')
            if dones >= 2:
                both_done.set()

    server = await websockets.serve(handler, "127.0.0.1", 0)
    return server, frames, both_done


async def relayed(welcome: dict[str, Any]) -> list[Any]:
    server, frames, both_done = await fake_queen(welcome)
    port = server.sockets[0].getsockname()[1]
    agent = HiveAgent(
        queen=f"http://127.0.0.1:{port}", token="t", name="h", models=[], status_port=None
    )
    agent.pool.workers[("m", CPU)] = EmittingWorker()
    session = asyncio.create_task(agent._connect_loop())
    try:
        await asyncio.wait_for(both_done.wait(), 10)
    finally:
        agent.stop()
        await asyncio.wait_for(session, 10)
        server.close()
        await server.wait_closed()
    return [f for f in frames if '"ack"' not in str(f) and '"heartbeat"' not in str(f)]


async def test_events_of_several_jobs_ready_together_leave_in_one_binary_batch_frame() -> None:
    (frame,) = await relayed({"protocol": PROTOCOL_VERSION})
    assert isinstance(frame, bytes)  # a binary frame
    msg = json.loads(frame)
    assert msg["op"] == "batch"
    assert msg["jobs"] == [
        [jid, [*({"kind": "delta", "text": f"{jid}{n}"} for n in range(3)), DONE]]
        for jid in ("a", "b")
    ]


@pytest.mark.parametrize("welcome", [{"protocol": 1}, {}], ids=["version 1", "says none"])
async def test_a_queen_of_version_1_gets_an_events_frame_per_job(welcome: dict[str, Any]) -> None:
    frames = await relayed(welcome)
    assert all(isinstance(f, str) for f in frames)  # text frames, as version 1 had
    msgs = [json.loads(f) for f in frames]
    assert [(m["op"], m["id"]) for m in msgs] == [("events", "a"), ("events", "b")]
    for m in msgs:
        jid = m["id"]
        assert m["events"] == [
            *({"kind": "delta", "text": f"{jid}{n}"} for n in range(3)),
            DONE,
        ]

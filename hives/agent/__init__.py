"""The hive agent: runs on machines with accelerators, imports no Django app.

It detects devices, runs one worker process per loaded model, and keeps one
outbound websocket to the queen (so it works behind NAT).

    agent.py       the session with the queen: connect, hello, heartbeats, orders, job relay
    pool.py        the workers: placement, making room, idle unload, reload on demand
    supervisor.py  one worker process, restarted with backoff; worker.py runs inside it
    memory.py      may this model load on this device, and what must go first (pure)
    devices/       one detector per kind of device
    catalog.py     bundled and well-known models; download.py fetches the others
    engines/       one engine per file
    status.py      the local status API (HivePort)

It imports only hives.protocol, hives.spec and kernel besides itself: never Django, an
app or rbee (an import-linter contract checks it).
"""

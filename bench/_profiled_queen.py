"""`rbee queen start ...` with cProfile switched on by SIGUSR1 and written out by SIGUSR2
(to the file named by RBEE_BENCH_PROFILE), so that only the measured requests are in the
profile, not the queen's start (imports, migrations). Used by bench/profile_queen.py.

RBEE_BENCH_SERVER=uvicorn serves the same application (everything `rbee queen start`
sets up, then rbee.asgi.application) on uvicorn instead of Daphne, for the comparison in
docs/adr/0008-asgi-server-daphne-measured-against-uvicorn.md: RBEE_BENCH_UVICORN_HTTP
(h11 or httptools) and RBEE_BENCH_UVICORN_LOOP (asyncio or uvloop) pick its parts.
Daphne's checks before a body is read (rbee/server.py) are not in that path: a
measurement only."""

from __future__ import annotations

import cProfile
import os
import signal
import sys
from typing import Any

profiler = cProfile.Profile()


def _on(*_: Any) -> None:
    profiler.enable()


def _off(*_: Any) -> None:
    profiler.disable()
    profiler.dump_stats(os.environ["RBEE_BENCH_PROFILE"])


class _Uvicorn:
    """Stands in for rbee.server.queen_server: the same application on uvicorn."""

    def __init__(self, *, application: Any, endpoints: list[str], **_: Any) -> None:
        fields = dict(part.split("=", 1) for part in endpoints[0].split(":")[1:])
        self.application = application
        self.host, self.port = fields["interface"], int(fields["port"])

    def run(self) -> None:
        import uvicorn

        uvicorn.run(
            self.application,
            host=self.host,
            port=self.port,
            http=os.environ.get("RBEE_BENCH_UVICORN_HTTP", "httptools"),  # type: ignore[arg-type]
            loop=os.environ.get("RBEE_BENCH_UVICORN_LOOP", "uvloop"),  # type: ignore[arg-type]
            ws="websockets",
            ws_max_size=64 * 2**20,
            ws_ping_interval=None,
            lifespan="off",
            log_level="warning",
            access_log=False,
        )


if __name__ == "__main__":
    if os.environ.get("RBEE_BENCH_SERVER") == "uvicorn":
        import rbee.server

        rbee.server.queen_server = lambda **kw: _Uvicorn(**kw)  # type: ignore[assignment]
    signal.signal(signal.SIGUSR1, _on)
    signal.signal(signal.SIGUSR2, _off)
    from rbee.cli import main

    sys.argv[0] = "rbee"
    main()

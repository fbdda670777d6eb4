"""`rbee queen start ...` with cProfile switched on by SIGUSR1 and written out by SIGUSR2
(to the file named by RBEE_BENCH_PROFILE), so that only the measured requests are in the
profile, not the queen's start (imports, migrations). Used by bench/profile_queen.py."""

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


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, _on)
    signal.signal(signal.SIGUSR2, _off)
    from rbee.cli import main

    sys.argv[0] = "rbee"
    main()

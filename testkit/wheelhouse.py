"""rbee's base dependencies as wheels, for a host with no index (pip --no-index).

Built once per requirement list and Python by `pip wheel` run with the host's own
interpreter (a Debian python3 may need wheels another 3.11 does not: markers such as
`python_full_version < "3.11.3"`), cached under ~/.cache/rbee-test-wheelhouse/KEY, and
served over HTTP on an address the host reaches (`WheelServer`).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import subprocess
import tempfile
import threading
import tomllib
from pathlib import Path

from testkit.live import ROOT

HOST_PYTHON = "/usr/bin/python3"
CACHE = Path.home() / ".cache" / "rbee-test-wheelhouse"


def base_requirements() -> list[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return sorted(meta["project"]["dependencies"])


def wheelhouse(python: str = HOST_PYTHON) -> Path:
    reqs = base_requirements()
    version = subprocess.run(
        [python, "-c", "import sys, platform; print(sys.version, platform.machine())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    key = hashlib.sha256(("\n".join(reqs) + "\n" + version).encode()).hexdigest()[:16]
    target = CACHE / key
    if (target / ".complete").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rbee-wheelhouse-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True)
        out = Path(tmp) / "wheels"
        req_file = Path(tmp) / "requirements.txt"
        req_file.write_text("\n".join(reqs) + "\n")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "wheel", "-q"]
        proc = subprocess.run(
            [*pip, "-w", str(out), "-r", str(req_file)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if proc.returncode != 0:
            raise AssertionError(f"building the wheelhouse failed:\n{proc.stderr[-3000:]}")
        (out / ".complete").write_text("\n".join(reqs) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(out), target)
    target.chmod(0o755)
    return target


class WheelServer:
    """A directory served over HTTP (pip's --find-links reads its listing)."""

    def __init__(self, directory: Path, host: str) -> None:
        handler = functools.partial(_Quiet, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer((host, 0), handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

"""The installer's decisions that need no host: which queen URL the hive gets, and the
queen's side of an install on the real database."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db import connections

from hives.install import queen
from hives.install.config import HostEntry
from hives.install.errors import InstallError
from hives.install.installer import (
    Installer,
    Options,
    Previous,
    Progress,
    describe_devices,
    pip_env_text,
    queen_url_for,
    tilde,
)
from hives.models import Hive

T = TypeVar("T")

ENTRY = HostEntry(
    alias="gaming-pc", path=Path("/c/hives.conf"), hostname="192.168.1.100", port=22, user="v"
)


def with_(**kw: object) -> HostEntry:
    from dataclasses import replace

    return replace(ENTRY, **kw)  # type: ignore[arg-type]


def test_the_queen_url_and_when_plain_http_is_allowed() -> None:
    with pytest.raises(InstallError) as err:
        queen_url_for(ENTRY, Options(), "")
    assert "set `QueenURL https://queen:7833` under Host gaming-pc in /c/hives.conf" in str(
        err.value
    )
    assert "--queen URL" in str(err.value) and "RBEE_PUBLIC_URL" in str(err.value)

    # RBEE_PUBLIC_URL, then QueenURL, then --queen.
    assert queen_url_for(ENTRY, Options(), "https://rbee.example/") == (
        "https://rbee.example",
        False,
        "",
    )
    lan = with_(queen_url="https://queen.lan:7833")
    assert queen_url_for(lan, Options(), "https://rbee.example")[0] == "https://queen.lan:7833"
    assert queen_url_for(lan, Options(queen_url="https://other:7833"), "")[0] == (
        "https://other:7833"
    )

    # http:// to another machine: the hive would refuse it, so the installer does first.
    plain = with_(queen_url="http://192.168.1.10:7833")
    with pytest.raises(InstallError) as err:
        queen_url_for(plain, Options(), "")
    assert "the hive would refuse http://192.168.1.10:7833" in str(err.value)
    assert "`Insecure yes` under Host gaming-pc" in str(err.value)
    assert queen_url_for(with_(queen_url="http://192.168.1.10:7833", insecure=True), Options(), "")[
        1
    ]
    assert queen_url_for(plain, Options(insecure=True), "")[1]

    # Loopback is the host's own: allowed, with a warning.
    url, insecure, warning = queen_url_for(with_(queen_url="http://localhost:7833"), Options(), "")
    assert (url, insecure) == ("http://localhost:7833", False)
    assert "the host's own loopback" in warning

    # A CA for the queen's certificate only with a queen that serves TLS (the hive
    # refuses --ca for an http:// queen).
    assert queen_url_for(
        with_(queen_url="https://queen.lan:7833", queen_ca="/c/ca.pem"), Options(), ""
    )[0] == ("https://queen.lan:7833")
    with pytest.raises(InstallError) as err:
        queen_url_for(
            with_(queen_url="http://192.168.1.10:7833", insecure=True, queen_ca="/c/ca.pem"),
            Options(),
            "",
        )
    assert "QueenCA /c/ca.pem is for a queen that serves TLS" in str(err.value)

    with pytest.raises(InstallError) as err:
        queen_url_for(with_(queen_url="ftp://queen"), Options(), "")
    assert "use http://HOST:7833 or https://HOST" in str(err.value)


def test_pip_settings_reach_pip_through_its_environment(tmp_path: Path) -> None:
    """Index and wheel URLs may carry credentials: the installer hands them to pip in
    its variables, from a file the shell sources, never on a command line."""
    assert pip_env_text(ENTRY) == ""
    entry = with_(
        pip_index_url="https://me:s3cret@pypi.lan/simple",
        pip_find_links=("/srv/wheels", "https://me:s3cret@wheels.lan/"),
        pip_trusted_hosts=("wheels.lan", "pypi.lan"),
    )
    text = pip_env_text(entry)
    assert text == (
        "PIP_INDEX_URL=https://me:s3cret@pypi.lan/simple\n"
        "PIP_FIND_LINKS='/srv/wheels https://me:s3cret@wheels.lan/'\n"
        "PIP_TRUSTED_HOST='wheels.lan pypi.lan'\n"
    )
    assert pip_env_text(with_(pip_no_index=True, pip_index_url=None)) == "PIP_NO_INDEX=1\n"
    # As the host's shell reads it (`set -a; . FILE`), and pip's own parser after it.
    env_file = tmp_path / "pip.env"
    env_file.write_text(text)
    show = f"{sys.executable} -c {shlex.quote(PRINT_PIP_OPTIONS)}"
    script = f"set -a && . {env_file} && set +a && exec {show}"
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "index_url": "https://me:s3cret@pypi.lan/simple",
        "find_links": ["/srv/wheels", "https://me:s3cret@wheels.lan/"],
        "trusted_hosts": ["wheels.lan", "pypi.lan"],
    }


# pip's option parser for `pip install`, with the environment as pip reads it.
PRINT_PIP_OPTIONS = (
    "import json\n"
    "from pip._internal.commands import create_command\n"
    "options, _ = create_command('install').parse_args([])\n"
    "print(json.dumps({'index_url': options.index_url, 'find_links': options.find_links,"
    " 'trusted_hosts': options.trusted_hosts}))\n"
)


def test_devices_as_printed() -> None:
    assert describe_devices(
        [
            {
                "index": 0,
                "kind": "cuda",
                "name": "NVIDIA GeForce RTX 4090",
                "memory_total_mb": 24564,
            },
            {"index": 0, "kind": "cpu", "name": "AMD Ryzen 9 7950X", "memory_total_mb": 65536},
        ]
    ) == ["cuda:0: NVIDIA GeForce RTX 4090, 24.0 GiB", "cpu: AMD Ryzen 9 7950X, 64.0 GiB"]
    assert tilde("/home/v/.local/share/rbee", "/home/v") == "~/.local/share/rbee"
    assert tilde("/opt/rbee", "/home/v") == "/opt/rbee"


@pytest.mark.django_db
def test_the_queens_side() -> None:
    assert queen.hive_view(name="gaming-pc") is None
    assert not queen.token_revoke(name="gaming-pc", actor="cli:test")

    token = queen.token_issue(name="gaming-pc", region="eu", trust_models=True, actor="cli:test")
    hive = Hive.objects.get(name="gaming-pc")
    assert (hive.region, hive.trust_models, hive.token_revoked) == ("eu", True, False)
    assert queen.token_is_current(name="gaming-pc", token=token)
    assert not queen.token_is_current(name="other", token=token)
    assert not queen.token_is_current(name="gaming-pc", token=token + "x")

    # Keeping the token: hives.conf's Region and TrustModels are the operator's record.
    queen.record_update(name="gaming-pc", region="us", trust_models=None, actor="cli:test")
    hive.refresh_from_db()
    assert (hive.region, hive.trust_models) == ("us", True)

    view = queen.hive_view(name="gaming-pc")
    assert view is not None
    assert (view.live, view.status, view.region, view.connected_at) == (
        False,
        "offline",
        "us",
        None,
    )

    # A new token replaces the old one.
    second = queen.token_issue(name="gaming-pc", region=None, trust_models=None, actor="cli:test")
    assert not queen.token_is_current(name="gaming-pc", token=token)
    assert queen.token_is_current(name="gaming-pc", token=second)

    assert queen.token_revoke(name="gaming-pc", actor="cli:test")
    assert not queen.token_is_current(name="gaming-pc", token=second)
    view = queen.hive_view(name="gaming-pc")
    assert view is not None and view.status == "revoked"


@pytest.mark.django_db(transaction=True)  # the installer reaches the database from threads
def test_an_undone_install_revokes_the_token_it_issued_unless_one_worked_before() -> None:
    nothing = Previous(
        data_existed=False, record=None, record_raw=None, venv_target="", env=None, ca=None
    )

    async def in_one_thread(coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` with its database work in one thread, whose connection is closed
        after (the test database is dropped at the end)."""
        loop = asyncio.get_running_loop()
        thread = ThreadPoolExecutor(1)
        loop.set_default_executor(thread)
        try:
            return await coro
        finally:
            await loop.run_in_executor(thread, connections.close_all)

    def issue_and_undo() -> tuple[str, str]:
        installer = Installer("gaming-pc", Options(actor="cli:test"), lambda _: None)
        progress = Progress(lambda _: None, 9)
        issued = installer._token(None, ENTRY, nothing, None, progress)  # type: ignore[arg-type]
        token = asyncio.run(in_one_thread(issued))
        assert queen.token_is_current(name="gaming-pc", token=token)
        return token, asyncio.run(in_one_thread(installer._rollback()))

    # A hive the queen never knew: the undone install leaves it revoked.
    token, undone = issue_and_undo()
    assert not queen.token_is_current(name="gaming-pc", token=token)
    assert queen.hive_view(name="gaming-pc").status == "revoked"  # type: ignore[union-attr]

    # Again (the record of the first try is there, revoked): revoked again, not revived.
    token, undone = issue_and_undo()
    assert undone == "the host was left as it was"
    assert not queen.token_is_current(name="gaming-pc", token=token)
    assert queen.hive_view(name="gaming-pc").status == "revoked"  # type: ignore[union-attr]

    # A hive with a working token: the new one replaced it for good, so it stays.
    queen.token_issue(name="gaming-pc", region=None, trust_models=None, actor="cli:test")
    token, undone = issue_and_undo()
    assert undone == "nothing on the host was changed"
    assert queen.token_is_current(name="gaming-pc", token=token)

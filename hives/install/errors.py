"""What can go wrong installing a hive, by code; the CLI prints the message."""

from __future__ import annotations

import enum

from kernel.errors import DomainError


class InstallErrorCode(enum.StrEnum):
    CONFIG = "config"  # hives.conf is missing, unreadable, or does not name the host
    HOST_KEY_UNKNOWN = "host_key_unknown"  # not in known_hosts (the fingerprint is shown)
    HOST_KEY_CHANGED = "host_key_changed"  # known_hosts has another key: always refused
    CONNECT = "connect"  # the host cannot be reached or refuses us
    HOST = "host"  # the host lacks what a hive needs (Python 3.11+ with venv)
    WHEEL = "wheel"  # the queen's own wheel cannot be built or fetched
    STEP = "step"  # a step on the host failed (it was undone)
    NOT_INSTALLED = "not_installed"  # upgrade/status of a host with no hive installed


class InstallError(DomainError):
    def __init__(self, code: InstallErrorCode, message: str) -> None:
        super().__init__(code, message)

"""The fleet's domain errors (hives, workers, the model catalog, downloads), by code; the
API layer maps each code to HTTP (rbee/api_errors.py), the CLI prints the message."""

from __future__ import annotations

import enum

from kernel.errors import DomainError


class HiveErrorCode(enum.StrEnum):
    INVALID_NAME = "invalid_name"  # a hive name that is not a slug
    UNKNOWN_HIVE = "unknown_hive"  # a hive named in a request that does not exist
    INVALID_DEVICE = "invalid_device"
    INVALID_SPEC = "invalid_spec"  # a model spec the catalog cannot parse
    INVALID_ACTION = "invalid_action"  # a worker order other than start, stop, restart
    NO_WORKER = "no_worker"  # the hive runs no worker for that model (and device)
    INVALID_ALIAS = "invalid_alias"
    UNKNOWN_MODEL = "unknown_model"
    INVALID_SOURCE = "invalid_source"  # nothing to download
    INVALID_REGION = "invalid_region"  # a region label that is not a short slug
    NOT_FOUND = "not_found"  # the worker, download or assignment a URL names


class HiveError(DomainError):
    def __init__(self, code: HiveErrorCode, message: str, *, param: str | None = None) -> None:
        super().__init__(code, message, param=param)

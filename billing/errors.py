"""Billing's domain errors: what the gate refuses, by code. The codes are OpenAI's where
OpenAI has one (`rate_limit_exceeded`, `insufficient_quota`); `inference/errors.py` maps
each to its status and envelope."""

from __future__ import annotations

import enum

from kernel.errors import DomainError


class AdmissionCode(enum.StrEnum):
    INSUFFICIENT_SCOPE = "insufficient_scope"  # the key's scopes exclude the endpoint/model
    MODEL_NOT_IN_PLAN = "model_not_in_plan"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"  # a per-minute rate or concurrency
    INSUFFICIENT_QUOTA = "insufficient_quota"  # a daily quota


class AdmissionError(DomainError):
    """The gate refused a request: scope, plan or limits."""

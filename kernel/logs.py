"""Logging that never writes a secret: API keys and hive tokens are cut to their prefix."""

from __future__ import annotations

import logging
import re

_SECRET = re.compile(r"\b(sk-rbee|rbee-hive)-([a-z0-9]{10})-[A-Za-z0-9_\-]+")


def redact(text: str) -> str:
    return _SECRET.sub(r"\1-\2-[redacted]", text)


class RedactSecrets(logging.Filter):
    """Rewrites each record's message with secrets redacted (libraries log headers at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def configure(level: str = "INFO") -> None:
    """Plain console logging for the CLI's long-running commands, secrets redacted."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())

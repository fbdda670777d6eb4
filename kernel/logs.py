"""Logging that never writes a secret and cannot be made to forge a line.

Secrets (our API keys and hive tokens, other `sk-...` keys, Stripe keys, Bearer values,
passwords in URLs and `password=`-style parameters) are cut from the message, from the
traceback of a logged exception (its text often quotes the value that failed) and from
stack info. Control characters in messages and exception texts (CR, LF, ESC, ...) are
escaped, so a path or a header value a client chose cannot start a line of its own.
"""

from __future__ import annotations

import logging
import re
import traceback
from types import TracebackType

# Our bearer secrets keep their public prefix (kernel/secrets.py), so a log still says which.
_OURS = re.compile(r"\b(sk-rbee|rbee-hive)-([a-z0-9]{10})-[A-Za-z0-9_\-]+")
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (_OURS, r"\1-\2-[redacted]"),
    # Any other Bearer value (a key in another format, a hive token, a JWT).
    (
        re.compile(
            r"(?i)\b(bearer\s+)(?!(?:sk-rbee|rbee-hive)-[a-z0-9]{10}-\[redacted\])[^\s'\",;]+"
        ),
        r"\1[redacted]",
    ),
    # OpenAI-style keys (sk-..., sk-proj-...).
    (re.compile(r"\bsk-(?!rbee-[a-z0-9]{10}-\[redacted\])[A-Za-z0-9_\-]{16,}"), "sk-[redacted]"),
    # Stripe secret, restricted and publishable keys, webhook secrets.
    (re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{8,}"), r"\1_\2_[redacted]"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"), "whsec_[redacted]"),
    # user:password@ in URLs (postgres://, redis://, https://).
    (re.compile(r"\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1[redacted]@"),
    # password=..., token=..., secret=... in query strings and DSNs.
    (
        re.compile(r"(?i)\b((?:password|passwd|pwd|token|secret|api_key|apikey)=)[^\s&'\"]+"),
        r"\1[redacted]",
    ),
)
# C0 controls but TAB, DEL, C1 controls and Unicode's line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def redact(text: str) -> str:
    """The text with every secret it holds replaced by `[redacted]`."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def escape_controls(text: str) -> str:
    """CR, LF and other control characters as visible escapes (`\\n`, `\\x1b`)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def safe(text: str) -> str:
    """What a log line may carry of a text: secrets redacted, controls escaped."""
    return escape_controls(redact(text))


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def format_exception(exc_info: ExcInfo) -> str:
    """A traceback as logging prints it, with secrets redacted; the lines an exception's
    own text makes (its message, notes, for each exception of the chain) have their
    control characters escaped, while the frames keep their layout."""
    te = traceback.TracebackException(*exc_info, compact=True)
    own: set[str] = set()
    seen: set[int] = set()
    pending = [te]
    while pending:
        t = pending.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        own.update(t.format_exception_only())
        pending.extend(x for x in (t.__cause__, t.__context__) if x is not None)
    parts = []
    for chunk in te.format(chain=True):
        if chunk in own:
            body = chunk[:-1] if chunk.endswith("\n") else chunk
            chunk = escape_controls(body) + ("\n" if chunk.endswith("\n") else "")
        parts.append(chunk)
    return redact("".join(parts).rstrip("\n"))


class RedactSecrets(logging.Filter):
    """Rewrites each record so that no handler writes a secret or a forged line: the
    message (args substituted), the exception's traceback (kept in exc_text, which
    logging's formatters print instead of formatting exc_info again) and stack info."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = safe(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = format_exception(record.exc_info)  # type: ignore[arg-type]
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def configure(level: str = "INFO") -> None:
    """Plain console logging for the CLI's long-running commands, secrets redacted."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())

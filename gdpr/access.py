"""Who is asking, for gdpr's HTTP endpoints (/gdpr/...), without gdpr importing an app.

gdpr imports no other app, yet its endpoints must know who signed in, which tenants they
belong to and administer, and whether they are an operator with the audit (GDPR)
permission. The tenants app answers that: it registers an `Access` in its AppConfig.ready()
(tenants/gdpr.py), and gdpr's views call `current()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gdpr.subjects import Subject


@dataclass(frozen=True)
class Principal:
    """A signed-in person, as far as GDPR cares."""

    user_id: int
    subject: Subject  # user:<their e-mail>
    # Holds the operators' audit permission (audit and GDPR for every tenant and subject).
    operator: bool = False
    # Tenants they belong to, id -> name (their events, their tenants' proofs)...
    member_of: Mapping[int, str] = field(default_factory=dict)
    # ...and those where they are an owner or admin (they act for its end users).
    admin_of: Mapping[int, str] = field(default_factory=dict)


class Access(Protocol):
    def authentication_classes(self) -> Sequence[type[Any]]:
        """DRF authentication classes for gdpr's views (session, basic, ...)."""
        ...

    def principal(self, user: Any) -> Principal | None:
        """The principal of an authenticated Django user (None: not one)."""
        ...


_access: Access | None = None


def register(access: Access) -> None:
    global _access
    _access = access


def current() -> Access:
    if _access is None:
        raise RuntimeError("no app registered gdpr's access (tenants does, in its ready())")
    return _access

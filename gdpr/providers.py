"""Export and erasure providers: every app registers what it holds about data subjects.

    from gdpr import providers
    providers.register(providers.Provider(
        name="billing.usage", title="Usage records", categories=(...), purposes=(...),
        recipients=(...), retention="...", export=usage_export, erase=usage_erase))

gdpr imports no app; apps register in their AppConfig.ready(). Export and erasure jobs
run every registered provider; the record of processing (Art. 30) is generated from
their descriptions, so adding an app never means editing gdpr.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gdpr.subjects import Subject


@dataclass
class Kept:
    """Records a law obliges us to keep: pseudonymised, with the ground and the expiry."""

    count: int
    ground: str  # e.g. "Art. 17(3)(b) GDPR; § 147 AO (German books): 10 years"
    until: date


@dataclass
class Erased:
    """What one provider did for one erasure: written into the signed receipt."""

    store: str  # the provider's name
    deleted: int = 0
    pseudonymised: int = 0
    files_removed: int = 0
    kept: list[Kept] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Provider:
    name: str  # "<app>.<store>", e.g. "billing.usage"
    title: str  # for people: "Usage records"
    categories: tuple[str, ...]  # Art. 30(1)(c): categories of personal data
    purposes: tuple[str, ...]  # Art. 30(1)(b)
    retention: str  # Art. 30(1)(f), in words
    export: Callable[[Subject], list[dict[str, Any]]]  # JSON-able records about the subject
    erase: Callable[[Subject], Erased]  # delete or pseudonymise; idempotent
    recipients: tuple[str, ...] = ()  # Art. 30(1)(d), e.g. "Stripe, Inc. (payments; USA)"
    regions: tuple[str, ...] = ()  # where it is processed, when not only this deployment
    # Other strings that name the subject in free text (a username, a full name), for the
    # stores that can only be searched as text: log files, files under RBEE_HOME.
    aliases: Callable[[Subject], list[str]] | None = None
    # Art. 30(1)(e) / Art. 44: transfers to third countries and their safeguard.
    transfers: tuple[str, ...] = ()
    # Art. 30(1)(c): whose data: "account holders", "tenants' end users", ...
    data_subjects: tuple[str, ...] = ("account holders",)
    # Erasure runs providers by (phase, name): a store that finds the subject's records
    # through another's (keys through the account row) runs before that one is erased.
    phase: int = 50


_providers: dict[str, Provider] = {}


def register(provider: Provider) -> None:
    """Register (or replace, by name) a provider."""
    _providers[provider.name] = provider


def registered() -> list[Provider]:
    return [_providers[k] for k in sorted(_providers)]


def erase_order() -> list[Provider]:
    return sorted(_providers.values(), key=lambda p: (p.phase, p.name))


def get(name: str) -> Provider:
    return _providers[name]


# The strings that name the subject, gathered once per export or erasure before any
# provider runs: an erasure deletes the account row that says what the username was.
_identifiers: ContextVar[dict[str, frozenset[str]] | None] = ContextVar(
    "gdpr_identifiers", default=None
)

# Shorter strings are not searched for in free text (a `user` field "42" would match
# every number in every log line): gdpr.stores skips them and says so in the receipt.
MIN_IDENTIFIER = 4


def _gather(subject: Subject) -> frozenset[str]:
    found: set[str] = set()
    if subject.email:
        found.add(subject.email)
    if subject.end_user:
        found.add(subject.end_user)
    for p in registered():
        if p.aliases is not None:
            found.update(a for a in p.aliases(subject) if a)
    return frozenset(a for a in found if a)


def identifiers(subject: Subject) -> frozenset[str]:
    """The strings that name the subject (e-mail or end-user id, and every provider's
    aliases), as gathered when the current run began (or now, outside a run)."""
    held = _identifiers.get()
    if held is not None and str(subject) in held:
        return held[str(subject)]
    return _gather(subject)


@contextlib.contextmanager
def run_for(subject: Subject) -> Iterator[frozenset[str]]:
    """Gather the subject's identifiers once, for every provider of one run."""
    ids = _gather(subject)
    token = _identifiers.set({str(subject): ids})
    try:
        yield ids
    finally:
        _identifiers.reset(token)

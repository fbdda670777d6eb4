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

from collections.abc import Callable
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


_providers: dict[str, Provider] = {}


def register(provider: Provider) -> None:
    """Register (or replace, by name) a provider."""
    _providers[provider.name] = provider


def registered() -> list[Provider]:
    return [_providers[k] for k in sorted(_providers)]

"""Who did it, as the audit log names them (gdpr.audit's `actor`).

A signed-in person is their data subject (`user:<e-mail>`, sealed in the log, so erasing
them shreds it); an account without an e-mail is named by its id only ("user#12"), never
by its username (personal data, which belongs in `personal=` alone). Services take this
as their `actor` keyword; views and the CLI know who is asking and pass it."""

from __future__ import annotations

from typing import Any

from gdpr import subjects
from gdpr.subjects import Subject
from kernel.addresses import address_net

__all__ = ["STRIPE", "SYSTEM", "Actor", "address_net", "user_actor", "user_subject"]

SYSTEM = "system"
STRIPE = "stripe"

Actor = Subject | str


def user_actor(user: Any) -> Actor:
    """The audit actor of a Django user (anonymous or None: "anonymous")."""
    if user is None or not getattr(user, "is_authenticated", False):
        return "anonymous"
    try:
        return subjects.user(user.email or "")
    except subjects.SubjectError:
        return f"user#{user.pk}"


def user_subject(user: Any) -> Subject | None:
    """The data subject a record about `user` is about (None without an e-mail)."""
    try:
        return subjects.user(getattr(user, "email", "") or "")
    except subjects.SubjectError:
        return None

"""Data subjects: who a record is about.

A subject is written one way everywhere (audit events, requests, providers, the CLI):
- a person with an account (a portal user, an operator): `user:<e-mail, lower-cased>`;
- a tenant's end user, as the OpenAI `user` field named them: `enduser:<tenant>:<user id>`.

The CLI and the HTTP API also accept the DESIGN's short forms: an e-mail, or `TENANT:END_USER_ID`.
"""

from __future__ import annotations

from dataclasses import dataclass

USER = "user"
END_USER = "enduser"


class SubjectError(ValueError):
    """A subject that is neither an e-mail nor TENANT:END_USER_ID."""


@dataclass(frozen=True)
class Subject:
    kind: str  # USER or END_USER
    email: str = ""  # USER
    tenant: str = ""  # END_USER: the tenant's name
    end_user: str = ""  # END_USER: the `user` field as sent

    def __str__(self) -> str:
        if self.kind == USER:
            return f"{USER}:{self.email}"
        return f"{END_USER}:{self.tenant}:{self.end_user}"


def user(email: str) -> Subject:
    email = email.strip().lower()
    if "@" not in email or len(email) > 254:
        raise SubjectError(f"not an e-mail address: {email!r}")
    return Subject(USER, email=email)


def end_user(tenant: str, user_id: str) -> Subject:
    if not tenant or not user_id or len(user_id) > 256:
        raise SubjectError("an end user is TENANT:END_USER_ID, both non-empty")
    return Subject(END_USER, tenant=tenant, end_user=user_id)


def parse(text: str) -> Subject:
    """A subject from its canonical form or the short forms (`a@b.c`, `TENANT:USER`)."""
    text = text.strip()
    if text.startswith(f"{USER}:"):
        return user(text[len(USER) + 1 :])
    if text.startswith(f"{END_USER}:"):
        tenant, _, uid = text[len(END_USER) + 1 :].partition(":")
        return end_user(tenant, uid)
    if "@" in text and ":" not in text.split("@", 1)[0]:
        return user(text)
    tenant, sep, uid = text.partition(":")
    if sep:
        return end_user(tenant, uid)
    raise SubjectError(f"a subject is an e-mail or TENANT:END_USER_ID, not {text!r}")

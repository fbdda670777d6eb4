"""Accepting invitations with a new account at the same moment makes one account: two
acceptances of one invitation take turns on its row (the second finds it used), two of
different invitations to one e-mail take turns on the e-mail (the second finds the
account). Neither ends in a duplicate e-mail nor an IntegrityError. PostgreSQL: the
requests are held at the invitations' rows until both have started."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import close_old_connections, transaction

from tenants.errors import TenantError
from tenants.models import Invitation, Membership, Plan
from tenants.services import invitation_accept_new_account, invitation_create, tenant_create

pytestmark = pytest.mark.django_db(transaction=True)

EMAIL = "New.Person@example.com"


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBEE_HOME", str(tmp_path))


def _invite(tenant_name: str) -> tuple[Invitation, str]:
    tenant = tenant_create(name=tenant_name)
    return invitation_create(tenant=tenant, email=EMAIL, role="member", invited_by=None)


def _at_once(tokens: list[str], held: list[Invitation]) -> list[object]:
    """Accept each token on its own thread while this thread holds the invitations'
    rows; let go once every thread is under way. What each returned or raised."""
    results: list[object] = [None] * len(tokens)

    def accept(i: int, token: str) -> None:
        try:
            results[i] = invitation_accept_new_account(token=token, password="pw-123456789")
        except Exception as exc:  # what the request would have seen
            results[i] = exc
        finally:
            close_old_connections()

    threads = [threading.Thread(target=accept, args=(i, t)) for i, t in enumerate(tokens)]
    with transaction.atomic():
        list(Invitation.objects.select_for_update().filter(pk__in=[h.pk for h in held]))
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # both are past their first query and waiting
    for thread in threads:
        thread.join(30)
    return results


def test_one_invitation_accepted_twice_at_once_makes_one_account() -> None:
    Plan.objects.create(name="free", requests_per_day=100)
    invitation, token = _invite("acme")
    results = _at_once([token, token], [invitation])
    joined = [r for r in results if isinstance(r, Membership)]
    refused = [r for r in results if isinstance(r, TenantError)]
    assert (len(joined), len(refused)) == (1, 1), results
    assert refused[0].message == "this invitation was already used"
    assert User.objects.filter(email__iexact=EMAIL).count() == 1
    assert Membership.objects.filter(user__email__iexact=EMAIL).count() == 1


def test_two_invitations_to_one_email_accepted_at_once_make_one_account() -> None:
    Plan.objects.create(name="free", requests_per_day=100)
    first, first_token = _invite("acme")
    second, second_token = _invite("globex")
    results = _at_once([first_token, second_token], [first, second])
    joined = [r for r in results if isinstance(r, Membership)]
    refused = [r for r in results if isinstance(r, TenantError)]
    assert (len(joined), len(refused)) == (1, 1), results
    assert refused[0].message == (
        "an account with this e-mail exists: sign in to accept the invitation"
    )
    assert User.objects.filter(email__iexact=EMAIL).count() == 1

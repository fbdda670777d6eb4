"""A member of tenant A gets 404 on every page of tenant B, and on B's object ids through
A's own URLs; nothing of B changes."""

from __future__ import annotations

import pytest

from gdpr.models import ConsentRecord, SubjectRequest
from tenants.models import ApiKey, Invitation, Membership
from tenants.services import api_key_create, invitation_create
from tests.web.test_portal import member, signed_in, tenant

pytestmark = pytest.mark.django_db


def test_tenant_b_is_a_404_for_a_member_of_a_only() -> None:
    a, b = tenant("ta"), tenant("tb")
    alice = member(a, "alice@example.com", "owner")
    member(b, "bob@example.com", "owner")
    b_member = member(b, "carol@example.com", "member")
    b_key, _ = api_key_create(tenant=b, name="b-key")
    b_inv, _ = invitation_create(tenant=b, email="dan@example.com", role="member", invited_by=None)
    b_membership = Membership.objects.get(tenant=b, user=b_member)
    client = signed_in(alice)
    gets = ["/portal/t/tb/", "/portal/t/tb/keys", "/portal/t/tb/members", "/portal/t/tb/privacy"]
    posts = [
        ("/portal/t/tb/keys", {"name": "x"}),
        (f"/portal/t/tb/keys/{b_key.pk}/revoke", {}),
        (f"/portal/t/tb/keys/{b_key.pk}/rotate", {"grace": "0"}),
        (
            "/portal/t/tb/members/invite",
            {"email": "e@example.com", "role": "member", "ttl_days": "7"},
        ),
        (f"/portal/t/tb/members/{b_membership.pk}/role", {"role": "admin"}),
        (f"/portal/t/tb/members/{b_membership.pk}/remove", {}),
        (f"/portal/t/tb/invitations/{b_inv.pk}/withdraw", {}),
        ("/portal/t/tb/privacy/export", {}),
        ("/portal/t/tb/privacy/delete", {"email": "alice@example.com", "understood": "on"}),
        ("/portal/t/tb/privacy/consents", {"purpose": "product_email", "action": "grant"}),
        # B's ids through A's URLs.
        (f"/portal/t/ta/keys/{b_key.pk}/revoke", {}),
        (f"/portal/t/ta/keys/{b_key.pk}/rotate", {"grace": "0"}),
        (f"/portal/t/ta/members/{b_membership.pk}/role", {"role": "admin"}),
        (f"/portal/t/ta/members/{b_membership.pk}/remove", {}),
        (f"/portal/t/ta/invitations/{b_inv.pk}/withdraw", {}),
        # Ids past the largest primary key, and tenants that do not exist.
        (f"/portal/t/ta/keys/{2**64}/revoke", {}),
        (f"/portal/t/ta/members/{2**64}/remove", {}),
        ("/portal/t/nope/keys", {"name": "x"}),
    ]
    for path in gets:
        assert client.get(path).status_code == 404, path
    for path, data in posts:
        assert client.post(path, data).status_code == 404, path
    assert client.get("/portal/t/nope/").status_code == 404
    b_key.refresh_from_db()
    b_membership.refresh_from_db()
    assert b_key.revoked_at is None and b_key.replaced_by is None
    assert (
        ApiKey.objects.filter(tenant=b).count() == 1
        and not ApiKey.objects.filter(tenant=a).exists()
    )
    assert b_membership.role == "member"
    assert list(Invitation.objects.values_list("pk", flat=True)) == [b_inv.pk]
    assert not SubjectRequest.objects.exists() and not ConsentRecord.objects.exists()
    assert client.get("/portal/t/ta/keys").status_code == 200

"""/portal account pages: a tenant's overview and quick start, API keys, members and
invitations, the person's privacy rights; and, outside any tenant, the invitation link
and password reset."""

from django.urls import include, path

from web.portal import keys, members, overview, privacy
from web.portal.invitations import invitation_page

T = "t/<slug:tenant>"

urlpatterns = [
    path(f"{T}/", overview.overview, name="portal-overview"),
    path(f"{T}/keys", keys.keys_page, name="portal-keys"),
    path(f"{T}/keys/<int:key_id>/revoke", keys.key_revoke, name="portal-key-revoke"),
    path(f"{T}/keys/<int:key_id>/rotate", keys.key_rotate, name="portal-key-rotate"),
    path(f"{T}/members", members.members_page, name="portal-members"),
    path(f"{T}/members/invite", members.member_invite, name="portal-member-invite"),
    path(f"{T}/members/<int:membership_id>/role", members.member_role, name="portal-member-role"),
    path(
        f"{T}/members/<int:membership_id>/remove",
        members.member_remove,
        name="portal-member-remove",
    ),
    path(
        f"{T}/invitations/<int:invitation_id>/withdraw",
        members.invitation_withdraw,
        name="portal-invitation-withdraw",
    ),
    path(f"{T}/privacy", privacy.privacy_page, name="portal-privacy"),
    path(f"{T}/privacy/export", privacy.privacy_export, name="portal-privacy-export"),
    path(f"{T}/privacy/delete", privacy.privacy_delete, name="portal-privacy-delete"),
    path(f"{T}/privacy/consents", privacy.privacy_consent, name="portal-privacy-consent"),
    path("invitations/<str:token>", invitation_page, name="portal-invitation"),
    path("", include("web.portal.passwords")),
]

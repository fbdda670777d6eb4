"""gdpr's HTTP surface for the audit log (DRF).

    GET /gdpr/audit/<event_id>/proof   an inclusion proof of one event against the newest
                                       signed checkpoint that holds it
    GET /gdpr/audit/consistency?from=N[&to=M]
                                       a consistency proof that the log of N events is a
                                       prefix of the signed checkpoint of M (default: the
                                       newest): keep the last checkpoint you saw, and check
                                       with `tools/rbee-verify-proof --since` that the log
                                       was not forked or rewritten since

Who may ask (gdpr.access, registered by tenants): a member of the event's tenant, or an
operator with the audit permission; anyone else gets 404, as for an event that does not
exist (no way to probe other tenants' ids). A consistency proof names no event: any
tenant's member and audit operators. Both are throttled per user (RBEE_AUDIT_PROOF_RATE,
default 60/min; 429 with Retry-After): each is a few thousand rows and hashes. An event
appended but not yet in a signed checkpoint: 409 with Retry-After (checkpoints are
written at least every 60 s).

The answer is everything `tools/rbee-verify-proof` needs, with no trust in the queen:
the event's leaf data (base64 of canonical JSON; persons' fields sealed), its leaf index,
the audit path, the signed checkpoint, and the public key (compare it with the one the
operator published: `rbee audit pubkey`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import path
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from gdpr import access, ledger
from gdpr.models import AuditEvent
from gdpr.schedule import CHECKPOINT_SECONDS

MAX_ID = 2**63 - 1


class ProofThrottle(UserRateThrottle):
    """Per user (per address when anonymous), rate from settings at request time."""

    scope = "audit_proof"

    def get_rate(self) -> str:
        return str(getattr(settings, "RBEE_AUDIT_PROOF_RATE", "60/min"))


class AuditProofApi(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [ProofThrottle]

    def get_authenticators(self) -> list[Any]:
        return [cls() for cls in access.current().authentication_classes()]

    def get(self, request: Request, event_id: int) -> Response:
        principal = access.current().principal(request.user)
        tenant = (
            AuditEvent.objects.filter(pk=event_id).values_list("tenant_id", flat=True).first()
            if event_id <= MAX_ID
            else None
        )
        allowed = principal is not None and (
            principal.operator or (tenant is not None and tenant in principal.member_of)
        )
        if not allowed:
            raise NotFound(f"no audit event {event_id}")
        try:
            body = ledger.proof(event_id=event_id)
        except ledger.NotYetCheckpointed as exc:
            return Response(
                {"detail": str(exc), "code": "not_yet_checkpointed"},
                status=409,
                headers={"Retry-After": str(int(CHECKPOINT_SECONDS))},
            )
        except ledger.LogBroken as exc:
            return Response({"detail": f"the audit log does not verify: {exc}"}, status=500)
        return Response(body)


def _size(request: Request, name: str, *, required: bool) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise ValidationError({name: ["required: a tree size (a whole number of events)"]})
        return None
    if not raw.isdigit() or len(raw) > 19 or int(raw) < 1:
        raise ValidationError({name: [f"a tree size is a whole number from 1, not {raw!r}"]})
    return int(raw)


class AuditConsistencyApi(APIView):
    permission_classes = [IsAuthenticated]
    throttle_classes = [ProofThrottle]

    def get_authenticators(self) -> list[Any]:
        return [cls() for cls in access.current().authentication_classes()]

    def get(self, request: Request) -> Response:
        principal = access.current().principal(request.user)
        if principal is None or not (principal.operator or principal.member_of):
            raise NotFound("no audit log here")
        old = _size(request, "from", required=True)
        new = _size(request, "to", required=False)
        assert old is not None
        try:
            body = ledger.consistency(old=old, new=new)
        except ledger.NotYetCheckpointed as exc:
            return Response(
                {"detail": str(exc), "code": "not_yet_checkpointed"},
                status=409,
                headers={"Retry-After": str(int(CHECKPOINT_SECONDS))},
            )
        except ValueError as exc:
            raise ValidationError({"detail": [str(exc)]}) from None
        except ledger.LogBroken as exc:
            return Response({"detail": f"the audit log does not verify: {exc}"}, status=500)
        return Response(body)


urlpatterns = [
    path("gdpr/audit/consistency", AuditConsistencyApi.as_view(), name="gdpr-audit-consistency"),
    path("gdpr/audit/<int:event_id>/proof", AuditProofApi.as_view(), name="gdpr-audit-proof"),
]

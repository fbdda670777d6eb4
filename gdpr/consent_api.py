"""The consent ledger over HTTP (gdpr/consent.py).

    GET  /gdpr/consents[?subject=S][&at=ISO-8601]   the state per purpose (at a past moment)
    GET  /gdpr/consents/history[?subject=S]         every grant and withdrawal, oldest first
    POST /gdpr/consents  {"purpose", "action": "grant", "text", "subject"?}
    POST /gdpr/consents  {"purpose", "action": "withdraw", "subject"?}

Granting and withdrawing are one call each, the same call. Who may act for whom (through
gdpr.access, as the tenants app answers it): a signed-in person for themself (no
subject); a tenant's owner or admin for that tenant's end users (`TENANT:USER`), which is
how a tenant records its end users' consent; an operator with the audit permission may
read anyone's, and record no one's. Another person's consent is 403; a tenant one does
not administer is 404, as if it did not exist. Mechanism: "portal" for a browser
session, "api" otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import path
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gdpr import access, consent, subjects
from gdpr.access import Principal
from gdpr.models import ConsentRecord


class ConsentView(APIView):
    permission_classes: list[Any] = []

    def get_authenticators(self) -> list[Any]:
        return [cls() for cls in access.current().authentication_classes()]

    def principal(self, request: Request) -> Principal:
        who = access.current().principal(request.user)
        if who is None:
            raise exceptions.NotAuthenticated("sign in first")
        return who


def subject_for(
    who: Principal, raw: str | None, *, write: bool
) -> tuple[subjects.Subject, int | None]:
    """The subject `who` may read (write=False) or record for, and its tenant's id."""
    if not raw:
        return who.subject, None
    try:
        s = subjects.parse(raw)
    except subjects.SubjectError as exc:
        raise exceptions.ValidationError({"subject": [str(exc)]}) from exc
    if s.kind == subjects.USER:
        if s == who.subject:
            return s, None
        if who.operator and not write:
            return s, None
        raise exceptions.PermissionDenied(
            "a person's consent is theirs to give or withdraw"
            if write or not who.operator
            else "reading another person's consent needs the operators' audit permission"
        )
    for tenant_id, name in who.admin_of.items():
        if name == s.tenant:
            return s, tenant_id
    if who.operator and not write:
        return s, None
    raise exceptions.NotFound()


def record_data(r: ConsentRecord) -> dict[str, Any]:
    return {
        "id": r.pk,
        "subject": r.subject,
        "purpose": r.purpose,
        "action": r.action,
        "text_sha256": r.text_sha256,
        "mechanism": r.mechanism,
        "recorded_by": r.recorded_by,
        "at": r.at.isoformat(),
    }


class ConsentsApi(ConsentView):
    class QueryInput(serializers.Serializer[Any]):
        subject = serializers.CharField(required=False, max_length=300)
        at = serializers.DateTimeField(required=False)

    class InputSerializer(serializers.Serializer[Any]):
        subject = serializers.CharField(required=False, max_length=300)
        purpose = serializers.CharField(max_length=64)
        action = serializers.ChoiceField(choices=ConsentRecord.Action.values)
        text = serializers.CharField(
            required=False, allow_blank=True, max_length=20_000, trim_whitespace=False
        )

    def get(self, request: Request) -> Response:
        who = self.principal(request)
        q = self.QueryInput(data=request.query_params)
        q.is_valid(raise_exception=True)
        subject, _ = subject_for(who, q.validated_data.get("subject"), write=False)
        at: datetime | None = q.validated_data.get("at")
        state = consent.consent_state(subject=subject, at=at)
        return Response(
            {
                "subject": str(subject),
                "at": at.isoformat() if at else None,
                "purposes": {
                    p: {
                        "granted": s.granted,
                        "since": s.since.isoformat() if s.since else None,
                        "text_sha256": s.text_sha256,
                        "mechanism": s.mechanism,
                        "description": consent.PURPOSES.get(p, ""),
                    }
                    for p, s in state.items()
                },
            }
        )

    def post(self, request: Request) -> Response:
        who = self.principal(request)
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        subject, tenant_id = subject_for(who, v.get("subject"), write=True)
        mechanism = (
            ConsentRecord.Mechanism.PORTAL
            if isinstance(request.successful_authenticator, SessionAuthentication)
            else ConsentRecord.Mechanism.API
        )
        try:
            if v["action"] == ConsentRecord.Action.GRANT:
                row = consent.consent_grant(
                    subject=subject,
                    purpose=v["purpose"],
                    text=v.get("text", ""),
                    mechanism=mechanism,
                    recorded_by=who.subject,
                    tenant_id=tenant_id,
                )
            else:
                row = consent.consent_withdraw(
                    subject=subject,
                    purpose=v["purpose"],
                    mechanism=mechanism,
                    recorded_by=who.subject,
                    tenant_id=tenant_id,
                )
        except consent.ConsentError as exc:
            raise exceptions.ValidationError({"consent": [str(exc)]}) from exc
        return Response(record_data(row), status=status.HTTP_201_CREATED)


class ConsentHistoryApi(ConsentView):
    def get(self, request: Request) -> Response:
        who = self.principal(request)
        raw = request.query_params.get("subject")
        subject, _ = subject_for(who, raw, write=False)
        rows = consent.consent_history(subject=subject)
        return Response({"subject": str(subject), "data": [record_data(r) for r in rows]})


urlpatterns = [
    path("gdpr/consents", ConsentsApi.as_view()),
    path("gdpr/consents/history", ConsentHistoryApi.as_view()),
]

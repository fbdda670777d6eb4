"""gdpr's HTTP surface for data subjects' rights: requests and the record of processing.

    POST /gdpr/export   {"subject": optional}   start an export (202)
    POST /gdpr/delete   {"subject": optional}   start an erasure (202)
    GET  /gdpr/requests/{id}                    status, and the requester's download link
    GET  /gdpr/requests/{id}/download?token=... the archive (requester only, expiring)
    GET  /gdpr/requests/{id}/receipt?token=...  an erasure's signed receipt (the link
                                                POST /gdpr/delete answered)
    POST /gdpr/requests/{id}/extend             operators: extend with a notified reason
    GET  /gdpr/requests[?overdue=1]             operators: every request, overdue flagged
    GET  /gdpr/processing[?as=markdown]     operators: the record of processing (Art. 30)

Who may ask for whom: a signed-in person for themself (no subject); a tenant's owner or
admin for one of that tenant's end users (`TENANT:USER`); an operator with the audit
permission for anyone. Asking for another person is 403 whatever that person's
existence; naming a tenant one does not administer is 404, as if it did not exist.
"""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, HttpResponse
from django.urls import path
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from gdpr import access, information, selectors, services, subjects
from gdpr.access import Principal
from gdpr.errors import GdprError, GdprErrorCode
from gdpr.models import SubjectRequest
from gdpr.tasks import request_enqueue

MAX_ID = 2**63 - 1


def _not_found() -> GdprError:
    return GdprError(GdprErrorCode.NOT_FOUND, "not found")


class GdprView(APIView):
    """Authentication as the tenants app registered it (gdpr.access); every view
    resolves the principal itself."""

    permission_classes: list[Any] = []

    def get_authenticators(self) -> list[Any]:
        return [cls() for cls in access.current().authentication_classes()]

    def principal(self, request: Request) -> Principal:
        who = access.current().principal(request.user)
        if who is None:
            from rest_framework.exceptions import NotAuthenticated

            raise NotAuthenticated("sign in first")
        return who

    def operator(self, request: Request) -> Principal:
        who = self.principal(request)
        if not who.operator:
            raise GdprError(
                GdprErrorCode.FORBIDDEN,
                "this needs the operators' audit permission "
                "(rbee operator grant NAME --perm audit)",
            )
        return who


class SubjectInput(serializers.Serializer[Any]):
    subject = serializers.CharField(required=False, allow_blank=False, max_length=300)


def subject_for(who: Principal, raw: str | None) -> subjects.Subject:
    """The subject a principal may ask about (see the module's docstring)."""
    if raw is None:
        if not who.subject.email:
            raise GdprError(
                GdprErrorCode.INVALID,
                "your account has no e-mail: name the subject",
                param="subject",
            )
        return who.subject
    try:
        subject = subjects.parse(raw)
    except subjects.SubjectError as exc:
        raise GdprError(GdprErrorCode.INVALID, str(exc), param="subject") from exc
    if who.operator or subject == who.subject:
        return subject
    if subject.kind == subjects.END_USER:
        if subject.tenant in who.admin_of.values():
            return subject
        raise _not_found()
    raise GdprError(
        GdprErrorCode.FORBIDDEN, "you may ask only for your own data or your tenants' end users"
    )


def may_still_read(who: Principal, req: SubjectRequest) -> bool:
    """Whether the requester may still read the subject's data, asked again at every
    link and download (not only when the request was made): a tenant admin removed
    from the tenant, or an operator who lost the audit permission, may not."""
    if req.requested_by_user_id is None or req.requested_by_user_id != who.user_id:
        return False
    try:
        subject_for(who, req.subject_label)
    except (GdprError, subjects.SubjectError):
        return False
    return True


def _link(request: Request, req: SubjectRequest, who: Principal) -> str | None:
    if (
        req.kind != SubjectRequest.Kind.EXPORT
        or req.status != SubjectRequest.Status.DONE
        or not req.archive
        or not may_still_read(who, req)
    ):
        return None
    expires = services.export_expires_at(req)
    if expires is not None and expires <= timezone.now():
        return None
    token = services.link_token(request=req, user_id=who.user_id)
    return request.build_absolute_uri(f"/gdpr/requests/{req.pk}/download?token={token}")


def _answer(request: Request, req: SubjectRequest, who: Principal) -> dict[str, Any]:
    out = selectors.request_data(req, with_subject=who.operator)
    out["download"] = _link(request, req, who)
    if req.kind == SubjectRequest.Kind.ERASE and req.result:
        out["receipt"] = req.result
    return out


class _Start(GdprView):
    kind = ""

    def post(self, request: Request) -> Response:
        who = self.principal(request)
        given = SubjectInput(data=request.data)
        given.is_valid(raise_exception=True)
        subject = subject_for(who, given.validated_data.get("subject"))
        req = services.request_create(
            kind=self.kind,
            subject=subject,
            requested_by=f"account:{who.user_id}",
            requested_by_user_id=who.user_id,
            actor=who.subject if who.subject.email else f"account:{who.user_id}",
        )
        request_enqueue(req.pk)
        body: dict[str, Any] = {
            "id": req.pk,
            "status": req.status,
            "due_at": req.due_at.isoformat(),
        }
        if req.kind == SubjectRequest.Kind.ERASE:
            # The person may have no account left to ask with once it has run.
            token = services.receipt_token(request=req)
            body["receipt"] = request.build_absolute_uri(
                f"/gdpr/requests/{req.pk}/receipt?token={token}"
            )
        return Response(
            body,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/gdpr/requests/{req.pk}"},
        )


class ExportApi(_Start):
    kind = SubjectRequest.Kind.EXPORT


class DeleteApi(_Start):
    kind = SubjectRequest.Kind.ERASE


def _visible(who: Principal, request_id: int) -> SubjectRequest:
    req = selectors.request_get(request_id=request_id) if request_id <= MAX_ID else None
    if req is None or not (who.operator or req.requested_by_user_id == who.user_id):
        raise _not_found()
    return req


class RequestDetailApi(GdprView):
    def get(self, request: Request, request_id: int) -> Response:
        who = self.principal(request)
        req = _visible(who, request_id)
        req.refresh_from_db()
        return Response(_answer(request, req, who))


class RequestDownloadApi(GdprView):
    def get(self, request: Request, request_id: int) -> FileResponse:
        who = self.principal(request)
        token = str(request.query_params.get("token") or "")
        if services.link_check(token=token, user_id=who.user_id) != request_id:
            raise _not_found()
        req = selectors.request_get(request_id=request_id)
        if req is None or not may_still_read(who, req):
            raise _not_found()
        path = services.archive_path(req)
        return FileResponse(
            open(path, "rb"),
            as_attachment=True,
            filename=f"rbee-export-{req.pk}.zip",
            content_type="application/zip",
        )


class RequestReceiptApi(APIView):
    """An erasure's signed receipt, for the holder of the link POST /gdpr/delete gave."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []

    def get(self, request: Request, request_id: int) -> Response:
        token = str(request.query_params.get("token") or "")
        if services.receipt_check(token=token) != request_id:
            raise _not_found()
        req = selectors.request_get(request_id=request_id)
        if req is None or req.kind != SubjectRequest.Kind.ERASE:
            raise _not_found()
        if not req.result:
            return Response({"id": req.pk, "status": req.status}, status=status.HTTP_202_ACCEPTED)
        return Response(req.result)


class ExtendInput(serializers.Serializer[Any]):
    months = serializers.IntegerField(min_value=1, max_value=2)
    reason = serializers.CharField(max_length=2000)
    notified_at = serializers.DateTimeField()


class RequestExtendApi(GdprView):
    def post(self, request: Request, request_id: int) -> Response:
        who = self.operator(request)
        req = _visible(who, request_id)
        body = ExtendInput(data=request.data)
        body.is_valid(raise_exception=True)
        req = services.request_extend(
            request=req,
            actor=who.subject if who.subject.email else f"account:{who.user_id}",
            **body.validated_data,
        )
        return Response(_answer(request, req, who))


class RequestsApi(GdprView):
    def get(self, request: Request) -> Response:
        who = self.operator(request)
        overdue = str(request.query_params.get("overdue") or "") in ("1", "true", "yes")
        rows = selectors.request_list(overdue_only=overdue)[:1000]
        return Response(
            {"requests": [selectors.request_data(r, with_subject=who.operator) for r in rows]}
        )


class ProcessingApi(GdprView):
    def get(self, request: Request) -> HttpResponse:
        self.operator(request)
        if request.query_params.get("as") == "markdown":
            return HttpResponse(
                information.art30_markdown(), content_type="text/markdown; charset=utf-8"
            )
        return Response(information.art30())


urlpatterns = [
    path("gdpr/export", ExportApi.as_view()),
    path("gdpr/delete", DeleteApi.as_view()),
    path("gdpr/requests", RequestsApi.as_view()),
    path("gdpr/requests/<int:request_id>", RequestDetailApi.as_view()),
    path("gdpr/requests/<int:request_id>/download", RequestDownloadApi.as_view()),
    path("gdpr/requests/<int:request_id>/extend", RequestExtendApi.as_view()),
    path("gdpr/requests/<int:request_id>/receipt", RequestReceiptApi.as_view()),
    path("gdpr/processing", ProcessingApi.as_view()),
]

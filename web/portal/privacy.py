"""/portal/t/<tenant>/privacy: the signed-in person's own data rights, through gdpr's
services as the rights API uses them: an export (its status, and the signed archive's
download link when ready), erasure of their account (confirmed; the answer says what a
legal hold or a retention period keeps), and their consents (grant and withdraw)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from gdpr import consent, selectors, services, subjects
from gdpr.errors import GdprError, GdprErrorCode
from gdpr.models import ConsentRecord, SubjectRequest
from gdpr.tasks import request_enqueue
from web.portal.access import Member, member_page
from web.portal.common import page, sentence


class EraseForm(forms.Form):
    email = forms.CharField(label="Type your e-mail to confirm", max_length=254)
    understood = forms.BooleanField(
        label="I understand that my account and my data are erased and cannot be restored"
    )


class ConsentForm(forms.Form):
    purpose = forms.ChoiceField(choices=[])
    action = forms.ChoiceField(choices=ConsentRecord.Action.choices)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["purpose"].choices = [(p, p) for p in sorted(consent.PURPOSES)]  # type: ignore[attr-defined]


def consent_text(purpose: str) -> str:
    """The exact sentence the page shows beside a purpose (its SHA-256 is recorded)."""
    return f"I agree to {consent.PURPOSES.get(purpose, purpose)}."


def _subject(request: HttpRequest) -> subjects.Subject | None:
    try:
        return subjects.user(getattr(request.user, "email", "") or "")
    except subjects.SubjectError:
        return None


def _request_row(request: HttpRequest, req: SubjectRequest) -> dict[str, Any]:
    data = selectors.request_data(req)
    result = req.result if isinstance(req.result, dict) else {}
    row: dict[str, Any] = {"req": req, "data": data, "download": None, "expires": None}
    if req.kind == SubjectRequest.Kind.EXPORT and req.status == SubjectRequest.Status.DONE:
        expires = services.export_expires_at(req)
        row["expires"] = expires
        if req.archive and (expires is None or expires > timezone.now()):
            token = services.link_token(request=req, user_id=int(request.user.pk or 0))
            row["download"] = f"/gdpr/requests/{req.pk}/download?token={token}"
    if req.kind == SubjectRequest.Kind.ERASE:
        row["held"] = result.get("not_erased") or None
        row["kept"] = [
            {"store": s.get("title") or s.get("store"), **k}
            for s in result.get("stores") or []
            for k in s.get("kept") or []
        ]
    return row


def _privacy_page(
    request: HttpRequest,
    member: Member,
    *,
    erase_form: EraseForm | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    subject = _subject(request)
    rows: list[dict[str, Any]] = []
    purposes: list[dict[str, Any]] = []
    if subject is not None:
        mine = selectors.requests_of(subject=subject).filter(requested_by_user_id=request.user.pk)
        rows = [_request_row(request, r) for r in mine.order_by("-received_at", "-pk")]
        for name, state in consent.consent_state(subject=subject).items():
            purposes.append(
                {
                    "name": name,
                    "description": consent.PURPOSES.get(name, ""),
                    "text": consent_text(name),
                    "granted": state.granted,
                    "since": state.since,
                    "known": name in consent.PURPOSES,
                }
            )
    response = page(
        request,
        member,
        "portal/privacy.html",
        section="privacy",
        title=f"{member.tenant.name} · Privacy",
        status=status,
        subject=subject,
        rows=rows,
        purposes=purposes,
        erase_form=erase_form or EraseForm(),
        error=error,
        export_days=services.export_days(),
    )
    response["Cache-Control"] = "no-store"
    return response


@member_page()
@require_GET
def privacy_page(request: HttpRequest, member: Member) -> HttpResponse:
    return _privacy_page(request, member)


def _back(member: Member) -> HttpResponseRedirect:
    return HttpResponseRedirect(f"/portal/t/{member.tenant.name}/privacy")


def _start(request: HttpRequest, subject: subjects.Subject, kind: str) -> SubjectRequest:
    req = services.request_create(
        kind=kind,
        subject=subject,
        requested_by=f"account:{request.user.pk}",
        requested_by_user_id=request.user.pk,
        actor=subject,
    )
    request_enqueue(req.pk)
    return req


def _refused(request: HttpRequest, member: Member, exc: GdprError) -> HttpResponse:
    status = 429 if exc.code == GdprErrorCode.TOO_MANY else 400
    return _privacy_page(request, member, error=sentence(exc.message), status=status)


@member_page()
@require_POST
def privacy_export(request: HttpRequest, member: Member) -> HttpResponse:
    """POST: start an export of everything rbee holds about the signed-in person."""
    subject = _subject(request)
    if subject is None:
        return _privacy_page(
            request, member, error="Your account has no e-mail address.", status=400
        )
    try:
        req = _start(request, subject, SubjectRequest.Kind.EXPORT)
    except GdprError as exc:
        return _refused(request, member, exc)
    messages.success(
        request,
        f"Export #{req.pk} requested: its archive is listed below once ready "
        f"(at the latest by {req.due_at:%Y-%m-%d}).",
    )
    return _back(member)


@member_page()
@require_POST
def privacy_delete(request: HttpRequest, member: Member) -> HttpResponse:
    """POST: erase the signed-in person's account and data, once confirmed."""
    subject = _subject(request)
    if subject is None:
        return _privacy_page(
            request, member, error="Your account has no e-mail address.", status=400
        )
    form = EraseForm(request.POST)
    if form.is_valid() and form.cleaned_data["email"].strip().casefold() != subject.email:
        form.add_error("email", "This is not the e-mail of your account.")
    if not form.is_valid():
        return _privacy_page(request, member, erase_form=form, status=400)
    try:
        req = _start(request, subject, SubjectRequest.Kind.ERASE)
    except GdprError as exc:
        return _refused(request, member, exc)
    receipt = f"/gdpr/requests/{req.pk}/receipt?token={services.receipt_token(request=req)}"
    if not get_user_model().objects.filter(pk=int(request.user.pk or 0)).exists():
        # The erasure ran inside this request (the embedded default): no account is left.
        logout(request)
        return page(
            request,
            None,
            "portal/erased.html",
            section="",
            title="Account erased",
            receipt=request.build_absolute_uri(receipt),
        )
    req.refresh_from_db()
    result = req.result if isinstance(req.result, dict) else {}
    if result.get("outcome") == "held":
        messages.error(
            request,
            "Nothing was erased: your records are under a legal hold. See the request below.",
        )
    else:
        messages.success(
            request,
            f"Erasure #{req.pk} requested. Keep this link to its signed receipt: "
            f"{request.build_absolute_uri(receipt)}",
        )
    return _back(member)


@member_page()
@require_POST
def privacy_consent(request: HttpRequest, member: Member) -> HttpResponse:
    """POST: grant or withdraw one purpose (one click each way, Art. 7(3))."""
    subject = _subject(request)
    form = ConsentForm(request.POST)
    if subject is None or not form.is_valid():
        return _privacy_page(
            request, member, error="Choose a purpose and grant or withdraw.", status=400
        )
    purpose, action = form.cleaned_data["purpose"], form.cleaned_data["action"]
    try:
        if action == ConsentRecord.Action.GRANT:
            consent.consent_grant(
                subject=subject,
                purpose=purpose,
                text=consent_text(purpose),
                mechanism=ConsentRecord.Mechanism.PORTAL,
                recorded_by=subject,
            )
            messages.success(request, f"Consent given: {consent.PURPOSES[purpose]}.")
        else:
            consent.consent_withdraw(
                subject=subject,
                purpose=purpose,
                mechanism=ConsentRecord.Mechanism.PORTAL,
                recorded_by=subject,
            )
            messages.success(request, f"Consent withdrawn: {consent.PURPOSES[purpose]}.")
    except consent.ConsentError as exc:
        return _privacy_page(request, member, error=sentence(str(exc)), status=400)
    return _back(member)

"""Password reset for portal members, with Django's machinery and the portal's templates.
Whatever e-mail is asked for, the answer is the same page ("if an account exists, we sent
a link"): nobody learns who has an account. The link works once (setting the password
changes what its token was made from) and for PASSWORD_RESET_TIMEOUT seconds.

The link is built from RBEE_PUBLIC_URL (web/links.py), never from a Host header the
asker chose; without a trustworthy origin no e-mail is sent and the page says the
operator must set RBEE_PUBLIC_URL, whatever the e-mail (so it still tells nobody who
has an account)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordResetForm
from django.http import HttpResponse
from django.urls import path

from web.links import NO_PUBLIC_URL, public_origin, split_origin

PORTAL = {"face": "portal"}


class ResetForm(PasswordResetForm):
    email = forms.EmailField(
        label="E-mail", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )


class ResetView(auth_views.PasswordResetView):
    """Django's reset view with the link's origin from web/links.py."""

    def form_valid(self, form: Any) -> HttpResponse:
        origin = public_origin(self.request)
        if origin is None:
            return self.render_to_response(
                self.get_context_data(form=form, refused=NO_PUBLIC_URL), status=503
            )
        protocol, domain = split_origin(origin)
        form.save(
            domain_override=domain,
            use_https=protocol == "https",
            token_generator=self.token_generator,
            from_email=self.from_email,
            email_template_name=self.email_template_name,
            subject_template_name=self.subject_template_name,
            request=self.request,
            html_email_template_name=self.html_email_template_name,
            extra_email_context=self.extra_email_context,
        )
        # FormView's: the redirect to success_url (the parent's would send again).
        return super(auth_views.PasswordResetView, self).form_valid(form)


def _view(view: Any, title: str, template: str, **kwargs: Any) -> Any:
    return view.as_view(
        template_name=f"portal/{template}",
        extra_context={**PORTAL, "title": f"{title} · rbee portal"},
        **kwargs,
    )


urlpatterns = [
    path(
        "password-reset",
        _view(
            ResetView,
            "Reset your password",
            "password_reset.html",
            form_class=ResetForm,
            email_template_name="portal/email/password_reset.txt",
            subject_template_name="portal/email/password_reset_subject.txt",
            success_url="/portal/password-reset/sent",
        ),
        name="portal-password-reset",
    ),
    path(
        "password-reset/sent",
        _view(auth_views.PasswordResetDoneView, "Check your e-mail", "password_reset_sent.html"),
        name="portal-password-reset-sent",
    ),
    path(
        "reset/<uidb64>/<token>",
        _view(
            auth_views.PasswordResetConfirmView,
            "Choose a new password",
            "password_reset_confirm.html",
            success_url="/portal/reset/done",
        ),
        name="portal-password-reset-confirm",
    ),
    path(
        "reset/done",
        _view(auth_views.PasswordResetCompleteView, "Password changed", "password_reset_done.html"),
        name="portal-password-reset-done",
    ),
]

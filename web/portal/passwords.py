"""Password reset for portal members, with Django's machinery and the portal's templates.
Whatever e-mail is asked for, the answer is the same page ("if an account exists, we sent
a link"): nobody learns who has an account. The link works once (setting the password
changes what its token was made from) and for PASSWORD_RESET_TIMEOUT seconds."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordResetForm
from django.urls import path

PORTAL = {"face": "portal"}


class ResetForm(PasswordResetForm):
    email = forms.EmailField(
        label="E-mail", max_length=254, widget=forms.EmailInput(attrs={"autocomplete": "email"})
    )


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
            auth_views.PasswordResetView,
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

"""/ui/link/<token>: the one-time sign-in link `rbee up` prints. Opening it shows a
button (link previews and prefetchers must not use it up); pressing it (POST, CSRF)
signs the holder in as the machine's owner and lands on /ui."""

from __future__ import annotations

import time

from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from web import selectors, services

BACKEND = "tenants.auth.LockoutModelBackend"
# When this session was signed in by a link: the owner `rbee up` makes has a random
# password nobody knows, so /ui/settings lets such a fresh session set one without it.
LINK_SIGNIN_AT = "rbee_link_signin_at"


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def login_link(request: HttpRequest, token: str) -> HttpResponse:
    if request.method == "POST":
        user = services.login_link_redeem(token=token)
        if user is not None:
            login(request, user, backend=BACKEND)
            request.session[LINK_SIGNIN_AT] = int(time.time())
            return HttpResponseRedirect("/ui/")
        usable = False
    else:
        usable = selectors.login_link_usable(token=token)
    response = render(
        request,
        "ui/login_link.html",
        {"face": "ui", "title": "Sign-in link · rbee", "usable": usable},
        status=200 if usable else 410,
    )
    # Never to other sites (the token is in the path); "no-referrer" would make the
    # form's own POST carry "Origin: null", which the CSRF check refuses.
    response["Referrer-Policy"] = "same-origin"
    return response


urlpatterns = [path("link/<str:token>", login_link, name="ui-login-link")]

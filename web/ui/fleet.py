"""/ui: the fleet (being built: the live page replaces this)."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path

from web.auth import operator_page


@operator_page()
def fleet(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "web/error.html",
        {
            "face": "ui",
            "section": "fleet",
            "title": "Fleet · rbee",
            "heading": "Fleet",
            "message": "",
        },
    )


urlpatterns = [path("", fleet, name="ui-fleet")]

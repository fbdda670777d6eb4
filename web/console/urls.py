"""/console: the operators' console (tenants, plans, keys, invoices, hives, audit, GDPR),
each page and each action checked against the signed-in operator's areas."""

from django.urls import include, path

urlpatterns = [
    path("", include("web.console.home")),
    path("", include("web.console.tenants")),
    path("", include("web.console.plans")),
    path("", include("web.console.keys")),
    path("", include("web.console.invoices")),
    path("", include("web.console.hives")),
    path("", include("web.console.audit")),
    path("", include("web.console.gdpr")),
]

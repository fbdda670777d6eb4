"""The web faces' routes (rbee/urls.py includes this): /ui (dashboard), /console
(operators' console), /portal (tenants), and their hashed static files."""

from django.urls import include, path

from web.assets import serve_asset

urlpatterns = [
    path("static/rbee/<path:name>", serve_asset),
    path("ui/", include("web.ui.urls")),
    path("console/", include("web.console.urls")),
    path("portal/", include("web.portal.urls")),
]

from django.urls import include, path

from web.auth import sign_out
from web.portal.views import home, portal_login

urlpatterns = [
    path("login", portal_login, name="portal-login"),
    path("logout", sign_out, name="portal-logout"),
    path("", home, name="portal-home"),
    path("", include("web.portal.account")),
    path("", include("web.portal.usage")),
]

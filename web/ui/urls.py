from django.urls import include, path

from web.auth import operator_login, sign_out

urlpatterns = [
    path("login", operator_login, name="ui-login"),
    path("logout", sign_out, name="ui-logout"),
    path("", include("web.ui.fleet")),
    path("", include("web.ui.scheduler")),
    path("", include("web.ui.charts")),
    path("", include("web.ui.settings")),
]

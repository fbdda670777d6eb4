from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from billing.webhooks import stripe_webhook
from hives.management_api import (
    DownloadDetailApi,
    DownloadsApi,
    ModelDetailApi,
    ModelsApi,
    WorkerActionApi,
    WorkersApi,
)
from inference.management_api import SchedulerScriptApi
from rbee import metrics, views

urlpatterns = [
    path("v1/", include("inference.urls")),
    path("healthz", views.healthz),
    path("metrics", metrics.metrics),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/scheduler/script", SchedulerScriptApi.as_view()),
    path("api/models", ModelsApi.as_view()),
    path("api/models/<path:name>", ModelDetailApi.as_view()),
    path("api/workers", WorkersApi.as_view()),
    path("", include("hives.urls")),
    path("api/downloads", DownloadsApi.as_view()),
    path("api/downloads/<int:download_id>", DownloadDetailApi.as_view()),
    path("api/workers/<int:worker_id>/<str:action>", WorkerActionApi.as_view()),
    path("stripe/webhook", stripe_webhook),
    path("", include("tenants.api")),
    path("", include("billing.api")),
    path("", include("gdpr.api")),
    path("", include("gdpr.rights_api")),
    path("", include("gdpr.consent_api")),
    path("admin/", admin.site.urls),
    path("", include("web.urls")),
]

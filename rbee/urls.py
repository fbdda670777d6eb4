from django.contrib import admin
from django.urls import include, path

from inference.management_api import SchedulerScriptApi
from rbee import metrics, views

urlpatterns = [
    path("v1/", include("inference.urls")),
    path("healthz", views.healthz),
    path("metrics", metrics.metrics),
    path("api/scheduler/script", SchedulerScriptApi.as_view()),
    path("admin/", admin.site.urls),
]

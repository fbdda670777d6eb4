from django.contrib import admin
from django.urls import include, path

from rbee import views

urlpatterns = [
    path("v1/", include("inference.urls")),
    path("healthz", views.healthz),
    path("admin/", admin.site.urls),
]

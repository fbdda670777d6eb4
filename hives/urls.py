"""The management API's hive routes, under /api/hives (see hives/management_api.py)."""

from django.urls import path

from hives.management_api import HiveApproveApi, HiveDetailApi, HiveRevokeApi, HivesApi

urlpatterns = [
    path("api/hives", HivesApi.as_view()),
    path("api/hives/<slug:name>", HiveDetailApi.as_view()),
    path("api/hives/<slug:name>/revoke", HiveRevokeApi.as_view()),
    path("api/hives/<slug:name>/approve", HiveApproveApi.as_view()),
]

"""Management API for operators (DRF): the scheduler script, for the dashboard to use.

    GET  /api/scheduler/script   the script in force: {version, source, origin, created_at}
    POST /api/scheduler/script   {"source": "..."}: compile and store as the new version
                                 (201), or 400 with line and column; the running one stays

A broken script raises ScriptError, whose data (the Rhai error's line, column and message)
the one handler of every DRF endpoint (rbee/api_errors.py) puts into the error body:
{"error": {"message", "code": "script_invalid", "line", "column", "detail"}}.

Operators with the scheduler permission only (tenants/permissions.py; session or HTTP
Basic).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from inference.models import SchedulerScript
from inference.services import scheduler_script_store
from tenants.actors import user_actor
from tenants.auth import API_AUTHENTICATION
from tenants.permissions import SchedulerOperator


class SchedulerScriptApi(APIView):
    authentication_classes = API_AUTHENTICATION
    permission_classes = [SchedulerOperator]

    class InputSerializer(serializers.Serializer[Any]):
        source = serializers.CharField(trim_whitespace=False, max_length=200_000)
        origin = serializers.CharField(required=False, default="api", max_length=500)

    class OutputSerializer(serializers.ModelSerializer[SchedulerScript]):
        version = serializers.IntegerField(source="pk")

        class Meta:
            model = SchedulerScript
            fields = ["version", "source", "sha256", "origin", "created_at"]

    def get(self, request: Request) -> Response:
        latest = SchedulerScript.objects.first()
        if latest is None:
            return Response(
                {"version": 0, "source": "", "sha256": "", "origin": "", "created_at": None}
            )
        return Response(self.OutputSerializer(latest).data)

    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = scheduler_script_store(
            source=data.validated_data["source"],
            origin=data.validated_data["origin"],
            actor=user_actor(request.user),
        )
        return Response(self.OutputSerializer(row).data, status=status.HTTP_201_CREATED)

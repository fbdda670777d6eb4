"""Management API for operators (DRF): models on hives and their workers.

    GET    /api/models                      the catalog: capability, engine, aliases,
                                            assignments and workers of each model
    POST   /api/models                      {"spec", "hive", "device"?, "pinned"?}: run a
                                            model on a hive's device (`rbee model add`)
    DELETE /api/models/<name>?hive=H        stop running it there (`rbee model rm`)
    GET    /api/workers                     every worker: hive, device, state, memory
    POST   /api/workers/<id>/<action>       start | stop | restart one worker; its hive
                                            gets the order with its next heartbeat (202)
    POST   /api/downloads                   {"source", "hive"}: fetch a repo on a hive (202)
    GET    /api/downloads/<id>              its progress: status, done/total bytes, path
    GET    /api/hives, PATCH /api/hives/<name>, POST /api/hives/<name>/revoke|approve
                                            hives as operator data (see below)

Operators with the fleet permission only (tenants/permissions.py; session or HTTP
Basic): running a model runs its code on a hive and a local-path source reads the hive's
disk, so `is_staff` alone is not enough. Errors are raised
(hives.errors.HiveError, or DRF's) and answered by the one handler of every DRF endpoint
(rbee/api_errors.py) as {"error": {"message", "code"}}.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hives.errors import HiveError, HiveErrorCode
from hives.models import (
    Assignment,
    CatalogModel,
    Hive,
    ModelAlias,
    ModelApproval,
    ModelDownload,
    Worker,
)
from hives.selectors import hive_list, pending_models
from hives.services import (
    assignment_add,
    assignment_remove,
    hive_revoke,
    hive_update,
    model_approve,
    model_download_create,
    worker_command_create,
)
from tenants.actors import user_actor
from tenants.auth import API_AUTHENTICATION
from tenants.permissions import FleetOperator


class WorkerOutput(serializers.ModelSerializer[Worker]):
    hive = serializers.CharField(source="hive.name")
    model = serializers.CharField(source="model.name")

    class Meta:
        model = Worker
        fields = [
            "id",
            "hive",
            "model",
            "device",
            "state",
            "pinned",
            "inflight",
            "slots",
            "memory_bytes",
            "message",
            "updated_at",
        ]


class _Staff(APIView):
    """Operators holding the fleet permission."""

    authentication_classes = API_AUTHENTICATION
    permission_classes = [FleetOperator]


class ModelsApi(_Staff):
    class InputSerializer(serializers.Serializer[Any]):
        spec = serializers.CharField(max_length=1000)
        hive = serializers.CharField(max_length=64)
        device = serializers.CharField(max_length=32, default="cpu")
        pinned = serializers.BooleanField(default=False)

    def get(self, request: Request) -> Response:
        workers: dict[int, list[dict[str, Any]]] = {}
        for w in Worker.objects.select_related("hive", "model"):
            workers.setdefault(w.model_id, []).append(dict(WorkerOutput(w).data))
        aliases: dict[int, list[str]] = {}
        for alias in ModelAlias.objects.all():
            aliases.setdefault(alias.model_id, []).append(alias.name)
        assigned: dict[str, list[dict[str, Any]]] = {}
        for a in Assignment.objects.select_related("hive"):
            assigned.setdefault(a.model_name, []).append(
                {"hive": a.hive.name, "device": a.device, "pinned": a.pinned, "spec": a.spec}
            )
        data = [
            {
                "name": m.name,
                "capability": m.capability,
                "engine": m.engine,
                "source": m.source,
                "aliases": sorted(aliases.get(m.pk, [])),
                "assignments": assigned.get(m.name, []),
                "workers": workers.get(m.pk, []),
            }
            for m in CatalogModel.objects.order_by("name")
        ]
        return Response({"data": data})

    def post(self, request: Request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        a = assignment_add(
            hive_name=v["hive"],
            spec=v["spec"],
            device=v["device"],
            pinned=v["pinned"],
            actor=user_actor(request.user),
        )
        return Response(
            {"model": a.model_name, "hive": a.hive.name, "device": a.device, "pinned": a.pinned},
            status=status.HTTP_201_CREATED,
        )


class ModelDetailApi(_Staff):
    def delete(self, request: Request, name: str) -> Response:
        hive = request.query_params.get("hive", "")
        if not hive:
            raise exceptions.ValidationError("say which hive: ?hive=NAME")
        if not assignment_remove(hive_name=hive, model_name=name, actor=user_actor(request.user)):
            raise HiveError(HiveErrorCode.NOT_FOUND, f"{name} is not assigned to {hive}")
        return Response(status=status.HTTP_204_NO_CONTENT)


class WorkersApi(_Staff):
    def get(self, request: Request) -> Response:
        rows = Worker.objects.select_related("hive", "model").order_by("hive__name", "device")
        return Response({"data": WorkerOutput(rows, many=True).data})


class WorkerActionApi(_Staff):
    def post(self, request: Request, worker_id: int, action: str) -> Response:
        worker = Worker.objects.select_related("hive", "model").filter(pk=worker_id).first()
        if worker is None:
            raise HiveError(HiveErrorCode.NOT_FOUND, "no such worker")
        command = worker_command_create(
            hive_name=worker.hive.name,
            model_name=worker.model.name,
            device=worker.device,
            action=action,
            actor=user_actor(request.user),
        )
        return Response(
            {"id": command.pk, "action": command.action, "worker": worker.pk, "queued": True},
            status=status.HTTP_202_ACCEPTED,
        )


class DownloadOutput(serializers.ModelSerializer[ModelDownload]):
    hive = serializers.CharField(source="hive.name")

    class Meta:
        model = ModelDownload
        fields = [
            "id",
            "hive",
            "source",
            "status",
            "done_bytes",
            "total_bytes",
            "path",
            "revision",
            "message",
            "created_at",
            "updated_at",
        ]


class DownloadsApi(_Staff):
    class InputSerializer(serializers.Serializer[Any]):
        source = serializers.CharField(max_length=1000)
        hive = serializers.CharField(max_length=64)

    def post(self, request: Request) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row = model_download_create(
            hive_name=body.validated_data["hive"],
            source=body.validated_data["source"],
            actor=user_actor(request.user),
        )
        return Response(DownloadOutput(row).data, status=status.HTTP_202_ACCEPTED)


class DownloadDetailApi(_Staff):
    def get(self, request: Request, download_id: int) -> Response:
        row = ModelDownload.objects.select_related("hive").filter(pk=download_id).first()
        if row is None:
            raise HiveError(HiveErrorCode.NOT_FOUND, "no such download")
        return Response(DownloadOutput(row).data)


# --- hives: operator data (region, trust, disabled), revocation, model approvals ------
#
#   GET    /api/hives                        every hive: status, region (the operator's)
#                                            and the one it reported, trust_models,
#                                            disabled, revoked, and its pending models
#   PATCH  /api/hives/<name>                 {"region"?, "trust_models"?, "disabled"?}
#   POST   /api/hives/<name>/revoke          its token stops working; socket closed
#   POST   /api/hives/<name>/approve         {"model", "approved"?}: let the hive serve a
#                                            model it runs that was not assigned to it


def _hive_data(hive: Hive, pending: list[ModelApproval]) -> dict[str, Any]:
    return {
        "name": hive.name,
        "status": hive.status,
        "region": hive.region,
        "reported_region": hive.reported_region,
        "trust_models": hive.trust_models,
        "disabled": hive.disabled,
        "revoked": hive.token_revoked,
        "last_seen_at": hive.last_seen_at,
        "pending_models": [
            {
                "model": p.model_name,
                "capability": p.capability,
                "engine": p.engine,
                "source": p.source,
                "device": p.device,
                "state": p.state,
                "reason": p.reason,
            }
            for p in pending
            if p.hive_id == hive.pk
        ],
    }


class HivesApi(_Staff):
    def get(self, request: Request) -> Response:
        pending = list(pending_models())
        return Response({"data": [_hive_data(h, pending) for h in hive_list()]})


class HiveDetailApi(_Staff):
    class InputSerializer(serializers.Serializer[Any]):
        region = serializers.CharField(max_length=32, required=False, allow_blank=True)
        trust_models = serializers.BooleanField(required=False)
        disabled = serializers.BooleanField(required=False)

    def patch(self, request: Request, name: str) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        hive = hive_update(name=name, **body.validated_data, actor=user_actor(request.user))
        return Response(_hive_data(hive, list(pending_models(hive_name=hive.name))))


class HiveRevokeApi(_Staff):
    def post(self, request: Request, name: str) -> Response:
        hive = hive_revoke(name=name, actor=user_actor(request.user))
        return Response(_hive_data(hive, []))


class HiveApproveApi(_Staff):
    class InputSerializer(serializers.Serializer[Any]):
        model = serializers.CharField(max_length=200)
        approved = serializers.BooleanField(default=True)

    def post(self, request: Request, name: str) -> Response:
        body = self.InputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        row = model_approve(
            hive_name=name,
            model_name=v["model"],
            approved=v["approved"],
            actor=user_actor(request.user),
        )
        return Response({"hive": name, "model": row.model_name, "approved": row.approved})

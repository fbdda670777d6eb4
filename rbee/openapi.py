"""The OpenAPI description of the management and portal API (`GET /api/schema`).

The views are plain DRF APIViews whose request bodies are validated by an
`InputSerializer` declared on the view; drf-spectacular is taught that convention here
so the views need no per-method decorators. The /v1 API is OpenAI's and is described by
OpenAI's own specification, not by this one.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from rest_framework import serializers

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def _declared(view: Any, method: str) -> Any:
    """The serializer a view validates this method's input with, if it says so:
    `<method>_input` (e.g. `patch_input`) first, then `InputSerializer`."""
    own = getattr(view, f"{method.lower()}_input", None)
    if own is not None:
        return own
    return getattr(view, "InputSerializer", None)


class RbeeSchema(AutoSchema):
    def get_request_serializer(self) -> Any:
        if self.method not in _BODY_METHODS:
            return None
        declared = _declared(self.view, self.method)
        return declared if declared is not None else OpenApiTypes.OBJECT

    def get_operation_id(self) -> str:
        """`get_api_tenants_tenant_id_keys`: unique, and readable in client generators."""
        words = [w.strip("{}") for w in self.path.strip("/").replace(".", "_").split("/")]
        return "_".join([self.method.lower(), *words])

    def get_response_serializers(self) -> Any:
        # Bodies are built by hand ({"data": [...]}, or one object); say "an object".
        return OpenApiTypes.OBJECT

    def _get_serializer_name(
        self, serializer: Any, direction: Any, bypass_extensions: bool = False
    ) -> str:
        """`KeysApi.InputSerializer` is "KeysApiInput", not one of many "Input"s."""
        name = super()._get_serializer_name(serializer, direction, bypass_extensions)
        cls = serializer if isinstance(serializer, type) else type(serializer)
        if "." in cls.__qualname__:
            outer = cls.__qualname__.rsplit(".", 1)[0].replace(".", "")
            name = name.replace(
                name.removeprefix("Patched"), outer + name.removeprefix("Patched"), 1
            )
        return str(name)

    def get_override_parameters(self) -> list[Any]:
        """A GET validated by a serializer (`get_input`, or the InputSerializer of a view
        that only reads) has that serializer's fields as query parameters."""
        params = list(super().get_override_parameters())
        reads_only = not any(hasattr(self.view, m) for m in ("post", "put", "patch"))
        if self.method == "GET" and (reads_only or hasattr(self.view, "get_input")):
            declared = _declared(self.view, "GET")
            if isinstance(declared, type) and issubclass(declared, serializers.Serializer):
                params.append(declared)
        return params


def only_management_api(endpoints: list[Any]) -> list[Any]:
    """The schema describes /api/...: not /v1 (OpenAI's), the admin site or webhooks."""
    return [e for e in endpoints if e[0].startswith("/api/")]

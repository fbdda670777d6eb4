"""The management and portal APIs take JSON objects: a body that parses as JSON but is not
an object (`true`, `[1]`, `"x"`, `3`) is refused as a ParseError (400) here, once, so no
view ever meets `"name" in True` (a 500)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class ObjectJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if not isinstance(data, dict):
            raise ParseError("the request body must be a JSON object")
        return data

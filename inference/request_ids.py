"""The ids and timing every /v1 answer carries, as OpenAI's API sends them:

* `x-request-id`: the request's own id, given when it arrives (inference.pipeline's
  `endpoint`); a model call's job, usage row and audit event take the same id, so an
  answer (an error included) names the records it was billed and audited as.
* `openai-processing-ms`: how long the queen took to answer (for a stream: until its
  headers were sent).
* `X-Client-Request-Id`: the client's own id for the request (OpenAI's SDKs and tools
  send one), echoed back and recorded on the usage row (not in the audit log). OpenAI's
  rule: ASCII, at most 512 characters; anything else is refused with a 400.
"""

from __future__ import annotations

import re
import time

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from inference.errors import bad_request

CLIENT_HEADER = "X-Client-Request-Id"
MAX_CLIENT_ID = 512
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]+")


def client_request_id(request: HttpRequest) -> str:
    """The client's X-Client-Request-Id, "" when none was sent (unchecked: see check)."""
    return str(request.META.get("HTTP_X_CLIENT_REQUEST_ID", ""))


def check(request: HttpRequest) -> None:
    """400 for an X-Client-Request-Id that is not printable ASCII of at most 512
    characters (it is echoed in a header and stored)."""
    value = client_request_id(request)
    if value and (len(value) > MAX_CLIENT_ID or not _PRINTABLE_ASCII.fullmatch(value)):
        raise bad_request(
            f"Invalid {CLIENT_HEADER} header: it must be printable ASCII of at most "
            f"{MAX_CLIENT_ID} characters.",
            param=CLIENT_HEADER,
            code="invalid_client_request_id",
        )


def ids(request: HttpRequest) -> tuple[str, str]:
    """(the request's id, the client's id) for its job and usage row."""
    return str(getattr(request, "rbee_request_id", "")), client_request_id(request)


def stamp(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
    """The headers every /v1 answer carries (a view's own X-Request-Id is kept)."""
    request_id = str(getattr(request, "rbee_request_id", ""))
    if request_id and "X-Request-Id" not in response:
        response["X-Request-Id"] = request_id
    response["openai-processing-ms"] = str(max(0, round((time.monotonic() - started) * 1000)))
    client = client_request_id(request)
    if client and len(client) <= MAX_CLIENT_ID and _PRINTABLE_ASCII.fullmatch(client):
        response[CLIENT_HEADER] = client

"""A small Stripe of our own on loopback, for billing tests (Stripe is unreachable here).

It answers what rbee calls, form-encoded as the `stripe` library sends it, with Stripe's
response and error shapes:

* `POST /v1/customers`, `GET /v1/customers/{id}`, `POST /v1/customers/{id}` (update:
  an empty value unsets a field) (object "customer"; 404 resource_missing for an
  unknown id);
* `POST /v1/billing/meter_events` (object "billing.meter_event"). The `identifier` is
  unique: a second event with one already held is refused with HTTP 400,
  invalid_request_error, "An event already exists with identifier ...", and counts
  nothing. The timestamp must lie within the past 35 days and at most 5 minutes ahead.

Stripe's layering (docs.stripe.com/error-low-level, /api/idempotent_requests) is kept:
the API key is checked first (401), then the rate limiter (429, not saved under the
idempotency key), then the idempotency layer (a key seen before replays the first
answer, 500s included, with `Idempotent-Replayed: true`; the same key with other
parameters is a 400 idempotency_error), then the endpoint.

Every call is recorded (`calls`), failed ones included. `fail_next(n, mode)` makes the
next n calls fail: "500" (the endpoint started and failed: saved under the key),
"429" (throttled before the idempotency layer), "drop" (connection closed, nothing
done) or "drop_after" (done and saved, then the connection is closed: the answer is lost).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

API_KEY = "sk_test_rbee_fake_4242424242"
MODES = ("500", "429", "drop", "drop_after")


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    authorization: str
    status: int | None = None  # None: the connection was dropped before an answer
    replayed: bool = False


@dataclass
class _Saved:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: dict[str, Any]


@dataclass
class _Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection instead of answering


def form_decode(body: str) -> dict[str, Any]:
    """Stripe's form encoding, one level per bracket: `a=1&b[c]=2&d[0]=x` ->
    {"a": "1", "b": {"c": "2"}, "d": {"0": "x"}}."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _rand(n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _error(status: int, type_: str, message: str, **extra: Any) -> _Answer:
    err: dict[str, Any] = {"type": type_, "message": message, **extra}
    headers = {"Stripe-Should-Retry": "true" if status >= 500 or status == 429 else "false"}
    return _Answer(status, {"error": err}, headers)


class FakeStripe:
    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.calls: list[Call] = []
        self.customers: dict[str, dict[str, Any]] = {}
        self.meter_events: dict[str, dict[str, Any]] = {}  # by identifier
        self.delay = 0.0  # seconds before each answer (to overlap concurrent clients)
        self._saved: dict[str, _Saved] = {}  # idempotency key -> first answer
        self._failures: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # --- control ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeStripe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fail_next(self, n: int = 1, mode: str = "500") -> None:
        """The next n calls fail the way `mode` says (see the module's docstring)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        with self._lock:
            self._failures.extend([mode] * n)

    def forget_idempotency_keys(self) -> None:
        """What Stripe does to keys older than 24 hours."""
        with self._lock:
            self._saved.clear()

    def totals(self) -> dict[tuple[str, str], Decimal]:
        """The sum of meter event values per (customer, event name)."""
        out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        with self._lock:
            for ev in self.meter_events.values():
                key = (ev["payload"]["stripe_customer_id"], ev["event_name"])
                out[key] += Decimal(ev["payload"]["value"])
        return dict(out)

    def calls_to(self, method: str, path: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and c.path == path]

    # --- the server -------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length).decode("utf-8") if length else ""
        path = urlsplit(h.path).path
        params = form_decode(raw if method == "POST" else urlsplit(h.path).query)
        call = Call(
            method=method,
            path=path,
            params=params,
            idempotency_key=h.headers.get("Idempotency-Key"),
            authorization=h.headers.get("Authorization", ""),
        )
        with self._lock:
            self.calls.append(call)
        if self.delay:
            time.sleep(self.delay)
        answer = self._answer(call)
        call.status = None if answer.drop else answer.status
        if answer.drop:
            h.close_connection = True
            return
        body = json.dumps(answer.body).encode()
        h.send_response(answer.status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Request-Id", f"req_{_rand(14)}")
        if call.idempotency_key:
            h.send_header("Idempotency-Key", call.idempotency_key)
        for k, v in answer.headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _answer(self, call: Call) -> _Answer:
        token = call.authorization.removeprefix("Bearer ").strip()
        if not call.authorization.startswith("Bearer ") or not token:
            return _error(401, "invalid_request_error", "You did not provide an API key.")
        if not hmac.compare_digest(token, self.api_key):
            masked = token[:8] + "*" * max(0, len(token) - 12) + token[-4:]
            return _error(401, "invalid_request_error", f"Invalid API Key provided: {masked}")
        with self._lock:
            mode = self._failures.pop(0) if self._failures else None
        if mode == "429":
            return _error(
                429,
                "invalid_request_error",
                "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )
        if mode == "drop":
            return _Answer(0, {}, drop=True)
        key = call.idempotency_key if call.method == "POST" else None
        if key:
            with self._lock:
                saved = self._saved.get(key)
            if saved is not None:
                if (saved.method, saved.path, saved.params) != (
                    call.method,
                    call.path,
                    call.params,
                ):
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same "
                        f"parameters they were first used with. Try using a key other than "
                        f"'{key}' if you meant to execute a different request.",
                    )
                call.replayed = True
                answer = _Answer(saved.status, saved.body, {"Idempotent-Replayed": "true"})
                answer.drop = mode == "drop_after"
                return answer
        if mode == "500":
            answer = _error(500, "api_error", "An unknown error occurred")
        else:
            answer = self._route(call)
            if answer.status == 400 and answer.body["error"].get("param") is not None:
                key = None  # parameters failing validation: nothing is saved
        if key:
            with self._lock:
                self._saved[key] = _Saved(
                    call.method, call.path, call.params, answer.status, answer.body
                )
        answer.drop = mode == "drop_after"
        return answer

    def _route(self, call: Call) -> _Answer:
        if call.method == "POST" and call.path == "/v1/customers":
            return self._customer_create(call.params)
        m = re.fullmatch(r"/v1/customers/([^/]+)", call.path)
        if call.method == "GET" and m:
            cid = unquote(m.group(1))
            with self._lock:
                customer = self.customers.get(cid)
            if customer is None:
                return _error(
                    404,
                    "invalid_request_error",
                    f"No such customer: '{cid}'",
                    code="resource_missing",
                    param="id",
                )
            return _Answer(200, customer)
        if call.method == "POST" and m:
            return self._customer_update(unquote(m.group(1)), call.params)
        if call.method == "POST" and call.path == "/v1/billing/meter_events":
            return self._meter_event_create(call.params)
        return _error(
            404,
            "invalid_request_error",
            f"Unrecognized request URL ({call.method}: {call.path}).",
        )

    def _customer_create(self, p: dict[str, Any]) -> _Answer:
        customer = {
            "id": f"cus_{_rand(14)}",
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": int(time.time()),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": p.get("description"),
            "discount": None,
            "email": p.get("email"),
            "invoice_prefix": _rand(8).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": p.get("metadata") or {},
            "name": p.get("name"),
            "phone": p.get("phone"),
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        with self._lock:
            self.customers[customer["id"]] = customer
        return _Answer(200, customer)

    def _customer_update(self, cid: str, p: dict[str, Any]) -> _Answer:
        """Stripe's update: a field sent empty ("") is unset (null); metadata merges."""
        with self._lock:
            customer = self.customers.get(cid)
            if customer is None:
                return _error(
                    404,
                    "invalid_request_error",
                    f"No such customer: '{cid}'",
                    code="resource_missing",
                    param="id",
                )
            for key, value in p.items():
                if key == "metadata" and isinstance(value, dict):
                    customer["metadata"].update(value)
                elif key in customer and key not in ("id", "object", "created", "livemode"):
                    customer[key] = None if value == "" else value
                else:
                    return _error(
                        400,
                        "invalid_request_error",
                        f"Received unknown parameter: {key}",
                        param=key,
                    )
            return _Answer(200, dict(customer))

    def _meter_event_create(self, p: dict[str, Any]) -> _Answer:
        name = p.get("event_name")
        payload = p.get("payload")
        if not name:
            return _error(
                400,
                "invalid_request_error",
                "Missing required param: event_name.",
                code="parameter_missing",
                param="event_name",
            )
        if not isinstance(payload, dict):
            return _error(
                400,
                "invalid_request_error",
                "Missing required param: payload.",
                code="parameter_missing",
                param="payload",
            )
        for k in ("stripe_customer_id", "value"):
            if not payload.get(k):
                return _error(
                    400,
                    "invalid_request_error",
                    f"Missing required param: payload[{k}].",
                    code="parameter_missing",
                    param=f"payload[{k}]",
                )
        try:
            Decimal(payload["value"])
        except ArithmeticError:
            return _error(
                400,
                "invalid_request_error",
                "Invalid value for payload[value]: must be a number.",
                code="parameter_invalid_string",
                param="payload[value]",
            )
        now = int(time.time())
        ts = int(p.get("timestamp") or now)
        if not now - 35 * 86400 <= ts <= now + 300:
            return _error(
                400,
                "invalid_request_error",
                "Timestamp must be within the past 35 calendar days and no more than "
                "5 minutes in the future.",
                param="timestamp",
            )
        identifier = p.get("identifier") or f"id_{_rand(20)}"
        event = {
            "object": "billing.meter_event",
            "created": now,
            "event_name": name,
            "identifier": identifier,
            "livemode": False,
            "payload": payload,
            "timestamp": ts,
        }
        with self._lock:
            if identifier in self.meter_events:
                return _error(
                    400,
                    "invalid_request_error",
                    f"An event already exists with identifier {identifier}.",
                )
            self.meter_events[identifier] = event
        return _Answer(200, event)


def sign(payload: bytes, secret: str, t: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`, as Stripe signs webhooks: v1 is the
    HMAC-SHA256, keyed with the endpoint secret, of "{t}.{payload}"."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def webhook_event(
    type_: str, obj: dict[str, Any], event_id: str | None = None, created: int | None = None
) -> bytes:
    """The body of a webhook delivery: an Event object (snapshot payload)."""
    return json.dumps(
        {
            "id": event_id or f"evt_{_rand(24)}",
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": int(time.time()) if created is None else created,
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
    ).encode()

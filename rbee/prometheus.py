"""django-prometheus' after-middleware, with the request method as a bounded label.

django-prometheus (2.5) labels its requests-by-method and responses-by-status series
with the method it knows (GET, POST, ...; anything else is `<invalid method>`), but its
latency histogram and its exceptions with the raw method of the request line. Twisted
accepts any token as a method, so every made-up method (`FOO1`, `FOO2`, ...) sent by
anyone, without a key, would add a histogram of ~20 series that lives as long as the
process. Here every `method` label is the bounded one.

Used by the site's MIDDLEWARE (rbee/settings.py) and called by method by the lean API
application (rbee/api_asgi.py), each beside django-prometheus' own before-middleware
(which labels nothing).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django_prometheus import middleware


class _BoundedMethod:
    """`label_metric` is the one place django-prometheus labels a series: a `method`
    label passed to it is replaced by the method as `_method` bounds it."""

    def label_metric(
        self, metric: Any, request: HttpRequest, response: Any = None, **labels: str
    ) -> Any:
        if "method" in labels:
            labels["method"] = self._method(request)  # type: ignore[attr-defined]
        return super().label_metric(metric, request, response, **labels)  # type: ignore[misc]


class PrometheusAfterMiddleware(_BoundedMethod, middleware.PrometheusAfterMiddleware):
    """django-prometheus' counters by view, method and status, every method label bounded."""

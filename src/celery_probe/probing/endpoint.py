"""HTTP health endpoints: GET, read at most a bounded body, judge the JSON ``status``.

The request goes through :func:`celery_probe.net.http.request`: one wall-clock bound for the
whole exchange, no redirect followed, and the operator's proxy, CA, client-certificate and
auth-header settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from celery_probe.net.http import DIRECT, AnswerTooLarge, BoundedCallError, HttpOptions, request

MAX_BODY = 1_000_000  # a health document is small; a 50 MB answer is a fault, not a read


@dataclass
class EndpointResult:
    """What one endpoint answered."""

    url: str
    ok: bool
    http_status: int | None = None
    status: str | None = None
    latency_ms: float | None = None
    error: str | None = None


def check_endpoint(url: str, *, timeout: float, http: HttpOptions = DIRECT) -> EndpointResult:
    """GET ``url``; fail on a connection error, non-2xx, non-JSON, or ``status: down``."""
    started = time.perf_counter()
    try:
        answer = request("GET", url, timeout=timeout, max_body=MAX_BODY, options=http, send_auth=True,
                         headers={"Accept": "application/json"})
    except AnswerTooLarge:
        latency = round((time.perf_counter() - started) * 1000, 3)
        return EndpointResult(url, False, latency_ms=latency, error=f"body larger than {MAX_BODY} bytes")
    except BoundedCallError as exc:
        return EndpointResult(url, False, error=f"connection failed: {exc}")
    latency = round((time.perf_counter() - started) * 1000, 3)
    code = answer.status
    if not 200 <= code < 300:
        return EndpointResult(url, False, http_status=code, error=f"HTTP {code} {answer.reason}".strip())
    try:
        document = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting too deep counts as not JSON
        return EndpointResult(url, False, code, latency_ms=latency, error="answer is not JSON")
    status = document.get("status") if isinstance(document, dict) else None
    status_text = str(status) if status is not None else None
    if status_text == "down":
        return EndpointResult(url, False, code, status_text, latency, "endpoint reports status down")
    return EndpointResult(url, True, code, status_text, latency)

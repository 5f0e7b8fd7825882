"""HTTP health endpoints: GET, read at most a bounded body, judge the JSON ``status``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from celery_probe.errors import describe_error

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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follow no redirect: a health URL that moves is a misconfiguration worth seeing."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def check_endpoint(url: str, *, timeout: float) -> EndpointResult:
    """GET ``url``; fail on a connection error, non-2xx, non-JSON, or ``status: down``."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "celery-probe"})
    started = time.perf_counter()
    try:
        with opener.open(request, timeout=timeout) as answer:
            code = answer.status
            body = answer.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        return EndpointResult(url, False, http_status=exc.code, error=f"HTTP {exc.code} {exc.reason}")
    except Exception as exc:
        return EndpointResult(url, False, error=f"connection failed: {describe_error(exc)}")
    latency = round((time.perf_counter() - started) * 1000, 3)
    if not 200 <= code < 300:
        return EndpointResult(url, False, http_status=code, latency_ms=latency, error=f"HTTP {code}")
    if len(body) > MAX_BODY:
        return EndpointResult(url, False, code, latency_ms=latency, error=f"body larger than {MAX_BODY} bytes")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return EndpointResult(url, False, code, latency_ms=latency, error="answer is not JSON")
    status = document.get("status") if isinstance(document, dict) else None
    status_text = str(status) if status is not None else None
    if status_text == "down":
        return EndpointResult(url, False, code, status_text, latency, "endpoint reports status down")
    return EndpointResult(url, True, code, status_text, latency)

"""HTTP requests and other blocking calls with a bound on their *total* duration.

A socket timeout bounds each read or connect, not the request: a server that sends one
byte every nine seconds keeps a ``timeout=10`` request alive forever, and name resolution
(``getaddrinfo``) ignores socket timeouts altogether. A health check that cron starts every
five minutes must never pile up, so every network call here runs under one deadline:

* :func:`call_within` runs a blocking call in a daemon thread and stops waiting for it when
  the deadline passes (the thread cannot be killed, but it holds nothing we need, and its
  own socket timeouts, set from the same deadline, end it shortly after);
* :func:`http_request` re-arms the socket timeout with what is left of the deadline before
  every read, caps the body size, follows no redirect and never consults proxy variables.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from celery_probe.errors import describe_error

T = TypeVar("T")

USER_AGENT = "celery-probe"


class BoundedCallError(Exception):
    """A bounded call failed or ran out of time; ``str()`` is one line, safe to print."""


@dataclass
class HttpAnswer:
    """What a server answered (the body is at most ``max_body`` bytes)."""

    status: int
    reason: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def describe(exc: BaseException) -> str:
    """One short line for a network error, without a traceback and without the URL.

    The network's own failures in plain words; any other exception as
    :func:`~celery_probe.errors.describe_error` words it.
    """
    if isinstance(exc, BoundedCallError):
        return str(exc)
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror or exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message or exc.reason})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return describe_error(exc)


def call_within(func: Callable[[], T], timeout: float, what: str) -> T:
    """Return ``func()``, or raise :class:`BoundedCallError` once ``timeout`` seconds passed.

    Exceptions raised by ``func`` are re-raised as they are.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = func()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"celery-probe {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise BoundedCallError(f"{what} did not finish within {timeout:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def http_request(
    method: str,
    url: str,
    *,
    timeout: float,
    max_body: int,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpAnswer:
    """Send one request and read at most ``max_body`` bytes of the answer, all within ``timeout``.

    Raises :class:`BoundedCallError` with a one-line reason (never the URL, which may carry
    credentials) on a connection error, a timeout or a body over ``max_body`` bytes.
    Non-2xx answers are returned, not raised: the caller decides what they mean.
    """
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def exchange() -> HttpAnswer:
        parts = urlsplit(url)
        host = parts.hostname or ""
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, parts.port, timeout=remaining(),
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=remaining())
        send_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            send_headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, target, body=body, headers=send_headers)
            if conn.sock is not None:
                conn.sock.settimeout(remaining())
            answer = conn.getresponse()
            chunks: list[bytes] = []
            size = 0
            while size <= max_body:
                if conn.sock is not None:
                    conn.sock.settimeout(remaining())
                chunk = answer.read(min(65536, max_body + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            if size > max_body:
                raise BoundedCallError(f"answer larger than {max_body} bytes")
            return HttpAnswer(answer.status, answer.reason or "", b"".join(chunks),
                              {k.lower(): v for k, v in answer.getheaders()})
        finally:
            conn.close()

    try:
        return call_within(exchange, timeout, "the request")
    except BoundedCallError as exc:
        if "did not finish" in str(exc):
            raise BoundedCallError(f"timed out after {timeout:g}s") from None
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise BoundedCallError(describe(exc)) from None

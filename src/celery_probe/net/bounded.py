"""Blocking calls with a bound on their *total* duration, and network errors in one line.

A socket timeout bounds each read or connect, not the call: a server that sends one byte
every nine seconds keeps a ``timeout=10`` exchange alive forever, and name resolution
(``getaddrinfo``) ignores socket timeouts altogether. A health check that cron starts every
five minutes must never pile up, so :func:`call_within` runs a blocking call in a daemon
thread and stops waiting for it when the deadline passes (the thread cannot be killed, but
it holds nothing we need, and its own socket timeouts, set from the same deadline, end it
shortly after). Mail delivery (``smtplib``) and every HTTP request
(:mod:`celery_probe.net.http`) run through it.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from celery_probe.errors import describe_error

T = TypeVar("T")


class BoundedCallError(Exception):
    """A bounded call failed or ran out of time; ``str()`` is one line, safe to print."""


class CallTimedOut(BoundedCallError):
    """The call was still running when its time was up."""


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
    """Return ``func()``, or raise :class:`CallTimedOut` once ``timeout`` seconds passed.

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
        raise CallTimedOut(f"{what} did not finish within {timeout:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]

"""Every outgoing HTTP request, on requests, bounded as a whole and configured by the operator.

requests' ``timeout`` bounds each connect and each socket read, not the request: a server
that drips one byte every half second never trips it, and name resolution ignores it. So
:func:`request` keeps one wall-clock bound around everything (DNS, connect, TLS, headers,
body): the exchange runs under :func:`~celery_probe.net.bounded.call_within`, its connect and
read timeouts are what is left of the bound, the body is streamed and the bound checked after
every chunk, and a body over ``max_body`` bytes (declared or read) is refused. No redirect is
followed: a health URL that moves is a misconfiguration worth seeing, and a redirect must not
carry credentials elsewhere. (A status line or headers dripped byte by byte are read inside
requests, where no check can run: the caller still has its answer at the bound, and the
abandoned daemon thread reads on until that server stops.)

What operators of requests expect, each said explicitly in :class:`HttpOptions`:

* **proxies** are ``off`` by default, as they always were for ``check``, webhooks and
  ``ingest --post``: health checks of ``127.0.0.1`` must not go through the proxy a shell
  exports for downloads. ``env`` uses ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` and
  ``NO_PROXY``; loopback addresses are always reached directly (a proxy's loopback is not ours);
* **trust**: the CA file setting, else ``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``, else the
  system's store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` or OpenSSL's default), as before;
* **client certificates**: a certificate file, with the key inside it or in a key file;
* **an auth header** whose value is read from the environment variable the settings name, sent
  as ``Authorization`` only by callers that ask for it (the endpoint probe, ``check``,
  ``ingest --post``: your own services), never to alert webhooks, whose receivers are third
  parties. Credentials in the URL (``user:password@``) are sent as Basic auth and win.

Nothing else of the environment is read (``.netrc`` neither). No error text carries the URL,
the auth header's value or a proxy's credentials: :class:`BoundedCallError` says what failed
in one line.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from celery_probe.net.bounded import BoundedCallError, CallTimedOut, call_within, describe

if TYPE_CHECKING:
    from celery_probe.config.settings import Settings

USER_AGENT = "celery-probe"
CHUNK = 16 * 1024
CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # requests' own, then curl's


class AnswerTooLarge(BoundedCallError):
    """The answer's body is over the caller's size cap."""


@dataclass(frozen=True)
class HttpOptions:
    """How requests leave this host: proxies, trust, client certificate, auth header."""

    proxies: str = "off"  # "off": always direct; "env": the *_PROXY / NO_PROXY variables
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    auth_env: str | None = None  # the variable holding the Authorization header's value

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpOptions:
        return cls(proxies=settings.http_proxies, ca_file=settings.http_ca_file,
                   client_cert=settings.http_client_cert, client_key=settings.http_client_key,
                   auth_env=settings.http_auth_env)

    def authorization(self) -> str | None:
        """The auth header's value, read now; BoundedCallError when its variable is gone."""
        if self.auth_env is None:
            return None
        value = os.environ.get(self.auth_env, "").strip()
        if not value:
            raise BoundedCallError(f"environment variable {self.auth_env} (http-auth-env) is not set")
        if any(ch in value for ch in "\r\n\x00"):
            raise BoundedCallError(f"environment variable {self.auth_env} (http-auth-env) holds a line break or NUL")
        return value

    def secrets(self) -> frozenset[str]:
        """What must never be shown: the auth header's value, for callers that print answers."""
        value = os.environ.get(self.auth_env, "").strip() if self.auth_env else ""
        return frozenset({value}) if value else frozenset()

    def trust(self) -> str | bool:
        """requests' ``verify``: a CA file or folder, or True for certifi when nothing else exists."""
        if self.ca_file is not None:
            return str(self.ca_file)
        for name in CA_BUNDLE_VARIABLES:
            if os.environ.get(name):
                return os.environ[name]
        paths = ssl.get_default_verify_paths()
        return paths.cafile or paths.capath or True

    def cert(self) -> tuple[str, str] | str | None:
        """requests' ``cert``: the client certificate, with its key file if separate."""
        if self.client_cert is None:
            return None
        return (str(self.client_cert), str(self.client_key)) if self.client_key else str(self.client_cert)

    def proxies_for(self, url: str) -> dict[str, str]:
        """The proxies for ``url``: none when off or for a loopback host, else the environment's."""
        if self.proxies != "env" or _loopback(urlsplit(url).hostname or ""):
            return {}
        from requests.utils import get_environ_proxies

        return dict(get_environ_proxies(url))


DIRECT = HttpOptions()


@dataclass
class HttpAnswer:
    """What a server answered (the body is at most ``max_body`` bytes)."""

    status: int
    reason: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load() -> None:
    """Import requests now, so that no request's bound is spent importing it (0.1 s and more)."""
    import requests  # noqa: F401


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    max_body: int,
    options: HttpOptions = DIRECT,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    send_auth: bool = False,
) -> HttpAnswer:
    """Send one request and read at most ``max_body`` bytes of the answer, all within ``timeout``.

    Raises :class:`BoundedCallError` with a one-line reason (never the URL, which may carry
    credentials, nor the auth header) on a connection or TLS error, a timeout, or a body over
    ``max_body`` bytes (:class:`AnswerTooLarge`). Non-2xx answers, redirects included, are
    returned, not raised: the caller decides what they mean. ``send_auth`` adds the auth header
    of ``options``. The bound starts once requests is imported (:func:`load`).
    """
    load()
    deadline = time.monotonic() + timeout
    secrets = options.secrets()
    send_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    if send_auth:
        authorization = options.authorization()
        if authorization:
            send_headers["Authorization"] = authorization

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def exchange() -> HttpAnswer:
        import requests

        with requests.Session() as session:
            session.trust_env = False  # proxies, CA bundle and .netrc only as HttpOptions says
            left = remaining()
            answer = session.request(method, url, data=body, headers=send_headers, timeout=(left, left),
                                     allow_redirects=False, stream=True, verify=options.trust(),
                                     cert=options.cert(), proxies=options.proxies_for(url))
            with answer:
                declared = answer.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_body:
                    raise AnswerTooLarge(f"answer larger than {max_body} bytes")
                chunks: list[bytes] = []
                size = 0
                while True:
                    _rearm(answer, remaining())
                    # read1: what one socket read brings, so a dripping body meets the check above
                    chunk = answer.raw.read1(CHUNK, decode_content=True)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_body:
                        raise AnswerTooLarge(f"answer larger than {max_body} bytes")
                    chunks.append(chunk)
                return HttpAnswer(answer.status_code, _hide(answer.reason or "", secrets), b"".join(chunks),
                                  {k.lower(): v for k, v in answer.headers.items()})

    try:
        return call_within(exchange, timeout, "the request")
    except (CallTimedOut, TimeoutError):
        raise BoundedCallError(f"timed out after {timeout:g}s") from None
    except BoundedCallError:
        raise
    except Exception as exc:  # requests, urllib3 and the socket underneath: one line, no URL
        raise BoundedCallError(_hide(_reason(exc, timeout), secrets)) from None


def _rearm(answer: Any, left: float) -> None:
    """Bound the next socket read of the body by what is left (``raw`` is urllib3's response)."""
    sock = getattr(getattr(answer.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(left)


def _hide(text: str, secrets: frozenset[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _reason(exc: BaseException, timeout: float) -> str:
    """One line for what requests raised, from the error underneath it (which names no URL)."""
    import requests
    import urllib3

    if isinstance(exc, requests.Timeout):
        return f"timed out after {timeout:g}s"
    root = _root_cause(exc)
    said = describe(root) if root is not None else None
    if isinstance(root, TimeoutError):
        said = f"timed out after {timeout:g}s"
    if isinstance(exc, requests.exceptions.ProxyError):
        return f"proxy failed ({said or 'unreachable'})"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
                        urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError)) and not isinstance(root, TimeoutError):
        return f"the answer broke off ({said or 'incomplete body'})"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema)):
        return "invalid URL"
    if said is None:
        return "connection failed" if isinstance(exc, requests.ConnectionError) else describe(exc)
    return said


def _root_cause(exc: BaseException) -> BaseException | None:
    """The first error in ``exc``'s chain raised by neither requests nor urllib3."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if type(current).__module__.split(".")[0] not in ("requests", "urllib3"):
            return current
        todo.extend(e for e in (getattr(current, "reason", None), current.__cause__, current.__context__,
                                *current.args) if isinstance(e, BaseException))
    return None


__all__ = ["DIRECT", "AnswerTooLarge", "BoundedCallError", "HttpAnswer", "HttpOptions", "load", "request"]

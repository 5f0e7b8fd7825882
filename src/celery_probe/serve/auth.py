"""Optional HTTP authentication of ``serve``: a bearer token, basic credentials, or both.

Flower's password protects its UI but leaves ``/metrics`` open, and celery-exporter has no
authentication at all; a verdict names brokers, queues and workers, so an operator who
exposes ``serve`` beyond loopback may want it closed. :class:`Credentials` holds what the
operator configured (read once at start-up by :mod:`celery_probe.serve.credentials`) and
decides, without I/O, whether an ``Authorization`` header carries it; :class:`AuthGate` is
the ASGI middleware that answers 401 otherwise.

Comparisons are constant-time and learn nothing from lengths: both sides are hashed to
SHA-256 first, then compared with :func:`hmac.compare_digest`; for basic credentials the
user and the password are both compared, always, and the two results combined without a
short cut, so the time does not say which part was wrong. The 401 answer is the same
whatever was sent, and nothing of the attempted or the real credential is ever written
to an answer or a log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

REALM = "celery-probe"
UNAUTHORIZED_BODY = b"401 Unauthorized: this route needs the credential serve was started with\n"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _same(given: bytes, expected_digest: bytes) -> bool:
    """Constant-time equality of ``given`` and the value whose digest is ``expected_digest``."""
    return hmac.compare_digest(_digest(given), expected_digest)


@dataclass(frozen=True)
class Credentials:
    """The bearer token and/or the basic user and password a request may present.

    Only their SHA-256 digests are kept, so the secrets themselves do not stay in memory
    longer than start-up (and a ``repr`` shows nothing usable).
    """

    token_digest: bytes | None = field(default=None, repr=False)
    user_digest: bytes | None = field(default=None, repr=False)
    password_digest: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, token: bytes | None = None, basic: tuple[bytes, bytes] | None = None) -> Credentials:
        if token is None and basic is None:
            raise ValueError("no credential")
        return cls(
            token_digest=None if token is None else _digest(token),
            user_digest=None if basic is None else _digest(basic[0]),
            password_digest=None if basic is None else _digest(basic[1]),
        )

    @property
    def schemes(self) -> tuple[str, ...]:
        return (("Bearer",) if self.token_digest is not None else ()) + (
            ("Basic",) if self.user_digest is not None else ())

    def challenges(self) -> list[bytes]:
        """The ``WWW-Authenticate`` values of a 401, one per accepted scheme (RFC 9110 §11.6.1)."""
        found = []
        if self.token_digest is not None:
            found.append(f'Bearer realm="{REALM}"'.encode())
        if self.user_digest is not None:
            found.append(f'Basic realm="{REALM}", charset="UTF-8"'.encode())
        return found

    def accepts(self, authorization: bytes | None) -> bool:
        """Whether the raw ``Authorization`` header value carries a configured credential."""
        if not authorization:
            return False
        scheme, _, rest = authorization.strip().partition(b" ")
        scheme, rest = scheme.lower(), rest.strip()
        if scheme == b"bearer" and self.token_digest is not None:
            return _same(rest, self.token_digest)
        if scheme == b"basic" and self.user_digest is not None and self.password_digest is not None:
            try:
                decoded = base64.b64decode(rest, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            user, colon, password = decoded.partition(b":")
            # Both comparisons always run; `&` on bools does not short-cut.
            user_ok = _same(user, self.user_digest)
            password_ok = _same(password, self.password_digest)
            return bool(colon) & user_ok & password_ok
        return False


class AuthGate:
    """ASGI middleware: HTTP requests outside ``public`` need a configured credential.

    ``public`` holds exact paths below the app's ``root_path``, or tells whether one is (the
    health routes, unless ``serve --protect-health``); every other path, an unknown one included, answers 401
    without a credential, so the answer does not tell which routes exist. Lifespan and other
    scope types pass through.
    """

    def __init__(self, app: ASGIApp, credentials: Credentials,
                 public: Collection[str] | Callable[[str], bool] = ()) -> None:
        self.app = app
        self.credentials = credentials
        self.is_public: Callable[[str], bool] = public if callable(public) else frozenset(public).__contains__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_public(route_path(scope)) or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        await refuse(self.credentials, send)

    def allowed(self, scope: Scope) -> bool:
        return self.credentials.accepts(authorization_of(scope))


def authorization_of(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            return bytes(value)
    return None


async def refuse(credentials: Credentials, send: Send) -> None:
    """The 401 answer: one fixed body, a challenge per scheme, never cached."""
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
               (b"cache-control", b"no-store")]
    headers += [(b"www-authenticate", challenge) for challenge in credentials.challenges()]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})


def route_path(scope: Scope) -> str:
    """The request path below the app's ``root_path`` (set when served under a proxy prefix)."""
    path: str = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):] or "/"
    return path

"""Real servers for the alerting tests: an SMTP server, a webhook receiver, a health endpoint.

Nothing here is a mock: aiosmtpd speaks SMTP on a loopback port and the HTTP servers are
``http.server`` instances on loopback ports; celery-probe reaches them over TCP like it
would reach production ones. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from celery_probe.testing import free_port, wait_until
from tests.support.environment import APPS

HOLD_LIMIT = 20.0  # a held SMTP session or webhook still ends after this, so no thread lingers


# ------------------------------------------------------------------------------------ SMTP


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    helo: str = ""  # the name the client gave in HELO/EHLO

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        """The decoded text, with the wire's CRLF line ends turned back into newlines."""
        return self.message.get_content().replace("\r\n", "\n")


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sink.data_started.set()
        if self.sink.hold.is_set():
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.sink.release.wait, HOLD_LIMIT)
        self.sink.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                            str(session.host_name or '')))
        return "250 Message accepted for delivery"


class _Authenticator:
    def __init__(self, user: str, password: str, seen: list[str]) -> None:
        self.user, self.password, self.seen = user, password, seen

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.user
              and auth_data.password.decode() == self.password)
        if ok:
            self.seen.append(self.user)
        return AuthResult(success=ok, handled=False)


class SmtpSink:
    """aiosmtpd on a loopback port; ``received`` holds every accepted message.

    ``hold()`` makes the next DATA wait until ``release`` is set: a slow server, for the
    overlapping-runs test. ``login=(user, password)`` requires AUTH (over plain text, which
    celery-probe allows on loopback only); ``tls=(cert, key)`` offers STARTTLS.
    """

    def __init__(self, port: int | None = None, *, login: tuple[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        self.port = port or free_port()
        self.received: list[Received] = []
        self.logins: list[str] = []
        self.data_started = threading.Event()
        self.hold_flag = threading.Event()
        self.release = threading.Event()
        self.login = login
        self.tls = tls
        self.controller: Any = None

    @property
    def hold(self) -> threading.Event:
        return self.hold_flag

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller

        kwargs: dict[str, Any] = {}
        if self.login:
            kwargs.update(authenticator=_Authenticator(*self.login, self.logins), auth_require_tls=False)
        if self.tls:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            kwargs.update(tls_context=context, require_starttls=True)
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        wait_until(lambda: len(self.received) >= count, timeout=timeout, what=f"{count} message(s)")
        return self.received

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


# ------------------------------------------------------------------------------ webhooks


class _HookHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        server: Any = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        code = server.answer
        if code == "hang":
            server.release.wait(HOLD_LIMIT)
            return
        server.posts.append(Post(self.path, dict(self.headers.items()), body, accepted=200 <= code < 300))
        reply = json.dumps({"ok": 200 <= code < 300, "description": "as told"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    accepted: bool = True

    def json(self) -> Any:
        return json.loads(self.body)


class _LoopbackHTTP:
    """A threaded HTTP server on a free loopback port, its state on ``server`` for the handler.

    ``stop`` sets ``server.release`` first, so a handler told to hang lets go before shutdown.
    """

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server: Any = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.release = threading.Event()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Any:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


class HookSink(_LoopbackHTTP):
    """A webhook receiver: records every POST; ``answer`` is the status code (or "hang")."""

    def __init__(self) -> None:
        super().__init__(_HookHandler)
        self.server.posts = []
        self.server.answer = 200

    def start(self) -> HookSink:
        return super().start()

    @property
    def posts(self) -> list[Post]:
        return self.server.posts

    def answer(self, code: int | str) -> None:
        self.server.answer = code

    def url(self, path: str = "/hook") -> str:
        return self._url(path)

    def wait_for(self, count: int, timeout: float = 15) -> list[Post]:
        wait_until(lambda: len(self.posts) >= count, timeout=timeout, what=f"{count} webhook post(s)")
        return self.posts


# ------------------------------------------------------------------------ health endpoint


class _HealthHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server: Any = self.server
        server.requests.append((self.path, dict(self.headers.items())))
        if server.mode == "drip":  # headers, then one byte at a time, for ever
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(200):
                if server.release.wait(0.2):
                    return
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
            return
        if server.mode == "hang":
            server.release.wait(HOLD_LIMIT)
            return
        if server.mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = server.body if isinstance(server.body, bytes) else json.dumps(server.body).encode()
        self.send_response(server.code)
        self.send_header("Content-Type", server.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HealthServer(_LoopbackHTTP):
    """A health endpoint whose answer the test switches: ``serve(status)`` or ``serve_raw``."""

    def __init__(self) -> None:
        super().__init__(_HealthHandler)
        self.server.requests = []
        self.server.mode = "normal"
        self.serve("healthy")

    def start(self) -> HealthServer:
        return super().start()

    def serve(self, status: str, *, code: int = 200, **extra: Any) -> None:
        self.serve_raw(verdict_document(status, **extra), code=code)

    def serve_raw(self, body: Any, *, code: int = 200, content_type: str = "application/json",
                  mode: str = "normal") -> None:
        self.server.body, self.server.code = body, code
        self.server.content_type, self.server.mode = content_type, mode

    def url(self, path: str = "/health/celery") -> str:
        return self._url(path)


def verdict_document(status: str, **extra: Any) -> dict[str, Any]:
    """A verdict as ``celery-probe run --format json`` would serve it."""
    down = status == "down"
    reasons = {
        "healthy": [],
        "degraded": [{"code": "celery_queue_high", "severity": "degraded", "probe": "test_queues_below_threshold",
                      "message": "queue celery holds 250 messages (threshold 100)"}],
        "down": [{"code": "celery_worker_down", "severity": "critical", "probe": "test_workers_answer_ping",
                  "message": "no worker answered ping (listened 347 ms)"}],
        "unknown": [{"code": "celery_probe_no_evidence", "severity": "error", "probe": None,
                     "message": "no probe ran"}],
    }[status]
    document = {
        "status": status, "worker_alive": not down and status != "unknown", "active_tasks": None if down else 1,
        "scheduled_tasks": None if down else 0, "reserved_tasks": None if down else 0,
        "queue_length": 250 if status == "degraded" else 3, "last_heartbeat": None if down else "2026-11-24T08:51:05+00:00",
        "queues": {"celery": {"length": 3, "consumers": 0 if down else 1}}, "workers": {} if down else {
            "worker1@vm": {"latency_ms": 12.5, "last_heartbeat": "2026-11-24T08:51:05+00:00"}},
        "roundtrip_ms": None if down else 8.1, "reasons": reasons, "checked_at": "2026-11-24T08:51:05+00:00",
        "duration_s": 0.4, "target": "app proj on redis://:***@redis:6379/0",
    }
    document.update(extra)
    return document


# ------------------------------------------------------------------------------- processes


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(APPS)}
    for key in ("NO_COLOR", "FORCE_COLOR", "CELERY_PROBE_SMTP_PASSWORD", "CELERY_PROBE_WEBHOOKS"):
        env.pop(key, None)
    env.update(extra)
    return env


def start_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`celery-probe` as a background process, for overlapping runs."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery_probe", *args], cwd=cwd, env=env or cli_env(), text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def read_state(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())

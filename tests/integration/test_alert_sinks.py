"""Alert sinks that cannot be turned against their owner: no local files, no echoed credentials.

Covered elsewhere, and not repeated: CR/LF in worker, queue, target and reason texts never
become mail headers (tests/integration/test_alerting_mail.py::TestHeaderInjection), a --label with
CR/LF and odd addresses are refused (same class), Slack markup is escaped
(tests/integration/test_alerting_webhook.py::TestForms), ftp:// and javascript: webhooks and a webhook
whose token or password sits in a URL that does not parse are refused without echoing it
(tests/integration/test_alerting_webhook.py::TestValidation), a refused webhook's path token never
reaches stderr or the state file (tests/integration/test_alerting_webhook.py::TestFailures).
"""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.environment import run_cli

PASSWORD = "pw-7x"  # short on purpose: shorter than any path token that is scrubbed by length
TOKEN = "T0001/B0002/Zx9SecretToken42"


class TestWebhookUrls:
    @pytest.mark.parametrize("url", [
        "file:///etc/passwd",
        "FILE:///etc/passwd",
        "file://alerts:hunter2@localhost/etc/passwd",
        "gopher://127.0.0.1:70/_hunter2",
        "data:application/json,{\"hunter2\":1}",
        "http:/127.0.0.1/hook",
        "//127.0.0.1/hook",
    ])
    def test_only_http_and_https(self, health, tmp_path, url):
        result = run_cli("check", health.url(), "--webhook", url, cwd=tmp_path)
        assert result.code == 64, (result.stdout, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("celery-probe: error: invalid --webhook") and "hunter2" not in line, line
        assert health.server.requests == []  # refused before anything was fetched


class _EchoHandler(BaseHTTPRequestHandler):
    """A receiver whose error page repeats the request: path, Authorization and its decoding."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization") or ""
        decoded = base64.b64decode(auth.split()[-1]).decode() if auth else ""
        self.server.seen.append(auth)  # type: ignore[attr-defined]
        body = f"cannot POST {self.path}: Authorization {auth} ({decoded}) refused".encode()
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo():
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class TestEchoingReceiver:
    def test_credentials_sent_but_never_repeated(self, health, echo, tmp_path):
        health.serve("down")
        state = tmp_path / "state.json"
        url = f"http://alerts:{PASSWORD}@127.0.0.1:{echo.server_address[1]}/services/{TOKEN}"
        result = run_cli("check", health.url(), "--webhook", "slack=" + url, "--state-file", str(state),
                         cwd=tmp_path)
        assert result.code == 2, result.stderr
        basic = base64.b64encode(f"alerts:{PASSWORD}".encode()).decode()
        assert echo.seen == [f"Basic {basic}"]  # the credentials did go to the receiver
        (warning,) = [line for line in result.stderr.splitlines() if "alert not delivered" in line]
        assert "HTTP 500" in warning and "Authorization Basic ***" in warning, warning
        pending = json.loads(state.read_text())["pending"]
        assert pending and "HTTP 500" in pending[0]["last_error"]
        everything = result.stdout + result.stderr + state.read_text()
        for secret in (PASSWORD, basic, TOKEN, "Zx9SecretToken42"):
            assert secret not in everything, secret

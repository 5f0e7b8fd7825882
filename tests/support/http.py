"""A real HTTP server that answers health checks well or badly, for endpoint-probe tests and benchmarks."""

from __future__ import annotations

import json
from typing import Any


class HealthEndpoint:
    """A real HTTP server on a free loopback port that answers health checks, well or badly.

    By path: ``/healthy``, ``/degraded``, ``/down``, ``/unknown`` (a verdict document),
    ``/500`` (an error), ``/html`` (not JSON), ``/hang`` (never answers; lets go after
    ``hang_limit`` so no thread lingers), ``/big`` (a 50 MB body); anything else is 404.
    Paths asked for are kept in ``hits``. For tests and benchmarks of endpoint probes.
    """

    BIG_BODY = 50 * 1024 * 1024

    def __init__(self, hang_limit: float = 15.0) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self.hits: list[str] = []
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _health_handler(self, hang_limit))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def start(self) -> HealthEndpoint:
        self._thread.start()
        return self

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HealthEndpoint:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _health_handler(endpoint: HealthEndpoint, hang_limit: float) -> Any:
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            endpoint.hits.append(path)
            if path in ("/healthy", "/degraded", "/down", "/unknown"):
                self._send(200, json.dumps({"status": path[1:], "worker_alive": path == "/healthy"}).encode())
            elif path == "/500":
                self._send(500, b'{"status": "healthy"}')
            elif path == "/html":
                self._send(200, b"<html><body>OK</body></html>", "text/html")
            elif path == "/hang":
                endpoint.release.wait(hang_limit)
            elif path == "/big":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(HealthEndpoint.BIG_BODY))
                self.end_headers()
                chunk = b" " * 65536
                try:
                    for _ in range(HealthEndpoint.BIG_BODY // len(chunk)):
                        self.wfile.write(chunk)
                except OSError:
                    pass  # the client stopped reading, as a bounded one should
            else:
                self._send(404, b'{"error": "not found"}')

    return Handler

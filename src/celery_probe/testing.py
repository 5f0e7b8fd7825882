"""Real processes for tests, demos and benchmarks: a private ``redis-server`` and a Celery worker.

Shipped with the package (like structlog's ``testing`` module) so operators can test their
own probes against real brokers the same way celery-probe tests itself. Every wait here is
a poll with a deadline; nothing sleeps blindly, and everything started can be stopped,
frozen (SIGSTOP) and thawed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


_HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def cpu_hogs(count: int, seconds: float = 90.0, *, settle: float = 0.5) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` CPU-bound processes: a busy host, as prefork workers running CPU-bound tasks make it.

    Each ends by itself after ``seconds`` even if the caller dies; all are killed on the way
    out. ``settle`` gives the scheduler (and the load average) a moment to see them.
    """
    procs = [subprocess.Popen([sys.executable, "-c", _HOG.format(seconds=seconds)], stdin=subprocess.DEVNULL)
             for _ in range(count)]
    try:
        time.sleep(settle if count else 0.0)
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait(timeout=10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GaveUp(Exception):
    """Raised by a :func:`wait_until` check to stop polling at once (the thing died)."""


def wait_until(check: Callable[[], T], *, timeout: float, interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; raise TimeoutError after ``timeout``.

    Errors raised by ``check`` are retried (the service may still be starting), except
    :class:`GaveUp`, which ends the wait at once.
    """
    end = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except GaveUp:
            raise
        except Exception as exc:  # keep polling; report the last error if time runs out
            last_error = exc
        if time.monotonic() >= end:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"{what} not reached within {timeout:.1f}s{detail}")
        time.sleep(interval)


class GroupProcess:
    """Signals for a child started in its own session (so its children go with it).

    Subclass it for any helper process a test or benchmark starts (``proc`` set by its
    ``start``): freeze, thaw, kill and a bounded ``stop`` come with it.
    """

    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets open and never answers."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not gone within ``timeout``."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RedisServer(GroupProcess):
    """A private ``redis-server`` on a free loopback port, persisting nothing."""

    def __init__(self, port: int | None = None, *, password: str | None = None, extra: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.password = password
        self.extra = list(extra)
        self.workdir = Path(tempfile.mkdtemp(prefix="celery-probe-redis-"))

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def url(self, db: int = 0, *, with_password: bool = True) -> str:
        auth = f":{self.password}@" if self.password and with_password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no",
            "--logfile", str(self.workdir / "redis.log"), *self.extra,
        ]
        if self.password:
            command += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self.ping, timeout=timeout, what=f"redis-server on port {self.port}")
        return self

    def client(self, db: int = 0, timeout: float = 2.0) -> Any:
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, db=db, password=self.password,
            socket_timeout=timeout, socket_connect_timeout=timeout,
        )

    def ping(self) -> bool:
        with self.client(timeout=0.5) as client:
            return bool(client.ping())

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port (all data is gone: it persists nothing)."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CeleryWorker(GroupProcess):
    """A real ``celery worker`` process for the app at ``app_path``."""

    def __init__(
        self,
        app_path: str,
        *,
        name: str = "probe-worker@%h",
        queues: Sequence[str] = ("celery",),
        pool: str = "solo",
        concurrency: int = 1,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | Path] = (),
        extra: Sequence[str] = (),
        cwd: str | Path | None = None,
        heartbeat: bool = False,
    ) -> None:
        """``heartbeat``: send worker heartbeats (every 2 s) as a deployed worker does."""
        self.app_path = app_path
        self.cwd = cwd
        self.heartbeat = heartbeat
        self.name = name.replace("%h", socket.gethostname())
        self.queues = list(queues)
        self.pool = pool
        self.concurrency = concurrency
        self.env = dict(env or {})
        self.pythonpath = [str(p) for p in pythonpath]
        self.extra = list(extra)
        self.logfile = Path(tempfile.mkstemp(prefix="celery-probe-worker-", suffix=".log")[1])

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", self.app_path, "worker",
            "-P", self.pool, "-c", str(self.concurrency), "-n", self.name,
            "-Q", ",".join(self.queues), "--without-gossip", "--without-mingle",
            *([] if self.heartbeat else ["--without-heartbeat"]),
            "-l", "INFO", "--logfile", str(self.logfile), *self.extra,
        ]

    def start(self, *, broker_url: str | None = None, timeout: float = 30.0) -> CeleryWorker:
        env = {**os.environ, **self.env}
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        # stderr goes to the log too: "Unable to load celery application" is printed there.
        # A fresh log per start: wait_ready looks for " ready." and must not find the last one.
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, cwd=self.cwd,
            )
        self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the worker logs that it is ready (it then consumes and answers ping)."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise GaveUp(f"worker exited with {self.proc.returncode}: {self.log_tail(5)}")
            return " ready." in self.logfile.read_text(errors="replace")

        wait_until(ready, timeout=timeout, interval=0.05, what=f"worker {self.name} ready")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self, timeout: float = 3.0) -> None:
        """Stop (a solo worker on AMQP can take 10 s to finish a warm shutdown) and clean up."""
        self.stop(timeout=timeout)
        try:
            self.logfile.unlink()
        except OSError:
            pass

    def __enter__(self) -> CeleryWorker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TcpProxy:
    """A loopback TCP proxy that can forward, blackhole or refuse, to fake a frozen service.

    ``blackhole()`` keeps accepting connections and reading what clients send, but nothing
    reaches the service and nothing comes back: from the client's side exactly a frozen
    broker (TCP accepted, never answered), without stopping the real, shared service.
    ``refuse()`` closes the listening socket so connections are refused.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        import threading

        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._mode = "forward"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> TcpProxy:
        import threading

        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept_loop(self) -> None:
        import threading

        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                client, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self._sockets.append(client)
                mode = self._mode
            if mode == "blackhole":
                upstream = None
            else:
                try:
                    upstream = socket.create_connection(self.upstream, timeout=2)
                except OSError:
                    client.close()
                    continue
                with self._lock:
                    self._sockets.append(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                if src is None:
                    continue
                pump = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                pump.start()
                self._threads.append(pump)

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        src.settimeout(0.2)
        while not self._stopped.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                break
            with self._lock:
                forwarding = self._mode == "forward"
            if dst is not None and forwarding:
                try:
                    dst.sendall(data)
                except OSError:
                    return
        for sock in (src, dst):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def blackhole(self) -> None:
        """From now on accept and swallow: no byte passes in either direction."""
        with self._lock:
            self._mode = "blackhole"

    def forward(self) -> None:
        with self._lock:
            self._mode = "forward"

    def refuse(self) -> None:
        """Close the listening socket: new connections are refused."""
        with self._lock:
            self._mode = "refuse"
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def close(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=1)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CeleryBeat(GroupProcess):
    """A real ``celery beat`` process for the app at ``app_path``, its state in ``workdir``."""

    def __init__(
        self,
        app_path: str,
        *,
        env: Mapping[str, str] | None = None,
        pythonpath: Sequence[str | Path] = (),
        workdir: str | Path | None = None,
        max_interval: float = 1.0,
        extra: Sequence[str] = (),
    ) -> None:
        self.app_path = app_path
        self.env = dict(env or {})
        self.pythonpath = [str(p) for p in pythonpath]
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="celery-probe-beat-"))
        self.max_interval = max_interval
        self.extra = list(extra)
        self.logfile = self.workdir / "beat.log"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", self.app_path, "beat",
            "-s", str(self.workdir / "celerybeat-schedule"), "--pidfile", str(self.workdir / "beat.pid"),
            "--max-interval", f"{self.max_interval:g}", "-l", "INFO", "--logfile", str(self.logfile),
            *self.extra,
        ]

    def start(self, *, timeout: float = 30.0) -> CeleryBeat:
        env = {**os.environ, **self.env}
        if self.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*self.pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(), env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True,
            )
        self.wait_ready(timeout=timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until beat logs that it started (it then sends what is due)."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise GaveUp(f"beat exited with {self.proc.returncode}: {self.log_tail(5)}")
            return "beat: Starting" in self.logfile.read_text(errors="replace")

        wait_until(ready, timeout=timeout, interval=0.05, what="celery beat started")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> CeleryBeat:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


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
    import json
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


def delete_rabbitmq_names(url: str, queues: Sequence[str], control_exchange: str) -> None:
    """Delete a test's RabbitMQ queues, its pidbox exchanges and the queues' exchanges.

    Names already gone are skipped (RabbitMQ closes the channel on such an error, so a fresh
    one is opened). The connection is bounded by a 5 s connect timeout.
    """
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in dict.fromkeys(queues):
            try:
                channel.queue_delete(queue)
            except Exception:  # noqa: BLE001 - already gone: go on with a fresh channel
                channel = conn.channel()
        for exchange in (f"{control_exchange}.pidbox", f"reply.{control_exchange}.pidbox", *dict.fromkeys(queues)):
            try:
                channel.exchange_delete(exchange)
            except Exception:  # noqa: BLE001 - already gone: go on with a fresh channel
                channel = conn.channel()

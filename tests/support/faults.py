"""Fault tools for the project's tests and benchmarks: CPU hogs and a TCP proxy that can freeze or refuse."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery_probe.testing import free_port

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

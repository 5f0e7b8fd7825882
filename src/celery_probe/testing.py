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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StartFailed(Exception):
    """A helper process could not start (its port was taken, its program refused to run)."""


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

    #: Free ports tried before giving up: a port found free can be taken before redis-server binds it.
    PORT_TRIES = 3

    def __init__(self, port: int | None = None, *, password: str | None = None, extra: Sequence[str] = ()) -> None:
        self.chosen_port = port is None
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

    def start(self, timeout: float = 10.0, *, same_port: bool = False) -> RedisServer:
        """Start and wait until *this* process answers on the port.

        A PING alone is not proof: if another process took the port between :func:`free_port`
        and the bind, our redis-server exits and the PING reaches someone else's server, which
        can go away in the middle of a test. The answer's ``process_id`` must be ours; a port
        we chose ourselves is chosen again (not on a restart: clients know it), one given to us
        is an error.
        """
        for attempt in range(1, self.PORT_TRIES + 1):
            self._spawn()
            try:
                wait_until(self._ours_answers, timeout=timeout, what=f"redis-server on port {self.port}")
                return self
            except GaveUp as lost:
                self.stop()
                if same_port or not self.chosen_port or attempt == self.PORT_TRIES:
                    raise StartFailed(f"redis-server could not listen on 127.0.0.1:{self.port}: {lost}") from None
                self.port = free_port()
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
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

    def _ours_answers(self) -> bool:
        """True once our redis-server answers; :class:`GaveUp` once it has exited (the bind failed)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise GaveUp(self.log_tail() or f"redis-server exited with {self.proc.returncode}")
        with self.client(timeout=0.5) as client:
            answered = int(client.info("server")["process_id"])
        if answered != self.proc.pid:
            raise GaveUp(f"port {self.port} is answered by another redis-server (pid {answered})")
        return True

    def log_tail(self) -> str:
        """The last line redis-server logged (why it exited)."""
        try:
            lines = (self.workdir / "redis.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip() if lines else ""

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
        self.start(timeout, same_port=True)

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

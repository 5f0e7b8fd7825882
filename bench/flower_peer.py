"""Flower 2.x as a benchmark peer: a private Flower process on loopback and timed HTTP checks.

Flower decides that a worker is alive only from the worker's event heartbeats, and it learns
which queues exist only by inspecting the workers (``active_queues``) when it starts or when
``/api/workers?refresh=1`` is asked. So the workers it watches must send heartbeats (Celery's
default; ``celery_probe.testing`` turns them off), and Flower is started after them.

Flower 2.x refuses its API without authentication unless ``FLOWER_UNAUTHENTICATED_API`` is
set; this Flower listens on 127.0.0.1 only, so the variable is set for it alone.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_run import CAP, Run

from celery_probe.testing import CeleryWorker, GaveUp, GroupProcess, free_port, wait_until

STATUS = "/api/workers?status=true"
QUEUES = "/api/queues/length"
WORKERS = "/api/workers"
REFRESH = "/api/workers?refresh=1"
WARM_TIMEOUT = 60.0  # Flower must have seen every worker alive and inspected within this
POLL = 0.1  # seconds between two questions of the watch after a fault


def flower_version() -> str | None:
    """Flower's version in this interpreter, or None when it is not installed."""
    if importlib.util.find_spec("flower") is None:
        return None
    try:
        return metadata.version("flower")
    except metadata.PackageNotFoundError:
        return "unknown"


class HeartbeatWorker(CeleryWorker):
    """A ``CeleryWorker`` that sends Celery's default event heartbeats (every 2 s).

    Without them Flower lists no worker as alive. Gossip and mingle stay off: they only
    slow the start and no tool here uses them.
    """

    def command(self) -> list[str]:
        return [arg for arg in super().command() if arg != "--without-heartbeat"]


@dataclass
class Answer:
    """One HTTP request: status (None when no answer), decoded JSON body, wall seconds."""

    status: int | None
    body: Any
    seconds: float
    error: str = ""

    def text(self) -> str:
        if self.status is None:
            return f"no answer ({self.error}) in {self.seconds:.2f} s"
        return f"HTTP {self.status} in {self.seconds:.2f} s"


def http_get(port: int, path: str, timeout: float) -> Answer:
    """GET on a new loopback connection (as a monitoring check would), timed to the last byte."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:  # socket.timeout is an OSError
        return Answer(None, None, time.perf_counter() - started, type(exc).__name__)
    finally:
        conn.close()
    seconds = time.perf_counter() - started
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return Answer(response.status, body, seconds)


def timed_out(answer: Answer) -> bool:
    """No answer because the client's timeout ran out (not a refused or reset connection)."""
    return answer.status is None and answer.error in ("TimeoutError", "timeout")


def alive_text(answer: Answer, names: Iterable[str]) -> str:
    """``alive 1/1`` from ``/api/workers?status=true`` for the workers we expect."""
    names = list(names)
    if answer.status != 200 or not isinstance(answer.body, dict):
        return f"status {answer.text()}"
    alive = sum(1 for name in names if answer.body.get(name) is True)
    return f"alive {alive}/{len(names)}"


def queues_text(answer: Answer) -> str:
    """``celery=0`` for one queue, ``1001 queues, 0 messages`` for many."""
    if answer.status != 200 or not isinstance(answer.body, dict):
        return f"queues {answer.text()}"
    queues = answer.body.get("active_queues") or []
    if len(queues) <= 2:
        return ", ".join(f"{q.get('name')}={q.get('messages')}" for q in queues) or "no queue"
    return f"{len(queues)} queues, {sum(int(q.get('messages') or 0) for q in queues)} messages"


class Flower(GroupProcess):
    """``celery -A APP flower`` on a free loopback port, started in its own session."""

    def __init__(self, app: str, env: dict[str, str], workdir: Path) -> None:
        self.app = app
        self.env = {**env, "FLOWER_UNAUTHENTICATED_API": "true"}
        self.port = free_port()
        self.log = workdir / f"flower-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Flower:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", self.app, "flower", "--address=127.0.0.1",
                 f"--port={self.port}"],
                env=self.env, cwd=self.log.parent, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )
        return self

    def get(self, path: str, timeout: float = CAP) -> Answer:
        return http_get(self.port, path, timeout)

    def wait_warm(self, names: Iterable[str], *, queues: int = 1, timeout: float = WARM_TIMEOUT) -> None:
        """Wait until Flower says every worker is alive and has inspected their active queues.

        ``queues``: how many queue names the inspected workers must list in all.
        """
        names = set(names)
        asked = [time.monotonic()]

        def warm() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise GaveUp(f"flower exited; see {self.log}")
            status = self.get(STATUS, timeout=5)
            if status.status != 200 or not all(status.body.get(n) is True for n in names):
                return False
            workers = self.get(WORKERS, timeout=5).body or {}
            listed = {q.get("name") for n in names for q in (workers.get(n) or {}).get("active_queues", [])}
            if names <= set(workers) and len(listed) >= queues:
                return True
            if time.monotonic() - asked[0] > 5:  # its start-up inspection missed a worker: ask again
                asked[0] = time.monotonic()
                self.get(REFRESH, timeout=15)
            return False

        wait_until(warm, timeout=timeout, interval=0.2, what=f"flower seeing {len(names)} worker(s) alive")

    def check(self, names: Iterable[str]) -> Run:
        """The health check Flower offers: worker status, then queue lengths, both timed.

        The two requests share one CAP; a request that got no answer within it caps the run.
        """
        status = self.get(STATUS, timeout=CAP)
        queues = self.get(QUEUES, timeout=max(0.1, CAP - status.seconds))
        said = f"{alive_text(status, names)}; {queues_text(queues)}"
        if timed_out(status) or timed_out(queues):
            return Run(CAP, None, said=said)
        ok = status.status == 200 and queues.status == 200
        return Run(status.seconds + queues.seconds, 0 if ok else 1, said=said)

    def timed(self, path: str, describe: Callable[[Answer], str]) -> Run:
        """One request to ``path``; ``describe(answer)`` says what it answered."""
        answer = self.get(path)
        if timed_out(answer):
            return Run(CAP, None, said=describe(answer))
        return Run(answer.seconds, 0 if answer.status == 200 else 1, said=describe(answer))

    def close(self) -> None:
        """SIGTERM to its process group, SIGKILL if it has not gone within 10 s."""
        self.stop(timeout=10)


@dataclass
class Watch:
    """After a fault, ask Flower every POLL seconds whether the worker is alive, until it says no.

    Runs in a thread beside the timed commands; bounded by CAP seconds and CAP / POLL questions.
    """

    flower: Flower
    worker: str
    started: float = field(default_factory=time.monotonic)
    said: list[str] = field(default_factory=list)  # distinct answers, in order
    flipped: float | None = None  # seconds from the fault to the first answer other than alive
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Watch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        for _ in range(int(CAP / POLL) + 1):
            if self._stop.is_set() or time.monotonic() - self.started >= CAP:
                return
            answer = self.flower.get(STATUS, timeout=2)
            if answer.status == 200 and isinstance(answer.body, dict):
                value = answer.body.get(self.worker, "absent")
                text = "alive" if value is True else ("not alive" if value is False else "absent")
            else:
                text = answer.text().split(" in ")[0]
            if not self.said or self.said[-1] != text:
                self.said.append(text)
            if text != "alive":
                self.flipped = time.monotonic() - self.started
                return
            self._stop.wait(POLL)

    def finish(self, *, wait: bool) -> Run:
        """Wait (bounded by CAP from the fault) for the answer, or stop at once; the result as a Run."""
        if self._thread is not None:
            if not wait:
                self._stop.set()
            self._thread.join(max(0.0, CAP - (time.monotonic() - self.started)) + 3)
            self._stop.set()
        path = " -> ".join(self.said) or "no answer"
        if self.flipped is None:
            return Run(CAP, None, said=f"{path}; still alive at the {CAP:g} s cap")
        return Run(self.flipped, 0, said=f"{path} after {self.flipped:.1f} s")

"""A real `celery-probe serve` (or any uvicorn app) process for tests, queried over loopback HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from celery_probe.testing import GaveUp, free_port, wait_until
from tests.support.environment import APPS

HEALTH = "/api/interactions/health/celery"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(port: int, path: str, *, timeout: float = 2.0, conn: http.client.HTTPConnection | None = None,
             headers: dict[str, str] | None = None) -> Reply:
    """One GET on 127.0.0.1:port, timed; reuses ``conn`` (keep-alive) when given."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body,
                     time.perf_counter() - started)
    finally:
        if own:
            conn.close()


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` parsed by prometheus_client's own parser."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            assert sample.timestamp is None, f"{sample.name} carries a timestamp"
            samples[key] = sample.value
    return samples


def textfile_samples(text: str, deployment: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """:func:`parse_metrics` of a ``--prom-file``, checking that every series names ``deployment``.

    The label is then left out of the keys, so a test reads a textfile as it reads a scrape.
    """
    samples = {}
    for (name, labels), value in parse_metrics(text).items():
        assert ("deployment", deployment) in labels, f"{name}{dict(labels)} is not labelled deployment={deployment!r}"
        samples[(name, tuple(item for item in labels if item[0] != "deployment"))] = value
    return samples


class ServeProcess:
    """`celery-probe serve …` (or ``command``) in its own session on a free loopback port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                 command: list[str] | None = None, ready: tuple[int, ...] = (200, 503)) -> None:
        self.port = free_port()
        self.args = list(args)
        self.env = {**os.environ, "PYTHONPATH": str(APPS), **(env or {})}
        self.cwd = cwd
        self.command = command
        self.ready = ready  # the /healthz statuses that mean "serving" (401 with --protect-health)
        self.log = Path(tempfile.mkstemp(prefix="celery-probe-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServeProcess:
        command = self.command or [sys.executable, "-m", "celery_probe", "serve", "--port", str(self.port), *self.args]
        command = [part.replace("{port}", str(self.port)) for part in command]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise GaveUp(f"serve exited with {self.proc.returncode}: {self.log_text()}")
            return http_get(self.port, "/healthz", timeout=1).status in self.ready

        try:
            wait_until(answers, timeout=timeout, interval=0.05, what="serve answering /healthz")
        except BaseException:
            self.stop()  # a serve that never answered is not left running
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> Reply:
        return http_get(self.port, path, timeout=timeout, headers=headers)

    def health(self) -> dict[str, Any]:
        reply = self.get(HEALTH)
        assert reply.status == 200, reply
        return reply.json()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        reply = self.get("/metrics")
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
        return parse_metrics(reply.body.decode())

    def runs(self) -> int:
        return int(self.metrics()[("celery_probe_runs_total", ())])

    def wait_status(self, status: str, timeout: float, path: str = HEALTH) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            verdict = self.get(path).json()
            return verdict if verdict["status"] == status else None

        return wait_until(reached, timeout=timeout, interval=0.05, what=f"verdict {status}")

    def children(self) -> list[int]:
        """Processes whose parent is this server (the resident runner, or a fresh probe run)."""
        return [pid for pid, parent in process_parents().items() if parent == self.pid]

    def descendants(self) -> list[int]:
        """Every process below this server: the resident runner and the runs it forked."""
        parents = process_parents()
        found, frontier = [], [self.pid]
        while frontier:
            below = [pid for pid, parent in parents.items() if parent in frontier]
            found += below
            frontier = below
        return found

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful: lifespan shutdown), SIGKILL if it does not end within ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def process_parents() -> dict[int, int]:
    """PID to parent PID of every process (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(entry.name)] = int(fields[1])
    return found

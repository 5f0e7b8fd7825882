"""Fixtures for testing celery-probe against real brokers, workers and HTTP servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from celery_probe.testing import CeleryWorker, RedisServer

TESTS = Path(__file__).resolve().parent
APPS = TESTS / "apps"
ROOT = TESTS.parent


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port, for this test alone."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """A private redis-server shared by the tests of one module (they must not kill it)."""
    with RedisServer() as server:
        yield server


def app_env(broker: str, backend: str | None = None, **extra: str) -> dict[str, str]:
    """Environment that points the test app (and celery-probe -A) at a broker."""
    env = {"PROBE_TEST_BROKER": broker, "PROBE_TEST_BACKEND": backend or ""}
    env.update(extra)
    return env


@pytest.fixture
def start_worker() -> Iterator[Callable[..., CeleryWorker]]:
    """Start real `celery worker` processes of tests/apps/probe_test_app; all stopped at teardown."""
    started: list[CeleryWorker] = []

    def start(env: dict[str, str], *, name: str = "w1@%h", queues: tuple[str, ...] = ("celery",),
              pool: str = "solo", concurrency: int = 1) -> CeleryWorker:
        worker = CeleryWorker(
            "probe_test_app", name=name, queues=queues, pool=pool, concurrency=concurrency,
            env=env, pythonpath=[APPS],
        )
        started.append(worker)
        return worker.start(timeout=40)

    yield start
    for worker in started:
        worker.close()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    elapsed: float

    def verdict(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def codes(self) -> set[str]:
        return {r["code"] for r in self.verdict()["reasons"] if r["severity"] != "info"}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> CliResult:
    """Run `celery-probe` as a real process (as cron would) and time it."""
    full_env = {**os.environ, "PYTHONPATH": str(APPS), **(env or {})}
    full_env.pop("NO_COLOR", None)
    full_env.pop("FORCE_COLOR", None)
    full_env.update({k: v for k, v in (env or {}).items()})
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "celery_probe", *args], env=full_env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CliResult]:
    """`celery-probe` in a fresh working directory with its own report folder."""

    def call(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> CliResult:
        return run_cli(*args, env=env, cwd=tmp_path, timeout=timeout)

    return call

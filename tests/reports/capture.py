"""Regenerate the real reports the verdict tests read: `python tests/reports/capture.py`.

Each file here is the `latest.json` of a real `celery-probe run` against a real
redis-server and real worker processes, in the state its name says. Nothing in them is
edited by hand; the tests that need a broken report derive it from these.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from celery import Celery

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.support.environment import APPS, app_env, run_cli  # noqa: E402

from celery_probe.testing import CeleryWorker, RedisServer, free_port, wait_until  # noqa: E402


def capture(name: str, env: dict[str, str], *args: str) -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        result = run_cli("run", "-A", "probe_test_app", "--deadline", "2", *args, env=env, cwd=folder)
        shutil.copy(folder / "reports" / "latest.json", HERE / f"{name}.json")
        print(f"{name}: exit {result.code}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    with RedisServer() as redis:
        env = app_env(redis.url(0), redis.url(1))
        capture("no_worker", env)
        with CeleryWorker("probe_test_app", name="alpha@%h", env=env, pythonpath=[APPS]), \
                CeleryWorker("probe_test_app", name="beta@%h", env=env, pythonpath=[APPS]):
            capture("healthy_two_workers", env, "--expect-workers", "2")
            capture("workers_missing", env, "--expect-workers", "3")
        nobackend = app_env(redis.url(0))
        with CeleryWorker("probe_test_app", name="solo@%h", env=nobackend, pythonpath=[APPS]):
            capture("no_backend", nobackend)
        with CeleryWorker("probe_test_app", name="busy@%h", env=env, pythonpath=[APPS],
                          queues=("celery", "bulk"), pool="prefork", concurrency=1):
            client = Celery(broker=redis.url(0), backend=redis.url(1), set_as_current=False)
            busy = client.send_task("probe_test.sleep", args=(30,), queue="bulk")
            wait_until(lambda: sum(len(v) for v in (client.control.inspect(timeout=0.5).active() or {}).values()),
                       timeout=20, what="busy")
            for _ in range(130):
                client.send_task("probe_test.sleep", args=(0,), queue="bulk", priority=9)
            capture("queue_high_saturated", env, "-Q", "celery,bulk")
            busy.revoke(terminate=True)
        with CeleryWorker("probe_test_app", name="frozen@%h", env=env, pythonpath=[APPS]):
            redis.freeze()
            try:
                capture("broker_frozen", env)
            finally:
                redis.thaw()
    port = free_port()
    capture("broker_refused", app_env(f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"))


if __name__ == "__main__":
    main()

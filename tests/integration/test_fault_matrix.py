"""Faults of bench/fault_matrix.py that tests/integration/test_faults.py does not cover yet.

The other rows of the matrix are tested there (worker SIGKILL and SIGSTOP, every pool
process busy, Redis frozen, refused and restarted *between* runs, the result backend down,
a host that does not resolve, RabbitMQ refused and frozen through a proxy) and in
tests/integration/test_run_healthy.py (an endpoint hanging, answering 500 or HTML, sending 50 MB).

The bound is deadline + 1 s on the whole process, interpreter start-up included, plus the
same SLACK as tests/integration/test_faults.py for a loaded machine: a hang is several deadlines, not a
fraction of a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from celery_probe.testing import wait_until
from tests.support.environment import APPS, app_env, run_cli

DEADLINE = 2.0
SLACK = 0.6
BOUND = DEADLINE + 1.0 + SLACK


@pytest.mark.redis_only
class TestRedisRestartedDuringARun:
    """redis-server stops and starts again on its port while `celery-probe run` is running."""

    def test_a_verdict_on_time_then_healthy_again(self, redis_server, start_worker, tmp_path):
        env = app_env(redis_server.url(0), redis_server.url(1))
        start_worker(env)
        command = [sys.executable, "-m", "celery_probe", "run", "-A", "probe_test_app", "--deadline", str(DEADLINE),
                   "--format", "json"]
        with redis_server.client() as admin:
            before = {c["id"] for c in admin.client_list()}
            started = time.monotonic()
            proc = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(APPS), **env},
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            try:
                # Restart at the probe's first connection: inside the run, not before it.
                def probe_connected() -> bool:
                    mine = admin.client_id()
                    return any(c["id"] not in before and c["id"] != mine for c in admin.client_list())

                wait_until(probe_connected, timeout=10, interval=0.005, what="the probe connected to Redis")
                redis_server.restart()
                out, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate(timeout=10)
        elapsed = time.monotonic() - started
        verdict = json.loads(out)
        assert "Traceback" not in err, err
        # The restart lands in ping, inspect or the round trip depending on timing; each is a
        # verdict of evidence (the worker is reconnecting: down), never a watchdog's unknown.
        assert (verdict["status"], proc.returncode) in {("healthy", 0), ("down", 2)}, verdict["reasons"]
        codes = {r["code"] for r in verdict["reasons"]}
        assert "celery_probe_deadline_exceeded" not in codes
        if verdict["status"] == "down":
            # The probe that met the dropped connection names it as its root cause: a verdict
            # of "not attempted" consequences alone would show the cause nowhere.
            root = verdict["reasons"][0]
            assert not root["message"].startswith("not attempted"), verdict["reasons"]
        assert elapsed < BOUND, elapsed
        assert (tmp_path / "reports" / "verdict.json").exists()

        # Nothing is stuck: the worker reconnects by itself and a later run is healthy again.
        later = []

        def healthy_again() -> bool:
            later.append(run_cli("run", "-A", "probe_test_app", "--deadline", str(DEADLINE), "--format", "json",
                                 env=env, cwd=tmp_path, timeout=30))
            return later[-1].code == 0

        wait_until(healthy_again, timeout=40, interval=0.2, what="a healthy run after the restart")
        assert max(run.elapsed for run in later) < BOUND, [run.elapsed for run in later]

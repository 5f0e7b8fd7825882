"""docs/deploy/prometheus/alerts.yml, read by Debian's promtool and loaded by a real Prometheus.

promtool checks the file and runs its unit cases (alerts_test.yml: every rule, the prober
dying among them). Then a real Prometheus scrapes a real ``celery-probe serve`` whose verdict
is down, the test kills serve, and Prometheus' own API must show ``CeleryProbeScrapeFailed``
firing while ``CeleryDown`` keeps firing. Prometheus loads the shipped rules with every ``for:``
rewritten to ``0s`` (and nothing else changed), so the test waits seconds, not minutes; the
``for:`` durations themselves are covered by the promtool cases.

Where promtool or prometheus is missing the test skips, except under CI, where it fails
(``scripts/install-test-deps`` installs Debian's ``prometheus``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from celery_probe.testing import wait_until
from tests.support.docs import PROMETHEUS
from tests.support.environment import app_env
from tests.support.prometheus import PrometheusServer, program

pytestmark = pytest.mark.redis_only  # a private redis-server; Prometheus does not depend on --broker

RULES = PROMETHEUS / "alerts.yml"
FIRES_WITHIN = 60.0  # seconds for an alert to show on /api/v1/alerts once its cause holds


def test_promtool_checks_the_shipped_rules():
    done = subprocess.run([program("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_cases_pass():
    done = subprocess.run([program("promtool"), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.fixture
def down_serve(redis_server, tmp_path) -> Iterator[Any]:
    """serve expecting a worker that does not exist: its verdict is down."""
    from tests.support.serving import ServeProcess

    env = app_env(redis_server.url(0), redis_server.url(1))
    args = ["-A", "probe_test_app", "--expect-workers", "1", "--deadline", "3", "--interval", "1"]
    with ServeProcess(*args, env=env, cwd=tmp_path) as server:
        server.wait_status("down", timeout=30)
        yield server


def test_prometheus_alerts_when_serve_dies_and_keeps_celery_down_firing(down_serve, tmp_path):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    rules = re.sub(r"^(\s+)for: \S+$", r"\1for: 0s", RULES.read_text(), flags=re.MULTILINE)
    scrape = [{"job_name": "celery-probe", "static_configs": [{"targets": [f"127.0.0.1:{down_serve.port}"]}]}]
    with PrometheusServer(folder, scrape, rules) as prometheus:
        before = wait_until(lambda: "CeleryDown" in (f := prometheus.firing()) and f, timeout=FIRES_WITHIN,
                            interval=0.5, what="CeleryDown firing while serve reports down")
        assert "CeleryProbeScrapeFailed" not in before
        assert before["CeleryDown"][0]["job"] == "celery-probe"

        os.killpg(down_serve.pid, signal.SIGKILL)  # serve crashes: nothing is scraped any more
        down_serve.proc.wait(timeout=10)

        after = wait_until(lambda: "CeleryProbeScrapeFailed" in (f := prometheus.firing()) and f,
                           timeout=FIRES_WITHIN, interval=0.5, what="CeleryProbeScrapeFailed firing")
        assert after["CeleryProbeScrapeFailed"][0]["instance"] == f"127.0.0.1:{down_serve.port}"
        assert "CeleryDown" in after, f"CeleryDown resolved when the prober died: {after}"

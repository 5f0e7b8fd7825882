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

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_probe.testing import GaveUp, GroupProcess, free_port, wait_until
from tests.support.docs import PROMETHEUS
from tests.support.environment import app_env, missing_system_program

pytestmark = pytest.mark.redis_only  # a private redis-server; Prometheus does not depend on --broker

RULES = PROMETHEUS / "alerts.yml"
FIRES_WITHIN = 60.0  # seconds for an alert to show on /api/v1/alerts once its cause holds


def program(name: str) -> str:
    """``name`` on PATH or in /usr/bin, or skip (fail under CI)."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found is None:
        missing_system_program(f"{name} (Debian package prometheus) is not installed")
    assert found is not None
    return found


def test_promtool_checks_the_shipped_rules():
    done = subprocess.run([program("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_cases_pass():
    done = subprocess.run([program("promtool"), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


class PrometheusServer(GroupProcess):
    """Debian's Prometheus on a free loopback port, scraping and evaluating every second."""

    def __init__(self, folder: Path, target_port: int) -> None:
        self.port = free_port()
        self.folder = folder
        rules = re.sub(r"^(\s+)for: \S+$", r"\1for: 0s", RULES.read_text(), flags=re.MULTILINE)
        (folder / "rules.yml").write_text(rules)
        (folder / "prometheus.yml").write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(folder / "rules.yml")],
            "scrape_configs": [{"job_name": "celery-probe",
                                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
        }))
        self.log = folder / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [program("prometheus"), f"--config.file={self.folder / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise GaveUp(f"prometheus exited with {self.proc.returncode}: {self.log.read_text()}")
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as reply:
                return reply.status == 200

        try:
            wait_until(ready, timeout=30, interval=0.1, what="prometheus ready")
        except BaseException:
            self.stop(timeout=15)  # a server that never got ready is not left running
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=15)

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/alerts", timeout=2) as reply:
            return json.load(reply)["data"]["alerts"]

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """``{alertname: [labels of each firing alert]}``."""
        found: dict[str, list[dict[str, str]]] = {}
        for alert in self.alerts():
            if alert["state"] == "firing":
                found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return found


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
    with PrometheusServer(folder, down_serve.port) as prometheus:
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

"""`run --prom-file` read by a real node_exporter (Debian's `prometheus-node-exporter`).

node_exporter's textfile collector merges every ``*.prom`` file of its folder into one scrape.
Two deployments' files there must not give the same series: node_exporter would log "was
collected before with the same name and label values" and drop one deployment's values while
``node_textfile_scrape_error`` stays 0. Each file's series carry ``deployment``, its name.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_probe.testing import CeleryWorker, GaveUp, RedisServer, free_port, wait_until
from tests.support.environment import APPS, app_env, missing_system_program
from tests.support.serving import http_get, parse_metrics

pytestmark = pytest.mark.redis_only  # private redis-servers; nothing here depends on --broker

NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
DEADLINE = "3"


class NodeExporter:
    """node_exporter with only its textfile collector, on a free loopback port."""

    def __init__(self, folder: Path, log: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeExporter:
        command = [str(NODE_EXPORTER), "--collector.disable-defaults", "--collector.textfile",
                   f"--collector.textfile.directory={self.folder}", f"--web.listen-address=127.0.0.1:{self.port}"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise GaveUp(f"node_exporter exited with {self.proc.returncode}: {self.log.read_text()}")
            return http_get(self.port, "/metrics", timeout=1).status == 200

        wait_until(answers, timeout=20, interval=0.05, what="node_exporter answering /metrics")
        return self

    def scrape(self) -> str:
        reply = http_get(self.port, "/metrics", timeout=5)
        assert reply.status == 200, reply
        return reply.body.decode()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[NodeExporter]:
    if not os.access(NODE_EXPORTER, os.X_OK):
        missing_system_program(f"{NODE_EXPORTER} is not installed")
    folder = tmp_path / "textfile"
    folder.mkdir()
    exporter = NodeExporter(folder, tmp_path / "node_exporter.log")
    try:
        yield exporter.start()
    finally:
        exporter.stop()


class TestTwoDeploymentsInOneFolder:
    def test_both_files_are_read_without_collision(self, node_exporter, cli):
        """Two cron jobs, two apps' brokers (one healthy, one without a worker), one folder."""
        with RedisServer() as billing, RedisServer() as shop:
            billing_env = app_env(billing.url(0), billing.url(1))
            with CeleryWorker("probe_test_app", name="billing@%h", env=billing_env, pythonpath=[APPS]):
                healthy = cli("run", "-A", "probe_test_app", "--deadline", DEADLINE, "--roundtrip-slow", "2.5",
                              "--prom-file", str(node_exporter.folder / "billing.prom"), env=billing_env)
            down = cli("run", "-A", "probe_test_app", "--deadline", DEADLINE,
                       "--prom-file", str(node_exporter.folder / "shop.prom"), env=app_env(shop.url(0), shop.url(1)))
        assert healthy.code == 0, healthy.stdout + healthy.stderr
        assert down.code == 2, down.stdout + down.stderr

        samples = parse_metrics(node_exporter.scrape())  # fails on any duplicate series
        assert samples[("node_textfile_scrape_error", ())] == 0
        for name in ("billing.prom", "shop.prom"):  # both files read
            assert ("node_textfile_mtime_seconds", (("file", str(node_exporter.folder / name)),)) in samples
        status = {dict(labels)["deployment"]: dict(labels)["status"]
                  for (metric, labels), value in samples.items() if metric == "celery_probe_status" and value == 1}
        assert status == {"billing": "healthy", "shop": "down"}
        for deployment in ("billing", "shop"):  # the same series of both deployments, each kept
            key = ("celery_probe_queue_length", (("deployment", deployment), ("queue", "celery")))
            assert key in samples, sorted(k for k in samples if k[0] == "celery_probe_queue_length")
        assert samples[("celery_probe_workers_up", (("deployment", "billing"),))] == 1
        assert samples[("celery_probe_workers_up", (("deployment", "shop"),))] == 0
        log = node_exporter.log.read_text(errors="replace")
        assert "collected before" not in log and "level=error" not in log, log

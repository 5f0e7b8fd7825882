"""The operator docs in docs/ cannot drift from the code.

Each test reads the code (reason codes by walking the syntax trees of probes/ and
src/celery_probe/, CLI options from click, metric names from ``celery_probe.present.metrics``, settings
from ``celery_probe.config.settings.SPECS``) and fails naming what a page is missing. The alert rules
are checked against a real ``/metrics`` scrape of ``celery-probe serve``, and the systemd units
with ``systemd-analyze verify``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from celery_probe.testing import wait_until
from tests.support.docs import PROMETHEUS_SERIES, alert_rules, series_names
from tests.support.environment import ROOT, app_env

DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
METRIC = re.compile(r"\b(celery_probe_[a-z0-9_]+)\b")


# -- alert rules against a real scrape -------------------------------------------------------


def _keep_sending(broker: str, stop: threading.Event) -> None:
    """A short task every 0.1 s (at most 600), so the events window has runtimes to measure."""
    from celery import Celery

    client = Celery(broker=broker)
    try:
        for _ in range(600):
            if stop.wait(0.1):
                return
            client.send_task("probe_test.sleep", args=(0.01,), ignore_result=True)
    finally:
        client.close()


def test_alert_rules_use_only_metrics_a_real_scrape_exposes(redis_server, start_worker, cli, tmp_path):
    """The scrape comes from a run with every optional family switched on: queue and task SLAs,
    and an events window over a worker started with -E while tasks flow. ``serve`` has no
    ``--targets``, so the per-target series come from the textfile a real ``run --targets
    --prom-file`` writes."""
    from tests.support.serving import ServeProcess, parse_metrics

    selected = {name for rule in alert_rules() for name in series_names(rule["expr"])}
    used = {name for name in selected if METRIC.fullmatch(name)}
    assert used, "the rules use no celery-probe metric at all"
    assert selected - used <= PROMETHEUS_SERIES, f"not celery-probe's nor Prometheus' own: {selected - used - PROMETHEUS_SERIES}"
    env = app_env(redis_server.url(0), redis_server.url(1))
    start_worker(env, pool="threads", concurrency=2, extra=("-E",))
    args = ["-A", "probe_test_app", "--expect-workers", "1", "--interval", "5", "--roundtrip-slow", "4",
            "--deadline", "5", "--sla", "celery=30s", "--events-window", "1.5", "--task-sla", "*=60s"]
    stop = threading.Event()
    sender = threading.Thread(target=_keep_sending, args=(redis_server.url(0), stop), daemon=True)
    sender.start()
    try:
        with ServeProcess(*args, env=env, cwd=tmp_path) as server:
            wait_until(lambda: server.health()["status"] == "healthy"
                       and (server.health().get("task_runtimes") or {}).get("tasks"),
                       timeout=40, interval=0.2, what="a healthy verdict with task runtimes")
            scraped = {name for name, _labels in parse_metrics(server.get("/metrics").body.decode())}
    finally:
        stop.set()
        sender.join(timeout=10)
    targets = tmp_path / "targets.toml"
    targets.write_text(f'[targets.main]\nbroker = "{redis_server.url(0)}"\nbackend = "{redis_server.url(1)}"\n')
    textfile = tmp_path / "celery.prom"
    cli("run", "--targets", str(targets), "--deadline", "3", "--prom-file", str(textfile))
    scraped |= {name for name, _labels in parse_metrics(textfile.read_text())}
    assert not used - scraped, f"alerts.yml uses metrics no scrape exposes: {sorted(used - scraped)}"


# -- deployment files ------------------------------------------------------------------------


UNITS = sorted(p.name for p in (DOCS / "deploy").glob("*.service")) + sorted(
    p.name for p in (DOCS / "deploy").glob("*.timer"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_verify(unit, tmp_path):
    """``systemd-analyze verify`` accepts the unit; the install path is pointed at this venv,
    because verify insists that ExecStart's program exists."""
    venv = str(Path(sys.executable).parent.parent)
    for name in UNITS:
        text = (DOCS / "deploy" / name).read_text().replace("/opt/celery-probe/.venv", venv)
        (tmp_path / name).write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / unit)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr

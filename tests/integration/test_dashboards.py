"""The shipped Grafana dashboard and celery-exporter's dashboards, read through a real Prometheus.

A real ``serve --targets --exporter-metrics`` probes two real deployments; Debian's
Prometheus scrapes it every second under the labels a Kubernetes scrape adds (``cluster``,
``namespace``) and the job name celery-exporter's dashboards filter on. Then every PromQL
expression of docs/deploy/grafana/celery-probe-dashboard.json, and every expression of the
celery-mixin dashboards (grafana.com 17508 / 17509) and alerts that read a series
``--exporter-metrics`` offers, must return data through Prometheus' query API, with the
dashboards' template variables filled in as Grafana would.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from celery_probe.present.exporter_compat import HELP as EXPORTER_SERIES
from celery_probe.testing import RedisServer, wait_until
from tests.support.environment import ROOT, app_env
from tests.support.prometheus import PrometheusServer
from tests.support.serving import ServeProcess

pytestmark = pytest.mark.redis_only  # private redis-servers; Prometheus does not depend on --broker

DASHBOARD = ROOT / "docs" / "deploy" / "grafana" / "celery-probe-dashboard.json"
JOB = "celery-exporter"  # the job name the legacy celery-exporter dashboard filters on
SCRAPE_LABELS = {"cluster": "test-cluster", "namespace": "celery"}

# What the celery-mixin's panels and alerts compute from the series --exporter-metrics serves,
# by panel: the dashboards filter on cluster, namespace and job, and exclude queue_name "None".
MIXIN = 'cluster="$cluster", namespace="$namespace", job=~"$job", queue_name!~"None"'
MIXIN_EXPRESSIONS = {
    "overview: Workers": f"count(celery_worker_up{{{MIXIN}}} == 1)",
    "overview: Workers Active Tasks": f"sum(celery_worker_tasks_active{{{MIXIN}}})",
    "overview: Queues": f"count(group by (queue_name) (celery_queue_length{{{MIXIN}}}))",
    "overview: Queue Length by Queue": f"topk(10, sum(celery_queue_length{{{MIXIN}}}) by (queue_name))",
    "overview: Queue Length": f'sum(celery_queue_length{{{MIXIN}, queue_name=~"$queue_name"}}) by (job, queue_name)',
    "celery-tasks: Celery Workers": 'count(celery_worker_up{job=~"celery|celery-exporter"} == 1)',
    "celery-tasks: Tasks Active": 'sum(celery_worker_tasks_active{job=~"celery|celery-exporter"})',
    # CeleryHighQueueLength without its "> 100": the series it compares
    "alert CeleryHighQueueLength": 'sum(celery_queue_length{job=~".*celery.*", queue_name!~"None"}) '
                                   "by (job, namespace, queue_name)",
}
GRAFANA_VARIABLES = {"$cluster": SCRAPE_LABELS["cluster"], "$namespace": SCRAPE_LABELS["namespace"],
                     "$job": ".+", "$instance": ".+", "$queue_name": ".+",
                     "$__rate_interval": "1m", "$__range": "1h"}


def filled(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, expr
    return expr


def dashboard_expressions() -> dict[str, str]:
    document = json.loads(DASHBOARD.read_text())
    return {f"{panel['title']} [{target['refId']}]": target["expr"]
            for panel in document["panels"] for target in panel["targets"]}


@pytest.fixture
def scraped(start_worker, tmp_path) -> Iterator[tuple[PrometheusServer, ServeProcess, Any]]:
    """``main`` has a worker and a result backend; ``backlog`` holds messages nobody consumes."""
    with RedisServer() as main, RedisServer() as backlog:
        worker = start_worker(app_env(main.url(0), main.url(1)), name="main@%h")
        for _ in range(3):  # a backlog of three messages in backlog's default queue
            backlog.client().lpush("celery", json.dumps({"body": "", "headers": {}, "properties": {}}))
        targets = tmp_path / "targets.toml"
        targets.write_text(
            "[defaults]\ndeadline = 3\nroundtrip-slow = 4\n"
            f'[targets.main]\nbroker = "{main.url(0)}"\nbackend = "{main.url(1)}"\nexpect-workers = 1\n'
            f'[targets.backlog]\nbroker = "{backlog.url(0)}"\n'
        )
        with ServeProcess("--targets", str(targets), "--interval", "1", "--exporter-metrics", cwd=tmp_path) as serve:
            wait_until(lambda: serve.get("/targets/main/healthz").json()["status"] == "healthy", timeout=40,
                       interval=0.2, what="main healthy")
            folder = tmp_path / "prometheus"
            folder.mkdir()
            scrape = [{"job_name": JOB, "static_configs": [
                {"targets": [f"127.0.0.1:{serve.port}"], "labels": SCRAPE_LABELS}]}]
            with PrometheusServer(folder, scrape) as prometheus:
                # rate() and increase() need two samples of a series: wait for a few scrapes
                wait_until(lambda: prometheus.query("count_over_time(celery_probe_runs_total[1m])")
                           and min(float(r["value"][1]) for r in prometheus.query(
                               "count_over_time(celery_probe_runs_total[1m])")) >= 3,
                           timeout=40, interval=0.5, what="three scrapes in Prometheus")
                yield prometheus, serve, worker


def test_every_dashboard_expression_returns_data(scraped):
    prometheus, _serve, _worker = scraped
    empty = {title: expr for title, expr in dashboard_expressions().items() if not prometheus.query(filled(expr))}
    assert empty == {}, empty
    # the template variables find their values
    assert JOB in prometheus.api("label/job/values", **{"match[]": "celery_probe_status"})


def test_every_claimed_celery_mixin_expression_returns_data(scraped):
    prometheus, _serve, _worker = scraped
    results = {title: prometheus.query(filled(expr)) for title, expr in MIXIN_EXPRESSIONS.items()}
    assert {t for t, r in results.items() if not r} == set(), results
    assert float(results["overview: Workers"][0]["value"][1]) == 1.0
    lengths = {r["metric"]["queue_name"]: float(r["value"][1]) for r in results["overview: Queue Length by Queue"]}
    assert lengths["celery"] >= 3.0  # the backlog target's three messages
    # the dashboards' variables: label_values(celery_worker_up{}, cluster) and friends
    assert SCRAPE_LABELS["cluster"] in prometheus.api("label/cluster/values", **{"match[]": "celery_worker_up"})
    assert JOB in prometheus.api("label/job/values", **{"match[]": 'celery_worker_up{cluster="test-cluster"}'})
    # every offered series is there, labelled as celery-exporter labels it
    for name in EXPORTER_SERIES:
        rows = prometheus.query(name)
        assert rows, name
        label = "hostname" if "worker" in name and "count" not in name else "queue_name"
        assert all(label in row["metric"] and "target" in row["metric"] for row in rows), (name, rows)
    host = socket.gethostname()
    assert prometheus.query(f'celery_worker_up{{hostname="{host}", target="main"}} == 1')


def test_celery_mixin_worker_down_alert_expression_sees_a_stopped_worker(scraped):
    prometheus, serve, worker = scraped
    worker.stop()
    wait_until(lambda: serve.get("/targets/main/healthz").json()["status"] == "down", timeout=30,
               interval=0.2, what="main down")
    # CeleryWorkerDown: celery_worker_up{job=~".*celery.*"} == 0
    down = wait_until(lambda: prometheus.query('celery_worker_up{job=~".*celery.*"} == 0'), timeout=20,
                      interval=0.5, what="celery_worker_up 0 in Prometheus")
    assert down[0]["metric"]["hostname"] == socket.gethostname() and down[0]["metric"]["target"] == "main"


def test_the_claimed_series_are_those_the_module_offers():
    named = set(re.findall(r"\b(celery_[a-z_]+)\{", " ".join(MIXIN_EXPRESSIONS.values())))
    assert named <= set(EXPORTER_SERIES), named - set(EXPORTER_SERIES)

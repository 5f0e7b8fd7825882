"""The fourteen cases of the original health-check contract, each against real evidence.

Worker states come from real worker processes (or reports captured from them in
tests/reports/); the endpoint cases use a real HTTP server; ops-alerts cases use real
verdicts. Several repeat, in the contract's own words, what other modules test in depth.
"""

from __future__ import annotations

import pytest

from celery_probe.testing import CeleryWorker, free_port
from tests.support.environment import APPS, app_env

SEED_KEYS = {"worker_alive", "active_tasks", "scheduled_tasks", "queue_length", "last_heartbeat", "status"}


@pytest.fixture(scope="module")
def env(module_target):
    return module_target.env()


@pytest.fixture(scope="module")
def worker(env):
    with CeleryWorker("probe_test_app", name="seed@%h", env=env, pythonpath=[APPS],
                      queues=[env["PROBE_TEST_DEFAULT_QUEUE"]]) as w:
        yield w


def probe(cli, env, *extra):
    return cli("run", "-A", "probe_test_app", "--deadline", "2", "--format", "json", *extra, env=env)


def test_healthy_state(worker, env, cli):
    """Normal queue, worker alive: healthy."""
    verdict = probe(cli, env).verdict()
    assert verdict["status"] == "healthy" and verdict["worker_alive"] is True
    assert SEED_KEYS <= set(verdict) and verdict["queue_length"] < 100


def test_down_state_exception(cli, http_server):
    """An unexpected exception talking to the 'broker' (an HTTP server, not Redis): down."""
    port = http_server.server_address[1]
    result = probe(cli, app_env(f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"))
    verdict = result.verdict()
    assert result.code == 2 and verdict["reasons"][0]["code"] == "celery_broker_unreachable"
    assert "Traceback" not in result.stderr


def test_empty_worker_responses(env, cli):
    """No worker at all answers (an empty reply list): down, with nulls, not zeros or a crash."""
    port = free_port()
    result = probe(cli, app_env(f"redis://127.0.0.1:{port}/0"))
    assert result.code == 2
    shape = {k: result.verdict()[k] for k in SEED_KEYS}
    assert shape["worker_alive"] is False and shape["last_heartbeat"] is None
    assert shape["active_tasks"] is None and shape["scheduled_tasks"] is None


def test_health_endpoint_returns_status(worker, env, cli, http_server):
    """The endpoint probe reads the status a health endpoint returns."""
    verdict = probe(cli, env, "--endpoint", http_server.url("/degraded")).verdict()
    assert verdict["endpoints"][0]["status"] == "degraded" and verdict["endpoints"][0]["http_status"] == 200


def test_health_endpoint_healthy(worker, env, cli, http_server):
    """An endpoint reporting healthy keeps the verdict healthy."""
    result = probe(cli, env, "--endpoint", http_server.url("/healthy"))
    assert result.code == 0 and result.verdict()["status"] == "healthy"


def test_health_endpoint_down(worker, env, cli, http_server):
    """An endpoint reporting down is celery_endpoint_down."""
    result = probe(cli, env, "--endpoint", http_server.url("/down"))
    assert result.code == 3 and result.codes() == {"celery_endpoint_down"}

"""Workers that sign their messages (Celery's ``auth`` serializer) refuse an unsigned probe.

``app.setup_security()`` disables every decoder but ``auth``: such a worker refuses the
unsigned remote-control ping of ``-b`` mode (``ContentDisallowed`` in its log) and never
answers. It is alive, so the verdict must not be ``down``; its signed heartbeats are the
evidence. With ``-A`` and the app's security settings the probe signs and stays healthy.
A frozen signed worker sends no heartbeats and is still ``down``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pytest

from celery_probe.testing import CeleryWorker, RedisServer
from tests.support.environment import APPS, CliResult, app_env

REFUSE = "celery_workers_refuse_unsigned"


def make_keys(folder):
    """tests/apps/signing_keys.make_keys (tests/apps is not on the test process's path)."""
    sys.path.insert(0, str(APPS))
    try:
        from signing_keys import make_keys as make
    finally:
        sys.path.remove(str(APPS))
    return make(folder)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, dict[str, str], CeleryWorker]]:
    """A private Redis and one solo worker of tests/apps/signed_app, heartbeats on."""
    keys = make_keys(tmp_path_factory.mktemp("keys"))
    with RedisServer() as redis:
        env = app_env(redis.url(0), redis.url(1), **keys)
        worker = CeleryWorker("signed_app", name="signed@%h", env=env, pythonpath=[APPS], heartbeat=True)
        try:
            worker.start(timeout=40)
            yield redis, env, worker
        finally:
            worker.close()

def _bare(cli: Callable[..., CliResult], redis: RedisServer, *extra: str) -> CliResult:
    return cli("run", "-b", redis.url(0), "--backend", redis.url(1), "--format", "json", *extra)

class TestBrokerOnly:
    """``-b`` against signed workers: unknown with its own reason, never down."""

    def test_refusal_is_not_down(self, signed, cli):
        redis, _env, worker = signed
        result = _bare(cli, redis)
        with redis.client(0) as client:  # the heartbeat listener left nothing behind
            assert not client.exists("_kombu.binding.celeryev", "_kombu.binding_permanent.celeryev")
            assert client.zscore("_kombu.binding_deadlines", "celeryev") is None
        verdict = result.verdict()
        assert "ContentDisallowed" in worker.log_tail(200)  # the worker refused our ping
        assert verdict["status"] == "unknown", verdict["reasons"]
        assert result.code == 4
        root = [r for r in verdict["reasons"] if r["code"] == REFUSE]
        assert root and root[0]["severity"] == "error"
        assert "signed@" in root[0]["message"] and "-A" in root[0]["message"]
        assert not [r for r in verdict["reasons"] if r["severity"] in ("critical", "degraded")], verdict["reasons"]

    def test_consequences_do_not_turn_it_down(self, signed, cli):
        """The round trip that depends on the workers is a consequence, of error severity."""
        redis, _env, _worker = signed
        verdict = _bare(cli, redis).verdict()
        later = [r for r in verdict["reasons"] if r["message"].startswith("not attempted")]
        assert later, verdict["reasons"]
        assert {r["severity"] for r in later} == {"error"}
        assert {r["code"] for r in later} == {REFUSE}

    def test_frozen_signed_worker_is_still_down(self, signed, cli):
        """A frozen worker sends no heartbeats: no evidence that it lives, so down as before."""
        redis, _env, worker = signed
        worker.freeze()
        try:
            verdict = _bare(cli, redis).verdict()
        finally:
            worker.thaw()
        assert verdict["status"] == "down", verdict["reasons"]
        assert "celery_worker_down" in {r["code"] for r in verdict["reasons"]}

class TestWithTheApp:
    """``-A`` with the app's security settings signs the probe's messages: healthy."""

    def test_signed_app_is_healthy(self, signed, cli):
        redis, env, _worker = signed
        result = cli("run", "-A", "signed_app", "--format", "json", env=env)
        verdict = result.verdict()
        assert verdict["status"] == "healthy", verdict["reasons"]
        assert verdict["queues"]["celery"]["roundtrip_ms"] is not None

def test_no_worker_at_all_stays_down_and_quick(redis_server, cli):
    """No worker ever listened: no wait for heartbeats, down within the usual time."""
    result = cli("run", "-b", redis_server.url(0), "--backend", redis_server.url(1), "--format", "json")
    verdict = result.verdict()
    assert verdict["status"] == "down"
    assert "celery_worker_down" in {r["code"] for r in verdict["reasons"]}
    assert result.elapsed < 4.0

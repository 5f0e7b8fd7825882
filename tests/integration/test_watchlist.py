"""Without -Q, the probe watches every queue tasks can reach: routed ones and consumed ones."""

from __future__ import annotations

import json
import sys

import pytest

from tests.support.environment import APPS, app_env

DEADLINE = "3"


def routed_env(target, **extra: str) -> tuple[dict[str, str], dict[str, str]]:
    """The routed app's environment, with queue names of this test's own."""
    names = {key: target.queue(key) for key in ("math", "media", "feeds")}
    env = target.env(PROBE_TEST_ROUTE_QUEUES=",".join(f"{k}={v}" for k, v in names.items()), **extra)
    return env, names


def send_routed(target, names: dict[str, str], task: str, count: int) -> None:
    """Send ``task`` the way the routed app would: through Celery's own router."""
    sys.path.insert(0, str(APPS))
    try:
        import routed_app
    finally:
        sys.path.remove(str(APPS))
    client = target.client(backend=False)
    client.conf.task_routes = routed_app.build_routes(names)
    for _ in range(count):
        client.send_task(task, args=(1, 1))


class TestRoutedQueues:
    """A queue named only in task_routes is watched: its backlog without a consumer is found."""

    def test_routed_backlog_without_consumer_is_down_without_q(self, target, start_worker, cli):
        env, names = routed_env(target)
        start_worker(env)  # consumes the default queue only, as a worker without -Q math would
        send_routed(target, names, "routed.add", 150)
        result = cli("run", "-A", "routed_app", "--deadline", DEADLINE, "--format", "json", env=env)
        verdict = result.verdict()
        assert result.code == 2, json.dumps(verdict["reasons"], indent=1)
        assert result.codes() == {"celery_queue_unconsumed", "celery_queue_high"}
        unconsumed = next(r for r in verdict["reasons"] if r["code"] == "celery_queue_unconsumed")
        assert f"{names['math']}=150" in unconsumed["message"]
        # Every routed queue is watched; the empty ones without a consumer fail nothing.
        assert {names["math"], names["media"], names["feeds"], target.default_queue} <= set(verdict["queues"])
        assert verdict["queues"][target.default_queue]["roundtrip_ms"] is not None

    def test_routed_queues_empty_and_unconsumed_stay_healthy(self, target, start_worker, cli):
        env, names = routed_env(target)
        start_worker(env)
        result = cli("run", "-A", "routed_app", "--deadline", DEADLINE, "--format", "json", env=env)
        verdict = result.verdict()
        assert result.code == 0, json.dumps(verdict["reasons"], indent=1)
        assert names["feeds"] in verdict["queues"]

    def test_router_function_gets_a_note(self, target, start_worker, cli):
        env, _names = routed_env(target, PROBE_TEST_ROUTER_FUNCTION="1")
        start_worker(env)
        result = cli("run", "-A", "routed_app", "--deadline", DEADLINE, "--format", "json", env=env)
        verdict = result.verdict()
        assert result.code == 0, json.dumps(verdict["reasons"], indent=1)
        note = next(r for r in verdict["reasons"] if r["code"] == "celery_routes_unlisted")
        assert note["severity"] == "info"
        assert "routed_app.route_reports" in note["message"] and "-Q" in note["message"]


class TestConsumedQueues:
    """A queue that only a worker's -Q names is watched once the worker answered."""

    def test_queue_only_a_worker_consumes_gets_a_round_trip(self, target, start_worker, cli):
        env = target.env()
        side = target.queue("side")
        start_worker(env, queues=(target.default_queue, side))
        result = cli("run", "-A", "probe_test_app", "--deadline", DEADLINE, "--format", "json", env=env)
        verdict = result.verdict()
        assert result.code == 0, json.dumps(verdict["reasons"], indent=1)
        assert verdict["queues"][side]["consumers"] == 1
        assert verdict["queues"][side]["roundtrip_ms"] is not None

    @pytest.mark.redis_only  # -b uses Celery's default control exchange; the shared RabbitMQ's tests do not
    def test_broker_mode_finds_the_workers_queues(self, redis_server, start_worker, cli):
        """With -b and no app only "celery" is known beforehand; the workers' -Q is learnt."""
        env = app_env(redis_server.url(0), redis_server.url(1))
        start_worker(env, queues=("celery", "side"))
        result = cli("run", "-b", redis_server.url(0), "--backend", redis_server.url(1),
                     "--deadline", DEADLINE, "--format", "json")
        verdict = result.verdict()
        assert result.code == 0, json.dumps(verdict["reasons"], indent=1)
        assert verdict["queues"]["side"]["roundtrip_ms"] is not None

    @pytest.mark.redis_only  # see TestManyQueues in test_queues.py: rotation timing on RabbitMQ
    def test_rotation_over_grown_list_covers_every_queue(self, target, start_worker, cli):
        env = target.env()
        queues = [target.queue(f"grown{i}") for i in range(3)]
        start_worker(env, queues=(target.default_queue, *queues))
        covered: list[str] = []
        for _ in range(4):
            result = cli("run", "-A", "probe_test_app", "--roundtrip-max-queues", "1",
                         "--deadline", DEADLINE, "--format", "json", env=env)
            verdict = result.verdict()
            assert result.code == 0, verdict["reasons"]
            covered += [n for n, q in verdict["queues"].items() if q.get("roundtrip_ms") is not None]
        assert sorted(covered) == sorted([target.default_queue, *queues])

"""``-b`` without ``-Q``: the default queue ``celery`` is only a guess, not a requirement.

With a broker URL alone the probe knows no app configuration, so it watches ``celery``
because that is Celery's default. Workers that consume only other queues (``-Q math``)
do not make an empty, unconsumed ``celery`` a failed round trip; messages waiting there
are still ``celery_queue_unconsumed``.
"""

from __future__ import annotations

from celery import Celery

from tests.support.environment import app_env

DEADLINE = "3"


def _run(cli, redis_server):
    return cli("run", "-b", redis_server.url(0), "--backend", redis_server.url(1),
               "--deadline", DEADLINE, "--format", "json")


class TestGuessedDefaultQueue:
    def test_workers_on_other_queues_only_are_healthy(self, redis_server, start_worker, cli):
        start_worker(app_env(redis_server.url(0), redis_server.url(1)), queues=("math",))
        result = _run(cli, redis_server)
        verdict = result.verdict()
        assert verdict["status"] == "healthy", verdict["reasons"]
        assert verdict["queues"]["math"]["roundtrip_ms"] is not None
        assert verdict["queues"]["celery"]["length"] == 0  # still watched

    def test_messages_in_the_guessed_queue_are_still_unconsumed(self, redis_server, start_worker, cli):
        start_worker(app_env(redis_server.url(0), redis_server.url(1)), queues=("math",))
        client = Celery(broker=redis_server.url(0), set_as_current=False)
        for _ in range(3):
            client.send_task("probe_test.sleep", args=(0,), queue="celery")
        result = _run(cli, redis_server)
        assert result.code == 2
        assert result.codes() == {"celery_queue_unconsumed"}, result.verdict()["reasons"]
        unconsumed = next(r for r in result.verdict()["reasons"] if r["code"] == "celery_queue_unconsumed")
        assert "celery=3" in unconsumed["message"]

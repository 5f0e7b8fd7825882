"""Per-task backlog: the head of each queue, sampled and counted by task name."""

from __future__ import annotations

import json

import pytest
from celery import Celery

from celery_probe.probing.backlog import (
    sample_backlog,
)
from celery_probe.probing.broker import measure_queues, open_connection
from celery_probe.testing import wait_until
from tests.support.environment import app_env

DEADLINE = "2"


def client_for(redis_server, transport_options: dict | None = None) -> Celery:
    app = Celery(broker=redis_server.url(0), backend=redis_server.url(1), set_as_current=False)
    app.conf.broker_transport_options = transport_options or {}
    return app


def send(client: Celery, queue: str, task: str, count: int, priority: int | None = None) -> None:
    for _ in range(count):
        client.send_task(task, args=(0,), queue=queue, priority=priority)


def sample(client: Celery, queues: list[str], size: int):
    conn = open_connection(client)
    try:
        return sample_backlog(conn, measure_queues(conn, queues), size)
    finally:
        conn.release()


class TestSampleOnRedis:
    """Read from a real Redis filled by a real Celery client (kombu's own layout)."""

    def test_whole_queue_counted_when_smaller_than_the_sample(self, redis_server):
        client = client_for(redis_server)
        send(client, "side", "app.a", 30)
        send(client, "side", "app.b", 20)
        send(client, "side", "app.c", 10, priority=9)
        result = sample(client, ["side", "empty"], 100)
        assert result.available
        assert result.queues["side"].by_task == {"app.a": 30, "app.b": 20, "app.c": 10}
        assert result.queues["side"].sampled == 60
        assert result.queues["empty"].sampled == 0 and result.queues["empty"].by_task == {}

    def test_sample_is_the_head_in_consumption_order(self, redis_server):
        """The oldest messages of the first priority list are the next to be taken."""
        client = client_for(redis_server)
        send(client, "side", "app.a", 30)
        send(client, "side", "app.b", 20)
        send(client, "side", "app.c", 10, priority=9)
        assert sample(client, ["side"], 25).queues["side"].by_task == {"app.a": 25}
        head = sample(client, ["side"], 55).queues["side"]
        assert head.by_task == {"app.a": 30, "app.b": 20, "app.c": 5} and head.sampled == 55
        # Reading takes nothing away.
        with redis_server.client() as raw:
            assert raw.llen("side") == 50 and raw.llen("side\x06\x169") == 10

    def test_global_keyprefix_and_priority_steps(self, redis_server):
        options = {"global_keyprefix": "pfx:", "priority_steps": list(range(10)), "sep": ":"}
        client = client_for(redis_server, options)
        send(client, "side", "app.a", 4, priority=5)
        send(client, "side", "app.b", 3)
        with redis_server.client() as raw:
            assert raw.llen("pfx:side:5") == 4 and raw.llen("pfx:side") == 3
        head = sample(client, ["side"], 100).queues["side"]
        assert head.by_task == {"app.a": 4, "app.b": 3} and head.sampled == 7

    def test_other_transports_say_it_is_not_available(self):
        client = Celery(broker="memory://", set_as_current=False)
        result = sample(client, ["celery"], 100)
        assert not result.available and "Redis transport" in result.reason and "memory" in result.reason


class TestProbeRun:
    """Through `celery-probe run`: the verdict's fields and the celery_queue_high message."""

    def test_queue_high_names_the_top_tasks(self, redis_server, start_worker, cli):
        env = app_env(redis_server.url(0), redis_server.url(1))
        start_worker(env, queues=("celery", "bulk"), pool="prefork", concurrency=1)
        client = client_for(redis_server)
        client.send_task("probe_test.sleep", args=(30,), queue="bulk")

        def running() -> bool:
            active = client.control.inspect(timeout=0.5).active() or {}
            return sum(len(v) for v in active.values()) == 1

        wait_until(running, timeout=20, what="long task running")
        send(client, "bulk", "probe_test.sleep", 75)
        send(client, "bulk", "probe_test.report", 40)
        result = cli("run", "-A", "probe_test_app", "-Q", "celery,bulk", "--deadline", DEADLINE,
                     "--format", "json", env=env)
        verdict = result.verdict()
        assert "celery_queue_high" in result.codes(), json.dumps(verdict["reasons"], indent=1)
        bulk = verdict["queues"]["bulk"]
        assert bulk["backlog_sampled"] == 100
        # One sleep may sit prefetched by the worker, so the head holds 74 or 75 of them.
        assert bulk["backlog_by_task"]["probe_test.sleep"] in (74, 75)
        assert sum(bulk["backlog_by_task"].values()) == 100
        high = next(r for r in verdict["reasons"] if r["code"] == "celery_queue_high")
        assert "bulk=" in high["message"] and "threshold 100" in high["message"]
        assert "top tasks in 100 sampled: probe_test.sleep 7" in high["message"]
        assert "probe_test.report 2" in high["message"]
        assert verdict["queues"]["celery"]["backlog_by_task"] == {}

    def test_sample_size_flag_and_off(self, redis_server, cli):
        env = app_env(redis_server.url(0), redis_server.url(1))
        client = client_for(redis_server)
        send(client, "side", "app.a", 8)
        send(client, "side", "app.b", 4)
        small = cli("run", "-A", "probe_test_app", "-Q", "side", "--deadline", DEADLINE,
                    "--backlog-sample", "10", "--format", "json", env=env).verdict()
        assert small["queues"]["side"]["backlog_by_task"] == {"app.a": 8, "app.b": 2}
        assert small["queues"]["side"]["backlog_sampled"] == 10
        off = cli("run", "-A", "probe_test_app", "-Q", "side", "--deadline", DEADLINE, "--format", "json",
                  env={**env, "CELERY_PROBE_BACKLOG_SAMPLE": "0"}).verdict()
        assert "backlog_by_task" not in off["queues"]["side"]
        assert off["queues"]["side"]["length"] == 12

    def test_not_redis_is_silent(self, cli):
        """Not available by design on other brokers: no note on every run, just no sample."""
        result = cli("run", "-A", "probe_test_app", "--deadline", "1", "--format", "json",
                     env=app_env("memory://"))
        assert not [r for r in result.verdict()["reasons"] if "backlog" in r["code"]], result.stdout
        assert "backlog_by_task" not in result.verdict()["queues"].get("celery", {})


class TestNoNoiseButRealFailures:
    """Not sampling where it cannot be done is silent; failing to sample where it can is not."""

    @pytest.mark.rabbitmq_only
    def test_a_rabbitmq_run_has_no_backlog_note(self, target, start_worker, cli):
        env = target.env()
        start_worker(env)
        result = cli("run", "-A", "probe_test_app", "--deadline", DEADLINE, "--format", "json", env=env)
        verdict = result.verdict()
        assert result.code == 0, json.dumps(verdict["reasons"], indent=1)
        assert not [r for r in verdict["reasons"] if "backlog" in r["code"]], verdict["reasons"]

    def test_a_refused_read_on_redis_is_still_reported(self, redis_server, cli):
        client = client_for(redis_server)
        send(client, "side", "app.a", 3)
        with redis_server.client() as admin:
            admin.execute_command("ACL", "SETUSER", "default", "-lrange")
        result = cli("run", "-A", "probe_test_app", "-Q", "side", "--deadline", DEADLINE, "--format", "json",
                     env=app_env(redis_server.url(0), redis_server.url(1)))
        [reason] = [r for r in result.verdict()["reasons"] if r["code"] == "celery_backlog_unreadable"]
        assert reason["severity"] == "degraded" and "lrange" in reason["message"].lower()

"""A worker that names no queue for a moment is asked again; one that consumes nothing stays down.

Just after " ready.", or while it reconnects to the broker, a worker's consumer can answer
``active_queues`` with no queue at all. One such answer is no evidence that its queues have
no consumer: the probe asks that worker once more before saying so.
"""

from __future__ import annotations

import time

from celery_probe.testing import wait_until


def probe(cli, env):
    return cli("run", "-A", "probe_test_app", "--deadline", "5", "--format", "json", env=env)


class TestConsumerRestart:
    def test_probes_right_after_start_are_not_down(self, target, start_worker, cli):
        env = target.env()
        for attempt in range(3):
            worker = start_worker(env, name=f"w{attempt}@%h")
            result = probe(cli, env)
            assert result.verdict()["status"] != "down", result.verdict()["reasons"]
            worker.close()

    def test_a_cancelled_consumer_is_still_down(self, target, start_worker, cli):
        env = target.env()
        worker = start_worker(env)
        client = target.client()
        try:
            client.control.cancel_consumer(target.default_queue, destination=[worker.name], reply=True, timeout=5)

            def cancelled() -> bool:
                found = client.control.inspect(destination=[worker.name], timeout=1).active_queues() or {}
                return worker.name in found and not found[worker.name]

            wait_until(cancelled, timeout=15, what="the consumer cancelled")
            started = time.monotonic()
            result = probe(cli, env)
        finally:
            client.close()
        verdict = result.verdict()
        assert verdict["status"] == "down", verdict["reasons"]
        assert "no worker consumes this queue" in verdict["reasons"][0]["message"]
        assert time.monotonic() - started < 5 + 1 + 1.5

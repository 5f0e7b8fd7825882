"""The ping and the five inspect questions go out at once and come back in one round."""

from __future__ import annotations

import time

import pytest

from celery_probe.probing.workers import ask_workers, ping_workers
from celery_probe.testing import CeleryWorker
from tests.support.environment import APPS


@pytest.fixture(scope="module")
def env(module_target):
    return module_target.env()


@pytest.fixture(scope="module")
def worker(env, module_target):
    with CeleryWorker("probe_test_app", name="round@%h", env=env, pythonpath=[APPS],
                      queues=[module_target.default_queue]) as w:
        yield w


@pytest.fixture
def client(module_target):
    app = module_target.client()
    yield app
    app.close()


class TestOneRound:
    def test_every_answer_comes_in_one_round_that_ends_on_the_last_one(self, worker, client, module_target):
        ping, activity = ask_workers(client, window=5.0, expect=1, budget=10.0, patience=5.0)
        assert ping.names == [worker.name]
        assert ping.replies[0].latency_ms > 0 and ping.replies[0].answered_at
        assert activity is not None
        assert activity.answered == [worker.name]
        assert activity.queues[worker.name] == [module_target.default_queue]
        assert activity.concurrency[worker.name] == 1
        assert activity.active[worker.name] == 0 and activity.reserved[worker.name] == 0
        # With the expected worker heard in full the round ends at once, not after its 5 s window.
        assert ping.waited_ms < 4000, ping.waited_ms

    def test_without_an_expectation_it_listens_one_idle_window_after_the_last_answer(self, worker, client):
        ping, activity = ask_workers(client, window=0.6, expect=None, budget=10.0, patience=5.0)
        assert ping.names == [worker.name]
        assert activity is not None and activity.answered == [worker.name]
        assert 600 <= ping.waited_ms < 5000, ping.waited_ms

    def test_a_round_ended_by_its_window_is_over_when_the_window_is(self, worker, client):
        # On Redis, closing the round's connection waited for the BRPOP in flight to reach
        # its own 1 s timeout on the server: 0.9 s more than a 0.1 s window, at every run.
        for _ in range(2):  # bounded: the second round starts on a connection pool already warm
            started = time.perf_counter()
            ping, _activity = ask_workers(client, window=0.1, expect=None, budget=10.0, patience=2.0)
            total_ms = (time.perf_counter() - started) * 1000
            assert ping.names == [worker.name]
            assert total_ms - ping.waited_ms < 450, (round(total_ms), ping.waited_ms)

    def test_an_expected_worker_that_is_missing_ends_the_round_after_the_window(self, worker, client):
        ping = ping_workers(client, window=0.6, expect=2, budget=10.0)
        assert ping.names == [worker.name] and ping.expected == 2
        assert 600 <= ping.waited_ms < 5000, ping.waited_ms

    def test_rounds_one_after_another_do_not_mix_their_answers(self, worker, client):
        for _ in range(3):  # bounded: each round is its own reply tickets on its own connection
            ping, activity = ask_workers(client, window=0.3, expect=None, budget=5.0, patience=2.0)
            assert ping.names == [worker.name] and len(ping.replies) == 1
            assert activity is not None and activity.concurrency == {worker.name: 1}


class TestAWorkerThatOwesAnAnswer:
    def test_the_round_waits_its_patience_for_it_then_ends_with_what_came(self, target):
        slow = target.env(SLOW_STATS_SECONDS="4")  # a broker of its own: no other worker answers
        with CeleryWorker("slow_stats_app", name="slowstats@%h", env=slow, pythonpath=[APPS],
                          queues=[target.default_queue]) as worker:
            app = target.client()
            try:
                ping, activity = ask_workers(app, window=0.3, expect=1, budget=10.0, patience=1.0)
            finally:
                app.close()
        assert ping.names == [worker.name]
        assert activity is not None
        # Its other answers came; the one it owed did not, and the round did not wait 4 s for it.
        assert activity.answered == [worker.name]
        assert activity.queues[worker.name] == [target.default_queue]
        assert worker.name not in activity.concurrency
        assert 1000 <= ping.waited_ms < 3500, ping.waited_ms

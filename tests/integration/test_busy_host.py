"""A busy host is not a dead broker: the prober's own lack of time gives unknown, never down.

The host of these tests is made busy for real: CPU-bound processes, five per core, as on a
worker host whose prefork children all run CPU-bound tasks. The prober's start-up then
takes most of a short deadline, and the waits after it get a sliver of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from celery_probe.probing.deadline import Deadline, Wait, run_queue_delay
from tests.support.environment import app_env
from tests.support.faults import cpu_hogs as hogs

HOGS_PER_CORE = 5


@pytest.fixture
def cpu_hogs() -> Iterator[None]:
    with hogs(HOGS_PER_CORE * (os.cpu_count() or 1)):
        yield


class TestFairWait:
    """A wait is judged by the time the service had, not by the prober's wall clock."""

    def test_run_queue_delay_grows_while_the_cpu_is_taken(self, cpu_hogs):
        before = run_queue_delay()
        if before is None:
            pytest.skip("no /proc/self/schedstat on this kernel")
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            pass
        assert run_queue_delay() - before > 0.05

    def test_a_wait_less_its_cpu_wait_is_what_counts(self):
        deadline = Deadline(5.0)
        wait = Wait(deadline, "the broker", started=100.0, delay_at_start=10.0, ended=101.5, delay_at_end=11.0)
        assert wait.wall == pytest.approx(1.5) and wait.effective == pytest.approx(0.5)
        assert deadline.fair_wait() == pytest.approx(1.0)
        assert not wait.fair()
        assert "the broker had 0.50s of the 1.00s it needs" in str(wait.starved())

    def test_fair_wait_is_a_share_of_short_deadlines(self):
        assert Deadline(2.0).fair_wait() == pytest.approx(0.4)
        assert Deadline(30.0).fair_wait() == pytest.approx(1.0)

    def test_a_sleeping_wait_is_fair(self):
        deadline = Deadline(5.0)
        with deadline.wait("the broker") as wait:
            time.sleep(1.05)
        assert wait.fair()


@pytest.mark.slow
class TestBusyHost:
    """Ten CPU-bound processes on two cores: a healthy deployment is never reported down."""

    def test_no_false_down_under_cpu_contention(self, target, start_worker, cli, cpu_hogs):
        env = target.env()
        start_worker(env, pool="prefork", concurrency=2)
        seen = []
        for _ in range(4):
            result = cli("run", "-A", "probe_test_app", "--deadline", "2.5", "--format", "json", env=env)
            verdict = result.verdict()
            seen.append((verdict["status"], sorted(result.codes()), verdict["reasons"][:1]))
        assert not [s for s in seen if s[0] == "down"], seen
        for status, codes, _first in seen:
            assert status in ("healthy", "unknown"), seen
            if status == "unknown":
                assert codes == ["celery_probe_starved"], seen

    @pytest.mark.redis_only
    def test_frozen_broker_is_still_down_on_a_quiet_host(self, redis_server, cli):
        env = app_env(redis_server.url(0), redis_server.url(1))
        redis_server.freeze()
        try:
            result = cli("run", "-A", "probe_test_app", "--deadline", "3", "--format", "json", env=env)
        finally:
            redis_server.thaw()
        verdict = result.verdict()
        assert verdict["status"] == "down", verdict["reasons"]
        assert verdict["reasons"][0]["code"] == "celery_broker_unreachable"

"""Per-probe timeouts of operators' probes: the marker rules and the fairness of a timer."""

from __future__ import annotations

import re
import time

import pytest

from celery_probe.probing.deadline import Deadline, ProbeTimeout, Wait, alarm, run_queue_delay
from celery_probe.pytest_plugin.timeouts import ProbeTimer
from celery_probe.pytest_plugin.timeouts import _check_marker as check_timeout_marker


class TestTimeoutMarkerRules:
    """Every marker pytest-timeout would refuse (ending the session) is found first."""

    @pytest.mark.parametrize("args, kwargs, words", [
        ((), {}, "needs a number of seconds"),
        (("soon",), {}, "not 'soon'"),
        (([1],), {}, "not [1]"),
        ((True,), {}, "not True"),
        ((-1,), {}, "0 (none) or more seconds"),
        ((float("nan"),), {}, "0 (none) or more seconds"),
        ((1, "sigalrm"), {}, "method must be one of"),
        ((1,), {"timeout": 2}, "each once"),
        ((1, "signal", 3), {}, "each once"),
        ((1,), {"func_only": "yes"}, "func_only must be True or False"),
        ((1,), {"disable_debugger_detection": True}, "not 'disable_debugger_detection'"),
    ])
    def test_refused(self, args, kwargs, words):
        with pytest.raises(ValueError, match=re.escape(words)):
            check_timeout_marker(args, kwargs)

    @pytest.mark.parametrize("args, kwargs", [((1,), {}), ((0,), {}), (("2.5",), {}), ((), {"timeout": 1}),
                                              ((1, "thread"), {}), ((1,), {"func_only": True}),
                                              ((None,), {"method": "signal"})])
    def test_accepted(self, args, kwargs):
        check_timeout_marker(args, kwargs)


class TestTimeoutFairness:
    """A probe's own timeout counts against it only if the host gave it the time (at most 1 s)."""

    def timer(self, seconds, ran, cpu_wait, deadline=5.0):
        """A timer set ``ran`` seconds ago, ``cpu_wait`` of which went to waiting for a CPU."""
        clock = Deadline(deadline)
        now = run_queue_delay()
        if now is None:
            pytest.skip("no /proc/self/schedstat here")
        wait = Wait(clock, "the timeout", time.monotonic() - ran, now - cpu_wait)
        return ProbeTimer(seconds, "its timeout marker", wait)

    def test_a_probe_that_had_its_time_timed_out(self):
        timer = self.timer(0.5, ran=0.5, cpu_wait=0.0)
        assert timer.fair() and timer.left() == 0.0

    def test_a_probe_whose_time_went_to_other_processes_is_starved(self):
        timer = self.timer(0.5, ran=0.5, cpu_wait=0.4)
        assert not timer.fair()
        assert "the timeout had 0.10s of the 0.50s it needs" in str(timer.starved())

    def test_a_long_timeout_needs_only_the_fair_wait(self):
        timer = self.timer(30, ran=30, cpu_wait=28.5, deadline=60)
        assert timer.needed() == 1.0 and timer.fair()


class TestCutShortByTheProbesTimeout:
    """A measurement cut by a probe's own timeout proves nothing about the broker: never cached as down."""

    def test_an_inner_alarm_cut_by_a_probe_timeout_says_so(self):
        with pytest.raises(ProbeTimeout) as cut:
            with alarm(0.1, "the probe", probe_timeout=True):
                with alarm(2.0, "the broker connection"):
                    time.sleep(1)
        assert cut.value.cut_short

    def test_an_inner_alarm_that_had_its_own_time_is_not_cut_short(self):
        with pytest.raises(ProbeTimeout) as fired:
            with alarm(2.0, "the probe", probe_timeout=True):
                with alarm(0.1, "the broker connection"):
                    time.sleep(1)
        assert not fired.value.cut_short

    def test_the_runs_deadline_cutting_an_alarm_is_the_deadline(self):
        with pytest.raises(ProbeTimeout) as fired:
            with alarm(0.1, "the setup"):
                with alarm(2.0, "the broker connection"):
                    time.sleep(1)
        assert not fired.value.cut_short

    def test_a_cut_short_measurement_is_measured_again(self):
        from celery import Celery

        from celery_probe.config.settings import Settings
        from celery_probe.probing.measurements import Measurements

        app = Celery(broker="redis://127.0.0.1:1/0", set_as_current=False)
        measurements = Measurements(Settings(broker="redis://127.0.0.1:1/0"), app, Deadline(5))
        calls = []

        def compute() -> str:
            calls.append(1)
            if len(calls) == 1:
                raise ProbeTimeout("deadline reached after 0.10s during the broker connection", cut_short=True)
            return "answered"

        with pytest.raises(ProbeTimeout):
            measurements._once("broker", compute)
        assert measurements._once("broker", compute) == "answered" and len(calls) == 2

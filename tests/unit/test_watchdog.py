"""The run's watchdog: its expiry and the run's own end exclude each other."""

from __future__ import annotations

import threading
import time

from celery_probe.run.in_process import Watchdog


def test_an_expiry_under_way_is_waited_for_by_the_end_of_the_run():
    began = threading.Event()
    steps: list[str] = []

    def give_up() -> None:  # what the real one does: write files, print, then end the process
        began.set()
        time.sleep(0.3)
        steps.append("verdict written to the copy of stdout")

    dog = Watchdog(0.01, give_up)
    with dog:
        assert began.wait(5), "the watchdog did not expire"
    # The run's end (which closes that copy of stdout) came after the give-up was done with it.
    assert steps == ["verdict written to the copy of stdout"]


def test_a_run_that_ends_in_time_is_never_given_up():
    called: list[bool] = []
    with Watchdog(0.2, lambda: called.append(True)):
        pass
    time.sleep(0.4)
    assert called == []


def test_a_paused_watchdog_does_not_expire_until_restarted():
    called = threading.Event()
    dog = Watchdog(0.1, called.set)
    with dog:
        dog.pause()
        assert not called.wait(0.3)
        dog.restart()
        assert called.wait(5)

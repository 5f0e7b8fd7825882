"""Beat health without a beat: judging a tick's age, installing the tick, showing it."""

from __future__ import annotations

import pytest
from celery import Celery

from celery_probe.config.settings import Settings, resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.probing.beat import (
    DEFAULT_KEY,
    SCHEDULE_ENTRY,
    TICK_TASK,
    BeatState,
    RedbeatState,
    install_beat_tick,
    judge_beat,
)
from celery_probe.verdict.mapper import verdict_from_report


class TestJudge:
    """Stale or not, from a measured state: pure."""

    def state(self, **changes) -> BeatState:
        base = {"available": True, "key": DEFAULT_KEY, "store": "broker", "now": 1000.0,
                "last_tick": 990.0, "age_s": 10.0, "worker": "w@h"}
        return BeatState(**{**base, **changes})

    def test_fresh_tick(self):
        assert judge_beat(self.state(), interval=10, grace=2) is None
        assert judge_beat(self.state(age_s=20.0), interval=10, grace=2) is None  # at the limit

    def test_stale_tick(self):
        problem = judge_beat(self.state(age_s=20.5), interval=10, grace=2)
        assert problem == "last beat tick 20.5s ago (run by w@h), expected every 10s (stale after 20s)"

    def test_no_tick_recorded(self):
        problem = judge_beat(self.state(last_tick=None, age_s=None), interval=60, grace=2)
        assert "no beat tick recorded under 'celery-probe:beat:last-tick' in the broker" in problem
        assert "install_beat_tick" in problem

    def test_redbeat_overdue(self):
        red = RedbeatState("redbeat::schedule", "redbeat::lock", lock_ttl_s=None, entries=3,
                           next_entry="nightly", next_run=900.0, overdue_s=100.0)
        problem = judge_beat(self.state(redbeat=red), interval=10, grace=2)
        assert problem == "redbeat entry 'nightly' is 100.0s overdue (no beat holds the redbeat lock)"
        red.overdue_s = 5.0
        assert judge_beat(self.state(redbeat=red), interval=10, grace=2) is None

    def test_mapper_surfaces_the_tick(self):
        measured = {"beat": {"age_s": 1.5, "interval_s": 60.0, "grace": 2.0, "worker": "w@h", "store": "broker",
                             "key": DEFAULT_KEY, "redbeat": {"lock_ttl_s": 12.0, "entries": 2, "overdue_s": -3.0,
                                                             "next_entry": "a", "error": None}}}
        verdict = verdict_from_report({"tests": [{"outcome": "passed", "metadata": {"measured": measured}}]})
        assert verdict["beat"]["last_tick_age_s"] == 1.5 and verdict["beat"]["worker"] == "w@h"
        assert verdict["beat"]["redbeat"]["entries"] == 2
        assert "beat" not in verdict_from_report({"tests": [{"outcome": "passed"}]})


class TestInstall:
    """install_beat_tick registers the task and a beat_schedule entry."""

    def test_task_and_schedule_entry(self):
        app = Celery("t", broker="memory://", set_as_current=False)
        install_beat_tick(app, interval=30, key="ops:tick", queue="ops")
        app.conf.beat_max_loop_interval = 5  # the app is configured after the call: still there
        entry = app.conf.beat_schedule[SCHEDULE_ENTRY]
        assert entry["task"] == TICK_TASK and entry["schedule"] == 30.0
        assert entry["kwargs"] == {"key": "ops:tick", "interval": 30.0}
        assert entry["options"] == {"expires": 30.0, "queue": "ops"}
        app.finalize()
        assert TICK_TASK in app.tasks and app.tasks[TICK_TASK].ignore_result

    @pytest.mark.parametrize("interval, key", [(0, DEFAULT_KEY), (-1, DEFAULT_KEY), (60, "")])
    def test_refuses_nonsense(self, interval, key):
        with pytest.raises(ValueError):
            install_beat_tick(Celery("t", broker="memory://", set_as_current=False), interval=interval, key=key)

    def test_settings(self):
        assert Settings().beat_key == DEFAULT_KEY and Settings().beat_interval is None
        settings = resolve_settings({"beat_interval": "60"}, environ={"CELERY_PROBE_BEAT_GRACE": "3"},
                                    pyproject=False)
        assert settings.beat_interval == 60 and settings.beat_grace == 3
        with pytest.raises(ProbeUsageError, match="beat-grace.*factor between 1 and 1000"):
            resolve_settings({"beat_grace": "0.5"}, environ={}, pyproject=False)
        with pytest.raises(ProbeUsageError, match="beat-interval"):
            resolve_settings({"beat_interval": "soon"}, environ={}, pyproject=False)


def test_text_output_shows_the_tick():
    from celery_probe.present.text import render_text

    text = render_text({"status": "healthy", "beat": {"last_tick_age_s": 3.21, "interval_s": 60.0,
                                                      "store": "broker"}}, colour=False)
    assert "  beat       last tick 3.2s ago (every 60s)" in text
    assert "no tick recorded" in render_text({"status": "down", "beat": {"store": "broker"}}, colour=False)
    assert "beat" not in render_text({"status": "healthy"}, colour=False)

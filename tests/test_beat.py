"""Beat health: the tick that install_beat_tick schedules, read back against Redis' clock."""

from __future__ import annotations

import json
import time

import pytest
from celery import Celery

from celery_probe.config.settings import Settings, resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.probing.beat import (
    DEFAULT_KEY,
    NO_STORE,
    SCHEDULE_ENTRY,
    TICK_TASK,
    BeatState,
    RedbeatState,
    install_beat_tick,
    judge_beat,
    read_beat,
    record_tick,
    redbeat_config,
)
from celery_probe.probing.broker import open_connection
from celery_probe.testing import CeleryBeat, CeleryWorker, wait_until
from celery_probe.verdict.mapper import verdict_from_report
from tests.support.environment import APPS, app_env

DEADLINE = "3"


def read(app: Celery, key: str = DEFAULT_KEY) -> BeatState:
    conn = open_connection(app)
    try:
        return read_beat(app, conn, key, timeout=2)
    finally:
        conn.release()


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


class TestStores:
    """Where the tick lives, written and read against a real Redis."""

    def test_broker_redis_with_the_servers_clock(self, redis_server):
        app = Celery(broker=redis_server.url(0), set_as_current=False)
        app.conf.broker_transport_options = {"global_keyprefix": "pfx:"}  # kombu's, not ours
        assert read(app).last_tick is None
        written = record_tick(app, DEFAULT_KEY, 60, worker="w@h")
        with redis_server.client() as raw:
            stored = json.loads(raw.get(DEFAULT_KEY))
            assert stored == {"at": written, "worker": "w@h", "interval": 60.0}
            assert 86_000 < raw.ttl(DEFAULT_KEY) <= 86_400
        state = read(app)
        assert state.store == "broker" and state.worker == "w@h" and state.tick_interval == 60
        assert 0 <= state.age_s < 2

    def test_result_backend_when_the_broker_is_not_redis(self, redis_server):
        app = Celery(broker="memory://", backend=redis_server.url(1), set_as_current=False)
        record_tick(app, "t:k", 5)
        state = read(app, "t:k")
        assert state.store == "result backend" and state.age_s is not None
        with redis_server.client(1) as raw:
            assert raw.exists("t:k")

    def test_no_store(self):
        app = Celery(broker="memory://", set_as_current=False)
        state = read(app)
        assert not state.available and state.reason == NO_STORE
        with pytest.raises(RuntimeError, match="Redis"):
            record_tick(app, DEFAULT_KEY, 5)

    def test_a_bare_timestamp_is_a_tick(self, redis_server):
        app = Celery(broker=redis_server.url(0), set_as_current=False)
        with redis_server.client() as raw:
            now = raw.time()
            raw.set("hand", f"{now[0] - 30}")
            raw.set("junk", "yesterday")
        assert 29 <= read(app, "hand").age_s < 32
        junk = read(app, "junk")
        assert junk.last_tick is None and "not a beat tick" in judge_beat(junk, 10, 2)


class TestRedbeat:
    """redbeat's lock and schedule, read without redbeat installed."""

    def app(self, redis_server, **conf) -> Celery:
        app = Celery(broker=redis_server.url(0), set_as_current=False)
        app.conf.beat_scheduler = "redbeat.RedBeatScheduler"
        app.conf.update(conf)
        return app

    def test_detection_and_key_names(self, redis_server):
        assert redbeat_config(Celery(broker="memory://", set_as_current=False)) is None
        default = redbeat_config(self.app(redis_server))
        assert default == {"schedule_key": "redbeat::schedule", "lock_key": "redbeat::lock", "url": None}
        custom = redbeat_config(self.app(redis_server, redbeat_key_prefix="rb:", redbeat_lock_key="mylock"))
        assert custom["schedule_key"] == "rb::schedule" and custom["lock_key"] == "rb:mylock"

    def test_overdue_schedule_and_lock(self, redis_server):
        app = self.app(redis_server)
        record_tick(app, DEFAULT_KEY, 10)
        with redis_server.client() as raw:
            now = raw.time()[0]
            raw.zadd("redbeat::schedule", {"nightly": now - 100, "hourly": now + 50})
            raw.set("redbeat::lock", "token", px=60_000)
        state = read(app)
        red = state.redbeat
        assert red.entries == 2 and red.next_entry == "nightly" and 99 <= red.overdue_s < 103
        assert 58 < red.lock_ttl_s <= 60
        problem = judge_beat(state, interval=10, grace=2)
        assert problem.startswith("redbeat entry 'nightly' is 10") and "the redbeat lock is held" in problem
        with redis_server.client() as raw:
            raw.zadd("redbeat::schedule", {"nightly": now + 10})
            raw.delete("redbeat::lock")
        state = read(app)
        assert state.redbeat.lock_ttl_s is None and judge_beat(state, interval=10, grace=2) is None

    def test_own_redis_url(self, redis_server):
        app = self.app(redis_server, redbeat_redis_url=redis_server.url(2))
        with redis_server.client(2) as raw:
            raw.zadd("redbeat::schedule", {"a": raw.time()[0] - 500})
        state = read(app)
        assert state.redbeat.entries == 1 and state.redbeat.overdue_s >= 499

    def test_unreachable_redbeat_redis_is_an_error_not_a_crash(self, redis_server):
        from celery_probe.testing import free_port

        app = self.app(redis_server, redbeat_redis_url=f"redis://127.0.0.1:{free_port()}/0")
        state = read(app)
        assert state.redbeat.error and "Connection" in state.redbeat.error


class TestRealBeat:
    """A real `celery beat` and a real worker: healthy while beat runs, stale once it stops."""

    def test_stale_after_beat_stops(self, redis_server, cli, tmp_path):
        env = app_env(redis_server.url(0), redis_server.url(1), PROBE_TEST_BEAT_INTERVAL="1")
        probe = ("run", "-A", "beat_test_app", "--deadline", DEADLINE, "--format", "json",
                 "--beat-interval", "1", "--beat-grace", "4")
        with CeleryWorker("beat_test_app", name="beat@%h", env=env, pythonpath=[APPS]) as worker, \
                redis_server.client() as raw:
            beat = CeleryBeat("beat_test_app", env=env, pythonpath=[APPS], workdir=tmp_path / "beat")
            with beat:
                wait_until(lambda: raw.get(DEFAULT_KEY), timeout=30, what="first beat tick")
                healthy = cli(*probe, env=env)
                verdict = healthy.verdict()
                assert healthy.code == 0, json.dumps(verdict["reasons"], indent=1) + beat.log_tail()
                assert verdict["beat"]["store"] == "broker" and verdict["beat"]["worker"] == worker.name
                assert verdict["beat"]["last_tick_age_s"] <= 4

                off = cli("run", "-A", "beat_test_app", "--deadline", DEADLINE, "--format", "json", env=env)
                assert off.code == 0 and "beat" not in off.verdict()  # not enabled: skipped

            assert not beat.alive()

            def stale():
                result = cli(*probe, env=env)
                return result if "celery_beat_stale" in result.codes() else None

            started = time.monotonic()
            result = wait_until(stale, timeout=40, interval=0.2, what="celery_beat_stale")
            assert time.monotonic() - started < 30
            verdict = result.verdict()
            assert result.code == 2 and verdict["status"] == "down"
            reason = next(r for r in verdict["reasons"] if r["code"] == "celery_beat_stale")
            assert reason["severity"] == "critical"
            assert "last beat tick" in reason["message"] and "expected every 1s (stale after 4s)" in reason["message"]
            assert verdict["beat"]["last_tick_age_s"] > 4

            worker.stop()
            without_worker = cli(*probe, env=env).verdict()
            beat_reason = next(r for r in without_worker["reasons"] if r["code"] == "celery_beat_stale")
            assert beat_reason["message"].startswith("not attempted: no worker answered ping")
            assert without_worker["reasons"][0]["code"] == "celery_worker_down"


def test_text_output_shows_the_tick():
    from celery_probe.present.text import render_text

    text = render_text({"status": "healthy", "beat": {"last_tick_age_s": 3.21, "interval_s": 60.0,
                                                      "store": "broker"}}, colour=False)
    assert "  beat       last tick 3.2s ago (every 60s)" in text
    assert "no tick recorded" in render_text({"status": "down", "beat": {"store": "broker"}}, colour=False)
    assert "beat" not in render_text({"status": "healthy"}, colour=False)

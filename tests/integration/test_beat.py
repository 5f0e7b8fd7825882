"""Beat health: the tick that install_beat_tick schedules, read back against Redis' clock."""

from __future__ import annotations

import json
import time

import pytest
from celery import Celery

from celery_probe.probing.beat import (
    DEFAULT_KEY,
    NO_STORE,
    BeatState,
    judge_beat,
    read_beat,
    record_tick,
    redbeat_config,
)
from celery_probe.probing.broker import open_connection
from celery_probe.testing import CeleryBeat, CeleryWorker, wait_until
from tests.support.environment import APPS, app_env

DEADLINE = "3"


def read(app: Celery, key: str = DEFAULT_KEY) -> BeatState:
    conn = open_connection(app)
    try:
        return read_beat(app, conn, key, timeout=2)
    finally:
        conn.release()


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

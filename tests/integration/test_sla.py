"""SLA tracking: per-queue round-trip SLAs and per-task-type runtimes from real task events.

The runs are real `celery-probe run` processes against real workers; the workers that
send task events are started with `-E`, as an operator would have to.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.run.child import check_round_trip
from celery_probe.testing import wait_until
from tests.support.environment import app_env, redis_state

SLEEP = 0.3  # seconds each slow task sleeps
WINDOW = "2.5"
DEADLINE = "6"


# ------------------------------------------------------------------ settings


class TestSettings:
    """`--sla`, `--task-sla` and `--events-window` from every layer, and their mistakes."""

    def test_flags_env_and_pyproject_tables(self, tmp_path):
        flags = resolve_settings({"sla": ("celery=2s", "mail=250ms"), "task_sla": ("app.sync.*=2m", "app.ai.*=10s"),
                                  "events_window": "3s", "deadline": "10"}, environ={}, pyproject=False)
        assert flags.sla == (("celery", 2.0), ("mail", 0.25)) and flags.sla_for("mail") == 0.25
        assert flags.task_sla == (("app.sync.*", 120.0), ("app.ai.*", 10.0)) and flags.events_window == 3.0
        env = resolve_settings(environ={"CELERY_PROBE_SLA": "celery=1.5s", "CELERY_PROBE_EVENTS_WINDOW": "2",
                                        "CELERY_PROBE_TASK_SLA": "app.*=1m"}, pyproject=False)
        assert env.sla == (("celery", 1.5),) and env.task_sla == (("app.*", 60.0),) and env.events_window == 2.0
        pyproject = tmp_path / "pyproject.toml"
        pyproject.write_text('[tool.celery-probe]\nevents-window = "2s"\n'
                             '[tool.celery-probe.sla]\ncelery = "2s"\n'
                             '[tool.celery-probe.task-sla]\n"app.sync.*" = "2m"\n')
        table = resolve_settings(environ={}, pyproject=pyproject)
        assert table.sla == (("celery", 2.0),) and table.task_sla == (("app.sync.*", 120.0),)

    def test_survives_the_trip_to_a_served_probe_process(self):
        settings = resolve_settings({"broker": "redis://127.0.0.1:1/0", "sla": ("celery=0.25s", "mail=2m"),
                                     "task_sla": ("app.ai.*=10s",), "events_window": "1.5"},
                                    environ={}, pyproject=False)
        check_round_trip(settings, environ={})  # raises if any of them would arrive changed

    @pytest.mark.parametrize("args, expected", [
        (("--sla", "celery"), "invalid sla 'celery': must be QUEUE=DURATION"),
        (("--sla", "celery=fast"), "invalid sla 'celery=fast': duration 'fast'"),
        (("--sla", "celery=0s"), "more than 0"),
        (("--task-sla", "app.*=10s"), "task-sla needs an events window"),
        (("--events-window", "5"), "invalid events-window 5.0: must leave at least 1s of the 5s deadline"),
        (("--events-window", "soon"), "invalid events-window 'soon'"),
    ])
    def test_bad_values_are_one_line_exit_64(self, cli, args, expected):
        result = cli("run", "-b", "redis://127.0.0.1:1/0", *args)
        assert result.code == 64, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert expected in result.stderr and f"(from {args[0]})" in result.stderr

    def test_bad_environment_value_names_the_variable(self, cli):
        result = cli("run", "-b", "redis://127.0.0.1:1/0", env={"CELERY_PROBE_SLA": "celery=2x"})
        assert result.code == 64
        assert "(from environment variable CELERY_PROBE_SLA)" in result.stderr


# ------------------------------------------------------------------ real runs


@pytest.fixture
def events_env(target) -> Iterator[dict[str, str]]:
    """The test app's environment with an events exchange of this test's own (removed afterwards)."""
    exchange = f"celeryev-{target.suffix}" if target.suffix else "celeryev"
    yield target.env(PROBE_TEST_EVENT_EXCHANGE=exchange)
    if target.kind == "rabbitmq":
        from kombu import Connection

        with Connection(target.broker_url, connect_timeout=5) as conn:
            conn.channel().exchange_delete(exchange)


def _run(cli, env: dict[str, str], queue: str, *args: str) -> Any:
    return cli("run", "-A", "probe_test_app", "-Q", queue, "--expect-workers", "1", "--format", "json",
               "--deadline", DEADLINE, *args, env=env, timeout=30)


class TestQueueSla:
    """The round trip already measured through each queue is judged against its SLA."""

    def test_tiny_sla_is_breached(self, target, start_worker, cli):
        queue = target.default_queue
        start_worker(target.env())
        result = _run(cli, target.env(), queue, "--sla", f"{queue}=0.01ms")
        assert result.code == 3, result.stdout + result.stderr
        verdict = result.verdict()
        assert verdict["status"] == "degraded" and result.codes() == {"celery_sla_breach"}
        [reason] = [r for r in verdict["reasons"] if r["code"] == "celery_sla_breach"]
        latency = verdict["queues"][queue]["roundtrip_ms"]
        assert reason["message"] == f"round trip over SLA: {queue} {latency:.1f} ms > SLA 0.01 ms"
        assert verdict["queues"][queue]["sla_ms"] == 0.01 and verdict["queues"][queue]["sla_breach"] is True

    def test_generous_sla_is_healthy_and_sends_no_extra_task(self, target, start_worker, cli):
        queue = target.default_queue
        worker = start_worker(target.env())
        result = _run(cli, target.env(), queue, "--sla", f"{queue}=30s", "--sla", "elsewhere=1s")
        assert result.code == 0, result.stdout + result.stderr
        verdict = result.verdict()
        assert verdict["queues"][queue]["sla_ms"] == 30000.0 and verdict["queues"][queue]["sla_breach"] is False
        notes = {r["code"]: r["message"] for r in verdict["reasons"] if r["severity"] == "info"}
        assert "elsewhere" in notes["celery_sla_unwatched"]
        processed = target.client().control.inspect(destination=[worker.name], timeout=5).stats() or {}
        assert [s["total"] for s in processed.values()] == [{"celery.accumulate": 1}]  # one round trip, no more

    def test_failed_round_trip_is_not_reported_again_as_a_breach(self, target, cli):
        queue = target.default_queue  # nobody consumes it: no worker at all
        result = _run(cli, target.env(), queue, "--sla", f"{queue}=0.01ms")
        assert result.verdict()["status"] == "down"
        assert "celery_sla_breach" not in {r["code"] for r in result.verdict()["reasons"]
                                           if not r["message"].startswith("not attempted")}


def _keep_sending(client: Any, queue: str, stop: threading.Event, sent: list[str]) -> None:
    """A slow and a fast task every 0.2 s until told to stop (at most 60 of each)."""
    for _ in range(60):
        if stop.wait(0.2):
            return
        # Nobody reads these results: stored, they would stay behind (on RabbitMQ with rpc://,
        # in a reply queue of the shared broker for a day).
        sent.append(client.send_task("probe_test.sleep", args=(SLEEP,), queue=queue, ignore_result=True).id)
        sent.append(client.send_task("celery.accumulate", args=("fast",), queue=queue, ignore_result=True).id)


def _warm_up(target, queue: str) -> None:
    """One task through the -E worker: its first event declares the events exchange."""
    assert target.client().send_task("celery.accumulate", args=("warm",), queue=queue).get(timeout=20) == ["warm"]


class TestTaskRuntimes:
    """Runtimes per task type from the workers' own events, during the events window."""

    def test_slow_type_breaches_fast_type_does_not(self, target, start_worker, cli, events_env):
        queue = target.default_queue
        start_worker(events_env, pool="threads", concurrency=4, extra=("-E",))
        _warm_up(target, queue)
        stop, sent = threading.Event(), []
        sender = threading.Thread(target=_keep_sending, args=(target.client(), queue, stop, sent), daemon=True)
        sender.start()
        try:
            result = _run(cli, events_env, queue, "--events-window", WINDOW,
                          "--task-sla", "probe_test.*=100ms", "--task-sla", "celery.*=1s")
        finally:
            stop.set()
            sender.join(timeout=5)
        assert result.code == 3, result.stdout + result.stderr
        verdict = result.verdict()
        assert result.codes() == {"celery_task_sla_breach"}
        runtimes = verdict["task_runtimes"]
        assert 2.4 <= runtimes["window_s"] <= 2.8 and runtimes["task_events"] > 0
        slow, fast = runtimes["tasks"]["probe_test.sleep"], runtimes["tasks"]["celery.accumulate"]
        assert slow["count"] >= 5, runtimes
        for key in ("p50_ms", "p95_ms", "max_ms"):
            assert SLEEP * 1000 <= slow[key] < SLEEP * 1000 + 100, (key, slow)
        assert (slow["sla_ms"], slow["breach"]) == (100.0, True)
        assert fast["count"] >= 5 and fast["max_ms"] < 100 and (fast["sla_ms"], fast["breach"]) == (1000.0, False)
        [reason] = [r for r in verdict["reasons"] if r["code"] == "celery_task_sla_breach"]
        assert reason["severity"] == "degraded"
        assert reason["message"].startswith(
            f"task runtime over SLA: probe_test.sleep p95 {slow['p95_ms']:.0f} ms, max {slow['max_ms']:.0f} ms "
            f"> SLA 100 ms ({slow['count']} runs)")

    def test_workers_without_events_give_a_note_and_stay_healthy(self, target, start_worker, cli, events_env):
        queue = target.default_queue
        start_worker(events_env)  # no -E
        started = time.monotonic()
        result = _run(cli, events_env, queue, "--events-window", "1.5", "--task-sla", "probe_test.*=1ms")
        assert result.code == 0, result.stdout + result.stderr
        verdict = result.verdict()
        assert verdict["status"] == "healthy"
        [note] = [r for r in verdict["reasons"] if r["code"] == "celery_task_events_missing"]
        assert note["severity"] == "info"
        assert "no task events received" in note["message"] and "start workers with -E" in note["message"]
        assert time.monotonic() - started < float(DEADLINE) + 3

    @pytest.mark.redis_only
    def test_listening_leaves_redis_as_it_was(self, target, start_worker, cli, events_env):
        queue = target.default_queue
        start_worker(events_env, extra=("-E",))
        _warm_up(target, queue)
        _run(cli, events_env, queue, "--events-window", "1")  # kombu's shared bindings now exist
        before = redis_state(target.redis)
        listening = threading.Event()

        def watch() -> None:  # the binding exists while the window is open, and goes after
            wait_until(lambda: any("celeryev" in key for _db, key in redis_state(target.redis)),
                       timeout=15, interval=0.05, what="the events binding")
            listening.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = _run(cli, events_env, queue, "--events-window", "1")
        watcher.join(timeout=20)
        assert result.code == 0 and listening.is_set()
        after = redis_state(target.redis)
        assert {k: v for k, v in after.items() if not k[1].startswith("celery-task-meta-")} == {
            k: v for k, v in before.items() if not k[1].startswith("celery-task-meta-")}

    @pytest.mark.rabbitmq_only
    def test_listening_leaves_no_queue_on_rabbitmq(self, target, start_worker, cli, events_env):
        queue = target.default_queue
        start_worker(events_env, extra=("-E",))
        _warm_up(target, queue)
        exchange = events_env["PROBE_TEST_EVENT_EXCHANGE"]
        result = _run(cli, events_env, queue, "--events-window", "1")
        assert result.code == 0, result.stdout + result.stderr
        assert result.verdict()["task_runtimes"]["window_s"] >= 0.9  # it really listened
        assert _bindings_of(exchange) == []


def _bindings_of(exchange: str) -> list[str]:
    listed = subprocess.run(["rabbitmqctl", "list_bindings", "source_name", "destination_name", "-q"],
                            capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    return [line for line in listed if line.split("\t")[0] == exchange]


@pytest.mark.redis_only
def test_broker_frozen_during_the_window_is_a_verdict_within_the_deadline(redis_server, start_worker, cli):
    """The broker stops answering while the events window is open: the run still ends on time."""
    env = app_env(redis_server.url(0), redis_server.url(1))
    start_worker(env, extra=("-E",))
    deadline, window = 4.0, 3.0
    # Start-up, ping and the round trip take well under a second on a healthy broker, so
    # 1.5 s in the window is open; it would have run until about 3.5 s.
    freezer = threading.Timer(1.5, redis_server.freeze)
    started = time.monotonic()
    freezer.start()
    try:
        result = cli("run", "-A", "probe_test_app", "--expect-workers", "1", "--format", "json",
                     "--deadline", str(deadline), "--events-window", str(window), env=env, timeout=30)
    finally:
        freezer.cancel()
        redis_server.thaw()
    elapsed = time.monotonic() - started
    assert elapsed < deadline + 1.0 + 0.6 + 1.5, (elapsed, result.stdout, result.stderr)  # + 1 s slack + start-up
    assert result.stdout.strip(), (result.code, result.stderr)
    verdict = result.verdict()
    assert verdict["status"] in {"healthy", "degraded", "down"}, verdict
    assert "Traceback" not in result.stderr
    # The window's own result reached the report: closing the listener did not wait on the frozen broker.
    assert verdict["task_runtimes"]["window_s"] > 1.0, verdict
    assert not [r for r in verdict["reasons"] if "test_task_runtimes" in (r["probe"] or "")
                and "timed out" in r["message"]], verdict["reasons"]


@pytest.mark.redis_only
def test_broker_killed_during_the_window_is_one_line(redis_server, start_worker, cli):
    """The broker goes away while the events window is open: the probe says so in one line, no traceback."""
    env = app_env(redis_server.url(0), redis_server.url(1))
    start_worker(env, extra=("-E",))
    killer = threading.Timer(1.5, redis_server.kill)
    killer.start()
    try:
        result = cli("run", "-A", "probe_test_app", "--expect-workers", "1", "--format", "json",
                     "--deadline", "4", "--events-window", "3", env=env, timeout=30)
    finally:
        killer.cancel()
    assert result.elapsed < 4 + 1.0 + 0.6, result.elapsed
    verdict = result.verdict()
    [reason] = [r for r in verdict["reasons"] if "test_task_runtimes" in (r["probe"] or "")]
    assert reason["message"].startswith("events window cut short: "), reason
    assert "\n" not in reason["message"] and "Traceback" not in result.stderr

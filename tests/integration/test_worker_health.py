"""Workers that tell their own health, proven on real worker processes of every pool.

Each worker runs tests/apps/health_app.py (the suite's app plus ``celery_probe.worker.install``)
with ``--probe-dir`` and a 1 s writing interval; every check is ``celery-probe worker-check`` as
a fresh process, as the kubelet runs it, with ``--max-age 5``. Faults of the broker (frozen,
killed, restarted) need a broker of the test's own: a private redis-server (``redis_only``).
The healthy and consumer cases run against the ``--broker`` of the run, RabbitMQ included.
"""

from __future__ import annotations

import os
import signal
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celery_probe.testing import CeleryWorker, RedisServer, wait_until
from tests.support.environment import APPS, Target

MAX_AGE = 5
INTERVAL = "1"
POOLS = ["prefork", "solo", "threads", "gevent"]


def worker_check(folder: Path, kind: str, *extra: str) -> tuple[int, str]:
    """``celery-probe worker-check FOLDER --KIND --max-age 5`` as a process: its exit code and line."""
    proc = subprocess.run(
        [sys.executable, "-m", "celery_probe", "worker-check", str(folder), f"--{kind}",
         "--max-age", str(MAX_AGE), *extra],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def passes(folder: Path, kind: str, *extra: str) -> bool:
    return worker_check(folder, kind, *extra)[0] == 0


def fails(folder: Path, kind: str, *extra: str) -> str | None:
    code, line = worker_check(folder, kind, *extra)
    return line if code == 1 else None


def keeps_passing(folder: Path, kind: str, seconds: float) -> None:
    """The check passes every time it is asked for ``seconds`` (more than its max age)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        code, line = worker_check(folder, kind)
        assert code == 0, line
        time.sleep(0.3)


def keeps_passing_while(folder: Path, kind: str, worker: CeleryWorker, seconds: float) -> None:
    """Like keeps_passing, for a worker that may exit meanwhile (checked only while it runs)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and worker.alive():
        code, line = worker_check(folder, kind)
        assert code == 0 or not worker.alive(), line
        time.sleep(0.3)


@pytest.fixture
def health_worker(tmp_path: Path) -> Iterator[Callable[..., tuple[CeleryWorker, Path]]]:
    """Start health_app workers with a probe folder of their own; all stopped at teardown."""
    started: list[CeleryWorker] = []

    def start(env: dict[str, str], *, pool: str = "prefork", queues: tuple[str, ...] = ("celery",),
              concurrency: int = 2, name: str = "health@%h") -> tuple[CeleryWorker, Path]:
        folder = tmp_path / f"probe-{len(started)}"
        worker = CeleryWorker(
            "health_app", name=name, queues=queues, pool=pool, concurrency=concurrency,
            env={**env, "CELERY_PROBE_WORKER_INTERVAL": INTERVAL}, pythonpath=[APPS],
            extra=("--probe-dir", str(folder)),
        )
        started.append(worker)
        worker.start(timeout=40)
        wait_until(lambda: passes(folder, "readiness"), timeout=20, what="the worker's first ready write")
        return worker, folder

    yield start
    for worker in started:
        worker.close()


# kombu's own advice for a broker that can vanish without closing the connection: without a
# socket timeout, its periodic Redis calls (restoring unacked messages every 10 s) block the
# worker's loop for as long as the broker stays frozen (docs/worker-health.md).
BOUNDED_REDIS = '{"socket_timeout": 2, "socket_connect_timeout": 2}'


def private_redis_env(server: RedisServer) -> dict[str, str]:
    return {"PROBE_TEST_BROKER": server.url(0), "PROBE_TEST_BACKEND": "",
            "PROBE_TEST_TRANSPORT_OPTIONS": BOUNDED_REDIS}


@pytest.mark.parametrize("pool", POOLS)
class TestEveryPool:
    def test_a_healthy_worker_passes_both(self, pool, target: Target, health_worker):
        _worker, folder = health_worker(target.env(), pool=pool, queues=(target.default_queue,))
        code, line = worker_check(folder, "liveness")
        assert code == 0 and line.startswith("liveness: ok"), line
        code, line = worker_check(folder, "readiness")
        assert code == 0 and f"consuming '{target.default_queue}'" in line, line

    def test_a_cancelled_consumer_is_not_ready_until_added_back(self, pool, target: Target, health_worker):
        emails = target.queue("emails")
        worker, folder = health_worker(target.env(), pool=pool, queues=(target.default_queue, emails))
        client = target.client(backend=False)
        try:
            client.control.cancel_consumer(emails, destination=[worker.name], reply=True, timeout=5)
            line = wait_until(lambda: fails(folder, "readiness"), timeout=MAX_AGE + 10,
                              what="readiness failing after cancel_consumer")
            assert f"consumer for queue '{emails}' cancelled" in line, line
            assert passes(folder, "liveness")  # not consuming is no reason to restart
            client.control.add_consumer(emails, destination=[worker.name], reply=True, timeout=5)
            wait_until(lambda: passes(folder, "readiness"), timeout=MAX_AGE + 10,
                       what="readiness again after add_consumer")
        finally:
            client.close()

    def test_a_frozen_worker_fails_liveness_after_max_age(self, pool, target: Target, health_worker):
        worker, folder = health_worker(target.env(), pool=pool, queues=(target.default_queue,))
        worker.freeze()
        try:
            started = time.monotonic()
            line = wait_until(lambda: fails(folder, "liveness"), timeout=MAX_AGE + 10,
                              what="liveness failing for a frozen worker")
            assert time.monotonic() - started >= MAX_AGE - 1.5, "failed before its max age"
            assert line.startswith("liveness: stale for"), line
            assert "(max age 5.0s), last update by health@" in line, line
            assert fails(folder, "readiness"), "a frozen worker's readiness must go stale too"
        finally:
            worker.thaw()
        wait_until(lambda: passes(folder, "liveness"), timeout=15, what="liveness after thaw")

    @pytest.mark.redis_only
    def test_a_frozen_broker_fails_readiness_not_liveness(self, pool, redis_server: RedisServer, health_worker):
        _worker, folder = health_worker(private_redis_env(redis_server), pool=pool)
        redis_server.freeze()
        try:
            started = time.monotonic()
            line = wait_until(lambda: fails(folder, "readiness"), timeout=MAX_AGE + 5,
                              what="readiness failing with the broker frozen")
            assert time.monotonic() - started <= MAX_AGE + 5
            assert ("the broker has not answered a round trip" in line
                    or "connection to the broker lost" in line), line
            keeps_passing(folder, "liveness", MAX_AGE + 3)
        finally:
            redis_server.thaw()
        wait_until(lambda: passes(folder, "readiness"), timeout=40, what="readiness after the broker thawed")


@pytest.mark.redis_only
class TestBrokerAway:
    def test_a_killed_broker_fails_readiness_and_liveness_keeps_passing(self, redis_server, health_worker):
        _worker, folder = health_worker(private_redis_env(redis_server))
        redis_server.kill()
        line = wait_until(lambda: fails(folder, "readiness"), timeout=MAX_AGE + 5,
                          what="readiness failing with the broker refused")
        assert "not ready" in line, line
        keeps_passing(folder, "liveness", MAX_AGE + 5)
        assert fails(folder, "readiness")

    def test_a_restarted_broker_is_ready_again_after_reconnect(self, redis_server, health_worker):
        _worker, folder = health_worker(private_redis_env(redis_server))
        redis_server.stop()
        line = wait_until(lambda: fails(folder, "readiness"), timeout=MAX_AGE + 5,
                          what="readiness failing while the broker is away")
        assert "connection to the broker lost" in line or "round trip" in line, line
        assert passes(folder, "liveness")
        redis_server.start()
        wait_until(lambda: passes(folder, "readiness"), timeout=60, what="readiness after reconnect")
        assert passes(folder, "liveness")

    def test_a_worker_that_gives_up_reconnecting_stays_not_ready(self, redis_server, health_worker):
        """Past broker_connection_max_retries Celery 5.7 stops the worker: neither check passes again."""
        env = {**private_redis_env(redis_server), "HEALTH_APP_MAX_RETRIES": "1"}
        worker, folder = health_worker(env)
        redis_server.stop()
        wait_until(lambda: fails(folder, "readiness"), timeout=MAX_AGE + 5, what="readiness failing")
        assert worker.proc is not None
        worker.proc.wait(timeout=60)  # gave up reconnecting
        redis_server.start()  # the broker is back; nobody reconnects
        end = time.monotonic() + MAX_AGE + 2
        while time.monotonic() < end:
            code, line = worker_check(folder, "readiness")
            assert code != 0, f"readiness passed for a worker that gave up: {line}"
            time.sleep(0.5)
        line = wait_until(lambda: fails(folder, "liveness"), timeout=MAX_AGE + 5, what="liveness failing")
        assert "stale for" in line or "is gone" in line, line


class TestBusyWorkers:
    def test_prefork_with_every_child_busy_passes_both(self, target: Target, health_worker):
        worker, folder = health_worker(target.env(), pool="prefork", concurrency=2,
                                       queues=(target.default_queue,))
        client = target.client(backend=False)
        try:
            for _ in range(2):
                client.send_task("probe_test.sleep", args=(3 * MAX_AGE,), queue=target.default_queue)

            def all_busy() -> bool:
                active = client.control.inspect(destination=[worker.name], timeout=2).active() or {}
                return len(active.get(worker.name, [])) == 2

            wait_until(all_busy, timeout=20, what="both prefork children busy")
            keeps_passing(folder, "liveness", MAX_AGE + 3)
            assert passes(folder, "readiness")
            assert all_busy(), "the children were no longer busy: the check proved nothing"
        finally:
            client.close()

    def test_a_warm_shutdown_waiting_for_a_task_stays_alive(self, target: Target, health_worker):
        worker, folder = health_worker(target.env(), pool="prefork", concurrency=1,
                                       queues=(target.default_queue,))
        client = target.client(backend=False)
        try:
            client.send_task("probe_test.sleep", args=(MAX_AGE + 6,), queue=target.default_queue)
            wait_until(lambda: (client.control.inspect(destination=[worker.name], timeout=2).active() or {})
                       .get(worker.name), timeout=20, what="the task running")
        finally:
            client.close()
        os.kill(worker.pid, signal.SIGTERM)  # the parent only: a warm shutdown waits for the task
        line = wait_until(lambda: worker_check(folder, "liveness")[1] if "stopping" in worker_check(
            folder, "liveness")[1] else None, timeout=10, what="liveness saying stopping")
        assert line.startswith("liveness: ok, stopping"), line
        # The two files are two renames: the readiness one may land a moment after liveness's.
        line = wait_until(lambda: fails(folder, "readiness"), timeout=5, interval=0.05,
                          what="readiness failing")
        assert "worker shutting down" in line, line
        keeps_passing_while(folder, "liveness", worker, MAX_AGE + 2)
        assert worker.proc is not None
        worker.proc.wait(timeout=30)
        code, line = worker_check(folder, "liveness")
        assert code == 1 and "is gone" in line, f"a worker that has exited must not stay alive: {line}"

    def test_solo_in_a_long_task_is_busy_up_to_max_busy(self, target: Target, health_worker):
        _worker, folder = health_worker(target.env(), pool="solo", concurrency=1,
                                       queues=(target.default_queue,))
        client = target.client(backend=False)
        try:
            client.send_task("probe_test.sleep", args=(MAX_AGE + 8,), queue=target.default_queue)
            line = wait_until(lambda: fails(folder, "liveness"), timeout=MAX_AGE + 12,
                              what="solo liveness over the default max busy")
            assert "busy in task 'probe_test.sleep'" in line and "(max busy 5.0s)" in line, line
            code, line = worker_check(folder, "liveness", "--max-busy", "60")
            assert code == 0 and "busy in task 'probe_test.sleep'" in line, line
            assert passes(folder, "readiness", "--max-busy", "60")
            wait_until(lambda: passes(folder, "liveness"), timeout=MAX_AGE + 20,
                       what="solo liveness once the task ended")
        finally:
            client.close()


class TestARestartedContainer:
    """A restarted container keeps its emptyDir and often gives the new worker the dead one's pid."""

    def test_files_of_a_process_that_is_gone_fail_however_fresh(self, target: Target, health_worker, tmp_path):
        worker, folder = health_worker(target.env(), pool="solo", queues=(target.default_queue,))
        assert passes(folder, "liveness") and passes(folder, "readiness")
        stand_in = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)  # a live process, not the worker
        try:
            left = tmp_path / "left-behind"
            left.mkdir()
            for name in ("liveness.json", "readiness.json"):
                record = json.loads((folder / name).read_text())
                assert isinstance(record["pid_start"], int) and record["pid"] == worker.pid
                (left / name).write_text(json.dumps({**record, "pid": stand_in.pid}))
            for kind in ("liveness", "readiness"):
                code, line = worker_check(left, kind)
                assert code == 1 and "another process has that pid now" in line, line
            worker.stop()
            for kind in ("liveness", "readiness"):
                code, line = worker_check(folder, kind)
                assert code == 1 and ("is gone" in line or "stopped" in line), line
        finally:
            stand_in.kill()
            stand_in.wait(timeout=10)


class TestWorkerCheckCommand:
    """The command itself, as the kubelet starts it: exit codes, one line, nothing heavy imported."""

    def test_a_missing_folder_is_a_usage_error(self, tmp_path):
        code, line = worker_check(tmp_path / "nowhere", "liveness")
        assert code == 64 and line == f"liveness: no such folder: {tmp_path / 'nowhere'} " \
                                      "(the worker's --probe-dir / CELERY_PROBE_WORKER_DIR)"

    def test_a_missing_file_is_no_evidence(self, tmp_path):
        code, line = worker_check(tmp_path, "readiness")
        assert code == 2 and "no evidence yet" in line and "readiness.json does not exist" in line

    @pytest.mark.parametrize("content, says", [
        (b"{not json", "is not valid JSON"),
        (b"\xff\xfe", "is not valid JSON"),
        (b'{"kind": "liveness"}', "unusable evidence in liveness.json"),
    ])
    def test_a_corrupt_file_is_no_evidence(self, tmp_path, content, says):
        (tmp_path / "liveness.json").write_bytes(content)
        code, line = worker_check(tmp_path, "liveness")
        assert code == 2 and says in line and "\n" not in line and "Traceback" not in line

    def test_an_unreadable_file_is_no_evidence(self, tmp_path):
        (tmp_path / "liveness.json").mkdir()  # a folder where the file should be: unreadable for anyone
        code, line = worker_check(tmp_path, "liveness")
        assert code == 2 and line.startswith("liveness: cannot read")

    def test_a_bad_option_is_a_usage_error(self, tmp_path):
        code, line = worker_check(tmp_path, "liveness", "--max-busy", "later")
        assert code == 64 and "--max-busy 'later'" in line and "worker-check --help" in line

    def test_help_goes_through_click_and_the_group_lists_it(self):
        proc = subprocess.run([sys.executable, "-m", "celery_probe", "worker-check", "--help"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0 and "--max-busy" in proc.stdout and "Exit 0" in proc.stdout
        proc = subprocess.run([sys.executable, "-m", "celery_probe", "--help"], capture_output=True, text=True, check=False,
                              timeout=30)
        assert "worker-check" in proc.stdout

    def test_the_check_imports_neither_celery_kombu_nor_click(self, tmp_path):
        (tmp_path / "liveness.json").write_text("{}")
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "celery_probe", "worker-check",
                               str(tmp_path), "--liveness"], capture_output=True, text=True, timeout=30, check=False)
        imported = {line.rpartition("|")[2].strip().split(".")[0] for line in proc.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "celery_probe" in imported, proc.stderr[-500:]
        assert not imported & {"celery", "kombu", "click", "redis", "amqp", "pytest"}, sorted(imported)


class TestWhereTheFolderComesFrom:
    """``--probe-dir`` wins over ``CELERY_PROBE_WORKER_DIR``; with neither the worker only warns."""

    def start(self, target: Target, env: dict[str, str], extra: tuple[str, ...] = ()) -> CeleryWorker:
        worker = CeleryWorker("health_app", name="where@%h", queues=(target.default_queue,), pool="solo",
                              env={**target.env(), "CELERY_PROBE_WORKER_INTERVAL": INTERVAL, **env},
                              pythonpath=[APPS], extra=extra)
        return worker.start(timeout=40)

    def test_the_option_wins_over_the_environment(self, target: Target, tmp_path: Path):
        worker = self.start(target, {"CELERY_PROBE_WORKER_DIR": str(tmp_path / "env")},
                            ("--probe-dir", str(tmp_path / "option")))
        try:
            wait_until(lambda: passes(tmp_path / "option", "readiness"), timeout=20, what="ready in --probe-dir")
            assert not (tmp_path / "env").exists()
        finally:
            worker.close()

    def test_the_environment_alone_is_enough(self, target: Target, tmp_path: Path):
        worker = self.start(target, {"CELERY_PROBE_WORKER_DIR": str(tmp_path / "env")})
        try:
            wait_until(lambda: passes(tmp_path / "env", "liveness"), timeout=20, what="alive in the env folder")
        finally:
            worker.close()

    def test_no_folder_warns_once_and_writes_nothing(self, target: Target, tmp_path: Path):
        worker = self.start(target, {"CELERY_PROBE_WORKER_DIR": ""})
        try:
            log = worker.logfile.read_text(errors="replace")
            assert log.count("celery-probe worker health is off: give --probe-dir DIR") == 1, log[-2000:]
        finally:
            worker.close()

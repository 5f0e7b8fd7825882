"""Probe runs forked from the resident server: isolated, bounded, and read the same as fresh ones.

Everything is real: a private redis-server, a real worker, the real fork server
(``python -m celery_probe.run.resident``) started by serve's loop, and real forked runs.
Custom probes and an app module written into ``tmp_path`` play the operator's code that
changes state or hangs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.run.resident import IMPORTS_CHECK_EVERY
from celery_probe.run.runner import RunMode
from celery_probe.serve.loop import ProbeLoop, Snapshot
from celery_probe.testing import CeleryWorker
from tests.support.environment import APPS, app_env

# Classes marked redis_only use a private redis-server (they freeze it or share it across
# settings); TestAnyBroker runs on the broker the suite was started with.

T = TypeVar("T")
READY = 60.0  # seconds for the resident server's imports on a busy host


@pytest.fixture
def deployment(redis_server, monkeypatch):
    """A real Redis and worker; the test process's environment points the test app at them."""
    env = app_env(redis_server.url(0), redis_server.url(1))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(APPS))
    with CeleryWorker("probe_test_app", name="resident@%h", env=env, pythonpath=[APPS]) as worker:
        yield redis_server, worker


def settings_for(**values: Any):
    base = {"app": "probe_test_app", "expect_workers": "1", "deadline": "3", "roundtrip_slow": "2.5"}
    return resolve_settings({**base, **values}, environ={}, pyproject=False)


def with_resident(loop: ProbeLoop, body: Callable[[ProbeLoop], Awaitable[T]]) -> T:
    """Start the loop's resident server (not its timer), run ``body``, stop everything."""

    async def main() -> T:
        loop.runner.start()
        assert await asyncio.wait_for(loop.runner.started(), READY), "the resident server did not start"
        try:
            return await body(loop)
        finally:
            await loop.stop()

    return asyncio.run(main())


def codes(snapshot: Snapshot) -> list[str]:
    return [reason["code"] for reason in snapshot.verdict["reasons"]]


def starved(snapshot: Snapshot) -> bool:
    return "celery_probe_starved" in codes(snapshot)


def state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None  # gone


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@pytest.mark.redis_only
class TestSameVerdict:
    def test_healthy_then_frozen_broker_read_the_same_as_fresh_processes(self, deployment):
        """The resident run and a fresh process give the same status and reasons, healthy or not.

        (A fresh process spends part of its deadline starting; on a busy host that can leave
        later probes unattempted, with ``celery_probe_starved`` reasons: then only the status and
        the cause are compared.)
        """
        redis, _worker = deployment
        settings = settings_for(deadline="3")

        async def body(loop: ProbeLoop) -> None:
            fresh = ProbeLoop(settings, interval=3600, runs=RunMode(resident=False))
            resident_healthy, fresh_healthy = await loop.run_once(), await fresh.run_once()
            assert loop.runner.resident_runs == 1 and fresh.runner.fresh_runs == 1
            assert resident_healthy.verdict["status"] == fresh_healthy.verdict["status"] == "healthy"
            assert resident_healthy.report is not None and resident_healthy.report["summary"] == \
                fresh_healthy.report["summary"]
            assert resident_healthy.verdict.keys() == fresh_healthy.verdict.keys()
            redis.freeze()
            try:
                resident_frozen, fresh_frozen = await loop.run_once(), await fresh.run_once()
            finally:
                redis.thaw()
            assert resident_frozen.verdict["status"] == fresh_frozen.verdict["status"] != "healthy"
            assert codes(resident_frozen)[0] == codes(fresh_frozen)[0] == "celery_broker_unreachable"
            if not starved(resident_frozen) and not starved(fresh_frozen):  # then every probe had its say
                assert codes(resident_frozen) == codes(fresh_frozen)
            assert resident_frozen.verdict["target"] == fresh_frozen.verdict["target"]
            assert loop.runs_killed == 0  # the probes' own deadline answered, not the hard timeout
            assert (await loop.run_once()).verdict["status"] == "healthy"

        with_resident(ProbeLoop(settings, interval=3600), body)


HANG_PROBE = '''
import os, signal
from pathlib import Path


def probe_hangs_once():
    """Stops its own process (as a run stuck past every bound would be), once."""
    marker = Path(__file__).with_name("hang-next-run")
    if marker.exists():
        marker.unlink()
        Path(__file__).with_name("hung-pid").write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGSTOP)
'''


@pytest.mark.redis_only
class TestHangingRun:
    def test_a_run_stuck_past_its_watchdog_is_killed_at_the_hard_timeout_and_the_next_works(
            self, deployment, tmp_path):
        probes = tmp_path / "probes"
        probes.mkdir()
        (probes / "probe_hang.py").write_text(HANG_PROBE)
        (probes / "hang-next-run").write_text("")
        loop = ProbeLoop(settings_for(deadline="1", probes=(str(probes),)), interval=3600)

        async def body(loop: ProbeLoop) -> None:
            server = loop.runner.server
            assert server is not None
            started = time.monotonic()
            hung = await loop.run_once()
            took = time.monotonic() - started
            assert loop.hard_timeout - 0.1 < took < loop.hard_timeout + 3
            assert hung.verdict["status"] == "unknown"
            assert codes(hung) == ["celery_probe_deadline_exceeded"]
            assert loop.runs_killed == 1
            pid = int((probes / "hung-pid").read_text())
            assert state(pid) is None  # killed and reaped by the server: no zombie either
            assert loop.runner.server is server and server.alive  # the SIGKILL spared the server
            after = await loop.run_once()
            assert after.verdict["status"] == "healthy", after.verdict["reasons"]
            assert loop.runner.resident_runs == 2

        with_resident(loop, body)

    def test_a_frozen_broker_during_the_app_import_is_bounded_too(self, deployment, tmp_path, monkeypatch):
        """An app module that talks to a frozen Redis at import: the run answers within the hard timeout."""
        redis, _worker = deployment
        (tmp_path / "import_talks_app.py").write_text(
            "import os, redis\n"
            "redis.Redis.from_url(os.environ['PROBE_TEST_BROKER']).ping()\n"
            "from probe_test_app import app\n"
        )
        monkeypatch.chdir(tmp_path)
        loop = ProbeLoop(settings_for(app="import_talks_app", deadline="1"), interval=3600)

        async def body(loop: ProbeLoop) -> None:
            redis.freeze()
            try:
                started = time.monotonic()
                frozen = await loop.run_once()
                assert time.monotonic() - started < loop.hard_timeout + 3
            finally:
                redis.thaw()
            assert frozen.verdict["status"] == "unknown", frozen.verdict["reasons"]
            assert children_of(loop.runner.server.pid) == []  # type: ignore[union-attr]
            assert (await loop.run_once()).verdict["status"] == "healthy"

        with_resident(loop, body)


LEAK_PROBE = '''
import json, os, signal, sys
from pathlib import Path

import celery._state
import kombu.pools

import celery_probe.probing.measurements as measurements


def probe_leaks():
    """Record what this run finds, then leave every kind of state behind for the next one."""
    seen = {
        "module_global": getattr(measurements, "LEFT_BY_AN_EARLIER_RUN", None),
        "env": os.environ.get("LEFT_BY_AN_EARLIER_RUN"),
        "sigusr1": str(signal.getsignal(signal.SIGUSR1)),
        "cwd": os.getcwd(),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "apps": len(celery._state._apps),
        "pools": len(kombu.pools.connections),
        "sys_path_entries": sys.path.count("/left/by/an/earlier/run"),
        "plugins_module": "probe_leaks_helper" in sys.modules,
        "pid": os.getpid(),
    }
    with open(Path(__file__).with_name("seen.jsonl"), "a") as out:
        out.write(json.dumps(seen) + "\\n")
    measurements.LEFT_BY_AN_EARLIER_RUN = "yes"
    os.environ["LEFT_BY_AN_EARLIER_RUN"] = "yes"
    signal.signal(signal.SIGUSR1, lambda *a: None)
    os.chdir("/")
    os.open(os.devnull, os.O_RDONLY)  # a descriptor never closed
    sys.path.append("/left/by/an/earlier/run")
    sys.modules["probe_leaks_helper"] = sys
'''


@pytest.mark.redis_only
class TestIsolation:
    def test_a_run_cannot_leak_state_into_the_next(self, deployment, tmp_path):
        probes = tmp_path / "probes"
        probes.mkdir()
        (probes / "probe_leaks.py").write_text(LEAK_PROBE)
        loop = ProbeLoop(settings_for(probes=(str(probes),)), interval=3600)

        async def body(loop: ProbeLoop) -> None:
            for _ in range(3):
                snapshot = await loop.run_once()
                assert snapshot.verdict["status"] == "healthy", snapshot.verdict["reasons"]
            assert loop.runner.resident_runs == 3

        with_resident(loop, body)
        seen = [json.loads(line) for line in (probes / "seen.jsonl").read_text().splitlines()]
        assert len(seen) == 3
        first = seen[0]
        assert first["module_global"] is None and first["env"] is None
        assert first["sigusr1"] == str(signal.Handlers.SIG_DFL)
        assert first["cwd"] == os.getcwd() and first["sys_path_entries"] == 0 and not first["plugins_module"]
        for later in seen[1:]:
            assert {k: v for k, v in later.items() if k != "pid"} == {k: v for k, v in first.items() if k != "pid"}
        assert len({entry["pid"] for entry in seen}) == 3  # a new process each time

    def test_the_operator_app_is_imported_in_each_run_never_in_the_server_and_its_changes_are_seen(
            self, deployment, tmp_path, monkeypatch):
        app_file = tmp_path / "changing_app.py"

        def write_app(queue: str) -> None:
            app_file.write_text(
                "import os\n"
                "with open(os.path.join(os.path.dirname(__file__), 'imports.jsonl'), 'a') as out:\n"
                f"    out.write('{{\"pid\": %d, \"ppid\": %d, \"queue\": \"{queue}\"}}\\n' % (os.getpid(), os.getppid()))\n"
                "from probe_test_app import app\n"
                f"app.conf.task_default_queue = {queue!r}\n"
            )

        monkeypatch.chdir(tmp_path)
        write_app("celery")
        loop = ProbeLoop(settings_for(app="changing_app"), interval=3600)

        async def body(loop: ProbeLoop) -> tuple[Snapshot, Snapshot, int]:
            assert loop.runner.server is not None
            server_pid = loop.runner.server.pid
            first = await loop.run_once()
            write_app("nobody_consumes_this")  # a different size: no stale bytecode either
            second = await loop.run_once()
            return first, second, server_pid  # type: ignore[return-value]

        first, second, server_pid = with_resident(loop, body)
        assert first.verdict["status"] == "healthy", first.verdict["reasons"]
        assert "nobody_consumes_this" not in json.dumps(first.verdict)
        assert second.verdict["status"] != "healthy"
        assert "nobody_consumes_this" in json.dumps(second.verdict), second.verdict
        imports = [json.loads(line) for line in (tmp_path / "imports.jsonl").read_text().splitlines()]
        # The first run imports it; so may a warm session prepared after that healthy run
        # (it reads the file as it is then); the changed file is imported again.
        assert imports[0]["queue"] == "celery" and imports[-1]["queue"] == "nobody_consumes_this"
        assert all(entry["pid"] != server_pid and entry["ppid"] == server_pid for entry in imports)


# Python imports ``sitecustomize`` at start-up from the path: here it stands for any file of
# the resident runner's imports that an upgrade replaces (celery-probe, Celery, kombu...).
SITECUSTOMIZE = """
import os
if os.environ.get("PROBE_TEST_IMPORT_MARK"):
    with open(os.environ["PROBE_TEST_IMPORT_MARK"], "a") as mark:
        mark.write(f"{{os.getpid()}} {version}\\n")
"""

GATE_PROBE = """
import time
from pathlib import Path


def probe_waits_at_the_gate():
    here = Path(__file__).parent
    if (here / "gate").exists():
        (here / "at-gate").write_text("")
        end = time.monotonic() + 8
        while not (here / "open").exists() and time.monotonic() < end:  # bounded: 8 s
            time.sleep(0.05)
"""


@pytest.mark.redis_only
class TestServerLife:
    def test_an_upgraded_import_moves_the_next_runs_to_a_new_server(self, deployment, tmp_path, monkeypatch):
        site, probes = tmp_path / "site", tmp_path / "probes"
        site.mkdir()
        probes.mkdir()
        custom = site / "sitecustomize.py"
        custom.write_text(SITECUSTOMIZE.format(version="v1"))
        (probes / "probe_gate.py").write_text(GATE_PROBE)
        mark = tmp_path / "imported"
        monkeypatch.setenv("PYTHONPATH", f"{site}{os.pathsep}{APPS}")
        monkeypatch.setenv("PROBE_TEST_IMPORT_MARK", str(mark))
        loop = ProbeLoop(settings_for(deadline="12", probes=(str(probes),)), interval=3600)

        async def body(loop: ProbeLoop) -> None:
            first = loop.runner.server
            assert first is not None and first.pid is not None
            assert (await loop.run_once()).verdict["status"] == "healthy"
            custom.write_text(SITECUSTOMIZE.format(version="v2, upgraded"))
            statuses = []
            end = time.monotonic() + IMPORTS_CHECK_EVERY + 30
            while time.monotonic() < end:  # bounded: the end above
                statuses.append((await loop.run_once()).verdict["status"])
                if first.outdated is not None:  # said during that run: the new server starts now
                    break
                await asyncio.sleep(0.3)
            assert first.outdated == f"{custom} changed"
            # A new server is starting; a run asked for now still goes to the old one, and is
            # held at the gate until the new one is ready: the old server must finish it.
            (probes / "gate").write_text("")
            held = asyncio.get_running_loop().create_task(loop.run_once())
            await until(lambda: (probes / "at-gate").exists(), 30, "the run to reach the gate")
            assert await asyncio.wait_for(loop.runner.started(), READY)
            second = loop.runner.server
            assert second is not first and second is not None, "no new server after its imports changed"
            assert not held.done() and first.alive  # the outdated server waits for its run
            (probes / "gate").unlink()
            (probes / "open").write_text("")
            statuses.append((await held).verdict["status"])
            await until(lambda: state(first.pid) is None, 15, "the outdated server to end and be reaped")
            statuses.append((await loop.run_once()).verdict["status"])
            assert set(statuses) == {"healthy"}  # no run lost to the change of server
            assert loop.runner.server_starts == 2 and loop.runner.fresh_runs == 0
            imported = mark.read_text().splitlines()
            assert f"{first.pid} v1" in imported and f"{second.pid} v2, upgraded" in imported

        with_resident(loop, body)

    def test_a_dead_server_is_replaced_and_runs_go_on(self, deployment):
        loop = ProbeLoop(settings_for(), interval=3600)

        async def body(loop: ProbeLoop) -> None:
            first = loop.runner.server
            assert first is not None and first.pid is not None
            assert (await loop.run_once()).verdict["status"] == "healthy"
            os.kill(first.pid, signal.SIGKILL)
            await until(lambda: not first.alive, 10, "the server's death noticed")
            during = await loop.run_once()  # a fresh process while the server restarts
            assert during.verdict["status"] == "healthy", during.verdict["reasons"]
            assert loop.runner.fresh_runs == 1
            await asyncio.wait_for(loop.runner.started(), READY)
            second = loop.runner.server
            assert second is not None and second.pid != first.pid and loop.runner.server_starts == 2
            assert (await loop.run_once()).verdict["status"] == "healthy"
            assert loop.runner.resident_runs == 2
            assert state(first.pid) is None  # the dead server was reaped

        with_resident(loop, body)

    def test_a_server_killed_during_a_run_takes_the_run_with_it(self, deployment, tmp_path):
        probes = tmp_path / "probes"
        probes.mkdir()
        (probes / "probe_hang.py").write_text(HANG_PROBE)
        (probes / "hang-next-run").write_text("")
        loop = ProbeLoop(settings_for(deadline="20", probes=(str(probes),)), interval=3600)

        async def body(loop: ProbeLoop) -> None:
            server = loop.runner.server
            assert server is not None and server.pid is not None
            running = asyncio.get_running_loop().create_task(loop.run_once())
            pid = int(await until(lambda: (probes / "hung-pid").exists() and (probes / "hung-pid").read_text(),
                                  30, "the run to hang"))
            os.kill(server.pid, signal.SIGKILL)
            snapshot = await asyncio.wait_for(running, 15)
            assert snapshot.verdict["status"] == "unknown"
            assert "resident runner exited" in snapshot.verdict["reasons"][0]["message"]
            await until(lambda: state(pid) is None, 10, "the orphaned run gone")  # PR_SET_PDEATHSIG
            await asyncio.wait_for(loop.runner.started(), READY)
            assert (await loop.run_once()).verdict["status"] == "healthy"

        with_resident(loop, body)

    def test_runs_that_kill_the_server_each_time_end_in_fresh_processes(self, deployment, tmp_path):
        """A crash loop (a probe that kills the resident runner) stops after a few runs."""
        from celery_probe.run.runner import DEATHS_IN_A_ROW

        probes = tmp_path / "probes"
        probes.mkdir()
        (probes / "probe_kills_runner.py").write_text(
            "import os, signal\n"
            "from pathlib import Path\n\n\n"
            "def probe_kills_the_resident_runner():\n"
            "    parent = os.getppid()\n"
            "    if b'celery_probe.run.resident' in Path(f'/proc/{parent}/cmdline').read_bytes():\n"
            "        os.kill(parent, signal.SIGKILL)\n"
        )
        loop = ProbeLoop(settings_for(probes=(str(probes),)), interval=3600)

        async def body(loop: ProbeLoop) -> None:
            for number in range(1, DEATHS_IN_A_ROW + 1):
                snapshot = await loop.run_once()
                assert snapshot.verdict["status"] == "unknown", snapshot.verdict["reasons"]
                assert "resident runner exited" in snapshot.verdict["reasons"][0]["message"]
                if number < DEATHS_IN_A_ROW:
                    assert await asyncio.wait_for(loop.runner.started(), READY)
            assert not await loop.runner.started()  # not restarted: fresh processes from now on
            for _ in range(2):
                assert (await loop.run_once()).verdict["status"] == "healthy"
            assert loop.runner.fresh_runs == 2 and loop.runner.server_starts == DEATHS_IN_A_ROW

        with_resident(loop, body)

    def test_a_killed_serve_leaves_neither_its_resident_runner_nor_a_run(self, deployment, tmp_path):
        """serve SIGKILLed (no shutdown at all): the runner sees its request pipe close and goes,
        and a run in progress goes with it."""
        from tests.support.serving import ServeProcess

        probes = tmp_path / "probes"
        probes.mkdir()
        (probes / "probe_hang.py").write_text(HANG_PROBE.replace(
            "    if marker.exists():",
            "    if marker.exists() and b'celery_probe.run.resident' in Path(f'/proc/{os.getppid()}/cmdline').read_bytes():"))
        server = ServeProcess("-A", "probe_test_app", "--deadline", "20", "--probes", str(probes),
                              "--interval", "1", cwd=tmp_path).start()
        try:
            def resident_runner() -> int | None:
                for pid in server.children():
                    try:
                        if b"celery_probe.run.resident" in Path(f"/proc/{pid}/cmdline").read_bytes():
                            return pid
                    except OSError:
                        continue
                return None

            runner_pid = asyncio.run(until(resident_runner, READY, "the resident runner"))
            (probes / "hang-next-run").write_text("")  # taken by a run forked from the runner only
            run_pid = int(asyncio.run(until(
                lambda: (probes / "hung-pid").exists() and (probes / "hung-pid").read_text(), 30, "a hung run")))
            assert Path(f"/proc/{run_pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(runner_pid)
            os.killpg(server.pid, signal.SIGKILL)  # serve's own group: the runner has a session of its own
            asyncio.run(until(lambda: state(runner_pid) in (None, "Z") and state(run_pid) in (None, "Z"), 10,
                              "the runner and its run gone"))
        finally:
            server.close()

    def test_no_zombies_and_no_descriptors_left_after_many_runs(self, deployment):
        loop = ProbeLoop(settings_for(), interval=3600)
        runs = 12

        async def body(loop: ProbeLoop) -> None:
            server = loop.runner.server
            assert server is not None and server.pid is not None
            fds_before = len(os.listdir(f"/proc/{server.pid}/fd"))
            for _ in range(runs):
                assert (await loop.run_once()).verdict["status"] == "healthy"
            assert loop.runner.resident_runs == runs
            # Every run reaped, none a zombie: what is left is the target's warm session, idle.
            warm = children_of(server.pid)
            assert len(warm) == 1 and state(warm[0]) in ("S", "R"), [(pid, state(pid)) for pid in warm]
            assert children_of(warm[0]) == []
            # ...and the descriptors: the warm session's socket and its two output pipes.
            assert len(os.listdir(f"/proc/{server.pid}/fd")) == fds_before + 3

        with_resident(loop, body)
        assert [pid for pid in children_of(os.getpid()) if state(pid) == "Z"] == []

    def test_stop_ends_the_server_and_a_run_in_progress(self, deployment, tmp_path):
        probes = tmp_path / "probes"
        probes.mkdir()
        (probes / "probe_hang.py").write_text(HANG_PROBE)
        loop = ProbeLoop(settings_for(deadline="20", probes=(str(probes),)), interval=3600)

        async def main() -> tuple[int, int]:
            loop.runner.start()
            assert await asyncio.wait_for(loop.runner.started(), READY)
            server = loop.runner.server
            assert server is not None and server.pid is not None
            (probes / "hang-next-run").write_text("")
            loop.start()  # the timer's first run starts at once, forked from the server
            pid = int(await until(lambda: (probes / "hung-pid").exists() and (probes / "hung-pid").read_text(),
                                  30, "a resident run in progress"))
            assert loop.runner.resident_runs == 0 and loop.runner.fresh_runs == 0
            started = time.monotonic()
            await loop.stop()
            assert time.monotonic() - started < 8
            return server.pid, pid

        first_server, run_pid = asyncio.run(main())
        assert state(run_pid) is None
        assert state(first_server) is None


@pytest.mark.redis_only
class TestSeveralTargets:
    def test_one_resident_server_runs_targets_with_different_settings_at_once(self, deployment):
        """Each request carries its own settings: two loops, one server, runs side by side."""
        from celery_probe.run.runner import ProbeRunner

        runner = ProbeRunner(sys.executable)
        one = ProbeLoop(settings_for(expect_workers="1"), interval=3600, runner=runner)
        two = ProbeLoop(settings_for(expect_workers="2"), interval=3600, runner=runner)

        async def main() -> tuple[Snapshot, Snapshot, int | None]:
            runner.start()
            assert await asyncio.wait_for(runner.started(), READY)
            try:
                assert runner.server is not None
                pid = runner.server.pid
                first, second = await asyncio.gather(one.run_once(), two.run_once())
                await one.stop()  # a loop that does not own the runner leaves it running
                assert runner.server is not None and runner.server.alive and runner.server.pid == pid
                return first, second, pid
            finally:
                await runner.close()

        first, second, _pid = asyncio.run(main())
        assert runner.resident_runs == 2 and runner.fresh_runs == 0
        assert first.verdict["status"] == "healthy", first.verdict["reasons"]
        assert second.verdict["status"] == "degraded" and "celery_workers_missing" in codes(second), \
            second.verdict["reasons"]


class TestAnyBroker:
    def test_resident_and_fresh_runs_agree_on_this_broker(self, target, monkeypatch):
        """Redis or RabbitMQ (``--broker``): the forked run imports the transport it needs."""
        env = target.env()
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PYTHONPATH", str(APPS))
        with CeleryWorker("probe_test_app", name="resident-any@%h", env=env, pythonpath=[APPS],
                          queues=[target.default_queue]):
            settings = settings_for(deadline="5", roundtrip_slow="4")
            fresh = ProbeLoop(settings, interval=3600, runs=RunMode(resident=False))

            async def body(loop: ProbeLoop) -> tuple[Snapshot, Snapshot]:
                return await loop.run_once(), await fresh.run_once()

            resident_run, fresh_run = with_resident(ProbeLoop(settings, interval=3600), body)
        assert resident_run.verdict["status"] == fresh_run.verdict["status"] == "healthy", \
            (resident_run.verdict["reasons"], fresh_run.verdict["reasons"])
        assert resident_run.verdict["target"] == fresh_run.verdict["target"]
        assert resident_run.report is not None and fresh_run.report is not None
        assert [t["nodeid"] for t in resident_run.report["tests"]] == [t["nodeid"] for t in fresh_run.report["tests"]]


@pytest.mark.redis_only
class TestFallback:
    def test_a_server_that_cannot_start_leaves_runs_to_fresh_processes_said_once(
            self, deployment, tmp_path, caplog):
        """A python that cannot run the server (it exits at once): fresh processes, one warning."""
        fake = tmp_path / "python"
        fake.write_text(f"#!/bin/sh\ncase \"$2\" in celery_probe.run.resident) exit 3;; esac\nexec {sys.executable} \"$@\"\n")
        fake.chmod(0o755)
        loop = ProbeLoop(settings_for(), interval=3600, python=str(fake))

        async def main() -> None:
            loop.runner.start()
            assert not await asyncio.wait_for(loop.runner.started(), READY)
            for _ in range(2):
                assert (await loop.run_once()).verdict["status"] == "healthy"
            await loop.stop()

        with caplog.at_level("WARNING", logger="celery_probe.serve"):
            asyncio.run(main())
        assert loop.runner.fresh_runs == 2 and loop.runner.resident_runs == 0
        told = [r.getMessage() for r in caplog.records if "resident probe runs unavailable" in r.getMessage()]
        assert len(told) == 1 and "exited (code 3)" in told[0], told


WHO_RAN_PROBE = '''
import json, os
from pathlib import Path


def probe_who_ran():
    """Record which process ran this run, and what the app module said at import."""
    import changing_app

    with open(Path(__file__).with_name("runs.jsonl"), "a") as out:
        out.write(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "queue": changing_app.QUEUE}) + "\\n")
'''


@pytest.mark.redis_only
class TestWarmSessions:
    def test_later_runs_are_forked_from_a_warm_session_and_an_edited_app_is_seen_at_the_next_run(
            self, deployment, tmp_path, monkeypatch):
        app_file = tmp_path / "changing_app.py"

        def write_app(queue: str) -> None:
            app_file.write_text(f"from probe_test_app import app\nQUEUE = {queue!r}\n")
            old = time.time() - 30  # written well before any preparation reads it
            os.utime(app_file, (old, old))

        probes = tmp_path / "probes"
        probes.mkdir()
        (probes / "probe_who_ran.py").write_text(WHO_RAN_PROBE)
        old = time.time() - 30
        os.utime(probes, (old, old))
        monkeypatch.chdir(tmp_path)
        write_app("first")
        loop = ProbeLoop(settings_for(app="changing_app", probes=(str(probes),)), interval=3600)

        def runs() -> list[dict[str, Any]]:
            return [json.loads(line) for line in (probes / "runs.jsonl").read_text().splitlines()]

        async def until_warm(server_pid: int, what: str) -> dict[str, Any]:
            for _ in range(15):  # bounded: a warm session is ready within a run or two
                snapshot = await loop.run_once()
                assert snapshot.verdict["status"] == "healthy", snapshot.verdict["reasons"]
                if runs()[-1]["ppid"] != server_pid:
                    return runs()[-1]
                await asyncio.sleep(0.5)
            raise AssertionError(f"no run was forked from a warm session {what}: {runs()}")

        async def body(loop: ProbeLoop) -> None:
            assert loop.runner.server is not None and loop.runner.server.pid is not None
            server_pid = loop.runner.server.pid
            warm_run = await until_warm(server_pid, "after the first healthy run")
            warm_session = warm_run["ppid"]
            assert warm_session in children_of(server_pid)
            again = await loop.run_once()
            assert again.verdict["status"] == "healthy"
            assert runs()[-1]["ppid"] == warm_session and runs()[-1]["pid"] != warm_run["pid"]
            write_app("second")
            await loop.run_once()  # the warm session sees its file changed: this run is made afresh
            assert runs()[-1]["queue"] == "second" and runs()[-1]["ppid"] == server_pid
            await until(lambda: warm_session not in children_of(server_pid), 10, "the stale warm session to end")
            rewarmed = await until_warm(server_pid, "after the app changed")
            assert rewarmed["queue"] == "second" and rewarmed["ppid"] != warm_session

        with_resident(loop, body)
        assert {entry["queue"] for entry in runs()} == {"first", "second"}


WHERE_PROBE = '''
import json, os


def probe_where():
    """Record which process made this run, and its parent."""
    with open(os.environ["PROBE_TEST_RUNS"], "a") as out:
        out.write(json.dumps({"pid": os.getpid(), "ppid": os.getppid()}) + "\\n")
'''


@pytest.mark.redis_only
class TestWarmRoom:
    def test_targets_beyond_the_room_keep_to_plain_forks_and_a_target_gone_gives_its_room_up(
            self, deployment, tmp_path, monkeypatch):
        """Three targets taking turns, room for two warm sessions: the first two keep theirs.

        Ending the least recently used session to make room would end each one just before
        its target's next run, so every run would be a plain fork and a preparation.
        """
        from celery_probe.run.runner import ProbeRunner

        probes, record = tmp_path / "probes", tmp_path / "runs.jsonl"
        probes.mkdir()
        (probes / "probe_where.py").write_text(WHERE_PROBE)
        record.write_text("")
        old = time.time() - 30  # written well before any preparation reads them
        os.utime(probes / "probe_where.py", (old, old))
        os.utime(probes, (old, old))
        monkeypatch.setenv("PROBE_TEST_RUNS", str(record))
        runner = ProbeRunner(sys.executable, mode=RunMode(warm_sessions=2))
        loops = {name: ProbeLoop(settings_for(probes=(str(probes),), roundtrip_slow=slow), interval=3600,
                                 runner=runner)
                 for name, slow in (("a", "2.5"), ("b", "2.4"), ("c", "2.3"))}

        async def run(name: str) -> int:
            snapshot = await loops[name].run_once()
            assert snapshot.verdict["status"] == "healthy", snapshot.verdict["reasons"]
            return json.loads(record.read_text().splitlines()[-1])["ppid"]

        async def main() -> None:
            runner.start()
            assert await asyncio.wait_for(runner.started(), READY)
            try:
                assert runner.server is not None and runner.server.pid is not None
                server = runner.server.pid
                parents = [{name: await run(name) for name in "abc"} for _cycle in range(4)]
                for cycle in parents[2:]:  # from the third turn on: a and b warm, c plain
                    assert cycle["c"] == server, parents
                    assert cycle["a"] != server and cycle["b"] != server, parents
                assert parents[2] == parents[3], f"a warm session was prepared again: {parents}"
                sessions = set(children_of(server)) - {os.getpid()}
                assert {parents[3]["a"], parents[3]["b"]} <= sessions and len(sessions) == 2, sessions
                # b stops asking (it left the targets file): once it has missed two of its own
                # gaps, c's next passing run prepares a session in b's room.
                for _turn in range(20):  # bounded: b's gap is one turn of three runs
                    if await run("c") != server:
                        break
                    await run("a")
                else:
                    raise AssertionError("c never got the room b left")
                await until(lambda: parents[3]["b"] not in children_of(server), 10, "b's warm session to end")
                assert await run("a") == parents[3]["a"]  # a, on its schedule all along, kept its own
            finally:
                for loop in loops.values():
                    await loop.stop()
                await runner.close()

        asyncio.run(main())

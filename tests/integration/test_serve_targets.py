"""`celery-probe serve --targets FILE`: one real serve, several real deployments, one loop each.

Each target is a private redis-server (with a real worker where it should be healthy). The
runs counter of each target (``celery_probe_runs_total{target=...}``) shows which loop ran
when, so a test can show that a frozen broker holds up only its own target.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from celery_probe.testing import RedisServer, free_port, wait_until
from tests.support.environment import app_env, run_cli
from tests.support.serving import HEALTH, ServeProcess

pytestmark = pytest.mark.redis_only  # private redis-servers; nothing here depends on --broker

FAST = 0.5  # every answer must come well within this, whatever a target's broker does


def table(name: str, broker: str, backend: str | None = None, **extra: object) -> str:
    lines = [f"[targets.{name}]", f'broker = "{broker}"']
    if backend:
        lines.append(f'backend = "{backend}"')
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def runs_of(server: ServeProcess) -> dict[str, int]:
    return {dict(labels)["target"]: int(value) for (name, labels), value in server.metrics().items()
            if name == "celery_probe_runs_total"}


def statuses(server: ServeProcess, path: str = HEALTH) -> dict[str, str]:
    return {name: doc["status"] for name, doc in server.get(path).json()["targets"].items()}


@pytest.fixture
def main_deployment(start_worker):
    """A private Redis with a worker: the healthy target."""
    with RedisServer() as redis:
        start_worker(app_env(redis.url(0), redis.url(1)), name="main@%h")
        yield redis


def refused() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


class TestRoutes:
    @pytest.fixture
    def server(self, main_deployment, tmp_path):
        path = tmp_path / "targets.toml"
        path.write_text(
            "[defaults]\ndeadline = 2\nroundtrip-slow = 4\n"
            + table("main", main_deployment.url(0), main_deployment.url(1), **{"expect-workers": 1})
            + table("gone", refused(), interval="2s")
        )
        with ServeProcess("--targets", str(path), "--interval", "1", "--report-dir", str(tmp_path / "reports"),
                          "--exporter-metrics", cwd=tmp_path) as server:
            wait_until(lambda: statuses(server) == {"main": "healthy", "gone": "down"}, timeout=40,
                       interval=0.2, what="both targets' first verdicts")
            yield server, tmp_path

    def test_each_target_has_its_verdict_and_the_whole_has_the_worst(self, server):
        server, _tmp = server
        whole = server.get(HEALTH)
        assert whole.status == 200 and whole.elapsed < FAST
        body = whole.json()
        assert body["status"] == "down"
        assert body["targets"]["main"]["workers"] and body["targets"]["main"]["age_s"] >= 0
        assert body["targets"]["gone"]["reasons"][0]["code"] == "celery_broker_unreachable"
        own = server.get("/targets/main" + HEALTH).json()
        assert own["status"] == "healthy" and own["interval_s"] == 1
        assert server.get("/targets/gone" + HEALTH).json()["interval_s"] == 2

    def test_healthz_overall_and_per_target(self, server):
        server, _tmp = server
        whole = server.get("/healthz")
        assert whole.status == 503 and whole.headers["x-celery-probe-status"] == "down"
        assert {n: t["status"] for n, t in whole.json()["targets"].items()} == {"main": "healthy", "gone": "down"}
        assert server.get("/targets/main/healthz").status == 200
        assert server.get("/targets/gone/healthz").status == 503
        missing = server.get("/targets/nope/healthz")
        assert missing.status == 404 and "nope" in missing.json()["error"]

    def test_every_series_names_its_target(self, server):
        server, _tmp = server
        samples = server.metrics()  # parsed by parse_metrics: a duplicate sample or a timestamp fails
        assert samples[("celery_probe_status", (("status", "healthy"), ("target", "main")))] == 1.0
        assert samples[("celery_probe_status", (("status", "down"), ("target", "gone")))] == 1.0
        unlabelled = [(name, labels) for name, labels in samples if "target" not in dict(labels)]
        assert unlabelled == [], unlabelled
        assert samples[("celery_worker_up", (("hostname", next(
            dict(l)["hostname"] for n, l in samples if n == "celery_worker_up")), ("target", "main")))] == 1.0
        assert not [n for n, l in samples if n == "celery_worker_up" and dict(l)["target"] == "gone"]

    def test_ops_alerts_name_their_target(self, server):
        server, _tmp = server
        document = server.get("/api/interactions/metrics/ops-alerts").json()
        assert {a["target"] for a in document["alerts"]} == {"gone"}
        assert set(document["celery_health"]) == {"main", "gone"}
        assert server.get("/targets/main/api/interactions/metrics/ops-alerts").json()["alerts"] == []

    def test_status_page_has_a_section_per_target_and_each_target_its_own_page(self, server):
        server, tmp = server
        page = server.get("/").body.decode()
        assert 'id="target-main"' in page and 'id="target-gone"' in page and "celery_broker_unreachable" in page
        own = server.get("/targets/gone/")
        assert own.status == 200 and "celery_broker_unreachable" in own.body.decode()
        assert (tmp / "reports" / "main" / "history.jsonl").exists()
        assert (tmp / "reports" / "gone" / "history.jsonl").exists()

    def test_every_target_runs_through_one_resident_server(self, server):
        server, _tmp = server

        def resident_servers() -> list[int]:
            found = []
            for pid in server.children():
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"celery_probe.run.resident" in command:
                    found.append(pid)
            return found

        wait_until(lambda: resident_servers(), timeout=30, interval=0.2, what="the resident server")
        assert len(resident_servers()) == 1
        before = runs_of(server)
        wait_until(lambda: all(runs_of(server)[n] > before[n] for n in before), timeout=30, interval=0.2,
                   what="a run of every target")
        assert len(resident_servers()) == 1  # both targets' runs went through it
        resident = resident_servers()[0]

        def forked_run() -> bool:  # a run in progress is the resident server's child, not serve's
            for entry in Path("/proc").iterdir():
                try:
                    if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == resident:
                        return True
                except OSError:
                    continue
            return False

        wait_until(forked_run, timeout=30, interval=0.01, what="a run forked by the resident server")

    def test_openapi_describes_the_routes(self, server):
        server, _tmp = server
        paths = server.get("/openapi.json").json()["paths"]
        assert {"/healthz", "/metrics", HEALTH, "/targets/{name}/healthz", "/targets/{name}" + HEALTH} <= set(paths)


def main_and_frozen(folder: Path, main: RedisServer, frozen: RedisServer) -> Path:
    """A targets file of ``main`` and ``frozen``, whose runs take their 3 s deadline once frozen."""
    path = folder / "targets.toml"
    path.write_text("[defaults]\ndeadline = 3\nroundtrip-slow = 4\n"
                    + table("main", main.url(0), main.url(1)) + table("frozen", frozen.url(0), frozen.url(1)))
    return path


class TestIsolation:
    def test_a_frozen_broker_delays_no_other_target_and_no_answer(self, main_deployment, tmp_path):
        with RedisServer() as frozen:
            path = main_and_frozen(tmp_path, main_deployment, frozen)
            with ServeProcess("--targets", str(path), "--interval", "1", cwd=tmp_path) as server:
                wait_until(lambda: statuses(server).get("main") == "healthy", timeout=40, interval=0.2,
                           what="main healthy")
                frozen.freeze()
                try:
                    before = runs_of(server)
                    slowest = 0.0
                    deadline = time.monotonic() + 8
                    while time.monotonic() < deadline:  # bounded: 8 s of requests
                        for route in (HEALTH, "/healthz", "/metrics", "/", "/targets/frozen" + HEALTH):
                            slowest = max(slowest, server.get(route).elapsed)
                        time.sleep(0.2)
                    after = runs_of(server)
                finally:
                    frozen.thaw()
                # main runs every second; the frozen target's runs take their 3 s deadline each
                assert after["main"] - before["main"] >= 4, (before, after)
                assert after["frozen"] - before["frozen"] <= 4, (before, after)  # 8 s / a 3 s deadline, +1 in flight
                assert slowest < FAST, slowest
                assert statuses(server)["main"] == "healthy"

    def test_a_frozen_broker_holds_a_run_slot_for_a_second_at_most(self, main_deployment, tmp_path):
        """One slot for both targets: the frozen target's 3 s runs must not keep main's from starting."""
        with RedisServer() as frozen:
            path = main_and_frozen(tmp_path, main_deployment, frozen)
            frozen.freeze()
            try:
                with ServeProcess("--targets", str(path), "--interval", "1", "--runs-at-once", "1",
                                  cwd=tmp_path) as server:
                    wait_until(lambda: statuses(server).get("main") == "healthy", timeout=40, interval=0.2,
                               what="main healthy")
                    before = runs_of(server)
                    time.sleep(8)
                    after = runs_of(server)
            finally:
                frozen.thaw()
        # A slot held for whole runs would leave main about one run per frozen run (3 s each).
        assert after["main"] - before["main"] >= 4, (before, after)
        assert after["frozen"] - before["frozen"] >= 1, (before, after)


class TestManyTargets:
    def test_two_dozen_targets_started_together_all_get_a_fair_first_run(self, main_deployment, tmp_path):
        """24 targets on one worker, all due at serve's start on this small host: runs take turns
        for the CPUs, so none is killed at its hard timeout or reads the prober's own crowding
        as a worker that did not answer."""
        names = [f"t{n:02d}" for n in range(24)]
        path = tmp_path / "targets.toml"
        path.write_text("[defaults]\nexpect-workers = 1\nroundtrip-slow = 4\n"
                        + "".join(table(name, main_deployment.url(0), main_deployment.url(1)) for name in names))
        with ServeProcess("--targets", str(path), "--interval", "60", cwd=tmp_path) as server:
            seen: set[str] = set()

            def all_healthy() -> bool:
                now = statuses(server)
                seen.update(now.values())
                return set(now.values()) == {"healthy"}

            wait_until(all_healthy, timeout=45, interval=0.3, what="every target's first verdict healthy")
            assert seen <= {"unknown", "healthy"}, seen
            assert "was killed" not in server.log_text() and "DOWN" not in server.log_text(), server.log_text()
            assert min(runs_of(server).values()) == 1  # one run each, none repeated to get there


    def test_a_verdict_stale_for_want_of_a_run_slot_says_so(self, main_deployment, tmp_path):
        """One slot, 15 targets on a frozen broker (each run holds the slot for its first second):
        main's next run waits longer than its verdict stays fresh. It turns unknown, never down,
        and the reason names the run slots and what to change."""
        with RedisServer() as frozen:
            path = tmp_path / "targets.toml"
            path.write_text("[defaults]\ndeadline = 1\nroundtrip-slow = 4\n"
                            + table("main", main_deployment.url(0), main_deployment.url(1))
                            + "".join(table(f"f{n:02d}", frozen.url(0), frozen.url(1)) for n in range(15)))
            with ServeProcess("--targets", str(path), "--interval", "1", "--runs-at-once", "1",
                              cwd=tmp_path) as server:
                wait_until(lambda: statuses(server).get("main") == "healthy", timeout=60, interval=0.2,
                           what="main healthy")
                frozen.freeze()
                try:
                    seen: set[str] = set()

                    def stale_for_a_slot() -> bool:
                        document = server.get("/targets/main" + HEALTH).json()
                        seen.add(document["status"])
                        reason = (document.get("reasons") or [{}])[0]
                        return reason.get("code") == "celery_probe_stale" and "run slots" in reason["message"]

                    wait_until(stale_for_a_slot, timeout=90, interval=0.5, what="main stale, waiting for a slot")
                    message = server.get("/targets/main" + HEALTH).json()["reasons"][0]["message"]
                finally:
                    frozen.thaw()
        assert seen <= {"healthy", "unknown"}, seen
        assert "one of serve's 1 run slots" in message and "--runs-at-once" in message, message


class TestReload:
    def test_sighup_adds_removes_and_keeps_unchanged_targets_running(self, main_deployment, tmp_path):
        path = tmp_path / "targets.toml"
        main = table("main", main_deployment.url(0), main_deployment.url(1))
        path.write_text("[defaults]\ndeadline = 2\n" + main + table("old", refused()))
        with ServeProcess("--targets", str(path), "--interval", "1", cwd=tmp_path) as server:
            wait_until(lambda: set(statuses(server)) == {"main", "old"} and runs_of(server).get("main", 0) >= 2,
                       timeout=40, interval=0.2, what="two runs of main")
            first_runs = runs_of(server)["main"]
            path.write_text("[defaults]\ndeadline = 2\n" + main + table("new", refused()))
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: set(statuses(server)) == {"main", "new"}, timeout=20, interval=0.1,
                       what="the reloaded targets")
            assert server.get("/targets/old/healthz").status == 404
            assert runs_of(server)["main"] >= first_runs  # not restarted: its counter goes on
            wait_until(lambda: statuses(server)["new"] == "down", timeout=20, interval=0.2, what="new's verdict")
            assert server.proc.poll() is None

            path.write_text("[targets.broken]\ndeadline = 'soon'\n")
            server.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "keeping the 2 running targets" in server.log_text(), timeout=20, interval=0.1,
                       what="the reload error in the log")
            assert set(statuses(server)) == {"main", "new"}
            line = next(l for l in server.log_text().splitlines() if "keeping the 2" in l)
            assert "[targets.broken]" in line and "Traceback" not in server.log_text()


class TestUsage:
    @pytest.mark.parametrize(("body", "message"), [
        ("[targets.a]\nbroker = 'redis://127.0.0.1:1/0'\ninterval = 0\n",
         "invalid interval 0: must be between 0.5 and 86400 seconds (from [targets.a] in"),
        ("[defaults]\ninterval = 'often'\n[targets.a]\nbroker = 'redis://127.0.0.1:1/0'\n",
         "invalid interval 'often': must be a duration like 90s, 5m, 1.5h or 250ms (from [defaults] in"),
        ("[targets.a]\n", "[targets.a] in"),
    ])
    def test_bad_targets_file_is_one_line_and_64(self, body, message, tmp_path):
        path = tmp_path / "t.toml"
        path.write_text(body)
        result = run_cli("serve", "--targets", str(path), "--port", "0", cwd=tmp_path, timeout=30)
        assert result.code == 64, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr

    def test_targets_and_a_broker_together_are_refused(self, tmp_path):
        path = tmp_path / "t.toml"
        path.write_text("[targets.a]\nbroker = 'redis://127.0.0.1:1/0'\n")
        result = run_cli("serve", "--targets", str(path), "-b", "redis://127.0.0.1:1/0", "--port", "0",
                         cwd=tmp_path, timeout=30)
        assert result.code == 64 and "not both" in result.stderr


def test_a_missing_targets_file_is_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--targets", str(tmp_path / "none.toml"), "--port", "0", cwd=tmp_path, timeout=30)
    assert result.code == 64 and result.stderr.startswith("celery-probe: error: cannot read targets file")
    assert result.stderr.endswith(": No such file or directory\n"), result.stderr

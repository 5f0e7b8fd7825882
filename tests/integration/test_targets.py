"""Several targets in one run: a verdict per target and an overall one, probed in parallel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celery_probe.testing import RedisServer
from tests.support.environment import app_env

pytestmark = pytest.mark.redis_only


def write_targets(folder: Path, body: str) -> Path:
    path = folder / "targets.toml"
    path.write_text(body)
    return path


def target_table(name: str, redis: RedisServer, **extra: object) -> str:
    lines = [f"[targets.{name}]", f'broker = "{redis.url(0)}"', f'backend = "{redis.url(1)}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def two_deployments(start_worker):
    """`main` has a worker; `reports` has none."""
    with RedisServer() as main, RedisServer() as reports:
        start_worker(app_env(main.url(0), main.url(1)), name="main@%h")
        yield main, reports


class TestTwoTargets:
    """One healthy and one down target: the run is down, each verdict is its own."""

    def test_verdicts_per_target(self, two_deployments, cli, tmp_path):
        main, reports = two_deployments
        path = write_targets(tmp_path, "[defaults]\ndeadline = 3\n" + target_table("main", main, **{"expect-workers": 1})
                             + target_table("reports", reports))
        result = cli("run", "--targets", str(path), "--format", "json")
        verdict = result.verdict()
        assert result.code == 2
        assert verdict["status"] == "down"
        assert {name: t["status"] for name, t in verdict["targets"].items()} == {"main": "healthy", "reports": "down"}
        assert list(verdict["targets"]["main"]["workers"]) == [next(iter(verdict["targets"]["main"]["workers"]))]
        assert verdict["targets"]["main"]["target"].startswith("redis://127.0.0.1:")
        first = verdict["reasons"][0]
        assert first["target"] == "reports" and first["code"] == "celery_worker_down"
        history = json.loads((tmp_path / "reports" / "history.jsonl").read_text().splitlines()[-1])
        assert history["targets"] == {"main": "healthy", "reports": "down"}
        report = json.loads((tmp_path / "reports" / "latest.json").read_text())
        assert report["celery_probe"]["targets"] == ["main", "reports"]
        assert {t["metadata"]["probe"]["target"] for t in report["tests"]} == {"main", "reports"}

    def test_per_probe_timeout_in_every_worker(self, two_deployments, cli, tmp_path):
        main, reports = two_deployments
        path = write_targets(tmp_path, target_table("main", main) + target_table("reports", reports))
        probe = tmp_path / "test_slow.py"
        probe.write_text("import time\ndef test_sleeps(probe_run):\n    time.sleep(30)\n")
        result = cli("run", "--targets", str(path), "--deadline", "40", "--timeout", "1", "--parallel", "2",
                     "--probes", str(probe), "--format", "json")
        verdict = result.verdict()
        for name in ("main", "reports"):
            slow = [r for r in verdict["targets"][name]["reasons"] if "test_sleeps" in r["probe"]]
            assert [(r["code"], r["message"]) for r in slow] == [
                ("celery_probe_timeout", "probe exceeded its 1 s timeout (from --timeout)")], verdict["targets"][name]
        # The timeout ended each 30 s probe: far below the sleep, whatever the host's load adds
        # to the start-up of two probe processes.
        assert result.elapsed < 20, result.elapsed

    def test_text_and_nagios(self, two_deployments, cli, tmp_path):
        main, reports = two_deployments
        path = write_targets(tmp_path, target_table("main", main) + target_table("reports", reports))
        text = cli("run", "--targets", str(path), "--deadline", "3")
        assert text.code == 2
        lines = text.stdout.splitlines()
        assert lines[0].startswith("celery-probe: DOWN  2 targets") and "main healthy, reports down" in lines[0]
        assert any(line.startswith("[main] HEALTHY") for line in lines)
        assert any(line.startswith("[reports] DOWN") for line in lines)
        nagios = cli("run", "--targets", str(path), "--deadline", "3", "--format", "nagios")
        assert nagios.code == 2 and nagios.stdout.startswith("CELERY CRITICAL - down: main healthy, reports down")

    def test_a_frozen_target_does_not_hold_up_the_others(self, two_deployments, cli, tmp_path):
        main, reports = two_deployments
        path = write_targets(tmp_path, target_table("main", main) + target_table("frozen", reports))
        reports.freeze()
        try:
            result = cli("run", "--targets", str(path), "--deadline", "2", "--parallel", "2", "--format", "json")
        finally:
            reports.thaw()
        verdict = result.verdict()
        assert verdict["targets"]["main"]["status"] == "healthy"
        assert verdict["targets"]["frozen"]["reasons"][0]["code"] == "celery_broker_unreachable", verdict["targets"]["frozen"]["reasons"]
        # Two workers in parallel: the run takes one deadline plus process start-up, not two.
        assert result.elapsed < 2 + 1 + 4, result.elapsed


class TestTargetsFileErrors:
    """A bad targets file is a usage error naming the file, the table and the key."""

    @pytest.mark.parametrize("body, words", [
        ("[targets.a]\nbroker = 'redis://x/0'\ndeadlin = 3\n", "unknown setting 'deadlin' ([targets.a] in"),
        ("[targets.a]\nbroker = 'redis://x/0'\ndeadline = 'soon'\n", "invalid deadline 'soon'"),
        ("[defaults]\ndeadline = 3\n", "has no [targets.NAME] table"),
        ("[targets.a]\nbroker = 'redis://x/0'\nreport-dir = 'r'\n", "report-dir is a run-wide setting"),
        ("[targets.a]\nbroker = 'redis://x/0'\ntimeout = 1\n", "timeout is a run-wide setting"),
        ("[targets.a]\nqueues = ['x']\n", "no app or broker for the target ([targets.a] in"),
        ("[targets.'bad name']\nbroker = 'redis://x/0'\n", "invalid target name 'bad name'"),
        ("[target.a]\nbroker = 'redis://x/0'\n", "unknown table 'target'"),
        ("[targets.a\n", "cannot read targets file"),
    ])
    def test_bad_file(self, cli, tmp_path, body, words):
        result = cli("run", "--targets", str(write_targets(tmp_path, body)))
        assert result.code == 64, result.stdout + result.stderr
        assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1

    def test_targets_and_app_together(self, cli, tmp_path):
        path = write_targets(tmp_path, "[targets.a]\nbroker = 'redis://x/0'\n")
        result = cli("run", "--targets", str(path), "-b", "redis://y/0")
        assert result.code == 64 and "not both" in result.stderr

    def test_missing_file(self, cli, tmp_path):
        result = cli("run", "--targets", str(tmp_path / "nope.toml"))
        assert result.code == 64 and "cannot read targets file" in result.stderr

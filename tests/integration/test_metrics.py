"""Metrics of a verdict: the pure mapper on captured real reports, and `run --prom-file` for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celery_probe.present.metrics import ServeLoopTotals, metric_families, render
from celery_probe.testing import CeleryWorker
from celery_probe.verdict.mapper import STATUSES, verdict_from_report
from tests.support.environment import APPS, TESTS, app_env
from tests.support.serving import parse_metrics, textfile_samples

pytestmark = pytest.mark.redis_only  # private redis-servers; nothing here depends on --broker

REPORTS = sorted((TESTS / "reports").glob("*.json"))
DEADLINE = "3"


def samples_of(verdict, report=None, **kwargs):
    return parse_metrics(render(metric_families(verdict, report, **kwargs)).decode())


@pytest.mark.parametrize("path", REPORTS, ids=[p.stem for p in REPORTS])
class TestCapturedReports:
    """Every report captured from a real run gives a valid exposition that agrees with its verdict."""

    def test_status_is_one_hot(self, path):
        report = json.loads(path.read_text())
        verdict = verdict_from_report(report)
        samples = samples_of(verdict, report)
        states = {status: samples[("celery_probe_status", (("status", status),))] for status in STATUSES}
        assert states == {status: float(status == verdict["status"]) for status in STATUSES}

    def test_queues_workers_and_probes_agree_with_the_verdict(self, path):
        report = json.loads(path.read_text())
        verdict = verdict_from_report(report)
        samples = samples_of(verdict, report)
        for queue, info in verdict["queues"].items():
            if info.get("length") is not None:
                assert samples[("celery_probe_queue_length", (("queue", queue),))] == info["length"]
            if info.get("consumers") is not None:
                assert samples[("celery_probe_queue_consumers", (("queue", queue),))] == info["consumers"]
            key = ("celery_probe_roundtrip_seconds", (("queue", queue),))
            if info.get("roundtrip_ms") is None:
                assert key not in samples  # not measured is absent, not zero
            else:
                assert samples[key] == pytest.approx(info["roundtrip_ms"] / 1000)
        alive = [name for name, w in verdict["workers"].items() if w.get("last_heartbeat")]
        assert samples[("celery_probe_workers_up", ())] == len(alive)
        probes = {dict(k[1])["probe"] for k in samples if k[0] == "celery_probe_probe_duration_seconds"}
        assert probes == {t["nodeid"] for t in report["tests"]}
        failed = {dict(k[1])["probe"] for k, v in samples.items() if k[0] == "celery_probe_probe_failed" and v}
        assert failed == {t["nodeid"] for t in report["tests"] if t["outcome"] in ("failed", "error")}
        codes = {dict(k[1])["code"] for k in samples if k[0] == "celery_probe_reason"}
        assert codes == {r["code"] for r in verdict["reasons"]}

    def test_no_url_or_credential_in_any_label(self, path):
        report = json.loads(path.read_text())
        text = render(metric_families(verdict_from_report(report), report)).decode()
        for line in text.splitlines():
            if not line.startswith("#") and "{" in line:
                labels = line[line.index("{"):line.rindex("}")]
                assert "://" not in labels and "***" not in labels, line


class TestPureFunction:
    def test_same_inputs_same_output(self):
        report = json.loads(REPORTS[0].read_text())
        verdict = verdict_from_report(report)
        first = render(metric_families(verdict, report, now=2e9, last_success=1.9e9))
        assert first == render(metric_families(verdict, report, now=2e9, last_success=1.9e9))

    def test_delayed_messages_only_where_measured(self):
        report = json.loads(REPORTS[0].read_text())
        verdict = verdict_from_report(report)
        assert "delayed_messages" not in verdict
        assert ("celery_probe_delayed_messages", ()) not in samples_of(verdict)
        test = report["tests"][0]
        test.setdefault("metadata", {}).setdefault("measured", {})["delayed"] = {"messages": 7, "queues": 28}
        verdict = verdict_from_report(report)
        assert verdict["delayed_messages"] == 7
        assert samples_of(verdict)[("celery_probe_delayed_messages", ())] == 7.0

    def test_age_counters_and_last_success_only_when_given(self):
        verdict = verdict_from_report(json.loads(REPORTS[0].read_text()))
        bare = samples_of(verdict)
        assert ("celery_probe_verdict_age_seconds", ()) not in bare
        assert ("celery_probe_runs_total", ()) not in bare
        assert ("celery_probe_last_success_timestamp_seconds", ()) not in bare
        produced = bare[("celery_probe_last_run_timestamp_seconds", ())]
        full = samples_of(verdict, now=produced + 7.5, last_success=123.0, counters=ServeLoopTotals(5, 2))
        assert full[("celery_probe_verdict_age_seconds", ())] == 7.5
        assert full[("celery_probe_runs_total", ())] == 5 and full[("celery_probe_runs_killed_total", ())] == 2
        assert full[("celery_probe_last_success_timestamp_seconds", ())] == 123.0

    def test_hostile_verdict_still_renders(self):
        verdict = {"status": "weird", "workers": {"w": None}, "queues": {"q": "x"}, "reasons": [None, {"code": 1}],
                   "duration_s": float("nan"), "checked_at": "yesterday"}
        samples = samples_of(verdict, {"tests": [None, {"nodeid": "a::b", "call": {"duration": "x"}}]})
        assert sum(v for k, v in samples.items() if k[0] == "celery_probe_status") == 0
        assert samples[("celery_probe_probe_duration_seconds", (("probe", "a::b"),))] == 0


class TestSeveralTargets:
    """`run --targets`: the overall status stays unlabelled, every deployment series gets `target`."""

    def test_each_target_labelled(self):
        healthy = verdict_from_report(json.loads((TESTS / "reports" / "healthy_two_workers.json").read_text()))
        down = verdict_from_report(json.loads((TESTS / "reports" / "no_worker.json").read_text()))
        reasons = [{**r, "target": "reports"} for r in down["reasons"]]
        verdict = {"status": "down", "targets": {"main": healthy, "reports": down}, "reasons": reasons,
                   "checked_at": healthy["checked_at"], "duration_s": 1.0}
        samples = samples_of(verdict)
        assert samples[("celery_probe_status", (("status", "down"),))] == 1
        assert samples[("celery_probe_target_status", (("status", "healthy"), ("target", "main")))] == 1
        assert samples[("celery_probe_target_status", (("status", "down"), ("target", "reports")))] == 1
        assert samples[("celery_probe_workers_up", (("target", "main"),))] == 2
        assert samples[("celery_probe_workers_up", (("target", "reports"),))] == 0
        assert samples[("celery_probe_queue_consumers", (("queue", "celery"), ("target", "main")))] == 2
        assert samples[("celery_probe_reason", (("code", "celery_worker_down"), ("severity", "critical"),
                                                 ("target", "reports")))] == 1
        assert ("celery_probe_workers_up", ()) not in samples


# ------------------------------------------------------------------------- run --prom-file


@pytest.fixture(scope="module")
def deployment(module_redis):
    env = app_env(module_redis.url(0), module_redis.url(1))
    with CeleryWorker("probe_test_app", name="prom@%h", env=env, pythonpath=[APPS]) as worker:
        yield env, worker


def prom_run(cli, env, path: Path, *extra: str):
    return cli("run", "-A", "probe_test_app", "--deadline", DEADLINE, "--roundtrip-slow", "2.5", "--format", "json",
               "--prom-file", str(path), *extra, env=env)


class TestPromFile:
    def test_written_atomically_and_parsed_back(self, deployment, cli, tmp_path):
        env, worker = deployment
        target = tmp_path / "textfile" / "celery.prom"
        target.parent.mkdir()
        result = prom_run(cli, env, target, "--expect-workers", "1")
        assert result.code == 0, result.stderr
        verdict = result.verdict()
        samples = textfile_samples(target.read_text(), "celery")
        assert samples[("celery_probe_status", (("status", "healthy"),))] == 1
        assert samples[("celery_probe_queue_length", (("queue", "celery"),))] == 0
        assert samples[("celery_probe_queue_consumers", (("queue", "celery"),))] == 1
        assert samples[("celery_probe_roundtrip_seconds", (("queue", "celery"),))] == pytest.approx(
            verdict["roundtrip_ms"] / 1000)
        assert samples[("celery_probe_worker_ping_latency_seconds", (("worker", worker.name),))] > 0
        assert samples[("celery_probe_last_success_timestamp_seconds", ())] == samples[
            ("celery_probe_last_run_timestamp_seconds", ())]
        assert ("celery_probe_verdict_age_seconds", ()) not in samples  # node_exporter has the file mtime
        assert ("celery_probe_runs_total", ()) not in samples
        assert sorted(p.name for p in target.parent.iterdir()) == ["celery.prom"]  # no temp file left

    def test_last_success_survives_a_degraded_run(self, deployment, cli, tmp_path):
        env, _worker = deployment
        target = tmp_path / "celery.prom"
        assert prom_run(cli, env, target, "--expect-workers", "1").code == 0
        healthy = textfile_samples(target.read_text(), "celery")
        result = prom_run(cli, env, target, "--expect-workers", "2")
        assert result.code == 3, result.stdout
        degraded = textfile_samples(target.read_text(), "celery")
        assert degraded[("celery_probe_status", (("status", "degraded"),))] == 1
        assert degraded[("celery_probe_reason", (("code", "celery_workers_missing"), ("severity", "degraded")))] == 1
        assert degraded[("celery_probe_last_success_timestamp_seconds", ())] == healthy[
            ("celery_probe_last_success_timestamp_seconds", ())]
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "reports") == ["celery.prom"]

    def test_must_end_in_prom_checked_before_probing(self, cli, tmp_path):
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--prom-file", str(tmp_path / "celery.txt"))
        assert result.code == 64
        assert "must end in .prom" in result.stderr and result.stderr.count("\n") == 1
        assert not (tmp_path / "reports").exists()  # refused before anything ran

    def test_unwritable_folder_is_73(self, cli, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("")
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--prom-file", str(blocker / "x.prom"))
        assert result.code == 73 and "--prom-file" in result.stderr and result.stderr.count("\n") == 1

    def test_a_folder_that_does_not_exist_is_one_line_and_73(self, cli, tmp_path):
        """Nobody reads a textfile outside the collector's folder: no folder is created for it."""
        missing = tmp_path / "node_exporter" / "textfile"
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--prom-file", str(missing / "celery.prom"))
        assert result.code == 73 and result.stderr.count("\n") == 1, result.stderr
        assert f"folder {missing} does not exist" in result.stderr and "--prom-file" in result.stderr
        assert not missing.parent.exists() and not (tmp_path / "reports").exists()  # refused before anything ran

    def test_every_series_names_the_deployment(self):
        """Pure: the textfile's label is on every family, counters and info included."""
        verdict = verdict_from_report(json.loads(REPORTS[0].read_text()))
        text = render(metric_families(verdict, last_success=1.0, counters=ServeLoopTotals(1, 0),
                                      deployment="billing")).decode()
        samples = parse_metrics(text)
        assert samples and all(("deployment", "billing") in labels for _name, labels in samples)
        assert not any(label == "deployment" for _name, labels in samples_of(verdict) for label, _ in labels)

"""Absurd and hostile input: a verdict (or one line) quickly, never a traceback, never a hang.

What is already covered elsewhere: a missing, empty, truncated, foreign or binary report
(tests/integration/test_cli_errors.py), random and mutated reports given to the mapper
(tests/integration/test_fuzz.py), an endpoint that hangs, trickles or sends too much
(tests/integration/test_alerting_check.py, tests/integration/test_run_healthy.py). Here: a report too large to be
ours, and JSON nested deeper than Python's decoder can recurse, wherever celery-probe
reads JSON it did not write itself.
"""

from __future__ import annotations

import json

from tests.support.environment import run_cli

DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON; json.loads raises RecursionError on it
QUICK = 3.0  # seconds for the whole command, interpreter start-up included


def assert_clean(result) -> None:
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr, result.stderr


class TestReportFiles:
    def test_a_60_mb_report_is_refused_without_reading_it(self, tmp_path):
        path = tmp_path / "huge.json"
        with open(path, "w", encoding="utf-8") as handle:  # a valid JSON object, just far too big
            handle.write('{"tests": [], "pad": "')
            handle.write("x" * 60_000_000)
            handle.write('"}')
        result = run_cli("verdict", str(path), "--format", "json", cwd=tmp_path, timeout=30)
        assert result.code == 4, result.stderr
        verdict = json.loads(result.stdout)
        assert verdict["status"] == "unknown"
        (reason,) = verdict["reasons"]
        assert reason["code"] == "celery_probe_no_evidence"
        assert f"report {path} is 60000024 bytes, over the 50000000-byte limit" == reason["message"]
        assert result.elapsed < QUICK, result.elapsed
        assert_clean(result)
        text = run_cli("verdict", str(path), cwd=tmp_path, timeout=30)
        assert text.code == 4 and "over the 50000000-byte limit" in text.stdout
        assert text.elapsed < QUICK

    def test_a_report_nested_too_deeply_is_unknown(self, tmp_path):
        path = tmp_path / "deep.json"
        path.write_text(DEEP)
        result = run_cli("verdict", str(path), "--format", "json", cwd=tmp_path, timeout=30)
        assert_clean(result)
        assert result.code == 4
        (reason,) = json.loads(result.stdout)["reasons"]
        assert "nested too deeply" in reason["message"]
        assert result.elapsed < QUICK

    def test_ingest_of_such_a_report_and_such_an_alerts_file(self, tmp_path):
        deep = tmp_path / "deep.json"
        deep.write_text(DEEP)
        report = run_cli("ingest", str(deep), cwd=tmp_path, timeout=30)
        assert_clean(report)
        assert report.code == 4 and json.loads(report.stdout)["celery_health"]["status"] == "unknown"
        fine = tmp_path / "fine.json"
        fine.write_text(json.dumps({"tests": []}))
        alerts = run_cli("ingest", str(fine), "--alerts", str(deep), cwd=tmp_path, timeout=30)
        assert_clean(alerts)
        assert alerts.code == 64
        (line,) = alerts.stderr.strip().splitlines()
        assert "nested too deeply" in line and "--alerts" in line


class TestAnswersAndState:
    def test_check_of_an_endpoint_answering_deep_json(self, health, tmp_path):
        health.serve_raw(("[" * 50_000 + "]" * 50_000).encode())  # valid, and under the 1 MB read cap
        result = run_cli("check", health.url(), cwd=tmp_path, timeout=30)
        assert_clean(result)
        assert result.code == 1 and "not JSON" in result.stdout + result.stderr
        assert result.elapsed < QUICK

    def test_a_state_file_nested_too_deeply_is_set_aside(self, health, hooks, tmp_path):
        state = tmp_path / "state.json"
        state.write_text(DEEP)
        health.serve("down")
        result = run_cli("check", health.url(), "--webhook", hooks.url(), "--state-file", str(state),
                         cwd=tmp_path, timeout=30)
        assert_clean(result)
        assert result.code == 2
        assert "is damaged: not a valid state (nested too deeply)" in result.stderr
        assert (tmp_path / "state.json.corrupt").read_text() == DEEP
        (post,) = hooks.wait_for(1)
        assert post.json()["event"] == "problem"  # the alert still went out, afresh

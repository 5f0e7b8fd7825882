"""`celery-probe ingest`: a report file becomes the ops-alerts document, printed and posted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celery_probe.testing import free_port
from tests.support.alert_servers import HookSink
from tests.support.environment import run_cli

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def ingest(*args: str, cwd: Path):
    return run_cli("ingest", *args, cwd=cwd)


class TestDocument:
    """The printed document: seed alerts, one per root cause, existing alerts untouched."""

    def test_down_report(self, tmp_path):
        result = ingest(str(REPORTS / "no_worker.json"), cwd=tmp_path)
        assert result.code == 2
        document = json.loads(result.stdout)
        codes = [a["code"] for a in document["alerts"]]
        assert codes[0] == "celery_worker_down" and document["alerts"][0]["severity"] == "critical"
        assert "celery_roundtrip_failed" not in codes  # "not attempted": a consequence, no alert of its own
        assert all("link" not in alert for alert in document["alerts"])  # no Flower URL recorded: no link key
        assert document["celery_health"]["status"] == "down"

    def test_existing_alerts_kept_first_and_untouched(self, tmp_path):
        existing = [{"code": "sync_health", "severity": "high", "message": "sync 20 min behind", "extra": [1]}]
        path = tmp_path / "alerts.json"
        path.write_text(json.dumps({"alerts": existing}))
        result = ingest(str(REPORTS / "queue_high_saturated.json"), "--alerts", str(path), cwd=tmp_path)
        assert result.code == 3
        alerts = json.loads(result.stdout)["alerts"]
        assert alerts[0] == existing[0]
        assert {"code": "celery_queue_high", "severity": "medium"}.items() <= alerts[1].items()

    def test_each_target_links_to_its_own_flower(self, tmp_path):
        def failing(target: str) -> dict:
            return {"nodeid": f"probes/test_workers.py::test_workers_answer_ping[{target}]", "outcome": "failed",
                    "call": {"outcome": "failed", "crash": {"message": "Failed: no worker answered ping"}},
                    "metadata": {"probe": {"severity": "critical", "code": "celery_worker_down", "target": target}}}

        report = {"created": 0, "duration": 1, "tests": [failing("a"), failing("b")], "celery_probe": {
            "targets": ["a", "b"],  # a foreign report may hold credentials: they never reach a link
            "target_details": {"a": {"target": "A", "flower": "http://ops:pw-in-report@fa/"}, "b": {"target": "B"}}}}
        (tmp_path / "r.json").write_text(json.dumps(report))
        result = ingest(str(tmp_path / "r.json"), cwd=tmp_path)
        assert result.code == 2, result.stderr
        alerts = json.loads(result.stdout)["alerts"]
        assert [(a["target"], a["code"], a.get("link")) for a in alerts] == [
            ("a", "celery_worker_down", "http://fa/workers"), ("b", "celery_worker_down", None)]
        assert "link" not in alerts[1] and "pw-in-report" not in result.stdout

    def test_unreadable_report_is_unknown(self, tmp_path):
        (tmp_path / "r.json").write_text('{"tests": [')
        result = ingest(str(tmp_path / "r.json"), cwd=tmp_path)
        assert result.code == 4
        assert json.loads(result.stdout)["celery_health"]["status"] == "unknown"

    @pytest.mark.parametrize("content, words", [
        ("not json", "is not JSON"),
        ('{"alerts": "x"}', "no list of alert objects"),
    ])
    def test_bad_alerts_file(self, tmp_path, content, words):
        path = tmp_path / "alerts.json"
        path.write_text(content)
        result = ingest(str(REPORTS / "no_worker.json"), "--alerts", str(path), cwd=tmp_path)
        assert result.code == 64 and words in result.stderr and "Traceback" not in result.stderr


class TestPost:
    """--post delivers the same document to a real HTTP server, bounded."""

    def test_posted_document_equals_printed(self, hooks: HookSink, tmp_path):
        result = ingest(str(REPORTS / "healthy_two_workers.json"), "--post", hooks.url("/ingest"), cwd=tmp_path)
        assert result.code == 0, result.stderr
        posted = hooks.wait_for(1)[0]
        assert posted.json() == json.loads(result.stdout)
        assert posted.json()["alerts"] == []

    def test_receiver_refusing_exits_1(self, tmp_path):
        result = ingest(str(REPORTS / "no_worker.json"), "--post", f"http://127.0.0.1:{free_port()}/x", cwd=tmp_path)
        assert result.code == 1
        assert "could not post to http://127.0.0.1:" in result.stderr and "refused" in result.stderr

    def test_receiver_answering_500_exits_1(self, hooks: HookSink, tmp_path):
        hooks.answer(500)
        result = ingest(str(REPORTS / "no_worker.json"), "--post", hooks.url("/secret-token-path"), cwd=tmp_path)
        assert result.code == 1 and "HTTP 500" in result.stderr
        assert "secret-token-path" not in result.stderr

    def test_bad_url_is_a_usage_error(self, tmp_path):
        result = ingest(str(REPORTS / "no_worker.json"), "--post", "file:///etc/passwd", cwd=tmp_path)
        assert result.code == 64 and "http://" in result.stderr

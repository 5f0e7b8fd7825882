"""`celery-probe check URL` against a real HTTP health endpoint: one line, documented exit codes."""

from __future__ import annotations

import base64

import pytest

from celery_probe.testing import free_port
from tests.support.environment import run_cli

ANSI = "\x1b["


def assert_one_line(result, code: int, *words: str) -> str:
    assert result.code == code, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def assert_usage_error(result, *words: str) -> None:
    assert result.code == 64, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("celery-probe: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


class TestVerdicts:
    @pytest.mark.parametrize("status, code", [("healthy", 0), ("down", 2), ("degraded", 3), ("unknown", 4)])
    def test_status_gives_exit_code(self, health, tmp_path, status, code):
        health.serve(status)
        line = assert_one_line(run_cli("check", health.url(), cwd=tmp_path), code, status.upper(), health.url())
        assert ANSI not in line  # piped: plain text

    def test_down_line_says_why(self, health, tmp_path):
        health.serve("down")
        line = assert_one_line(run_cli("check", health.url(), cwd=tmp_path), 2)
        assert "worker not alive" in line and "celery_worker_down: no worker answered ping" in line

    def test_minimal_seed_shape(self, health, tmp_path):
        health.serve_raw({"worker_alive": True, "active_tasks": 0, "scheduled_tasks": 0, "queue_length": 0,
                          "last_heartbeat": "2026-11-24T08:51:05+00:00", "status": "healthy"})
        assert_one_line(run_cli("check", health.url(), cwd=tmp_path), 0, "HEALTHY", "worker alive", "queue 0")

    def test_503_with_a_down_verdict_is_down(self, health, tmp_path):
        health.serve("down", code=503)
        assert_one_line(run_cli("check", health.url(), cwd=tmp_path), 2, "DOWN")

    def test_hostile_text_stays_on_one_line(self, health, tmp_path):
        health.serve("down", reasons=[{"code": "x", "severity": "critical", "message": "a\r\nFAKE: line\x1b[31m"}])
        line = assert_one_line(run_cli("check", health.url(), cwd=tmp_path), 2)
        assert "\x1b" not in line

    def test_credentials_in_the_url_are_sent_not_shown(self, health, tmp_path):
        url = health.url().replace("http://", "http://probe:s3cr3t-pw@")
        health.serve("healthy")
        result = run_cli("check", url, cwd=tmp_path)
        line = assert_one_line(result, 0, "probe:***@")
        assert "s3cr3t-pw" not in result.stdout + result.stderr and "s3cr3t-pw" not in line
        _path, headers = health.server.requests[-1]
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"probe:s3cr3t-pw").decode()


class TestErrors:
    """No verdict: exit 1 and one line saying why; never a traceback."""

    @pytest.mark.parametrize("body, code, kind, words", [
        ({"status": "healthy"}, 500, "application/json", ["HTTP 500"]),
        ({"status": "healthy"}, 503, "application/json", ["HTTP 503"]),
        (b"<html>OK</html>", 200, "text/html", ["not JSON"]),
        ({"worker_alive": True}, 200, "application/json", ["status is missing"]),
        ({"status": "fine"}, 200, "application/json", ["status is 'fine'"]),
        ([1, 2], 200, "application/json", ["not a JSON object"]),
    ])
    def test_not_a_verdict(self, health, tmp_path, body, code, kind, words):
        health.serve_raw(body, code=code, content_type=kind)
        assert_one_line(run_cli("check", health.url(), cwd=tmp_path), 1, "ERROR", *words)

    def test_redirect_is_not_followed(self, health, tmp_path):
        health.serve_raw({}, mode="redirect")
        assert_one_line(run_cli("check", health.url(), cwd=tmp_path), 1, "HTTP 302")
        assert len(health.server.requests) == 1

    def test_connection_refused(self, tmp_path):
        url = f"http://127.0.0.1:{free_port()}/health"
        assert_one_line(run_cli("check", url, cwd=tmp_path), 1, "ERROR", "connection refused")

    def test_hanging_endpoint_is_bounded(self, health, tmp_path):
        health.serve_raw({}, mode="hang")
        result = run_cli("check", health.url(), "--timeout", "1", cwd=tmp_path)
        assert_one_line(result, 1, "timed out")
        assert result.elapsed < 4, result.elapsed

    def test_a_trickling_endpoint_is_bounded_as_a_whole(self, health, tmp_path):
        """One byte every 0.2 s never trips a socket timeout; the total bound still holds."""
        health.serve_raw({}, mode="drip")
        result = run_cli("check", health.url(), "--timeout", "1.5", cwd=tmp_path)
        assert_one_line(result, 1, "timed out")
        assert result.elapsed < 4.5, result.elapsed

    def test_body_size_is_capped(self, health, tmp_path):
        health.serve_raw(b" " * 2_000_000 + b'{"status": "healthy"}')
        assert_one_line(run_cli("check", health.url(), cwd=tmp_path), 1, "larger than 1000000 bytes")


class TestColour:
    def test_force_color_paints_the_status(self, health, tmp_path):
        health.serve("down")
        line = assert_one_line(run_cli("check", health.url(), env={"FORCE_COLOR": "1"}, cwd=tmp_path), 2)
        assert "\x1b[31m" in line and "DOWN" in line

    def test_no_color_wins(self, health, tmp_path):
        health.serve("down")
        result = run_cli("check", health.url(), env={"FORCE_COLOR": "1", "NO_COLOR": "1"}, cwd=tmp_path)
        assert ANSI not in assert_one_line(result, 2)


class TestUsage:
    @pytest.mark.parametrize("args, words", [
        (["ftp://example.com/health"], ["unknown scheme 'ftp'"]),
        (["example.com/health"], ["no scheme"]),
        (["http:///health"], ["no host"]),
        (["http://example.com:99999/health"], ["cannot be parsed"]),
        (["http://user:topsecret@example.com:nope/"], ["user:***@", "cannot be parsed"]),
        (["http://example.com/he alth"], ["white space"]),
        (["http://example.com/\x07"], ["control character"]),
        (["http://example.com/", "--timeout", "abc"], ["--timeout", "not a number"]),
        (["http://example.com/", "--timeout", "0"], ["--timeout", "between 0.1 and 300"]),
        (["http://example.com/", "--timeout", "nan"], ["--timeout"]),
        ([], ["Missing argument 'URL'"]),
        (["http://example.com/", "--frobnicate"], ["No such option"]),
    ])
    def test_one_line_exit_64(self, tmp_path, args, words):
        result = run_cli("check", *args, cwd=tmp_path)
        assert_usage_error(result, *words)
        assert "topsecret" not in result.stderr


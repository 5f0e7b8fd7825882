"""Alert webhooks against a real HTTP receiver: generic, Slack and Telegram forms."""

from __future__ import annotations

import json

import pytest

from tests.support.environment import run_cli

SECRET_PATH = "/services/T0001/B0002/Zx9SecretToken42"


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("celery-probe: warning")]


class TestForms:
    def test_generic_payload(self, health, hooks, tmp_path):
        health.serve("down", target="app proj on redis://:brokerpw99@redis:6379/0")
        url = health.url().replace("http://", "http://reader:endpointpw77@")
        result = run_cli("check", url, "--webhook", hooks.url(), "--label", "prod-eu", cwd=tmp_path)
        assert result.code == 2, result.stderr
        (post,) = hooks.wait_for(1)
        assert post.headers["Content-Type"].startswith("application/json")
        payload = post.json()
        assert payload["source"] == "celery-probe" and payload["version"] == 1
        assert payload["event"] == "problem" and payload["status"] == "down"
        assert payload["previous_status"] is None
        assert payload["severity"] == "CRITICAL"
        assert payload["title"] == "[celery-probe CRITICAL] Celery worker DOWN (prod-eu)"
        assert payload["label"] == "prod-eu"
        assert payload["worker_alive"] is False
        assert payload["checked_at"] == "2026-11-24T08:51:05+00:00"
        assert payload["reasons"] == [{"code": "celery_worker_down", "severity": "critical",
                                       "message": "no worker answered ping (listened 347 ms)"}]
        assert payload["target"] == "app proj on redis://:***@redis:6379/0"
        assert payload["cause"] == "celery_worker_down"
        assert payload["steps"][0] == "Check the worker service: systemctl status celery"
        assert payload["impact"][0] == "Background tasks are not being processed"
        assert post.headers["Idempotency-Key"] == payload["id"]
        text = post.body.decode() + result.stdout + result.stderr
        assert "brokerpw99" not in text and "endpointpw77" not in text

    def test_slack_form_escapes_markup(self, health, hooks, tmp_path):
        health.serve("down", reasons=[{"code": "c", "severity": "critical",
                                       "message": "<!channel> see <http://evil|here> & more"}])
        run_cli("check", health.url(), "--webhook", "slack=" + hooks.url(), cwd=tmp_path)
        (post,) = hooks.wait_for(1)
        payload = post.json()
        assert list(payload) == ["text"]
        assert payload["text"].startswith("[celery-probe CRITICAL] Celery DOWN\n")  # code c: no known cause
        assert "&lt;!channel&gt; see &lt;http://evil|here&gt; &amp; more" in payload["text"]
        assert "<" not in payload["text"]

    def test_telegram_form(self, health, hooks, tmp_path):
        health.serve("down", reasons=[{"code": "c", "severity": "critical", "message": "x" * 400}] * 20)
        run_cli("check", health.url(), "--webhook", hooks.url("/bot123:ABCsecret/sendMessage"),
                "--webhook-format", "telegram", "--telegram-chat-id", "-1001234", cwd=tmp_path)
        (post,) = hooks.wait_for(1)
        payload = post.json()
        assert payload["chat_id"] == "-1001234"
        assert payload["text"].startswith("[celery-probe CRITICAL] Celery DOWN")
        assert len(payload["text"]) <= 4096
        assert "parse_mode" not in payload  # plain text: nothing in a reason is markup

    def test_prefix_beats_the_default_form(self, health, hooks, tmp_path):
        health.serve("degraded")
        run_cli("check", health.url(), "--webhook-format", "slack", "--webhook", hooks.url("/a"),
                "--webhook", "generic=" + hooks.url("/b"), cwd=tmp_path)
        posts = {p.path: p.json() for p in hooks.wait_for(2)}
        assert list(posts["/a"]) == ["text"] and posts["/b"]["status"] == "degraded"

    def test_webhooks_from_the_environment_stay_off_the_command_line(self, health, hooks, tmp_path):
        health.serve("down")
        result = run_cli("check", health.url(), cwd=tmp_path,
                         env={"CELERY_PROBE_WEBHOOKS": f"slack={hooks.url('/a')} {hooks.url('/b')}"})
        assert result.code == 2, result.stderr
        posts = {p.path: p.json() for p in hooks.wait_for(2)}
        assert list(posts["/a"]) == ["text"] and posts["/b"]["event"] == "problem"

    def test_recovery_payload(self, health, hooks, tmp_path):
        state = tmp_path / "state.json"
        health.serve("down")
        run_cli("check", health.url(), "--webhook", hooks.url(), "--state-file", str(state), cwd=tmp_path)
        health.serve("healthy")
        run_cli("check", health.url(), "--webhook", hooks.url(), "--state-file", str(state), cwd=tmp_path)
        down, back = (p.json() for p in hooks.wait_for(2))
        assert (back["event"], back["status"], back["previous_status"]) == ("recovery", "healthy", "down")
        assert back["title"] == "[celery-probe RECOVERED] Celery healthy again"
        assert back["since"] == down["since"]


class TestFailures:
    def test_refused_webhook_warns_without_its_token(self, health, hooks, tmp_path):
        health.serve("down")
        hooks.answer(500)
        state = tmp_path / "state.json"
        result = run_cli("check", health.url(), "--webhook", "slack=" + hooks.url(SECRET_PATH),
                         "--state-file", str(state), cwd=tmp_path)
        assert result.code == 2  # the health exit code, whatever happened to the alert
        (warning,) = warnings(result.stderr)
        assert f"http://127.0.0.1:{hooks.server.server_address[1]}/… (slack #" in warning
        assert "HTTP 500" in warning and "retried on the next run" in warning
        everything = result.stdout + result.stderr + state.read_text()
        assert "Zx9SecretToken42" not in everything and SECRET_PATH not in everything

    def test_hanging_webhook_is_bounded(self, health, hooks, tmp_path):
        health.serve("down")
        hooks.answer("hang")
        start_up = run_cli("--version", cwd=tmp_path).elapsed  # what this host charges for a start
        result = run_cli("check", health.url(), "--webhook", hooks.url(), "--alert-timeout", "1", cwd=tmp_path)
        assert result.code == 2
        (warning,) = warnings(result.stderr)
        assert "timed out after 1s" in warning and "not retried: there is no --state-file" in warning
        # The 1 s bound, the health request and a busy host's slower start, never the hang (15 s).
        assert result.elapsed < 1 + 3 + 2 * start_up, (result.elapsed, start_up)

    def test_unreachable_webhook(self, health, tmp_path):
        health.serve("down")
        result = run_cli("check", health.url(), "--webhook", "http://127.0.0.1:9/hook", cwd=tmp_path)
        assert result.code == 2 and "connection refused" in warnings(result.stderr)[0]


class TestValidation:
    @pytest.mark.parametrize("args, words", [
        (["--webhook", "ftp://example.com/x"], ["--webhook", "http:// or https://"]),
        (["--webhook", "javascript:alert(1)"], ["--webhook", "http:// or https://"]),
        (["--webhook", "https:///nohost"], ["no host"]),
        (["--webhook", "https://user:hunter2@example.com:nope/"], ["'https://example.com:nope'", "cannot be parsed"]),
        (["--webhook", "https://hooks.example.com/services/T0/B0/tok hunter2"], ["'https://hooks.example.com/…'", "white space"]),
        (["--webhook", "slack=https://hooks.example.com/hunter2\x07"], ["control character"]),
        (["--webhook", "teams=https://example.com/x"], ["unknown form 'teams'"]),
        (["--webhook", "https://example.com/", "--webhook-format", "xml"], ["--webhook-format", "generic, slack, telegram"]),
        (["--webhook", "telegram=https://example.com/"], ["--telegram-chat-id"]),
        (["--webhook", "telegram=https://example.com/", "--telegram-chat-id", "x y"], ["--telegram-chat-id"]),
        (["--webhook", "https://example.com/", "--telegram-chat-id", "42"], ["no webhook is in telegram form"]),
        (["--state-file", "s.json"], ["without a destination"]),
        (["--webhook", "https://example.com/", "--min-failures", "3"], ["need --state-file"]),
        (["--webhook", "https://example.com/", "--state-file", "s", "--min-failures", "0"], ["--min-failures"]),
        (["--webhook", "https://example.com/", "--state-file", "s", "--repeat-every", "-1"], ["--repeat-every"]),
        (["--webhook", "https://example.com/", "--alert-timeout", "0"], ["--alert-timeout"]),
        (["--webhook", "https://example.com/", "--state-file", "."], ["is a directory"]),
        (["--webhook", "https://example.com/", "--state-file", "/proc/celery-probe/state.json"], ["--state-file", "folder"]),
        (["--webhook", "https://example.com/", "--smtp", "localhost"], ["need --email"]),
        (["--email", "a@example.com", "--smtp", "localhost:0"], ["--smtp", "1-65535"]),
        (["--email", "a@example.com", "--smtp", "local host"], ["--smtp", "HOST[:PORT]"]),
        (["--email", "a@example.com", "--smtp", "h", "--sendmail", "/bin/true"], ["not both"]),
        (["--email", "a@example.com", "--smtp", "h", "--smtp-ssl", "--smtp-starttls"], ["not both"]),
        (["--email", "a@example.com", "--smtp", "h", "--service-name", "x;rm -rf"], ["--service-name"]),
    ])
    def test_one_line_exit_64(self, health, tmp_path, args, words):
        result = run_cli("check", health.url(), *args, cwd=tmp_path)
        assert result.code == 64, (result.stdout, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("celery-probe: error: ") and "Traceback" not in result.stderr
        for word in words:
            assert word in line, line
        assert "hunter2" not in line
        assert health.server.requests == []  # refused before anything is fetched


def test_payload_is_json_with_no_trailing_garbage(health, hooks, tmp_path):
    health.serve("unknown")
    run_cli("check", health.url(), "--webhook", hooks.url(), cwd=tmp_path)
    (post,) = hooks.wait_for(1)
    assert json.loads(post.body.decode("utf-8"))["severity"] == "UNKNOWN"

"""Credential redaction end to end: a password planted in the URLs reaches no sink.

The password is planted in the broker, result-backend and endpoint URLs of a real,
password-protected redis-server (percent-encoded, since it holds ``#`` and ``/``), and the
test looks for any form of it (raw, encoded, half-decoded: they all contain MARKER) in
everything celery-probe produces, with the broker up and down.

Already covered elsewhere, and not repeated here:

* tests/test_reports_io.py::TestRedaction: ``run`` with the broker up (``--format json``
  and text ``-v``) and down (``--format nagios``): stdout, stderr, latest.json,
  verdict.json, history.jsonl; and a ``-b`` URL that does not parse (exit 64);
* tests/test_ci_gate.py::TestJUnitXml::test_no_password_in_the_file: the JUnit XML when
  the result backend refuses the password;
* tests/test_serve.py::TestCredentials: ``serve`` healthy (its four routes) and the
  probe process's command line;
* tests/test_alerting_cron.py::TestRunCommand: mail, webhook, state file and stderr of
  ``run`` when the worker stops (broker up);
* tests/test_alerting_check.py: ``check URL`` with ``user:password@`` in the URL.

Here: every output of ``run`` at once (stdout, stderr, report folder, ``--junitxml``,
``--prom-file``, mail, webhook, state file) in each format, with the broker up, refusing,
and rejecting the password; ``serve``'s answers and log while the broker is down; and the
one-line errors for URLs that do not parse, from every source a URL can come from.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import APPS, app_env, run_cli
from serving import HEALTH, ServeProcess

from celery_probe.testing import CeleryWorker, RedisServer, free_port

pytestmark = pytest.mark.redis_only  # a private, password-protected redis-server
pytest_plugins = ["alert_fixtures"]

PASSWORD = "Pl4nted-S3cret#9/x"
MARKER = "Pl4nted-S3cret"  # in every form of PASSWORD: raw, percent-encoded, half-decoded
WRONG = "Pl4nted-S3cret-but-wrong"  # a password the server rejects: the error paths
ENCODED = quote(PASSWORD, safe="")
DEADLINE = "2"


def locked_url(port: int, db: int, password: str = PASSWORD) -> str:
    return f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/{db}"


def endpoint_url() -> str:
    """An endpoint with the password in it, refusing connections: degraded, quickly."""
    return f"http://probe:{ENCODED}@127.0.0.1:{free_port()}/health"


@pytest.fixture(scope="module")
def locked() -> RedisServer:
    with RedisServer(password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def deployment(locked):
    env = app_env(locked_url(locked.port, 0), locked_url(locked.port, 1))
    with CeleryWorker("probe_test_app", name="redact@%h", env=env, pythonpath=[APPS]):
        yield env


def everything_in(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file()}


# state -> (broker, backend) given with -b/--backend, or None: the app's own URLs (-A)
STATES = {
    "up": None,
    "refused": lambda port: (locked_url(port, 0), locked_url(port, 1)),
    "wrong password": lambda port: (locked_url(port, 0, WRONG), locked_url(port, 1, WRONG)),
}
# format -> extra arguments and the exit code of a (degraded, down) verdict
FORMATS = {
    "text": ((), (3, 2)),
    "text -v": (("-v",), (3, 2)),
    "json": (("--format", "json"), (3, 2)),
    "nagios": (("--format", "nagios"), (1, 2)),
}


class TestRunOutputs:
    @pytest.mark.parametrize("fmt", list(FORMATS))
    @pytest.mark.parametrize("state", list(STATES))
    def test_no_output_carries_the_password(self, state, fmt, locked, deployment, smtp, hooks, tmp_path):
        work = tmp_path / "work"
        work.mkdir()
        extra, (degraded_code, down_code) = FORMATS[fmt]
        if STATES[state] is None:
            target = ["-A", "probe_test_app"]  # URLs from the app's configuration
        else:
            port = free_port() if state == "refused" else locked.port
            broker, backend = STATES[state](port)
            target = ["-A", "probe_test_app", "-b", broker, "--backend", backend]  # URLs as flags
        state_file = work / "alert-state.json"
        result = run_cli(
            "run", *target, "--deadline", DEADLINE, *extra, "--endpoint", endpoint_url(),
            "--report-dir", str(work / "reports"), "--junitxml", str(work / "probes.xml"),
            "--prom-file", str(work / "celery.prom"),
            "--email", "ops@example.com", "--smtp", smtp.address, "--mail-from", "probe@example.com",
            "--webhook", hooks.url(), "--state-file", str(state_file),
            env=deployment, cwd=work, timeout=60,
        )
        assert result.code == (degraded_code if state == "up" else down_code), result.stdout + result.stderr
        (mail,) = smtp.wait_for(1)
        (post,) = hooks.wait_for(1)
        files = everything_in(work)
        assert {"reports/latest.json", "reports/verdict.json", "reports/history.jsonl", "probes.xml",
                "celery.prom", "alert-state.json"} <= set(files), sorted(files)
        sinks = {
            "stdout": result.stdout, "stderr": result.stderr, **files,
            "mail": mail.data.decode(errors="replace"),
            "webhook": post.body.decode(errors="replace") + json.dumps(post.headers),
        }
        leaked = sorted(name for name, text in sinks.items() if MARKER in text)
        assert leaked == [], {name: sinks[name][:300] for name in leaked}
        # The URLs did reach the outputs, masked: the check above is not vacuous.
        verdict = json.loads(files["reports/verdict.json"])
        assert verdict["target"].count(":***@127.0.0.1") == 1, verdict["target"]
        assert ":***@127.0.0.1" in sinks["mail"]
        if state == "wrong password":
            assert verdict["reasons"][0]["code"] == "celery_broker_unreachable"


class TestServeWhileDown:
    @pytest.mark.parametrize("state", ["refused", "wrong password"])
    def test_answers_and_log_never_carry_the_password(self, state, locked, tmp_path):
        port = free_port() if state == "refused" else locked.port
        broker, backend = STATES[state](port)
        env = {"CELERY_PROBE_BROKER": broker, "CELERY_PROBE_BACKEND": backend,
               "CELERY_PROBE_ENDPOINTS": endpoint_url()}
        with ServeProcess("--deadline", DEADLINE, "--interval", "0.5", env=env, cwd=tmp_path) as server:
            down = server.wait_status("down", timeout=20)
            assert ":***@127.0.0.1" in down["target"]
            answers = {path: server.get(path) for path in
                       (HEALTH, "/healthz", "/metrics", "/api/interactions/metrics/ops-alerts")}
            assert answers["/healthz"].status == 503
            alerts = answers["/api/interactions/metrics/ops-alerts"].json()["alerts"]
            assert alerts and alerts[0]["code"] == "celery_worker_down"
            log = server.log_text()
        assert "DOWN" in log  # the loop logged the change of status, with its reason
        sinks = {path: reply.body.decode() + json.dumps(reply.headers) for path, reply in answers.items()}
        sinks["log"] = log
        assert sorted(name for name, text in sinks.items() if MARKER in text) == []


BAD_URLS = [
    f"redis://:{ENCODED}@localhost:nope/0",  # a port that is not a number
    "redis://:Pl4nted S3cret@localhost/0",  # a space in the password
    f"redis//:{ENCODED}@localhost/0",  # no scheme separator
    f":{ENCODED}@localhost:6379",  # no scheme at all
    f"redis://:{ENCODED}@localhost/0;redis://:{ENCODED}@other:x/0",  # failover list, second bad
]


class TestUnparsableUrls:
    """A URL that does not parse is one line naming it, masked even where it cannot be parsed."""


    CASES = [("-b", url) for url in BAD_URLS] + [
        (source, BAD_URLS[1]) for source in ("--backend", "CELERY_PROBE_BROKER", "CELERY_PROBE_BACKEND",
                                        "pyproject.toml", "targets file")
    ]

    @pytest.mark.parametrize(("source", "url"), CASES)
    def test_run_error_is_one_line_without_it(self, source, url, tmp_path):
        env: dict[str, str] = {}
        args = ["run", "--deadline", DEADLINE]
        good = "redis://127.0.0.1:1/0"
        if source in ("-b", "--backend"):
            args += ["-b", good, source, url] if source == "--backend" else ["-b", url]
        elif source.startswith("CELERY_PROBE_"):
            env = {"CELERY_PROBE_BROKER": good, source: url}
        elif source == "pyproject.toml":
            (tmp_path / "pyproject.toml").write_text(f"[tool.celery-probe]\nbroker = {json.dumps(url)}\n")
        else:
            (tmp_path / "targets.toml").write_text(f"[targets.main]\nbroker = {json.dumps(url)}\n")
            args += ["--targets", "targets.toml"]
        result = run_cli(*args, env=env, cwd=tmp_path, timeout=30)
        assert result.code == 64, (result.stdout, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("celery-probe: error: invalid") and ":***@" in line, line
        assert MARKER not in result.stdout + result.stderr

    @pytest.mark.parametrize("command", [("serve", "-b"), ("run", "--endpoint"), ("check",)])
    def test_other_commands(self, command, tmp_path):
        url = "http://probe:Pl4nted S3cret@localhost/health" if command[-1] != "-b" else BAD_URLS[1]
        args = [*command, url] + (["-b", "redis://127.0.0.1:1/0"] if command[-1] == "--endpoint" else [])
        result = run_cli(*args, cwd=tmp_path, timeout=30)
        assert result.code == 64, (result.stdout, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert ":***@" in line and MARKER not in result.stdout + result.stderr, line

"""Credential redaction end to end: a password planted in the URLs reaches no sink.

The password is planted in the broker, result-backend and endpoint URLs of a real,
password-protected redis-server (percent-encoded, since it holds ``#`` and ``/``), and the
test looks for any form of it (raw, encoded, half-decoded: they all contain MARKER) in
everything celery-probe produces, with the broker up and down.

Already covered elsewhere, and not repeated here:

* tests/integration/test_reports_io.py::TestRedaction: ``run`` with the broker up (``--format json``
  and text ``-v``) and down (``--format nagios``): stdout, stderr, latest.json,
  verdict.json, history.jsonl; and a ``-b`` URL that does not parse (exit 64);
* tests/integration/test_ci_gate.py::TestJUnitXml::test_no_password_in_the_file: the JUnit XML when
  the result backend refuses the password;
* tests/integration/test_serve.py::TestCredentials: ``serve`` healthy (its four routes) and the
  probe process's command line;
* tests/integration/test_alerting_cron.py::TestRunCommand: mail, webhook, state file and stderr of
  ``run`` when the worker stops (broker up);
* tests/integration/test_alerting_check.py: ``check URL`` with ``user:password@`` in the URL.

Here: every output of ``run`` at once (stdout, stderr, report folder, ``--junitxml``,
``--prom-file``, mail, webhook, state file) in each format, with the broker up, refusing,
and rejecting the password; ``serve``'s answers and log while the broker is down; and the
one-line errors for URLs that do not parse, from every source a URL can come from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from celery_probe.config.urls import scrub, secrets_in
from celery_probe.testing import CeleryWorker, RedisServer, free_port
from tests.support.environment import APPS, app_env, run_cli
from tests.support.serving import HEALTH, ServeProcess

pytestmark = pytest.mark.redis_only  # a private, password-protected redis-server

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


# -- passwords that look like the parts around them ----------------------------------------------
#
# Only the password component is masked: a password that is also the start of the host (127),
# the user name (guest), the database or vhost (12, probe-redact-vh), or full of URL-special
# characters must never take the host, port, user or vhost with it.

SPECIAL = "p@ss:w/rd#?%&x"  # percent-encoded in the URL
SHAPES = {  # case -> (user, password); the password is accepted by the private redis-server
    "127": ("guest", "127"),
    "same as the user": ("guest", "guest"),
    "same as the database": ("guest", "12"),
    "url-special characters": ("guest", SPECIAL),
}
DB, RESULT_DB = 12, 13
VHOST = "probe-redact-vh"  # never created: RabbitMQ refuses, nothing is left behind
RABBIT_SHAPES = {  # case -> password for guest on the local RabbitMQ, all refused
    "127": "127",
    "same as the user": "guest",  # right password, but the vhost does not exist
    "same as the vhost": VHOST,
}
TOKEN_EDGE = r"[\s'\"=,;()\[\]{}<>|]"


def shape_url(port: int, user: str, password: str, db: int, host: str = "127.0.0.1") -> str:
    return f"redis://{user}:{quote(password, safe='')}@{host}:{port}/{db}"


def as_password(text: str, user: str, password: str) -> list[str]:
    """Where ``password`` appears *as the password*: after ``user:`` in a URL, or as a token.

    A password equal to a part the output shows (the user, the database, the vhost) is that
    part wherever it stands outside the URL's password position, so only that position counts.
    """
    found = []
    for form in {password, quote(password, safe="")}:
        if f"{user}:{form}@" in text:
            found.append(f"{user}:{form}@")
        if form in (user, str(DB), VHOST):
            continue
        if len(form) > 3 and form in text:  # a distinctive password: no occurrence at all
            found.append(form)
        pattern = rf"(?:^|{TOKEN_EDGE}){re.escape(form)}(?:$|{TOKEN_EDGE}|[.:](?:$|\s))"
        found += [m.group(0) for m in re.finditer(pattern, text)]
    return found


@pytest.fixture(scope="module")
def shaped():
    """A redis-server whose user guest accepts every password of SHAPES, and a worker on it."""
    passwords = [f">{password}" for _user, password in SHAPES.values()]
    with RedisServer(extra=["--user", "guest", "on", *passwords, "~*", "&*", "+@all"]) as server:
        user, password = SHAPES["same as the user"]
        env = app_env(shape_url(server.port, user, password, DB), shape_url(server.port, user, password, RESULT_DB))
        with CeleryWorker("probe_test_app", name="shapes@%h", env=env, pythonpath=[APPS]):
            yield server


class TestPasswordShapes:
    """The password is masked where it is the password, and nowhere else."""

    @pytest.mark.parametrize("case", list(SHAPES))
    def test_run_outputs_show_everything_but_the_password(self, case, shaped, smtp, hooks, tmp_path):
        user, password = SHAPES[case]
        broker = shape_url(shaped.port, user, password, DB)
        env = app_env(broker, shape_url(shaped.port, user, password, RESULT_DB))
        state_file = tmp_path / "alert-state.json"
        # --expect-workers 2 with one worker: degraded, so the mail and the webhook go out.
        result = run_cli(
            "run", "-A", "probe_test_app", "--expect-workers", "2", "--deadline", "4", "-v",
            "--report-dir", str(tmp_path / "reports"), "--prom-file", str(tmp_path / "celery.prom"),
            "--email", "ops@example.com", "--smtp", smtp.address, "--mail-from", "probe@example.com",
            "--webhook", hooks.url(), "--state-file", str(state_file),
            env=env, cwd=tmp_path, timeout=60,
        )
        assert result.code == 3, result.stdout + result.stderr
        (mail,) = smtp.wait_for(1)
        (post,) = hooks.wait_for(1)
        files = everything_in(tmp_path)
        sinks = {
            "stdout": result.stdout, "stderr": result.stderr, **files,
            "mail": mail.body, "webhook": post.body.decode() + json.dumps(post.headers),
        }
        assert {name: hits for name, text in sinks.items() if (hits := as_password(text, user, password))} == {}
        shown = f"redis://{user}:***@127.0.0.1:{shaped.port}/{DB}"
        visible_in = ["stdout", "reports/verdict.json", "reports/latest.json", "mail", "webhook"]  # not in
        # history.jsonl and the metrics, which name no target: they are searched for the password only
        assert [name for name in visible_in if shown not in sinks[name]] == [], shown
        verdict = json.loads(files["reports/verdict.json"])
        assert verdict["target"] == f"app probe_test_app on {shown}"
        assert [r["code"] for r in verdict["reasons"] if r["severity"] != "info"] == ["celery_workers_missing"]
        assert "celery_probe_queue_length" in files["celery.prom"]  # the metrics were written

    @pytest.mark.parametrize("case", list(SHAPES))
    def test_serve_answers_show_everything_but_the_password(self, case, shaped, tmp_path):
        user, password = SHAPES[case]
        env = app_env(shape_url(shaped.port, user, password, DB), shape_url(shaped.port, user, password, RESULT_DB))
        with ServeProcess("-A", "probe_test_app", "--expect-workers", "2", "--deadline", "4", "--interval", "1",
                          env=env, cwd=tmp_path) as server:
            verdict = server.wait_status("degraded", timeout=30)
            answers = {path: server.get(path) for path in (HEALTH, "/healthz", "/metrics")}
            log = server.log_text()
        assert verdict["target"] == f"app probe_test_app on redis://{user}:***@127.0.0.1:{shaped.port}/{DB}"
        assert 'celery_probe_workers_up' in answers["/metrics"].body.decode()
        sinks = {path: reply.body.decode() + json.dumps(reply.headers) for path, reply in answers.items()}
        sinks["log"] = log
        assert {name: hits for name, text in sinks.items() if (hits := as_password(text, user, password))} == {}

    @pytest.mark.parametrize("case", list(RABBIT_SHAPES))
    def test_a_refusing_rabbitmq_is_named_in_full(self, case, smtp, hooks, tmp_path):
        """RabbitMQ refuses the login (or the vhost): the error names the vhost, the URL its parts."""
        if not rabbitmq_listening():
            pytest.skip("no RabbitMQ on 127.0.0.1:5672")
        password = RABBIT_SHAPES[case]
        broker = f"amqp://guest:{password}@127.0.0.1:5672/{VHOST}"
        result = run_cli(
            "run", "-b", broker, "--deadline", "3", "--format", "json",
            "--report-dir", str(tmp_path / "reports"),
            "--email", "ops@example.com", "--smtp", smtp.address, "--mail-from", "probe@example.com",
            "--webhook", hooks.url(), cwd=tmp_path, timeout=60,
        )
        assert result.code == 2, result.stdout + result.stderr
        (mail,) = smtp.wait_for(1)
        (post,) = hooks.wait_for(1)
        files = everything_in(tmp_path)
        sinks = {"stdout": result.stdout, "stderr": result.stderr, **files, "mail": mail.body,
                 "webhook": post.body.decode()}
        assert {name: hits for name, text in sinks.items() if (hits := as_password(text, "guest", password))} == {}
        shown = f"amqp://guest:***@127.0.0.1:5672/{VHOST}"
        verdict = result.verdict()
        assert verdict["target"] == shown
        assert verdict["reasons"][0]["code"] == "celery_broker_unreachable"
        assert shown in verdict["reasons"][0]["message"]
        assert [name for name in ("reports/verdict.json", "reports/latest.json", "mail", "webhook")
                if shown not in sinks[name]] == []


def rabbitmq_listening() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


class TestScrubRules:
    """The pure rules behind the cases above, one per line of urls.py's docstring."""

    def test_a_url_is_masked_by_component(self):
        url = "amqp://guest:127@127.0.0.1:5672/x"
        assert scrub(f"app on {url}", secrets_in([url])) == "app on amqp://guest:***@127.0.0.1:5672/x"

    def test_a_password_inside_a_longer_name_stays(self):
        secrets = secrets_in(["redis://u:127@127.0.0.1:6379/0", "redis://u:6379@localhost:1/0"])
        text = "Error 111 connecting to 127.0.0.1:6379. Host 10.0.0.127, port 16379."
        assert scrub(text, secrets) == text

    def test_a_stand_alone_password_is_masked(self):
        secrets = secrets_in(["redis://u:Pl4nted%2Fpw@h:1/0"])
        text = "AUTH Pl4nted/pw failed; password:Pl4nted/pw, pw='Pl4nted%2Fpw'."
        assert scrub(text, secrets) == "AUTH *** failed; password:***, pw='***'."

    def test_a_password_equal_to_a_shown_part_is_masked_in_its_url_position_only(self):
        urls = ["amqp://guest:guest@h:5672/orders", "amqp://guest:orders@h:5672/orders", "redis://u:12@h:1/12"]
        assert secrets_in(urls) == set()
        text = "vhost 'orders' refused for user 'guest'"
        assert scrub([*urls, text], secrets_in(urls)) == [
            "amqp://guest:***@h:5672/orders", "amqp://guest:***@h:5672/orders", "redis://u:***@h:1/12", text]

    def test_webhook_tokens_in_a_path_are_still_masked(self):
        secrets = {"https://hooks.example.com/services/T0001/Zx9SecretToken42", "Zx9SecretToken42"}
        text = "POST https://hooks.example.com/services/T0001/Zx9SecretToken42 failed: /services/T0001/Zx9SecretToken42"
        assert scrub(text, secrets) == "POST *** failed: /services/T0001/***"

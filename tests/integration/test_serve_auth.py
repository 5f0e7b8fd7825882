"""`celery-probe serve` with authentication: real serve processes answering over loopback HTTP.

Three servers: one with a bearer token from a file, one with basic credentials from a
variable and ``--protect-health``, one taking both schemes. Every route is asked with no
credential, a wrong one and the right one; the 401 answers and the server's whole log are
searched for the attempted and the real credential. Start-up mistakes are one line, exit 64.
Debian's Prometheus scrapes with ``authorization: credentials_file:`` and gets ``up`` 1 with the
right token file, 0 with a wrong one.
"""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from celery_probe.testing import free_port, wait_until
from tests.support.environment import APPS, app_env
from tests.support.prometheus import PrometheusServer
from tests.support.serving import HEALTH, Reply, ServeProcess, http_get

pytestmark = pytest.mark.redis_only  # a private redis-server; authentication does not depend on --broker

TOKEN = "tok-3f9a.Zq~x+/b="  # every b64token character class
WRONG_TOKEN = "tok-3f9a.Zq~x+/c="  # same length, one character off
USER, PASSWORD = "ops", "pa:ss wörd"  # a colon and a space in the password, UTF-8
OPS_ALERTS = "/api/interactions/metrics/ops-alerts"
PROTECTED = ("/metrics", "/", OPS_ALERTS, "/openapi.json")
HEALTH_ROUTES = (HEALTH, "/healthz")
INTERVAL = "30"  # seconds: these tests read routes, not verdicts; few probe runs load the host less


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def serve_args() -> list[str]:
    return ["-A", "probe_test_app", "--deadline", "3", "--interval", INTERVAL]


@pytest.fixture(scope="module")
def env(module_redis) -> dict[str, str]:
    return app_env(module_redis.url(0), module_redis.url(1))


@pytest.fixture(scope="module")
def token_server(env, tmp_path_factory) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("token")
    (folder / "token").write_text(TOKEN + "\n")  # the newline an editor leaves is not part of it
    with ServeProcess(*serve_args(), "--auth-token-file", str(folder / "token"), env=env, cwd=folder) as server:
        yield server


@pytest.fixture(scope="module")
def basic_server(env, tmp_path_factory) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("basic")
    with ServeProcess(*serve_args(), "--basic-auth-env", "PROBE_BASIC", "--protect-health",
                      env={**env, "PROBE_BASIC": f"{USER}:{PASSWORD}"}, cwd=folder, ready=(401,)) as server:
        yield server


def assert_refused(reply: Reply, challenge: str) -> None:
    assert reply.status == 401, reply
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["www-authenticate"] == challenge, reply.headers


def secrets_in(text: str) -> list[str]:
    """Which of the real or attempted credentials (or their base64 forms) appear in ``text``."""
    forms = [TOKEN, WRONG_TOKEN, PASSWORD, "wrong-password", "guess",
             basic(USER, PASSWORD)["Authorization"][6:], basic(USER, "wrong-password")["Authorization"][6:]]
    return [form for form in forms if form in text]


class TestBearerToken:
    """--auth-token-file: every route but health needs `Authorization: Bearer TOKEN`."""

    @pytest.mark.parametrize("path", PROTECTED)
    def test_no_wrong_and_right_token(self, token_server, path):
        bearer_challenge = 'Bearer realm="celery-probe"'
        assert_refused(token_server.get(path), bearer_challenge)
        assert_refused(token_server.get(path, headers=bearer(WRONG_TOKEN)), bearer_challenge)
        assert_refused(token_server.get(path, headers=bearer(TOKEN + "x")), bearer_challenge)
        assert_refused(token_server.get(path, headers=bearer(TOKEN[:-1])), bearer_challenge)
        assert_refused(token_server.get(path, headers={"Authorization": TOKEN}), bearer_challenge)  # no scheme
        # Basic is not accepted when only a token was configured, even carrying the token.
        assert_refused(token_server.get(path, headers=basic(USER, TOKEN)), bearer_challenge)
        right = token_server.get(path, headers=bearer(TOKEN))
        assert right.status == 200, right
        # The scheme is case-insensitive (RFC 9110 §11.1).
        assert token_server.get(path, headers={"Authorization": f"bearer {TOKEN}"}).status == 200

    @pytest.mark.parametrize("path", HEALTH_ROUTES)
    def test_health_stays_public(self, token_server, path):
        reply = token_server.get(path)
        assert reply.status in (200, 503), reply  # 503: /healthz of a down verdict (no worker here)
        assert "www-authenticate" not in reply.headers
        assert reply.json()["status"]

    def test_unknown_path_is_refused_before_it_is_looked_up(self, token_server):
        assert token_server.get("/no/such/path").status == 401  # does not tell which routes exist
        assert token_server.get("/no/such/path", headers=bearer(TOKEN)).status == 404

    def test_refusal_and_log_hold_no_credential(self, token_server):
        for headers in (bearer(WRONG_TOKEN), bearer("guess"), basic(USER, "wrong-password")):
            reply = token_server.get("/metrics", headers=headers)
            shown = reply.body.decode() + "".join(f"{k}: {v}\n" for k, v in reply.headers.items())
            assert secrets_in(shown) == [], shown
        assert secrets_in(token_server.log_text()) == [], token_server.log_text()
        assert "bearer authentication on every route but health" in token_server.log_text()


class TestBasicWithProtectedHealth:
    """--basic-auth-env with --protect-health: the health routes need the credential too."""

    @pytest.mark.parametrize("path", PROTECTED + HEALTH_ROUTES)
    def test_no_wrong_and_right_credentials(self, basic_server, path):
        challenge = 'Basic realm="celery-probe", charset="UTF-8"'
        assert_refused(basic_server.get(path), challenge)
        assert_refused(basic_server.get(path, headers=basic(USER, "wrong-password")), challenge)
        assert_refused(basic_server.get(path, headers=basic("opz", PASSWORD)), challenge)  # wrong user
        assert_refused(basic_server.get(path, headers=basic(USER, PASSWORD[:-1])), challenge)
        assert_refused(basic_server.get(path, headers=basic(USER + ":" + PASSWORD, "")), challenge)
        assert_refused(basic_server.get(path, headers={"Authorization": "Basic not-base64!"}), challenge)
        assert_refused(basic_server.get(path, headers=bearer(f"{USER}:{PASSWORD}")), challenge)
        right = basic_server.get(path, headers=basic(USER, PASSWORD))
        assert right.status in ((200, 503) if path == "/healthz" else (200,)), right

    def test_refusal_and_log_hold_no_credential(self, basic_server):
        for headers in (basic(USER, "wrong-password"), bearer(WRONG_TOKEN), basic("guess", PASSWORD)):
            reply = basic_server.get(HEALTH, headers=headers)
            assert reply.status == 401
            shown = reply.body.decode() + "".join(f"{k}: {v}\n" for k, v in reply.headers.items())
            assert secrets_in(shown) == [], shown
        assert secrets_in(basic_server.log_text()) == [], basic_server.log_text()


def test_both_schemes_each_accepted(env, tmp_path):
    (tmp_path / "basic").write_text(f"{USER}:{PASSWORD}")
    with ServeProcess(*serve_args(), "--auth-token-env", "PROBE_TOKEN", "--basic-auth-file", str(tmp_path / "basic"),
                      env={**env, "PROBE_TOKEN": TOKEN}, cwd=tmp_path) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            refused = conn.getresponse()
            refused.read()
        finally:
            conn.close()
        assert refused.status == 401
        assert refused.msg.get_all("WWW-Authenticate") == [  # one challenge per scheme
            'Bearer realm="celery-probe"', 'Basic realm="celery-probe", charset="UTF-8"']
        assert server.get("/metrics", headers=bearer(TOKEN)).status == 200
        assert server.get("/metrics", headers=basic(USER, PASSWORD)).status == 200
        assert server.get("/metrics", headers=basic(USER, TOKEN)).status == 401
        assert server.get("/metrics", headers=bearer(PASSWORD.replace(" ", ""))).status == 401
        assert secrets_in(server.log_text()) == []


class TestStartupMistakes:
    """A credential serve cannot read is one line naming option and source (never the value), exit 64."""

    def run(self, tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery_probe", "serve", "-A", "probe_test_app", "--port", "0", *args],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(APPS), **(env or {})}, cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=False)

    @pytest.mark.parametrize(("args", "env", "expected"), [
        (["--auth-token-env", "PROBE_TOKEN"], {}, "environment variable PROBE_TOKEN is not set (from --auth-token-env)"),
        (["--auth-token-env", "PROBE_TOKEN"], {"PROBE_TOKEN": "  \n"}, "the bearer token in environment variable PROBE_TOKEN (from --auth-token-env) is empty"),
        (["--auth-token-env", "PROBE_TOKEN"], {"PROBE_TOKEN": "two words"}, "has characters a Bearer header cannot carry"),
        (["--auth-token-env", "not a name"], {}, "is not an environment variable name"),
        (["--auth-token-file", "missing-file"], {}, "cannot read the bearer token from missing-file: No such file or directory (from --auth-token-file)"),
        (["--auth-token-file", "."], {}, "cannot read the bearer token from .: not a regular file (from --auth-token-file)"),
        (["--auth-token-file", "/dev/zero"], {}, "cannot read the bearer token from /dev/zero: not a regular file"),
        (["--auth-token-file", "fifo"], {}, "cannot read the bearer token from fifo: not a regular file"),
        (["--auth-token-file", "big"], {}, "cannot read the bearer token from big: over 4096 bytes"),
        (["--auth-token-file", "empty"], {}, "the bearer token in empty (from --auth-token-file) is empty"),
        (["--auth-token-file", ""], {}, "is empty (from --auth-token-file)"),
        (["--auth-token-env", "PROBE_TOKEN", "--auth-token-file", "empty"], {"PROBE_TOKEN": TOKEN},
         "the bearer token comes from --auth-token-env or --auth-token-file, not both"),
        (["--basic-auth-env", "PROBE_BASIC"], {"PROBE_BASIC": "s3cret-without-colon"}, "must be USER:PASSWORD, both non-empty"),
        (["--basic-auth-env", "PROBE_BASIC"], {"PROBE_BASIC": "ops:"}, "must be USER:PASSWORD, both non-empty"),
        (["--basic-auth-file", "missing-file"], {}, "cannot read the basic credentials from missing-file"),
        (["--protect-health"], {}, "--protect-health needs a credential"),
        (["--header-timeout", "0"], {}, "invalid header timeout '0': must be between 0.5 and 3600 seconds"),
    ])
    def test_one_line_exit_64(self, tmp_path, args, env, expected):
        (tmp_path / "empty").write_text("\n")
        (tmp_path / "big").write_text("x" * 5000)
        os.mkfifo(tmp_path / "fifo")  # no writer: opening it would block for ever
        done = self.run(tmp_path, *args, env=env)
        assert done.returncode == 64, (done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr
        assert "Traceback" not in done.stderr
        for value in env.values():  # the value never shows, whatever it was
            if value.strip():
                assert value not in done.stderr


class TestPrometheusScrape:
    """Debian's Prometheus scrapes with `authorization: credentials_file:` as docs/metrics.md shows."""

    def test_right_token_file_is_up_and_wrong_one_down(self, token_server, tmp_path):
        (tmp_path / "right").write_text(TOKEN + "\n")
        (tmp_path / "wrong").write_text(WRONG_TOKEN + "\n")
        target = {"static_configs": [{"targets": [f"127.0.0.1:{token_server.port}"]}]}
        scrape_configs = [
            {"job_name": "right", "authorization": {"credentials_file": str(tmp_path / "right")}, **target},
            {"job_name": "wrong", "authorization": {"credentials_file": str(tmp_path / "wrong")}, **target},
            {"job_name": "none", **target},
        ]
        (tmp_path / "prometheus").mkdir()
        with PrometheusServer(tmp_path / "prometheus", scrape_configs) as prometheus:
            def ups() -> dict[str, str] | None:
                found = {row["metric"]["job"]: row["value"][1] for row in prometheus.query("up")}
                return found if len(found) == 3 else None

            up = wait_until(ups, timeout=60, interval=0.5, what="Prometheus scraped the three jobs")
            assert up == {"right": "1", "wrong": "0", "none": "0"}, up
            # The samples came through (as OpenMetrics: Prometheus asks for it first).
            info = wait_until(lambda: prometheus.query('celery_probe_info{job="right"}'), timeout=30,
                              interval=0.5, what="celery_probe_info scraped")
            assert info[0]["value"][1] == "1"
            assert prometheus.query('celery_probe_runs_total{job="right"}')
            targets = {t["labels"]["job"]: t for t in prometheus.api("targets")["activeTargets"]}
            assert "401" in targets["wrong"]["lastError"], targets["wrong"]
            assert targets["right"]["lastError"] == ""
        assert secrets_in(token_server.log_text()) == []


class TestOpenMetrics:
    """/metrics answers OpenMetrics when the scraper asks for it, the 0.0.4 text format otherwise."""

    # The Accept header of Debian's Prometheus 2.42, as a capture of one of its scrapes shows it.
    PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                         "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")

    @pytest.mark.parametrize("accept", ["application/openmetrics-text; version=1.0.0", PROMETHEUS_ACCEPT])
    def test_openmetrics_when_asked(self, token_server, accept):
        from prometheus_client.openmetrics.parser import text_string_to_metric_families

        reply = token_server.get("/metrics", headers={**bearer(TOKEN), "Accept": accept})
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0; charset=utf-8")
        text = reply.body.decode()
        assert text.endswith("# EOF\n")
        names = {family.name for family in text_string_to_metric_families(text)}  # OpenMetrics' strict parser
        assert {"celery_probe_status", "celery_probe_runs", "celery_probe"} <= names, names

    @pytest.mark.parametrize("accept", [None, "text/plain", "*/*", "application/json"])
    def test_text_format_otherwise(self, token_server, accept):
        headers = {**bearer(TOKEN), **({"Accept": accept} if accept else {})}
        reply = http_get(token_server.port, "/metrics", headers=headers)
        assert reply.status == 200
        assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "# EOF" not in reply.body.decode()
        assert "celery_probe_runs_total" in reply.body.decode()


def test_probe_middleware_in_a_host_app_takes_the_same_credentials(env, tmp_path):
    """ProbeMiddleware(auth=...): its verdict routes need the token, the host's own routes do not."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "host_auth_app:app", "--port", str(port), "--log-level", "warning"]
    server = ServeProcess(env={**env, "CELERY_PROBE_APP": "probe_test_app", "CELERY_PROBE_DEADLINE": "3",
                               "HOST_PROBE_TOKEN": TOKEN}, cwd=tmp_path, command=command)
    server.port = port
    with server:
        assert server.get("/").body == b"the host app"  # the host's route: the host's business
        assert_refused(server.get("/metrics"), 'Bearer realm="celery-probe"')
        assert_refused(server.get(OPS_ALERTS, headers=bearer(WRONG_TOKEN)), 'Bearer realm="celery-probe"')
        assert server.get("/metrics", headers=bearer(TOKEN)).status == 200
        assert server.get(OPS_ALERTS, headers=bearer(TOKEN)).status == 200
        assert server.get(HEALTH).status == 200  # public by default
        assert secrets_in(server.log_text()) == []


def test_openapi_names_the_schemes_and_the_401(token_server):
    document = token_server.get("/openapi.json", headers=bearer(TOKEN)).json()
    assert document["components"]["securitySchemes"] == {"Bearer": {"type": "http", "scheme": "bearer"}}
    assert document["security"] == [{"Bearer": []}]
    for path in ("/metrics", "/", OPS_ALERTS):
        assert "401" in document["paths"][path]["get"]["responses"], path
    for path in HEALTH_ROUTES:
        assert document["paths"][path]["get"]["security"] == [], path
        assert "401" not in document["paths"][path]["get"]["responses"], path


class TestCaching:
    """An answer behind a credential is `private`: a shared cache must not serve it to others."""

    @staticmethod
    def cache_control(server: ServeProcess, path: str, headers: dict[str, str] | None = None) -> str:
        def after_first_run() -> str | None:  # no-store until a verdict exists
            value = server.get(path, headers=headers).headers["cache-control"]
            return None if value == "no-store" else value

        return wait_until(after_first_run, timeout=30, interval=0.2, what=f"a cacheable answer of {path}")

    def test_ops_alerts_private_and_public_health(self, token_server):
        assert self.cache_control(token_server, OPS_ALERTS, bearer(TOKEN)).startswith("private, max-age=")
        assert self.cache_control(token_server, HEALTH).startswith("public, max-age=")

    def test_protected_health_is_private(self, basic_server):
        assert self.cache_control(basic_server, HEALTH, basic(USER, PASSWORD)).startswith("private, max-age=")
        assert self.cache_control(basic_server, OPS_ALERTS, basic(USER, PASSWORD)).startswith("private, max-age=")


def test_check_reads_a_protected_health_route_with_http_auth_env(basic_server, env, tmp_path):
    """`celery-probe check --http-auth-env NAME` sends NAME's value as the Authorization header."""
    url = f"http://127.0.0.1:{basic_server.port}{HEALTH}"

    def check(*extra: str, auth: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "celery_probe", "check", url, *extra],
                              env={"PATH": "/usr/bin:/bin", **({"PROBE_AUTH": auth} if auth else {})},
                              cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    refused = check()
    assert refused.returncode == 1 and "401" in refused.stdout + refused.stderr, refused
    right = basic(USER, PASSWORD)["Authorization"]
    # No worker answers in these tests: once a run has finished the verdict is down (exit 2).
    answered = wait_until(lambda: (done := check("--http-auth-env", "PROBE_AUTH", auth=right)).returncode == 2
                          and done, timeout=30, interval=0.5, what="check reading the down verdict")
    assert "DOWN" in answered.stdout.upper(), answered
    for done in (refused, answered):
        assert secrets_in(done.stdout + done.stderr) == [], done


def test_serve_targets_takes_the_same_credentials(module_redis, env, tmp_path):
    """serve --targets: every route needs the token but the health routes, overall and per target."""
    targets = tmp_path / "targets.toml"
    targets.write_text("[defaults]\ndeadline = 3\ninterval = 30\n"
                       f'[targets.one]\nbroker = "{module_redis.url(2)}"\n'
                       f'[targets.two]\nbroker = "{module_redis.url(3)}"\n')
    with ServeProcess("--targets", str(targets), "--auth-token-env", "PROBE_TOKEN",
                      env={**env, "PROBE_TOKEN": TOKEN}, cwd=tmp_path) as server:
        for path in ("/metrics", "/", OPS_ALERTS, "/openapi.json", "/targets/one/",
                     f"/targets/one{OPS_ALERTS}", "/targets/nope/"):
            assert_refused(server.get(path), 'Bearer realm="celery-probe"')
            assert_refused(server.get(path, headers=bearer(WRONG_TOKEN)), 'Bearer realm="celery-probe"')
            assert server.get(path, headers=bearer(TOKEN)).status == (404 if "nope" in path else 200), path
        for path in (HEALTH, "/healthz", f"/targets/one{HEALTH}", "/targets/two/healthz"):
            reply = server.get(path)
            assert reply.status in (200, 503) and "www-authenticate" not in reply.headers, (path, reply)
        om = server.get("/metrics", headers={**bearer(TOKEN), "Accept": TestOpenMetrics.PROMETHEUS_ACCEPT})
        assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert om.body.endswith(b"# EOF\n") and b'target="two"' in om.body
        alerts = TestCaching.cache_control(server, f"/targets/one{OPS_ALERTS}", bearer(TOKEN))
        assert alerts.startswith("private, max-age="), alerts
        assert TestCaching.cache_control(server, HEALTH).startswith("public, max-age=")
        assert "bearer authentication on every route but health" in server.log_text()
        assert secrets_in(server.log_text()) == []

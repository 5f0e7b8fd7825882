"""What the operator names wins over Celery's own environment, everywhere a probe runs.

Celery reads ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` before ``app.conf``, and the
getting-started guide tells users to export them. With them pointing at a healthy broker,
``-b``/``--backend`` (or ``CELERY_PROBE_BROKER``/``CELERY_PROBE_BACKEND``) naming a dead port
must give ``down`` naming that port, in ``run``, ``run --targets`` (xdist worker processes),
``serve``'s probe loop and ``get_celery_health()``. A real worker serves the healthy broker,
so a probe that used the environment's URL instead would say healthy.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.serve.loop import ProbeLoop
from tests.support.environment import app_env, run_cli

DEAD_BROKER = "redis://:hush-s3cret@127.0.0.1:1/0"  # nothing listens on port 1
DEAD_SHOWN = "redis://:***@127.0.0.1:1/0"
DEAD_BACKEND = "redis://127.0.0.1:1/1"


@pytest.fixture(scope="module")
def healthy(module_redis, request):
    """A private Redis with a real worker on it, and Celery's variables pointing there."""
    from celery_probe.testing import CeleryWorker
    from tests.support.environment import APPS

    worker = CeleryWorker("probe_test_app", name="w1@%h", env=app_env(module_redis.url(0), module_redis.url(1)),
                          pythonpath=[APPS]).start(timeout=40)
    yield {"CELERY_BROKER_URL": module_redis.url(0), "CELERY_RESULT_BACKEND": module_redis.url(1),
           **app_env(module_redis.url(0), module_redis.url(1))}
    worker.close()


def run_json(env, *args, cwd):
    return run_cli("run", "--format", "json", "--deadline", "4", *args, env=env, cwd=cwd)


def assert_not_leaked(result):
    assert "hush-s3cret" not in result.stdout + result.stderr


class TestRun:
    def test_the_environment_alone_is_what_celery_uses(self, healthy, tmp_path):
        """The control: nothing named, Celery's variables decide, and that broker is healthy."""
        result = run_json(healthy, "-A", "probe_test_app", cwd=tmp_path)
        assert result.code == 0, result.stdout
        assert result.verdict()["target"] == f"app probe_test_app on {healthy['CELERY_BROKER_URL']}"

    @pytest.mark.parametrize("how", ["flag", "variable"])
    def test_named_broker_wins(self, healthy, tmp_path, how):
        args = ("-b", DEAD_BROKER) if how == "flag" else ()
        env = {**healthy, **({"CELERY_PROBE_BROKER": DEAD_BROKER} if how == "variable" else {})}
        result = run_json(env, *args, cwd=tmp_path)
        verdict = result.verdict()
        assert (result.code, verdict["status"]) == (2, "down"), result.stdout
        assert verdict["target"] == DEAD_SHOWN
        root = verdict["reasons"][0]
        assert root["code"] == "celery_broker_unreachable" and DEAD_SHOWN in root["message"]
        assert_not_leaked(result)

    def test_named_broker_wins_over_the_apps_and_the_environment(self, healthy, tmp_path):
        result = run_cli("run", "-A", "probe_test_app", "-b", DEAD_BROKER, "--deadline", "4",
                         env=healthy, cwd=tmp_path)
        assert result.code == 2, result.stdout
        assert f"app probe_test_app on {DEAD_SHOWN}" in result.stdout.splitlines()[0]
        assert "celery_broker_unreachable" in result.stdout
        assert_not_leaked(result)

    @pytest.mark.parametrize("how", ["flag", "variable"])
    def test_named_backend_wins(self, healthy, tmp_path, how):
        args = ("--backend", DEAD_BACKEND) if how == "flag" else ()
        env = {**healthy, **({"CELERY_PROBE_BACKEND": DEAD_BACKEND} if how == "variable" else {})}
        result = run_json(env, "-b", healthy["CELERY_BROKER_URL"], *args, cwd=tmp_path)
        verdict = result.verdict()
        assert verdict["status"] == "down", result.stdout
        root = verdict["reasons"][0]
        assert root["code"] == "celery_backend_unreachable" and DEAD_BACKEND in root["message"], root


class TestChildProcesses:
    def test_targets_in_xdist_workers(self, healthy, tmp_path):
        """Each target probes its own URL in the worker processes; an app-only target still
        follows Celery's variables there, as its workers do."""
        (tmp_path / "targets.toml").write_text(
            f'[targets.dead]\nbroker = "{DEAD_BROKER}"\n\n'
            f'[targets.named]\nbroker = "{healthy["CELERY_BROKER_URL"]}"\n\n'
            '[targets.from-env]\napp = "probe_test_app"\n'
        )
        result = run_cli("run", "--targets", "targets.toml", "--parallel", "2", "--format", "json",
                         "--deadline", "4", env=healthy, cwd=tmp_path, timeout=90)
        targets = result.verdict()["targets"]
        assert {name: t["status"] for name, t in targets.items()} == {
            "dead": "down", "named": "healthy", "from-env": "healthy"}, result.stdout
        assert targets["dead"]["target"] == DEAD_SHOWN
        assert targets["from-env"]["target"] == f"app probe_test_app on {healthy['CELERY_BROKER_URL']}"
        assert_not_leaked(result)

    def test_serve_probe_loop(self, healthy, tmp_path, monkeypatch):
        for key, value in healthy.items():
            monkeypatch.setenv(key, value)
        settings = resolve_settings({"broker": DEAD_BROKER, "deadline": "3"}, pyproject=False)
        snapshot = asyncio.run(ProbeLoop(settings, interval=60).run_once())
        assert snapshot.verdict["status"] == "down", snapshot.verdict["reasons"]
        assert snapshot.verdict["target"] == DEAD_SHOWN
        assert snapshot.verdict["reasons"][0]["code"] == "celery_broker_unreachable"

    def test_get_celery_health_leaves_the_callers_environment(self, healthy, monkeypatch):
        from celery_probe.run.child import probe_verdict

        for key, value in healthy.items():
            monkeypatch.setenv(key, value)
        before = dict(os.environ)
        verdict = probe_verdict(4, broker=DEAD_BROKER)
        assert verdict["status"] == "down" and verdict["target"] == DEAD_SHOWN, verdict["reasons"]
        assert dict(os.environ) == before
        assert probe_verdict(4, broker=healthy["CELERY_BROKER_URL"])["status"] == "healthy"

    def test_get_celery_health_names_a_bad_argument_as_the_caller_wrote_it(self):
        """Not as the child's CELERY_PROBE_DEADLINE, which the caller never set."""
        from celery_probe.run.child import probe_verdict

        verdict = probe_verdict(-1, broker=DEAD_BROKER)
        message = verdict["reasons"][0]["message"]
        assert verdict["status"] == "unknown" and message.endswith("(from timeout=)"), message
        assert "hush-s3cret" not in repr(verdict)


class TestPinning:
    """build_app pins the URLs on the app; the probe session withholds Celery's variables."""

    def test_named_broker_serves_reads_and_writes(self, monkeypatch):
        from celery_probe.probing.app import build_app, celery_url_variables_withheld

        monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:7/0")
        monkeypatch.setenv("CELERY_BROKER_READ_URL", "redis://127.0.0.1:8/0")
        app = build_app(resolve_settings({"broker": "redis://127.0.0.1:9/0"}, pyproject=False))
        with celery_url_variables_withheld():
            assert "CELERY_BROKER_URL" not in os.environ
            urls = {app.conf.broker_url, app.conf.broker_read_url, app.conf.broker_write_url}
        assert urls == {"redis://127.0.0.1:9/0"}
        assert os.environ["CELERY_BROKER_READ_URL"] == "redis://127.0.0.1:8/0", "restored afterwards"

    def test_celery_broker_url_alone_keeps_celerys_own_resolution(self, monkeypatch):
        from celery_probe.probing.app import build_app, celery_url_variables_withheld

        monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:7/0")
        monkeypatch.setenv("CELERY_BROKER_READ_URL", "redis://127.0.0.1:8/0")
        settings = resolve_settings({}, pyproject=False)
        assert settings.broker == "redis://127.0.0.1:7/0"  # the fallback: Celery's choice, not a name
        app = build_app(settings)
        with celery_url_variables_withheld():
            assert (app.conf.broker_url, app.conf.broker_read_url) == ("redis://127.0.0.1:7/0", "redis://127.0.0.1:8/0")

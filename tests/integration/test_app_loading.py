"""An app that fails to load is a verdict; an -A path that names nothing is a usage error.

The Django project in tests/apps/djproj is laid out as ``django-admin startproject`` and
Celery's Django guide make it (``proj/celery.py`` with ``config_from_object("django.conf:settings",
namespace="CELERY")``), with settings read from the environment the way cookiecutter-django
reads them: without ``DATABASE_URL`` they raise ``ImproperlyConfigured``, and Django raises
it at the first read of ``app.conf``, not at import. Every case runs the real
``celery-probe run`` as a process, the cron case under ``env -i PATH=...``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celery_probe.testing import CeleryWorker
from tests.support.alert_servers import HookSink, SmtpSink
from tests.support.environment import APPS, CliResult, run_cli

DJPROJ = APPS / "djproj"
CODE = "celery_app_config_error"


def run_in_project(*args: str, env: dict[str, str] | None = None, cwd: Path = DJPROJ) -> CliResult:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_"))}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "celery_probe", "run", *args],
                          env={**clean, "PYTHONPATH": str(APPS), **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def cron_run(*args: str, report_dir: Path) -> CliResult:
    """As cron starts it: ``env -i`` with only PATH, in the project's folder."""
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    started = time.monotonic()
    proc = subprocess.run(["env", "-i", f"PATH={path}", sys.executable, "-m", "celery_probe", "run",
                           "--report-dir", str(report_dir), *args],
                          cwd=DJPROJ, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    return CliResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def assert_app_unknown(result: CliResult, app: str, last_line: str) -> dict:
    """Exit 4, no traceback, and the verdict names the app and the error's last line."""
    assert result.code == 4, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    verdict = result.verdict()
    assert verdict["status"] == "unknown"
    root = verdict["reasons"][0]
    assert (root["code"], root["severity"]) == (CODE, "error"), verdict["reasons"]
    assert f"app {app!r} did not load" in root["message"] and last_line in root["message"], root
    assert {r["code"] for r in verdict["reasons"]} == {CODE}, "no probe's own code: nothing was probed"
    return verdict


class TestDjangoSettingsFail:
    """The deployment's environment failing gives unknown (exit 4), reported and alerted."""

    def test_cron_environment_reports_writes_and_alerts(self, tmp_path, smtp: SmtpSink, hooks: HookSink):
        reports = tmp_path / "reports"
        result = cron_run("-A", "proj", "--format", "json", "--webhook", hooks.url(),
                          "--email", "ops@example.com", "--smtp", smtp.address, "--mail-from", "probe@example.com",
                          report_dir=reports)
        verdict = assert_app_unknown(result, "proj", "ImproperlyConfigured: Set the DATABASE_URL environment variable")
        assert json.loads((reports / "verdict.json").read_text())["reasons"][0]["code"] == CODE
        latest = json.loads((reports / "latest.json").read_text())
        assert latest["celery_probe"]["target"] == "app proj"
        history = (reports / "history.jsonl").read_text().splitlines()
        assert len(history) == 1 and json.loads(history[0])["status"] == "unknown"
        posted = hooks.wait_for(1)[0].json()
        assert "DATABASE_URL" in json.dumps(posted)
        mail = smtp.wait_for(1)[0]
        assert "UNKNOWN" in mail.subject.upper() and "DATABASE_URL" in mail.body
        assert verdict["target"] == "app proj"

    def test_text_output_is_one_reason_line(self, tmp_path):
        result = cron_run("-A", "proj", report_dir=tmp_path)
        assert result.code == 4 and "Traceback" not in result.stdout + result.stderr
        lines = [line for line in result.stdout.splitlines() if CODE in line]
        assert lines[0].strip().startswith(f"? {CODE} [error]: app 'proj' did not load its configuration: "
                                           "ImproperlyConfigured: Set the DATABASE_URL"), result.stdout

    def test_typo_in_django_settings_module(self, tmp_path):
        result = run_in_project("-A", "proj", "--format", "json", "--report-dir", str(tmp_path),
                                env={"DJANGO_SETTINGS_MODULE": "proj.setings"})
        assert_app_unknown(result, "proj", "No module named 'proj.setings'")

    def test_typo_under_nagios_is_unknown_3(self, tmp_path):
        result = run_in_project("-A", "proj", "--format", "nagios", "--report-dir", str(tmp_path),
                                env={"DJANGO_SETTINGS_MODULE": "proj.setings"})
        assert result.code == 3 and result.stdout.startswith(f"CELERY UNKNOWN - unknown: {CODE}: app 'proj'")

    def test_no_django_settings_module(self, tmp_path):
        result = run_in_project("-A", "envproj", "--format", "json", "--report-dir", str(tmp_path))
        assert_app_unknown(result, "envproj", "DJANGO_SETTINGS_MODULE")

    def test_get_celery_health_says_unknown(self, monkeypatch):
        from celery_probe.run.child import probe_verdict

        monkeypatch.chdir(DJPROJ)
        for key in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE"):
            monkeypatch.delenv(key, raising=False)
        verdict = probe_verdict(3, app="proj")
        assert verdict["status"] == "unknown" and verdict["reasons"][0]["code"] == CODE, verdict["reasons"]

    def test_serve_uses_the_same_code(self, monkeypatch):
        from celery_probe.config.settings import resolve_settings
        from celery_probe.serve.loop import ProbeLoop

        monkeypatch.chdir(DJPROJ)
        for key in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE"):
            monkeypatch.delenv(key, raising=False)
        settings = resolve_settings({"app": "proj", "deadline": "3"}, pyproject=False)
        snapshot = asyncio.run(ProbeLoop(settings, interval=60).run_once())
        assert snapshot.verdict["status"] == "unknown"
        assert snapshot.verdict["reasons"][0]["code"] == CODE, snapshot.verdict["reasons"]


class TestDjangoHealthy:
    def test_configured_project_with_its_worker_is_healthy(self, redis_server, tmp_path):
        env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "CELERY_BROKER_URL": redis_server.url(0),
               "CELERY_RESULT_BACKEND": redis_server.url(1)}
        worker = CeleryWorker("proj", name="dj@%h", env=env, pythonpath=[DJPROJ]).start(timeout=40)
        try:
            result = run_in_project("-A", "proj", "--format", "json", "--report-dir", str(tmp_path), env=env)
        finally:
            worker.close()
        assert result.code == 0, result.stdout
        assert result.verdict()["target"] == f"app proj on {redis_server.url(0)}"


class TestOtherApps:
    @pytest.mark.parametrize("app, words", [
        ("missing_config_app", ("did not load its configuration: ModuleNotFoundError: No module named "
                                "'celeryconfig_that_is_not_deployed'")),
        ("broken_import_app", ("did not load: ModuleNotFoundError: No module named "
                               "'celery_probe_dependency_not_installed'")),
    ])
    def test_app_code_fails(self, app, words, tmp_path):
        result = run_cli("run", "-A", app, "--format", "json", "--report-dir", str(tmp_path), cwd=tmp_path)
        assert_app_unknown(result, app, words)

    @pytest.mark.parametrize("source, words", [
        ("raise RuntimeError('config missing: SECRET_KEY')\n", "RuntimeError: config missing: SECRET_KEY"),
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    ])
    def test_module_raises_at_import(self, source, words, tmp_path):
        (tmp_path / "exploding.py").write_text(source)
        result = run_cli("run", "-A", "exploding", "--format", "json", cwd=tmp_path)
        assert_app_unknown(result, "exploding", words)
        assert (tmp_path / "reports" / "verdict.json").is_file()

    def test_one_target_failing_leaves_the_others_probed(self, tmp_path):
        (tmp_path / "targets.toml").write_text(
            '[targets.broken]\napp = "missing_config_app"\n\n[targets.dead]\nbroker = "redis://127.0.0.1:1/0"\n')
        result = run_cli("run", "--targets", "targets.toml", "--parallel", "2", "--format", "json",
                         "--deadline", "3", cwd=tmp_path, timeout=90)
        targets = result.verdict()["targets"]
        assert targets["broken"]["status"] == "unknown" and targets["broken"]["reasons"][0]["code"] == CODE
        assert targets["dead"]["status"] == "down"
        assert "Traceback" not in result.stderr


class TestWhatTheOperatorTyped:
    """A path that names nothing stays a usage error: one line, exit 64 (3 under Nagios)."""

    @pytest.mark.parametrize("path, words", [
        ("proj.celery:apx", "module 'proj.celery' has no attribute 'apx'"),
        ("proj.celery.apx", "module 'proj.celery' has no attribute or submodule 'apx'"),
        ("proj.nosuch", "module 'proj' has no attribute or submodule 'nosuch'"),
        ("projx", "ModuleNotFoundError: no module named 'projx'"),
        ("projx.celery:app", "ModuleNotFoundError: no module named 'projx'"),
    ])
    def test_missing_name(self, path, words, tmp_path):
        result = run_in_project("-A", path, "--report-dir", str(tmp_path),
                                env={"DATABASE_URL": "sqlite:///:memory:", "CELERY_BROKER_URL": "memory://"})
        assert result.code == 64, (result.stdout, result.stderr)
        line = f"celery-probe: error: cannot load Celery app {path!r}: {words} (from -A/--app)"
        assert result.stderr.strip().splitlines() == [line]
        assert not (tmp_path / "verdict.json").exists()

    def test_missing_name_under_nagios_is_3(self, tmp_path):
        result = run_in_project("-A", "proj.celery:apx", "--format", "nagios", "--report-dir", str(tmp_path))
        assert result.code == 3, result.stderr
        assert result.stdout.startswith("CELERY UNKNOWN - usage error: cannot load Celery app 'proj.celery:apx'")
        assert len(result.stderr.strip().splitlines()) == 1

    def test_malformed_option_under_nagios_is_3(self, tmp_path):
        result = run_cli("run", "-b", "redis://localhost/0", "--deadline", "abc", "--format=nagios", cwd=tmp_path)
        assert result.code == 3 and "--deadline" in result.stdout

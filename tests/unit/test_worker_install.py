"""``celery_probe.worker.install``: what it registers on an app, and where its settings come from.

Celery is imported but nothing connects: an app is only configured, never started.
"""

from __future__ import annotations

import pytest
from celery import Celery

import celery_probe.worker
from celery_probe.worker.evidence import DEFAULT_INTERVAL, DIR_ENV, INTERVAL_ENV
from celery_probe.worker.steps import WorkerHealthStep, resolve_folder, resolve_interval


def fresh_app() -> Celery:
    return Celery("install_test", broker="memory://", set_as_current=False)


class TestInstall:
    def test_registers_one_consumer_step_and_the_worker_option(self):
        app = fresh_app()
        step = celery_probe.worker.install(app, "/probe", interval=2)
        assert step in app.steps["consumer"] and issubclass(step, WorkerHealthStep)
        assert (step.default_dir, step.default_interval) == ("/probe", 2)
        assert [option.name for option in app.user_options["worker"]] == ["probe_dir"]

    def test_installing_again_replaces_the_step_and_keeps_one_option(self):
        app = fresh_app()
        first = celery_probe.worker.install(app)
        second = celery_probe.worker.install(app, "/elsewhere")
        assert first not in app.steps["consumer"] and second in app.steps["consumer"]
        assert len(app.user_options["worker"]) == 1

    def test_the_package_name_stays_the_function(self):
        celery_probe.worker.install(fresh_app())
        assert callable(celery_probe.worker.install)
        assert celery_probe.worker.install.__module__ == "celery_probe.worker"

    @pytest.mark.parametrize("interval", [0, -1, 7200])
    def test_a_bad_interval_fails_at_install(self, interval):
        with pytest.raises(ValueError, match=r"install\(interval=\.\.\.\)"):
            celery_probe.worker.install(fresh_app(), interval=interval)


class TestWhereSettingsComeFrom:
    def test_folder_option_wins_then_argument_then_environment(self):
        env = {DIR_ENV: "/from-env"}
        assert resolve_folder("/from-option", "/from-install", env) == "/from-option"
        assert resolve_folder(None, "/from-install", env) == "/from-install"
        assert resolve_folder(None, None, env) == "/from-env"
        assert resolve_folder(None, None, {}) is None
        assert resolve_folder("  ", None, {DIR_ENV: ""}) is None

    def test_interval_argument_then_environment_then_default(self):
        assert resolve_interval(2.5, {INTERVAL_ENV: "9"}) == 2.5
        assert resolve_interval(None, {INTERVAL_ENV: "9"}) == 9.0
        assert resolve_interval(None, {}) == DEFAULT_INTERVAL

    def test_a_bad_environment_interval_names_the_variable(self):
        with pytest.raises(ValueError, match=INTERVAL_ENV):
            resolve_interval(None, {INTERVAL_ENV: "soon"})
        with pytest.raises(ValueError, match=f"from {INTERVAL_ENV}"):
            resolve_interval(None, {INTERVAL_ENV: "0"})

"""Settings precedence and validation: every bad value names itself and its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.errors import ProbeUsageError


def write_pyproject(folder: Path, body: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text(f"[tool.celery-probe]\n{body}\n")
    return path


class TestPrecedence:
    """CLI > environment > pyproject.toml > defaults."""

    def test_defaults(self):
        settings = resolve_settings({}, environ={}, pyproject=False)
        assert settings.deadline == 5.0 and settings.queue_threshold == 100
        assert settings.format == "text" and settings.report_dir == Path("reports")
        assert settings.roundtrip_task == "celery.accumulate" and settings.expect_workers is None

    def test_each_layer_overrides_the_one_below(self, tmp_path):
        path = write_pyproject(tmp_path, 'deadline = 3\nqueue-threshold = 50\nqueues = ["a", "b"]\nformat = "json"')
        env = {"CELERY_PROBE_DEADLINE": "4", "CELERY_PROBE_QUEUE_THRESHOLD": "60"}
        settings = resolve_settings({"deadline": "5"}, environ=env, pyproject=path)
        assert settings.deadline == 5.0
        assert settings.queue_threshold == 60
        assert settings.queues == ("a", "b") and settings.format == "json"
        assert settings.sources["deadline"] == "--deadline"
        assert settings.sources["queue_threshold"] == "environment variable CELERY_PROBE_QUEUE_THRESHOLD"
        assert settings.sources["queues"].startswith("[tool.celery-probe] in ")

    def test_pyproject_found_upwards(self, tmp_path, monkeypatch):
        write_pyproject(tmp_path, 'broker = "redis://localhost:6379/0"')
        deeper = tmp_path / "a" / "b"
        deeper.mkdir(parents=True)
        monkeypatch.chdir(deeper)
        assert resolve_settings({}, environ={}).broker == "redis://localhost:6379/0"

    def test_celery_broker_url_is_the_last_resort(self):
        env = {"CELERY_BROKER_URL": "redis://h:1/0"}
        assert resolve_settings({}, environ=env, pyproject=False).broker == "redis://h:1/0"
        env["CELERY_PROBE_BROKER"] = "redis://h:2/0"
        assert resolve_settings({}, environ=env, pyproject=False).broker == "redis://h:2/0"

    def test_thresholds_global_and_per_queue(self, tmp_path):
        path = write_pyproject(tmp_path, "queue_threshold = 10\n[tool.celery-probe.queue_thresholds]\nbulk = 500")
        settings = resolve_settings({}, environ={}, pyproject=path)
        assert settings.threshold_for("bulk") == 500 and settings.threshold_for("celery") == 10
        cli = resolve_settings({"queue_threshold": ("7", "hi=9")}, environ={}, pyproject=False)
        assert cli.threshold_for("hi") == 9 and cli.threshold_for("x") == 7

    def test_queues_comma_separated_and_deduplicated(self):
        settings = resolve_settings({"queues": ("a,b", "b", "c")}, environ={}, pyproject=False)
        assert settings.queues == ("a", "b", "c")


class TestValidation:
    """A bad value raises one line naming the value and where it came from."""

    @pytest.mark.parametrize("name, raw, words", [
        ("deadline", "abc", "is not a number"),
        ("deadline", "0", "between"),
        ("deadline", "nan", "between"),
        ("expect_workers", "two", "not a whole number"),
        ("expect_workers", "0", "between"),
        ("expect_workers", "1.5", "not a whole number"),
        ("queue_threshold", ("x=",), "not a whole number"),
        ("queue_threshold", ("=5",), "no queue name"),
        ("format", "xml", "must be one of"),
        ("broker", "localhost:6379", "no scheme"),
        ("broker", "reddis://localhost", "unknown scheme"),
        ("broker", "redis://localhost:port/0", "cannot be parsed"),
        ("backend", "nosuch://x", "unknown scheme"),
        ("endpoints", ("ftp://x/health",), "unknown scheme"),
        ("app", "proj/app.py", "MODULE[:ATTRIBUTE]"),
        ("queues", ("bad\nname",), "control character"),
    ])
    def test_cli_value(self, name, raw, words):
        with pytest.raises(ProbeUsageError) as info:
            resolve_settings({name: raw}, environ={}, pyproject=False)
        message = str(info.value)
        assert words in message and "(from " in message and "\n" not in message

    def test_env_value_names_the_variable(self):
        with pytest.raises(ProbeUsageError, match=r"\(from environment variable CELERY_PROBE_DEADLINE\)"):
            resolve_settings({}, environ={"CELERY_PROBE_DEADLINE": "soon"}, pyproject=False)

    def test_pyproject_value_names_the_file(self, tmp_path):
        path = write_pyproject(tmp_path, 'expect-workers = "many"')
        with pytest.raises(ProbeUsageError, match=rf"in {path}\)"):
            resolve_settings({}, environ={}, pyproject=path)

    def test_unknown_pyproject_key(self, tmp_path):
        path = write_pyproject(tmp_path, "deadlin = 3")
        with pytest.raises(ProbeUsageError, match="unknown setting 'deadlin'"):
            resolve_settings({}, environ={}, pyproject=path)

    def test_broken_pyproject(self, tmp_path):
        (tmp_path / "pyproject.toml").write_text("[tool.celery-probe\n")
        with pytest.raises(ProbeUsageError, match="cannot read"):
            resolve_settings({}, environ={}, pyproject=tmp_path / "pyproject.toml")

    def test_password_never_in_the_message(self):
        with pytest.raises(ProbeUsageError) as info:
            resolve_settings({"broker": "redis://user:hunter22@host:bad/0"}, environ={}, pyproject=False)
        assert "hunter22" not in str(info.value) and "***" in str(info.value)

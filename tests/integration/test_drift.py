"""Worker drift: expected worker names and expected queue membership."""

from __future__ import annotations

import json
import socket

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.errors import ProbeUsageError
from tests.support.environment import app_env

DEADLINE = "3"


class TestSettings:
    """--expect-worker-name and --expect-consumer from every layer, errors in one line."""

    def test_layers(self, tmp_path):
        (tmp_path / "pyproject.toml").write_text(
            '[tool.celery-probe]\nexpect-worker-names = ["sync@*", "mail@*"]\n'
            '[tool.celery-probe.expect-consumers]\nsync = "sync@*"\nmail = ["mail@*", "all@*"]\n'
        )
        settings = resolve_settings({}, environ={}, pyproject=tmp_path / "pyproject.toml")
        assert settings.expect_worker_names == ("sync@*", "mail@*")
        assert settings.expect_consumers == (("sync", "sync@*"), ("mail", "mail@*"), ("mail", "all@*"))
        env = {"CELERY_PROBE_EXPECT_CONSUMERS": "a=x@*,b=y@*", "CELERY_PROBE_EXPECT_WORKER_NAMES": "x@*"}
        settings = resolve_settings({"expect_worker_names": ("z@*",)}, environ=env, pyproject=False)
        assert settings.expect_worker_names == ("z@*",)
        assert settings.expect_consumers == (("a", "x@*"), ("b", "y@*"))

    @pytest.mark.parametrize("raw", ["sync", "=x@*", "sync=", "sync=\x01"])
    def test_bad_consumer_rule(self, raw):
        with pytest.raises(ProbeUsageError, match="expect-consumer.*(QUEUE=PATTERN|control).*--expect-consumer"):
            resolve_settings({"expect_consumers": (raw,)}, environ={}, pyproject=False)

    def test_cli_error_exits_64(self, cli):
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--expect-consumer", "nopattern")
        assert result.code == 64
        assert "must be QUEUE=PATTERN" in result.stderr and "--expect-consumer" in result.stderr


class TestRealWorkers:
    """Two real workers; one consumes a queue it should not."""

    def test_drift_and_missing_names(self, redis_server, start_worker, cli):
        env = app_env(redis_server.url(0), redis_server.url(1))
        host = socket.gethostname()
        start_worker(env, name="sync@%h", queues=("celery", "sync"))
        start_worker(env, name="web@%h", queues=("celery", "sync"))
        base = ("run", "-A", "probe_test_app", "-Q", "celery,sync", "--expect-workers", "2",
                "--deadline", DEADLINE, "--format", "json")

        healthy = cli(*base, "--expect-worker-name", "sync@*", "--expect-worker-name", "web",
                      "--expect-consumer", "celery=*@*", env=env)
        assert healthy.code == 0, json.dumps(healthy.verdict()["reasons"], indent=1)

        drift = cli(*base, "--expect-consumer", "sync=sync@*", "--expect-consumer", "mail=mail@*", env=env)
        verdict = drift.verdict()
        assert drift.code == 3 and verdict["status"] == "degraded"
        assert drift.codes() == {"celery_worker_drift"}, json.dumps(verdict["reasons"], indent=1)
        message = next(r["message"] for r in verdict["reasons"] if r["code"] == "celery_worker_drift")
        assert f"web@{host} consumes sync but matches none of its patterns" in message
        assert "no worker matching mail@* is up to consume mail" in message
        assert f"sync@{host}" not in message

        missing = cli(*base, "--expect-worker-name", "sync@*", "--expect-worker-name", "billing@*", env=env)
        assert missing.code == 3
        assert missing.codes() == {"celery_worker_missing_by_name"}
        reason = missing.verdict()["reasons"][0]
        assert reason["severity"] == "degraded"
        assert reason["message"].startswith("no worker answered for billing@* (answered: ")

    def test_no_worker_is_not_drift(self, redis_server, cli):
        env = app_env(redis_server.url(0), redis_server.url(1))
        result = cli("run", "-A", "probe_test_app", "--deadline", "2", "--expect-worker-name", "sync@*",
                     "--expect-consumer", "celery=sync@*", "--format", "json", env=env)
        assert result.code == 2
        assert "celery_worker_down" in result.codes()
        assert not {"celery_worker_drift", "celery_worker_missing_by_name"} & result.codes()

"""Worker drift: expected worker names and expected queue membership."""

from __future__ import annotations

import json
import socket
from typing import ClassVar

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.verdict.drift import (
    Finding,
    consumer_drift,
    missing_names,
    name_matches,
    rules_by_queue,
    summary,
)
from tests.support.environment import app_env

DEADLINE = "3"


class TestMatching:
    """fnmatch-style patterns against node names, pure."""

    @pytest.mark.parametrize("name, pattern, expected", [
        ("sync@host-1", "sync@*", True),
        ("sync@host-1", "sync@host-?", True),
        ("sync2@host-1", "sync@*", False),
        ("Sync@host-1", "sync@*", False),  # case-sensitive
        ("sync@host-1", "sync", True),  # no @: the host is ignored
        ("sync-fast@host-1", "sync*", True),
        ("mail@host-1", "sync*", False),
        ("sync@host-1", "*", True),
        ("sync@host-1", "[sm]*@host-1", True),
    ])
    def test_name_matches(self, name, pattern, expected):
        assert name_matches(name, pattern) is expected

    def test_missing_names(self):
        names = ["sync@a", "sync@b", "mail@a"]
        assert missing_names(["sync@*", "mail@*", "billing@*", "billing@*"], names) == ["billing@*"]
        assert missing_names([], names) == []
        assert missing_names(["x@*"], []) == ["x@*"]

    def test_rules_grouped_by_queue(self):
        assert rules_by_queue([("a", "x@*"), ("b", "y@*"), ("a", "z@*"), ("a", "x@*")]) == {
            "a": ["x@*", "z@*"], "b": ["y@*"]}


class TestConsumerDrift:
    """Each rule's queue: matching workers consume it, no others do, some worker matches."""

    consumed: ClassVar[dict[str, list[str]]] = {
        "sync@a": ["celery", "sync"],
        "sync@b": ["celery"],
        "mail@a": ["celery", "mail", "sync"],
    }

    def test_no_drift(self):
        assert consumer_drift([("celery", "*@*"), ("mail", "mail@*")], self.consumed) == []

    def test_missing_and_unexpected(self):
        findings = consumer_drift([("sync", "sync@*")], self.consumed)
        assert findings == [Finding("missing", "sync", "sync@b", "sync@*"), Finding("unexpected", "sync", "mail@a")]
        text = summary(findings)
        assert "sync@b does not consume sync (expected for sync@*)" in text
        assert "mail@a consumes sync but matches none of its patterns" in text

    def test_several_patterns_for_one_queue(self):
        findings = consumer_drift([("sync", "sync@*"), ("sync", "mail@*"), ("sync", "sync@b")], self.consumed)
        assert findings == [Finding("missing", "sync", "sync@b", "sync@*")]  # reported once

    def test_pattern_without_worker(self):
        findings = consumer_drift([("billing", "billing@*")], self.consumed)
        assert findings == [Finding("no_worker", "billing", pattern="billing@*")]
        assert findings[0].describe() == "no worker matching billing@* is up to consume billing"

    def test_queues_without_rules_are_not_judged(self):
        assert consumer_drift([("mail", "mail@*")], self.consumed) == []

    def test_summary_is_bounded(self):
        many = [Finding("unexpected", "q", f"w{i}@h") for i in range(12)]
        assert summary(many, limit=3).endswith("; and 9 more")


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

"""Worker drift, the pure part: matching worker names and queue membership to what is expected."""

from __future__ import annotations

from typing import ClassVar

import pytest

from celery_probe.verdict.drift import (
    Finding,
    consumer_drift,
    missing_names,
    name_matches,
    rules_by_queue,
    summary,
)


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

"""Per-task backlog, the pure part: counting sampled queue heads by task name."""

from __future__ import annotations

import base64
import json

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.probing.backlog import (
    UNKNOWN_TASK,
    QueueBacklog,
    count_tasks,
    describe_top,
    head_plan,
    task_name,
)
from celery_probe.verdict.mapper import verdict_from_report


class TestPureLogic:
    """Parsing envelopes, planning the read, naming the top tasks."""

    def test_protocol2_name_from_headers(self):
        raw = json.dumps({"body": "W10=", "headers": {"task": "app.sync", "id": "1"},
                          "content-type": "application/json", "properties": {"body_encoding": "base64"}})
        assert task_name(raw) == "app.sync"
        assert task_name(raw.encode()) == "app.sync"

    def test_protocol1_name_from_json_body(self):
        body = base64.b64encode(json.dumps({"task": "app.old", "id": "1", "args": []}).encode()).decode()
        raw = json.dumps({"body": body, "headers": {}, "content-type": "application/json",
                          "properties": {"body_encoding": "base64"}})
        assert task_name(raw) == "app.old"

    @pytest.mark.parametrize("raw", [b"not json", "[]", "null", json.dumps({"headers": {"task": 3}}),
                                     json.dumps({"body": "%%%", "content-type": "application/json",
                                                 "properties": {"body_encoding": "base64"}}),
                                     json.dumps({"body": "gAN9", "content-type": "application/x-python-serialize"})])
    def test_anything_else_is_unknown(self, raw):
        assert task_name(raw) == UNKNOWN_TASK

    def test_counts_most_frequent_first(self):
        messages = [json.dumps({"headers": {"task": name}}) for name in "bbaacb"] + ["x"]
        assert list(count_tasks(messages).items()) == [("b", 3), ("a", 2), (UNKNOWN_TASK, 1), ("c", 1)]

    def test_plan_takes_lists_in_consumption_order(self):
        lengths = [("q", 30), ("q\x06\x163", 0), ("q\x06\x169", 40)]
        assert head_plan(lengths, 100) == [("q", 30), ("q\x06\x169", 40)]
        assert head_plan(lengths, 45) == [("q", 30), ("q\x06\x169", 15)]
        assert head_plan(lengths, 10) == [("q", 10)]
        assert head_plan(lengths, 0) == []

    def test_describe_top(self):
        backlog = QueueBacklog("bulk", 100, {"a.x": 70, "b.y": 20, "c.z": 6, "d.w": 4})
        assert describe_top(backlog) == "top tasks in 100 sampled: a.x 70, b.y 20, c.z 6 and 1 more"
        assert describe_top(QueueBacklog("bulk")) == ""
        assert describe_top(None) == ""

    def test_setting_layers_and_bounds(self):
        assert resolve_settings({}, environ={}, pyproject=False).backlog_sample == 100
        assert resolve_settings({}, environ={"CELERY_PROBE_BACKLOG_SAMPLE": "0"}, pyproject=False).backlog_sample == 0
        assert resolve_settings({"backlog_sample": "7"}, environ={"CELERY_PROBE_BACKLOG_SAMPLE": "0"},
                                pyproject=False).backlog_sample == 7
        from celery_probe.errors import ProbeUsageError

        with pytest.raises(ProbeUsageError, match="backlog-sample.*between 0 and 10000.*--backlog-sample"):
            resolve_settings({"backlog_sample": "-1"}, environ={}, pyproject=False)

    def test_mapper_surfaces_backlog_per_queue(self):
        report = {"tests": [{"outcome": "passed", "metadata": {"measured": {
            "queues": {"bulk": {"length": 150, "by_priority": {"0": 150}, "threshold": 100}},
            "backlog": {"bulk": {"sampled": 100, "by_task": {"a.x": 90, "b.y": 10, "bad": "x"}}, "junk": 3},
        }}}]}
        bulk = verdict_from_report(report)["queues"]["bulk"]
        assert bulk["backlog_by_task"] == {"a.x": 90, "b.y": 10}
        assert bulk["backlog_sampled"] == 100 and bulk["length"] == 150

"""The real reports captured in tests/reports/ (by tests/reports/capture.py), read by name."""

from __future__ import annotations

import json
from typing import Any

from celery_probe.storage.reports import history_entry
from celery_probe.verdict.mapper import verdict_from_report
from tests.support.environment import TESTS

REPORTS = TESTS / "reports"


def report(name: str) -> dict[str, Any]:
    """The pytest-json-report report ``tests/reports/NAME.json``."""
    return json.loads((REPORTS / f"{name}.json").read_text())


def verdict(name: str) -> dict[str, Any]:
    """The verdict of that report."""
    return dict(verdict_from_report(report(name)))


def line(name: str, **changes: Any) -> str:
    """A history.jsonl line of that report's verdict, with ``changes`` on top."""
    return json.dumps({**history_entry(verdict_from_report(report(name))), **changes})

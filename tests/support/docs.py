"""What the docs' tests read from docs/: the Prometheus alert rules shipped as a sample."""

from __future__ import annotations

import re
from typing import Any

from tests.support.environment import ROOT

DOCS = ROOT / "docs"
PROMETHEUS = DOCS / "deploy" / "prometheus"

# Series Prometheus writes itself for every scrape target (not celery-probe's exposition).
PROMETHEUS_SERIES = frozenset({"up"})
# PromQL words that are neither series nor functions.
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "on", "ignoring", "by", "without",
                       "group_left", "group_right"})
_GROUPING = re.compile(r"\b(?:on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)")


def alert_rules() -> list[dict[str, Any]]:
    """The rules of docs/deploy/prometheus/alerts.yml, each checked for the keys Prometheus knows."""
    import yaml

    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] in ("critical", "warning")
    return rules


def series_names(expr: str) -> set[str]:
    """The series a PromQL expression selects: every bare name that is not a function or keyword.

    Strings, label matchers, ranges and grouping label lists are removed first, so a label
    name or a quoted value is never taken for a series; a name followed by ``(`` is a function,
    which promtool checks.
    """
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = _GROUPING.sub(" ", bare)
    names = re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare)
    return {name for name in names if name not in _KEYWORDS}

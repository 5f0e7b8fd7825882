"""What the docs' tests read from docs/: the Prometheus alert rules shipped as a sample."""

from __future__ import annotations

from typing import Any

from tests.support.environment import ROOT

DOCS = ROOT / "docs"


def alert_rules() -> list[dict[str, Any]]:
    """The rules of docs/deploy/prometheus/alerts.yml, each checked for the keys Prometheus knows."""
    import yaml

    document = yaml.safe_load((DOCS / "deploy" / "prometheus" / "alerts.yml").read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] in ("critical", "warning")
    return rules

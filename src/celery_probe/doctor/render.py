"""What a review prints: text for a person, JSON for a pipeline, and the exit code.

Exit codes (also in docs/doctor.md and ``celery-probe doctor --help``):

====  ==================================================================================
0     nothing above info was found
1     warnings, nothing critical
2     at least one critical finding
4     the review is incomplete: the broker did not answer, no worker answered, or the app's
      configuration failed to load, so the checks needing them could not be made (a critical
      finding among the rest still exits 2)
64    usage error (bad option, an -A path that names nothing, a malformed URL)
====  ==================================================================================

Pure: the colour decision is the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click

from celery_probe.doctor.catalogue import CRITICAL, INFO, WARNING
from celery_probe.doctor.rules import FINDING, NOT_APPLICABLE, NOT_CHECKED, PASSED, Check

EXIT_CLEAN = 0
EXIT_WARNINGS = 1
EXIT_CRITICAL = 2
EXIT_INCOMPLETE = 4
SEVERITY_COLOURS = {CRITICAL: "red", WARNING: "yellow", INFO: "cyan"}
SEVERITY_ORDER = {CRITICAL: 0, WARNING: 1, INFO: 2}


@dataclass(frozen=True)
class Review:
    """A finished review: its checks and what it was run against."""

    checks: Sequence[Check]
    target: str  # ``app proj`` or the masked broker URL
    broker: str  # masked
    workers: list[str]
    elapsed_s: float
    deadline_s: float
    incomplete: str | None = None  # why the review could not check most things

    def findings(self) -> list[Check]:
        found = [c for c in self.checks if c.status == FINDING]
        return sorted(found, key=lambda c: SEVERITY_ORDER.get(c.severity or INFO, 3))

    def of_status(self, status: str) -> list[Check]:
        return [c for c in self.checks if c.status == status]

    def counts(self) -> dict[str, int]:
        found = self.findings()
        return {CRITICAL: sum(c.severity == CRITICAL for c in found),
                WARNING: sum(c.severity == WARNING for c in found),
                INFO: sum(c.severity == INFO for c in found),
                "not_checked": len(self.of_status(NOT_CHECKED)), "passed": len(self.of_status(PASSED))}


def exit_code(review: Review) -> int:
    counts = review.counts()
    if counts[CRITICAL]:
        return EXIT_CRITICAL
    if review.incomplete:
        return EXIT_INCOMPLETE
    return EXIT_WARNINGS if counts[WARNING] else EXIT_CLEAN


def _summary(review: Review) -> str:
    counts = review.counts()
    parts = [f"{counts[CRITICAL]} critical", f"{counts[WARNING]} warning{'s' * (counts[WARNING] != 1)}",
             f"{counts[INFO]} info", f"{counts['not_checked']} not checked", f"{counts['passed']} passed"]
    return ", ".join(parts)


def render_text(review: Review, *, colour: bool = False) -> str:
    def paint(text: str, fg: str | None, bold: bool = True) -> str:
        return click.style(text, fg=fg, bold=bold) if colour else text

    workers = len(review.workers)
    where = review.target if review.target == review.broker else f"{review.target} on {review.broker}"
    head = (f"celery-probe doctor: {where}, {workers} worker{'s' * (workers != 1)} "
            f"answered, in {review.elapsed_s:.2f}s")
    lines = [head,
             f"  {_summary(review)}"]
    if review.incomplete:
        lines.append(f"  {paint('INCOMPLETE', 'magenta')}: {review.incomplete}")
    for check in review.findings():
        rule = check.rule
        severity = check.severity or INFO
        lines += ["", f"{paint(severity.upper(), SEVERITY_COLOURS.get(severity))}  {check.code}: {rule.title}",
                  f"  seen  {check.seen}", f"  why   {rule.why}", f"  fix   {rule.fix}", f"  docs  {rule.docs}"]
    unchecked = review.of_status(NOT_CHECKED)
    if unchecked:
        lines.append("")
        lines += [f"{paint('NOT CHECKED', 'magenta', bold=False)}  {c.code}: {c.reason}" for c in unchecked]
    passed = review.of_status(PASSED)
    if passed:
        lines += ["", f"{paint('passed', 'green', bold=False)}  " + ", ".join(c.code for c in passed)]
    skipped = review.of_status(NOT_APPLICABLE)
    if skipped:
        lines.append("not applicable  " + ", ".join(c.code for c in skipped))
    return "\n".join(lines)


def as_dict(review: Review) -> dict[str, Any]:
    """The JSON document (docs/doctor.md describes its keys)."""

    def entry(check: Check) -> dict[str, Any]:
        rule = check.rule
        out: dict[str, Any] = {"code": check.code, "status": check.status, "title": rule.title}
        if check.status == FINDING:
            out.update(severity=check.severity, seen=check.seen, why=rule.why, fix=rule.fix, docs=rule.docs)
        elif check.status == PASSED:
            out["seen"] = check.seen
        else:
            out["reason"] = check.reason
        if rule.broker:
            out["broker"] = rule.broker
        return out

    return {
        "target": review.target,
        "broker": review.broker,
        "workers": review.workers,
        "elapsed_s": round(review.elapsed_s, 3),
        "deadline_s": review.deadline_s,
        "incomplete": review.incomplete,
        "exit_code": exit_code(review),
        "summary": review.counts(),
        "findings": [entry(c) for c in review.findings()],
        "checks": [entry(c) for c in review.checks],
    }


def render_json(review: Review) -> str:
    return json.dumps(as_dict(review), indent=2)

"""The JUnit XML of a probe run, as a CI system wants it: scrubbed, labelled, always present.

pytest writes the file itself (``--junitxml``, one ``testcase`` per probe). Its failure
texts may quote a broker URL, and pytest does not know which strings are secrets, so the
file is read back, every text and attribute goes through :func:`celery_probe.config.urls.scrub`,
the verdict's status is added as a suite property, and the result replaces the file by
temp file and rename. When pytest wrote nothing (the session ended before a report), a
one-testcase file states the verdict instead, so a CI upload step never finds nothing.
When the run cannot even start (a usage error, exit 64), :func:`write_not_started` writes a
one-testcase file with that error, for the same reason.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path

from celery_probe.storage.reports import atomic_write_text
from celery_probe.config.urls import scrub
from celery_probe.verdict.model import AnyVerdict

MAX_JUNIT_BYTES = 50_000_000


def finalize_junit(path: Path, verdict: AnyVerdict, secrets: Iterable[str] = ()) -> None:
    """Rewrite pytest's JUnit file at ``path`` scrubbed, with ``celery_probe.status`` set."""
    secrets = set(secrets)
    root = _read(path)
    if root is None:
        root = _synthetic(verdict)
    for element in root.iter():
        if element.text:
            element.text = str(scrub(element.text, secrets))
        if element.tail:
            element.tail = str(scrub(element.tail, secrets))
        for key, value in list(element.attrib.items()):
            element.attrib[key] = str(scrub(value, secrets))
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    targets = verdict.get("targets")
    for suite in suites:
        if isinstance(targets, Mapping) and targets:  # run --targets: no single target to name
            suite.set("name", "celery-probe targets " + ", ".join(sorted(map(str, targets))))
        suite.set("name", (suite.get("name") or "celery-probe").strip())
        properties = suite.find("properties")
        if properties is None:
            properties = ET.Element("properties")
            suite.insert(0, properties)
        for name, known in (("celery_probe.status", verdict.get("status")),
                            ("celery_probe.target", verdict.get("target"))):
            if known is not None:
                ET.SubElement(properties, "property", name=name, value=str(scrub(str(known), secrets)))
    if root.tag == "testsuites" and suites:
        root.set("name", suites[0].get("name") or "celery-probe")  # pytest calls it "pytest tests"
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    atomic_write_text(path, '<?xml version="1.0" encoding="utf-8"?>\n' + text + "\n")


def _read(path: Path) -> ET.Element | None:
    try:
        if path.stat().st_size > MAX_JUNIT_BYTES:
            return None
        return ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None


def _synthetic(verdict: AnyVerdict) -> ET.Element:
    """A suite of one testcase carrying the verdict, for a run where pytest wrote no file."""
    reasons = [r for r in verdict.get("reasons") or [] if isinstance(r, Mapping)]
    message = "; ".join(f"{r.get('code')}: {r.get('message')}" for r in reasons) or "no probe ran"
    failed = verdict.get("status") != "healthy"
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", name="celery-probe", tests="1", errors=str(int(failed)),
                          failures="0", skipped="0")
    case = ET.SubElement(suite, "testcase", classname="celery-probe", name="verdict", time="0")
    if failed:
        error = ET.SubElement(case, "error", message=message[:500])
        error.text = message
    return root


def write_not_started(path: Path, message: str) -> None:
    """A suite of one errored testcase saying why the run could not start (``message``)."""
    text = str(scrub(message, set()))
    root = ET.Element("testsuites", name="celery-probe")
    suite = ET.SubElement(root, "testsuite", name="celery-probe", tests="1", errors="1", failures="0", skipped="0")
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="celery_probe.status", value="not started")
    case = ET.SubElement(suite, "testcase", classname="celery-probe", name="start", time="0")
    error = ET.SubElement(case, "error", message=f"the run could not start: {text}"[:500], type="usage error")
    error.text = f"the run could not start: {text}"
    ET.indent(root)
    atomic_write_text(path, '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")

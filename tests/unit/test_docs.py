"""The operator docs cannot drift from the code: each page against the code it documents.

Each test reads the code (reason codes from the syntax trees of probes/ and src/celery_probe/,
CLI options from click, metric names, settings from their declarations) and fails naming what
a page is missing, or a broken link, anchor or example.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import click
import pytest

from tests.support.docs import PROMETHEUS, PROMETHEUS_SERIES, alert_rules, series_names
from tests.support.environment import ROOT

DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
import capture_examples  # docs/ is not a package; the marker format lives there

CODE_SHAPE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def page(name: str) -> str:
    return (DOCS / name).read_text()


def section(text: str, heading: str) -> str:
    """The text under a ``## heading`` up to the next heading of the same level."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


# -- reason codes ----------------------------------------------------------------------------


def emitted_codes() -> dict[str, str]:
    """Every reason code the code can emit, with where: ``code=…`` keywords, ``note(CODE, …)``,
    ``{"code": …}`` literals and ``*_CODE`` constants in probes/ and src/celery_probe/."""
    found: dict[str, str] = {}
    files = [*sorted((ROOT / "probes").rglob("*.py")), *sorted((ROOT / "src" / "celery_probe").rglob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            values: list[ast.expr] = []
            if isinstance(node, ast.Call):
                values += [k.value for k in node.keywords if k.arg == "code"]
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name == "note" and node.args:
                    values.append(node.args[0])
            elif isinstance(node, ast.Dict):
                values += [v for k, v in zip(node.keys, node.values)
                           if isinstance(k, ast.Constant) and k.value == "code"]
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id.endswith("CODE") for t in node.targets):
                values.append(node.value)
            for value in values:
                if isinstance(value, ast.Constant) and isinstance(value.value, str) \
                        and CODE_SHAPE.fullmatch(value.value):
                    found.setdefault(value.value, f"{path.relative_to(ROOT)}:{value.lineno}")
    return found


def documented_codes() -> dict[str, str]:
    """Code -> severity from the first two columns of the reason-code table."""
    table = section(page("probes.md"), "Reason codes and severities")
    rows = re.findall(r"^\| `([a-z0-9_]+)` \| ([a-z]+)", table, flags=re.MULTILINE)
    return dict(rows)


def test_the_code_scan_finds_the_codes_it_must():
    """Guards the scan itself: a scan that finds nothing would pass the next test vacuously."""
    codes = emitted_codes()
    for code in ("celery_worker_down", "celery_roundtrip_unconfirmed", "celery_probe_failed",
                 "celery_probe_stale", "celery_probe_no_evidence"):
        assert code in codes


def test_every_reason_code_is_in_the_table():
    missing = {code: where for code, where in emitted_codes().items() if code not in documented_codes()}
    assert not missing, f"reason codes missing from docs/probes.md's table: {missing}"


def test_probe_severities_in_the_table_match_the_markers():
    documented = documented_codes()
    for path in sorted((ROOT / "probes").glob("*.py")):
        for severity, code in re.findall(r'probe\(severity="(\w+)", code="(\w+)"\)', path.read_text()):
            assert documented.get(code) == severity, f"{code} ({path.name}) is {severity} in the code"


def test_every_built_in_probe_is_in_the_probes_table():
    table = section(page("probes.md"), "The built-in probes")
    names = [name for path in sorted((ROOT / "probes").glob("*.py"))
             for name in re.findall(r"^def (test_\w+)", path.read_text(), flags=re.MULTILINE)]
    assert names, "no probe found in probes/"
    missing = [name for name in names if f"| `{name}` |" not in table]
    assert not missing, f"probes missing from docs/probes.md's table: {missing}"


# -- CLI, settings, metrics ------------------------------------------------------------------


def commands() -> dict[str, click.Command]:
    from celery_probe.cli.main import all_commands

    return all_commands()


def test_every_cli_option_is_in_the_reference():
    reference = page("cli.md")
    for name, command in commands().items():
        heading = f"### `celery-probe {name}`"
        assert heading in reference, f"celery-probe {name} has no section in docs/cli.md: re-run capture_examples.py"
        text = reference.split(heading, 1)[1].split("\n### ", 1)[0]
        for param in command.params:
            for opt in [*param.opts, *param.secondary_opts]:
                if opt.startswith("-"):
                    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), \
                        f"celery-probe {name} {opt} is not in docs/cli.md: re-run capture_examples.py"


def test_every_setting_is_in_the_configuration_page():
    from celery_probe.config.settings import SPECS

    text = page("configuration.md")
    missing = [f"CELERY_PROBE_{spec.env}" for spec in SPECS if f"`CELERY_PROBE_{spec.env}`" not in text]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_every_pytest_option_is_in_the_configuration_page():
    from celery_probe.config.settings import SPECS

    plugin = (ROOT / "src" / "celery_probe" / "pytest_plugin" / "plugin.py").read_text()
    options = [spec.pytest for spec in SPECS if spec.pytest] + re.findall(r'addoption\(\s*"(--[\w-]+)"', plugin)
    assert "--celery-app" in options and "--celery-targets" in options
    text = section(page("configuration.md"), "pytest options")
    missing = [opt for opt in options if f"`{opt}`" not in text]
    assert not missing, f"pytest options missing from docs/configuration.md: {missing}"


def test_every_metric_is_in_the_metrics_page():
    from celery_probe.present.metrics import HELP

    names = section(page("metrics.md"), "Metric names")
    missing = [name for name in HELP if f"`{name}" not in names]
    assert not missing, f"metrics missing from docs/metrics.md's table: {missing}"


def test_every_example_has_been_captured():
    for path in sorted(DOCS.rglob("*.md")):
        for name, body in capture_examples.example_bodies(path.read_text()).items():
            assert body.strip(), f"{path.name}: example {name} is empty: run docs/capture_examples.py"


# -- links -----------------------------------------------------------------------------------


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return [target for target in LINK.findall(text) if "://" not in target and not target.startswith("mailto:")]


def test_the_readme_links_every_docs_page():
    linked = {target.split("#")[0] for target in links(ROOT / "README.md")}
    pages = {f"docs/{p.name}" for p in DOCS.glob("*.md")}
    assert not pages - linked, f"docs pages the README does not link: {sorted(pages - linked)}"


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(path):
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        assert resolved.exists(), f"{path.name}: link {target} points to nothing"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{path.name}: link {target}: no such heading"


def test_the_readme_keeps_its_first_screen():
    """The README opens with what it is and the two commands, unchanged."""
    text = (ROOT / "README.md").read_text()
    demo = ("python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/celery-probe demo")
    suite = ("python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest")
    first = text.split("\n---\n", 1)[0]
    assert first.startswith("# celery-probe\n\n**Is Celery healthy right now?**")
    assert f"```bash\n{demo}\n```" in first and f"```bash\n{suite}\n```" in first


def test_alert_rules_are_the_ones_the_metrics_page_lists():
    listed = set(re.findall(r"^\| `(\w+)` \|", section(page("metrics.md"), "Alert rules"), flags=re.MULTILINE))
    assert {rule["alert"] for rule in alert_rules()} == listed


def test_alert_rules_select_only_celery_probe_series_or_prometheus_own():
    """`up` is written by Prometheus for every target; any other series must be celery-probe's
    (tests/integration/test_docs.py checks those against a real scrape)."""
    for rule in alert_rules():
        names = series_names(rule["expr"])
        assert names, rule["alert"]
        foreign = {n for n in names if not n.startswith("celery_probe_")} - PROMETHEUS_SERIES
        assert not foreign, f"{rule['alert']} selects {sorted(foreign)}"


def test_every_alert_rule_has_a_promtool_case():
    """alerts_test.yml (run by tests/integration/test_alert_rules.py) expects each alert to fire somewhere."""
    import yaml

    document = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    firing = {case["alertname"] for test in document["tests"] for case in test["alert_rule_test"]
              if case.get("exp_alerts")}
    assert {rule["alert"] for rule in alert_rules()} == firing


def test_yaml_in_the_docs_parses():
    import yaml

    for path in sorted(DOCS.rglob("*.md")):
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.DOTALL):
            if "# …" not in block:  # excerpts of a larger file are marked with "# …"
                parsed = list(yaml.safe_load_all(block))  # a manifest may hold several resources
                assert parsed and all(doc is not None for doc in parsed), path.name


# The nginx sample is run for real, in front of a real serve: tests/integration/test_docs_nginx.py.


PYTHON_IMPORT = re.compile(r"^\s*from (celery_probe[\w.]*) import ([\w, ]+)$", re.M)
PYTHON_NAME = re.compile(r"`(?:~)?(celery_probe(?:\.\w+)+)(?:\([^`]*\))?`")
# Dotted names in the docs that are not Python names: a Celery task and two JUnit properties.
NOT_PYTHON = {"celery_probe.beat_tick", "celery_probe.target", "celery_probe.status"}


def _resolve(dotted: str) -> object:
    """The module or attribute a dotted name points at, trying the longest module prefix."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


def test_every_python_name_in_the_docs_exists():
    """An operator copies ``from celery_probe.beat import install_beat_tick`` into the app that
    workers import at start-up: a documented name that is gone stops their workers."""
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    missing = []
    seen = 0
    for path in pages:
        text = path.read_text()
        for module, names in PYTHON_IMPORT.findall(text):
            for name in (part.strip() for part in names.split(",")):
                seen += 1
                try:
                    _resolve(f"{module}.{name}")
                except (ImportError, AttributeError):
                    missing.append(f"{path.name}: from {module} import {name}")
        for dotted in PYTHON_NAME.findall(text):
            if dotted in NOT_PYTHON:
                continue
            seen += 1
            try:
                _resolve(dotted)
            except (ImportError, AttributeError):
                missing.append(f"{path.name}: {dotted}")
    assert seen > 10, "the docs name Python objects: the patterns no longer find them"
    assert not missing, "the docs name what the code does not have: " + "; ".join(missing)

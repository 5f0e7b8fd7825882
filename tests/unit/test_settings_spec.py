"""Every setting reaches its field by every way it is offered, all generated from one declaration.

Flags, pytest options, environment variables, pyproject keys, the child process's environment
and the configuration page, for each setting of the spec, with a sample value each.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from celery_probe.cli.main import _cli_overrides, all_commands
from celery_probe.config.settings import (
    REMEDIATION,
    SPEC_BY_NAME,
    SPECS,
    Settings,
    resolve_settings,
)
from celery_probe.pytest_plugin.plugin import _PYTEST_LABELS, settings_from_options
from celery_probe.run.child import (
    ARGV_SETTINGS,
    child_command,
    child_environment,
    setting_variables,
)
from tests.support.environment import ROOT, TESTS

pytest_plugins = ["pytester"]

# A self-signed certificate (it is its own CA) and its key, for the HTTP client's file settings.
SAMPLE_CERT, SAMPLE_KEY = TESTS / "support" / "sample_cert.pem", TESTS / "support" / "sample_key.pem"
# setting name -> (raw value as an operator writes it, the field value it must give)
SAMPLES: dict[str, tuple[str, Any]] = {
    "app": ("proj.celery:app", "proj.celery:app"),
    "broker": ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/3"),
    "backend": ("redis://127.0.0.1:6379/4", "redis://127.0.0.1:6379/4"),
    "queues": ("celery,mail", ("celery", "mail")),
    "expect_workers": ("3", 3),
    "endpoints": ("http://127.0.0.1:8000/health", ("http://127.0.0.1:8000/health",)),
    "deadline": ("7.5", 7.5),
    "queue_threshold": ("50,mail=500", 50),
    "roundtrip_slow": ("2.5", 2.5),
    "roundtrip_task": ("proj.ping", "proj.ping"),
    "roundtrip_max_queues": ("5", 5),
    "ping_window": ("0.5", 0.5),
    "report_dir": ("out/reports", Path("out/reports")),
    "format": ("json", "json"),
    "probes": (str(ROOT / "probes"), (ROOT / "probes",)),
    "backlog_sample": ("10", 10),
    "beat_interval": ("60", 60.0),
    "beat_grace": ("3", 3.0),
    "beat_key": ("proj:beat", "proj:beat"),
    "expect_worker_names": ("sync@*", ("sync@*",)),
    "expect_consumers": ("mail=mail@*", (("mail", "mail@*"),)),
    "on_down": ("true --now", ("true", "--now")),
    "on_down_after": ("90s", 90.0),
    "on_down_every": ("1h", 3600.0),
    "on_down_timeout": ("30s", 30.0),
    "on_down_dry_run": ("true", True),
    "on_down_codes": ("celery_worker_down", ("celery_worker_down",)),
    "flower_url": ("http://127.0.0.1:5555", "http://127.0.0.1:5555"),
    "sla": ("celery=2s", (("celery", 2.0),)),
    "task_sla": ("app.sync.*=2m", (("app.sync.*", 120.0),)),
    "events_window": ("2", 2.0),
    "http_proxies": ("env", "env"),
    "http_ca_file": (str(SAMPLE_CERT), SAMPLE_CERT),
    "http_client_cert": (str(SAMPLE_CERT), SAMPLE_CERT),
    "http_client_key": (str(SAMPLE_KEY), SAMPLE_KEY),
    "http_auth_env": ("PROBE_HEALTH_TOKEN", "PROBE_HEALTH_TOKEN"),
    "timeout": ("1.5", 1.5),
}
# Settings that are only valid beside another: given on the command line with the sample.
NEEDS = {"task_sla": {"events_window": "2"}, "http_client_cert": {"http_client_key": str(SAMPLE_KEY)},
         "http_client_key": {"http_client_cert": str(SAMPLE_CERT)}}
NAMES = [spec.name for spec in SPECS]


def resolved(name: str, **kwargs: Any) -> Any:
    """The field ``name`` of settings resolved from ``kwargs`` only (no real environment or file)."""
    kwargs.setdefault("environ", {})
    kwargs.setdefault("pyproject", False)
    kwargs["cli"] = {**NEEDS.get(name, {}), **kwargs.get("cli", {})}
    return getattr(resolve_settings(**kwargs), name)


def test_every_setting_has_a_sample():
    """A new setting must bring a sample here, and with it every test below."""
    assert set(SAMPLES) == set(NAMES), f"settings without a sample: {sorted(set(NAMES) - set(SAMPLES))}"


@pytest.mark.parametrize("name", NAMES)
def test_the_sample_is_not_the_default(name):
    """Otherwise a way that lost the value would still pass."""
    assert SAMPLES[name][1] != getattr(Settings(), name)


def flag_args(name: str) -> list[str]:
    spec = SPEC_BY_NAME[name]
    args = [spec.flags[-1]] if spec.is_flag else [spec.flags[-1], SAMPLES[name][0]]
    for other, raw in NEEDS.get(name, {}).items():
        args += [SPEC_BY_NAME[other].flags[-1], raw]
    return args


# serve never remediates, so it offers no --on-down flags (the test below says so).
FLAG_CASES = [("run", name) for name in NAMES] + [("serve", name) for name in NAMES if name not in REMEDIATION]


@pytest.mark.parametrize(("command_name", "name"), FLAG_CASES)
def test_the_flag_parses_the_sample_into_the_field(command_name, name):
    ctx = all_commands()[command_name].make_context(command_name, flag_args(name))
    overrides = _cli_overrides(ctx.params)
    assert getattr(resolve_settings(overrides, environ={}, pyproject=False), name) == SAMPLES[name][1]


def offered(command_name: str) -> set[str]:
    return {opt for param in all_commands()[command_name].params for opt in param.opts}


@pytest.mark.parametrize("name", NAMES)
def test_every_flag_of_the_declaration_is_offered(name):
    assert set(SPEC_BY_NAME[name].flags) <= offered("run")


def test_serve_offers_no_remediation_flag():
    assert not {flag for name in REMEDIATION for flag in SPEC_BY_NAME[name].flags} & offered("serve")


@pytest.mark.parametrize("name", [spec.name for spec in SPECS if spec.pytest])
def test_the_pytest_option_parses_the_sample_into_the_field(name, pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the other plugins cost seconds a call
    spec = SPEC_BY_NAME[name]
    owner = ["-p", "pytest_timeout"] if spec.pytest_owner == "pytest-timeout" else []  # its own option
    args = [*owner, "-p", "celery_probe.pytest_plugin.plugin", str(spec.pytest), SAMPLES[name][0]]
    for other, raw in NEEDS.get(name, {}).items():
        args += [str(SPEC_BY_NAME[other].pytest), raw]
    config = pytester.parseconfig(*args)
    overrides = {k: v for k, v in settings_from_options(config.option).items() if v not in (None, ())}
    settings = resolve_settings(overrides, environ={}, pyproject=False, cli_labels=_PYTEST_LABELS)
    assert getattr(settings, name) == SAMPLES[name][1]


def test_the_settings_without_a_pytest_option_are_of_the_cli_alone():
    """Output format, extra probe folders and remediation belong to ``celery-probe run``."""
    assert {spec.name for spec in SPECS if not spec.pytest} == {"format", "probes", *REMEDIATION}


@pytest.mark.parametrize("name", NAMES)
def test_the_environment_variable_reaches_the_field(name):
    spec = SPEC_BY_NAME[name]
    assert spec.variable == f"CELERY_PROBE_{spec.env}"
    assert resolved(name, environ={spec.variable: SAMPLES[name][0]}) == SAMPLES[name][1]


@pytest.mark.parametrize("name", NAMES)
def test_the_pyproject_key_reaches_the_field(name, tmp_path):
    spec = SPEC_BY_NAME[name]
    for key in {spec.key, spec.name, *spec.aliases}:
        path = tmp_path / "pyproject.toml"
        path.write_text(f"[tool.celery-probe]\n{key} = {json.dumps(SAMPLES[name][0])}\n")
        assert resolved(name, pyproject=path) == SAMPLES[name][1], f"pyproject key {key!r}"


@pytest.mark.parametrize("name", NAMES)
def test_the_flag_outranks_the_environment_and_pyproject(name, tmp_path):
    spec = SPEC_BY_NAME[name]
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[tool.celery-probe]\n{spec.key} = {json.dumps(SAMPLES[name][0])}\n")
    assert resolved(name, pyproject=path, environ={spec.variable: SAMPLES[name][0]},
                    cli={name: SAMPLES[name][0]}) == SAMPLES[name][1]
    settings = resolve_settings({**NEEDS.get(name, {}), name: SAMPLES[name][0]},
                                environ={spec.variable: SAMPLES[name][0]}, pyproject=path)
    assert settings.sources[name] == spec.flag


@pytest.mark.parametrize("name", NAMES)
def test_the_child_process_receives_the_setting_unchanged(name):
    """serve's loop (the whole Settings) and get_celery_health (a few values) share one encoding."""
    settings = resolve_settings({**NEEDS.get(name, {}), name: SAMPLES[name][0]}, environ={}, pyproject=False)
    command = child_command(sys.executable, Path("reports"))
    if name in ARGV_SETTINGS:
        assert SPEC_BY_NAME[name].flags[-1] in command  # given on the child's command line instead
        return
    if name in REMEDIATION:
        assert "--no-on-down" in command  # never passed: only `celery-probe run` remediates
        assert SPEC_BY_NAME[name].variable not in child_environment(settings, {})
        return
    again = resolve_settings(environ=child_environment(settings, {}), pyproject=False)
    assert getattr(again, name) == getattr(settings, name) == SAMPLES[name][1]
    if name == "queue_threshold":
        assert again.queue_thresholds == settings.queue_thresholds == {"mail": 500}
    variables = setting_variables({**NEEDS.get(name, {}), name: SAMPLES[name][1]})
    assert getattr(resolve_settings(environ=variables, pyproject=False), name) == SAMPLES[name][1]


@pytest.mark.parametrize("name", NAMES)
def test_the_configuration_page_lists_the_setting(name):
    spec = SPEC_BY_NAME[name]
    text = (ROOT / "docs" / "configuration.md").read_text()
    row = next((line for line in text.splitlines() if f"| `{spec.variable}` |" in line), None)
    assert row is not None, f"{spec.variable} is not in docs/configuration.md: run docs/capture_examples.py --only cli"
    assert all(f"`{flag}`" in row for flag in spec.flags) and f"`{spec.key}`" in row
    assert spec.help_text.replace("|", "\\|") in row, "stale help: run docs/capture_examples.py --only cli"
    if spec.pytest:
        assert f"| `{spec.pytest}` | `{spec.flags[-1]}` |" in text


@pytest.mark.parametrize("name", NAMES)
def test_no_help_text_writes_its_default_by_hand(name):
    """A default in a help text comes from the value (``{default}``), so the two cannot drift."""
    spec = SPEC_BY_NAME[name]
    assert not re.search(r"default:? \d", spec.help), spec.help
    assert "{" not in spec.help_text
    assert "%" not in spec.help, "argparse (pytest --help) would read it as a format"
    if "{default}" in spec.help:
        assert spec.show(spec.default) in spec.help_text


def test_serve_s_default_warm_sessions_is_the_resident_runner_s():
    """The command line repeats the default so that --help need not import the resident runner."""
    from celery_probe.cli.serve import DEFAULT_WARM_SESSIONS
    from celery_probe.run.resident import MAX_WARM

    assert DEFAULT_WARM_SESSIONS == MAX_WARM


def test_serve_s_runs_per_cpu_is_the_runner_s():
    """--help says the default of --runs-at-once without importing the runner."""
    from celery_probe.cli.serve import RUNS_PER_CPU
    from celery_probe.run import runner

    assert RUNS_PER_CPU == runner.RUNS_PER_CPU

"""The shipped deployment files (cron line, systemd service and timer) use valid options."""

from __future__ import annotations

import shlex

import pytest

from celery_probe.alerting.options import config_from_params
from celery_probe.cli.check import check
from tests.support.environment import ROOT

DEPLOY = ROOT / "docs" / "deploy"
ENV = {"CELERY_PROBE_SMTP_PASSWORD": "example-password"}


def exec_start(unit: str) -> list[str]:
    """The ExecStart command of a unit file, with its backslash continuations joined."""
    text = (DEPLOY / unit).read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def cron_command() -> list[str]:
    line = next(line for line in (DEPLOY / "celery-probe-alert.cron").read_text().splitlines()
                if line.startswith("* * * * * "))
    command = line.removeprefix("* * * * * ").split(" >> ")[0].replace("$HOME", "/home/probe")
    return shlex.split(command)


@pytest.mark.parametrize("argv", [exec_start("celery-probe-alert.service"), cron_command()],
                         ids=["systemd", "cron"])
def test_shipped_command_lines_validate(argv, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    assert argv[0].endswith("/celery-probe") and argv[1] == "check"
    context = check.make_context("check", argv[2:])
    config = config_from_params(dict(context.params))
    assert config is not None and config.state_file is not None
    assert [c.display for c in config.channels][0] == "oncall@example.com"
    assert config.policy.min_failures == 2


def test_service_is_oneshot_and_health_codes_do_not_fail_it():
    timer = (DEPLOY / "celery-probe-alert.timer").read_text()
    assert "OnUnitActiveSec=1min" in timer and "WantedBy=timers.target" in timer
    service = (DEPLOY / "celery-probe-alert.service").read_text()
    assert "Type=oneshot" in service and "SuccessExitStatus=1 2 3 4" in service

"""``celery-probe doctor``: review an app, its workers and its broker for production pitfalls.

Exit codes: 0 nothing above info, 1 warnings, 2 a critical finding, 4 incomplete (the broker did
not answer, no worker answered, or the app's configuration failed to load), 64 usage error,
130 interrupted.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

import click

from celery_probe.cli.options import setting_option
from celery_probe.config.settings import (
    SPEC_BY_NAME,
    SPECS,
    as_cli_overrides,
    require_target,
    resolve_settings,
)
from celery_probe.errors import ProbeUsageError

DEFAULT_DEADLINE = 10.0
# The settings a review reads: its target, and the SLAs whose measurement it checks.
READ = ("app", "broker", "backend", "sla", "task_sla", "events_window")


def parse_deadline(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_DEADLINE
    try:
        value = float(raw)
    except ValueError:
        raise ProbeUsageError(f"invalid --deadline {raw!r}: is not a number") from None
    if not math.isfinite(value) or not 0.5 <= value <= 600:
        raise ProbeUsageError(f"invalid --deadline {raw!r}: must be between 0.5 and 600 seconds")
    return value


@click.command("doctor")
@setting_option(SPEC_BY_NAME["app"])
@setting_option(SPEC_BY_NAME["broker"])
@setting_option(SPEC_BY_NAME["backend"])
@click.option("--deadline", "deadline_", metavar="SECONDS",
              help=f"The whole review answers within this (default {DEFAULT_DEADLINE:g}).")
@click.option("--format", "format_", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for a person, json for a pipeline (docs/doctor.md).")
def doctor(deadline_: str | None, format_: str, **raw: Any) -> int:
    """Review an app, its workers and its broker for the pitfalls of production.

    Each finding has a stable code, a severity, what was seen, why it hurts, the setting
    that fixes it and a link to its documentation; a check that could not be made says
    "not checked" and why. Task SLAs (task-sla, sla) are read from CELERY_PROBE_* and
    pyproject.toml, as the probes read them.

    Exit codes: 0 nothing above info, 1 warnings, 2 a critical finding, 4 incomplete
    (the broker did not answer, no worker answered, or the app's configuration failed to
    load; a critical finding still exits 2), 64 usage error. See docs/doctor.md.
    """
    from celery_probe.doctor.render import exit_code, render_json, render_text
    from celery_probe.doctor.review import run_review
    from celery_probe.present.text import use_colour
    from celery_probe.probing.deadline import Deadline

    started = Deadline(parse_deadline(deadline_))
    overrides = as_cli_overrides(**{spec.name: raw.get(spec.param) for spec in SPECS if spec.name in READ})
    settings = resolve_settings(overrides, ignore=[spec.name for spec in SPECS if spec.name not in READ])
    require_target(settings)
    review = run_review(settings, started)
    if format_ == "json":
        click.echo(render_json(review))
    else:
        colour = use_colour(os.environ, sys.stdout.isatty())
        click.echo(render_text(review, colour=colour), color=colour)
    return exit_code(review)

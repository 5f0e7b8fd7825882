"""The ``--on-down*`` flags of ``celery-probe run``.

They feed the settings of the same names (so ``CELERY_PROBE_ON_DOWN*`` and ``on-down*``
in ``pyproject.toml`` work too, with the usual precedence); ``--no-on-down`` switches
remediation off for one run whatever the environment or ``pyproject.toml`` say. This module
imports only click, so ``celery-probe --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from celery_probe.errors import ProbeUsageError


def _not_empty(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """``--on-down ""`` is a mistake, not "unset": say so instead of falling back to pyproject."""
    if value is not None and not str(value).strip():
        raise ProbeUsageError(f"invalid on-down {value!r}: is empty (from --on-down)")
    return value


def remediation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The ``run`` options of auto-remediation, as one decorator."""
    options = [
        click.option("--on-down", "on_down", metavar="'CMD ARGS'", callback=_not_empty,
                     help="Run this command (split like a shell would, run without one) once down has lasted --on-down-after."),
        click.option("--on-down-after", metavar="DURATION", help="How long down must last before --on-down runs (default 5m; 90s, 1.5h, 250ms)."),
        click.option("--on-down-every", metavar="DURATION", help="Run --on-down at most once per this (default 30m)."),
        click.option("--on-down-timeout", metavar="DURATION", help="Kill the command's process group after this (default 60s)."),
        click.option("--on-down-dry-run", "on_down_dry_run", is_flag=True, default=None,
                     help="Say and record what --on-down would run, run nothing."),
        click.option("--on-down-codes", "on_down_codes", multiple=True, metavar="CODE,...",
                     help="Run only when the verdict has one of these reason codes (default: any down verdict without celery_broker_unreachable)."),
        click.option("--no-on-down", "no_on_down", is_flag=True, help="No remediation this run, whatever the environment or pyproject.toml say."),
    ]
    for option in reversed(options):
        func = option(func)
    return func

"""Printing a verdict in the format asked for, and the exit code that goes with it.

``text`` is coloured only where colour is wanted (a terminal, or ``FORCE_COLOR``; never
with ``NO_COLOR``); ``json`` is the verdict itself; ``nagios`` is one status line and the
Nagios plugin exit codes. Used by ``celery-probe run`` (also for the watchdog's last word)
and ``celery-probe verdict``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from celery_probe.errors import exit_code


def emit(verdict: dict[str, Any], fmt: str, *, write: Callable[[str], None] | None = None) -> int:
    """Print ``verdict`` in ``fmt`` (through ``write`` when given) and return the exit code for it."""
    from celery_probe.present.text import nagios_exit_code, render_json, render_nagios, render_text, use_colour

    out = write or click.echo
    status = str(verdict.get("status", "unknown"))
    if fmt == "json":
        out(render_json(verdict))
    elif fmt == "nagios":
        out(render_nagios(verdict))
        return nagios_exit_code(status)
    else:
        colour = use_colour(os.environ, sys.stdout.isatty())
        text = render_text(verdict, colour=colour)
        # click strips ANSI codes off non-terminals unless told otherwise (FORCE_COLOR).
        out(text) if write else click.echo(text, color=colour)
    return exit_code(status)

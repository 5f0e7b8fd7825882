"""``celery-probe check URL``: read a health endpoint's verdict, print one line, alert.

For the machine that must know whether Celery is healthy but cannot (or should not) reach
the broker itself: the application already serves a verdict (``get_celery_health()``, or a
``celery-probe run`` behind an HTTP endpoint), and cron runs ``check`` against it.

What counts as an answer:

* HTTP 2xx with a JSON object whose ``status`` is ``healthy``, ``degraded``, ``down`` or
  ``unknown``: the full verdict, or just the six keys of the original health dict;
* HTTP 503 with such a body whose status is not ``healthy`` (many frameworks answer an
  unhealthy check with 503): that verdict;
* anything else (no connection, a timeout, another status code, a redirect, a body that is
  not such JSON or is over :data:`MAX_BODY` bytes) is an error: exit 1, and for alerting
  the status is ``unknown`` (nobody can tell whether tasks are processed).

Exit codes: 0 healthy, 1 HTTP/connection/parse error, 2 down, 3 degraded, 4 unknown,
64 usage error. Alert delivery problems never change them (one warning line instead).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from celery_probe.alerting.options import alert_options, send_alerts
from celery_probe.cli.options import ALERTS, SectionedCommand, in_section, setting_options
from celery_probe.config.settings import HTTP
from celery_probe.errors import ProbeUsageError, exit_code
from celery_probe.config.urls import redact_bad_url, redact_url, url_problem
from celery_probe.verdict.mapper import STATUSES

if TYPE_CHECKING:
    from celery_probe.net.http import HttpOptions

EXIT_ERROR = 1
MAX_BODY = 1_000_000
DEFAULT_TIMEOUT = 10.0


class CheckError(Exception):
    """The endpoint gave no usable verdict; ``str()`` is one line."""


def parse_timeout(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ProbeUsageError(f"invalid --timeout {raw!r}: is not a number") from None
    if not math.isfinite(value) or not 0.1 <= value <= 300:
        raise ProbeUsageError(f"invalid --timeout {raw!r}: must be between 0.1 and 300 seconds")
    return value


def check_url(url: str) -> str:
    problem = url_problem(url, ("http", "https"))
    if problem is None and not all(ch.isprintable() for ch in url):
        problem = "contains a control character"
    if problem is None:
        from urllib.parse import urlsplit

        if not urlsplit(url).hostname:
            problem = "has no host"
    if problem:
        raise ProbeUsageError(f"invalid URL {redact_bad_url(url)!r}: {problem}")
    return url


def parse_verdict(status_code: int, body: bytes) -> dict[str, Any]:
    """The verdict in an answer, or CheckError saying why there is none."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting too deep counts as not JSON
        document = None
    status = document.get("status") if isinstance(document, dict) else None
    if 200 <= status_code < 300:
        if document is None:
            raise CheckError(f"HTTP {status_code} but the answer is not JSON")
        if not isinstance(document, dict):
            raise CheckError(f"HTTP {status_code} but the answer is not a JSON object")
        if status not in STATUSES:
            shown = "missing" if status is None else repr(status)[:40]
            raise CheckError(f"HTTP {status_code} but status is {shown} (expected one of {', '.join(STATUSES)})")
        return document
    if status_code == 503 and isinstance(document, dict) and status in ("down", "degraded", "unknown"):
        return document
    raise CheckError(f"HTTP {status_code}")


def fetch_verdict(url: str, timeout: float, http: HttpOptions) -> dict[str, Any]:
    from celery_probe.net.http import BoundedCallError, request

    try:
        answer = request("GET", url, timeout=timeout, max_body=MAX_BODY, options=http, send_auth=True,
                         headers={"Accept": "application/json"})
    except BoundedCallError as exc:
        raise CheckError(str(exc)) from None
    return parse_verdict(answer.status, answer.body)


def _one_line(value: Any, limit: int = 160) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_line(verdict: Mapping[str, Any]) -> str:
    """``worker alive, queue 3, 1 active; code: message (+2 more)``, from untrusted data."""
    facts = []
    alive = verdict.get("worker_alive")
    if isinstance(alive, bool):
        facts.append("worker alive" if alive else "worker not alive")
    for key, label in (("queue_length", "queue"), ("active_tasks", "active")):
        value = verdict.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            facts.append(f"{label} {value:g}")
    text = ", ".join(facts)
    reasons = [r for r in verdict.get("reasons") or [] if isinstance(r, (Mapping, str))]
    problems = [r for r in reasons if isinstance(r, str) or r.get("severity") != "info"]
    if problems:
        first = problems[0]
        said = _one_line(first) if isinstance(first, str) else _one_line(f"{first.get('code')}: {first.get('message')}")
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        text = f"{text}; {said}{more}" if text else f"{said}{more}"
    return text


@click.command("check", cls=SectionedCommand)
@click.argument("url")
@click.option("--timeout", "timeout_", metavar="SECONDS", help="Bound on the whole request (default 10).")
@setting_options(HTTP)
@in_section(ALERTS, alert_options)
def check(url: str, timeout_: str | None, alerting: Any, **http_raw: Any) -> int:
    """GET URL, a health endpoint serving a verdict, print one line and exit with its status.

    Exit codes: 0 healthy, 1 HTTP/connection/parse error, 2 down, 3 degraded, 4 unknown.
    With --email or --webhook, alert on a change of state (see --state-file).
    """
    from celery_probe.config.settings import as_cli_overrides, resolve_http_client
    from celery_probe.config.urls import scrub
    from celery_probe.net.http import HttpOptions
    from celery_probe.present.text import STATUS_COLOURS, use_colour
    from celery_probe.verdict.mapper import unknown_verdict

    timeout = parse_timeout(timeout_)
    check_url(url)
    http = HttpOptions.from_settings(resolve_http_client(as_cli_overrides(**http_raw)))
    shown = redact_url(url)
    # An endpoint that echoes the request could send the auth header back in its reasons.
    secrets = (alerting.secrets if alerting is not None else frozenset()) | http.secrets()
    colour = use_colour(os.environ, sys.stdout.isatty())

    def paint(word: str, fg: str) -> str:
        return click.style(word, fg=fg, bold=True) if colour else word

    try:
        verdict = fetch_verdict(url, timeout, http)
    except CheckError as exc:
        reason = str(scrub(str(exc), secrets))
        click.echo(f"celery-probe: {paint('ERROR', 'red')} {shown}: {reason}", color=colour)
        failed = unknown_verdict(f"health endpoint {shown} gave no verdict: {reason}",
                                 code="celery_probe_check_failed")
        send_alerts(failed, alerting, source=shown)
        return EXIT_ERROR
    status = str(verdict["status"])
    detail = str(scrub(summary_line(verdict), secrets))
    head = f"celery-probe: {paint(status.upper(), STATUS_COLOURS.get(status, 'magenta'))} {shown}"
    click.echo(f"{head}: {detail}" if detail else head, color=colour)
    send_alerts(verdict, alerting, source=shown)
    return exit_code(status)

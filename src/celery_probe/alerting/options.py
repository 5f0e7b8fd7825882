"""The alert options, shared by ``celery-probe check`` and ``celery-probe run``.

:func:`alert_options` adds the options and validates them *before* the command body runs
(a typo in ``--email`` exits 64 at once instead of after the probes), then hands the
command one keyword argument, ``alerting``: an :class:`AlertConfig`, or None when no
alerting was asked for. :func:`send_alerts` is the call a command makes with its verdict.

This module imports only click at import time, so ``celery-probe --help`` stays fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from celery_probe.alerting.config import AlertConfig
    from celery_probe.alerting.dispatch import Outcome

# (flag, keyword of build_alert_config, click keyword arguments)
_OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--email", "emails", {"multiple": True, "metavar": "ADDR", "help": "Send alert mail to ADDR (repeatable)."}),
    ("--smtp", "smtp", {"metavar": "HOST[:PORT]", "help": "SMTP server for --email (port 25; 587 with --smtp-starttls, 465 with --smtp-ssl)."}),
    ("--smtp-starttls", "smtp_starttls", {"is_flag": True, "default": None, "help": "Upgrade the SMTP connection with STARTTLS."}),
    ("--smtp-ssl", "smtp_ssl", {"is_flag": True, "default": None, "help": "Connect to SMTP over TLS from the start (SMTPS)."}),
    ("--smtp-user", "smtp_user", {"metavar": "USER", "help": "SMTP login; the password comes from CELERY_PROBE_SMTP_PASSWORD."}),
    ("--mail-from", "mail_from", {"metavar": "ADDR", "help": "Sender address (default celery-probe@FQDN, this host's full name)."}),
    ("--sendmail", "sendmail", {"metavar": "PATH", "help": "Hand mail to this sendmail program instead of SMTP."}),
    ("--mail-template", "mail_template", {"metavar": "PATH", "help": "string.Template file for problem mails (placeholders: docs/alerting.md)."}),
    ("--recovery-template", "recovery_template", {"metavar": "PATH", "help": "string.Template file for recovery mails."}),
    ("--service-name", "service_name", {"metavar": "UNIT", "help": "The worker's systemd unit, named in the mail's steps (default celery)."}),
    ("--broker-service", "broker_service", {"metavar": "UNIT", "help": "The broker's systemd unit, named in the mail's steps (default redis)."}),
    ("--label", "label", {"metavar": "TEXT", "help": "Name of this deployment, added to subjects and payloads."}),
    ("--alert-impact", "impact", {"metavar": "TEXT", "envvar": "CELERY_PROBE_ALERT_IMPACT",
                                  "help": "What Celery does for your product, in a few words (e.g. 'invoices and "
                                          "order e-mails'); alerts say how the problem affects it. "
                                          "Or CELERY_PROBE_ALERT_IMPACT."}),
    ("--webhook", "webhooks", {"multiple": True, "metavar": "[FORMAT=]URL", "envvar": "CELERY_PROBE_WEBHOOKS",
                               "help": "POST alerts as JSON to URL (repeatable); FORMAT generic, slack or telegram. "
                                       "Or CELERY_PROBE_WEBHOOKS (space-separated), which keeps tokens out of ps."}),
    ("--webhook-format", "webhook_format", {"metavar": "generic|slack|telegram", "help": "Form of --webhook URLs given without FORMAT= (default generic)."}),
    ("--telegram-chat-id", "telegram_chat_id", {"metavar": "ID", "help": "Chat for telegram webhooks."}),
    ("--state-file", "state_file", {"metavar": "PATH", "help": "Remember the last status: alert on changes only, retry failed alerts."}),
    ("--repeat-every", "repeat_every", {"metavar": "SECONDS", "help": "Remind while still not healthy (default 3600; 0: never). Needs --state-file."}),
    ("--min-failures", "min_failures", {"metavar": "N", "help": "Alert after N non-healthy runs in a row (default 1). Needs --state-file."}),
    ("--alert-timeout", "alert_timeout", {"metavar": "SECONDS", "help": "Bound on each mail or webhook delivery (default 10)."}),
    ("--lock-timeout", "lock_timeout", {"metavar": "SECONDS", "help": "Wait at most this for an overlapping run's lock (default 5)."}),
)


# Wording that may sit in the environment of every run, with or without alerting.
_WORDING_ONLY = frozenset({"impact"})


def alert_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the alert options to a click command; it receives ``alerting=AlertConfig|None``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["alerting"] = config_from_params(kwargs)
        return func(*args, **kwargs)

    for flag, name, extra in reversed(_OPTIONS):
        wrapper = click.option(flag, f"alert_{name}", **extra)(wrapper)
    return wrapper


def config_from_params(params: dict[str, Any]) -> AlertConfig | None:
    """Take the alert options out of click's ``params`` and validate them (ProbeUsageError).

    Webhooks follow the outgoing-HTTP settings: the command's ``--http-*`` flags, still in
    ``params`` (they are the command's too), then the environment and ``pyproject.toml``.
    """
    values = {name: params.pop(f"alert_{name}", None) for _flag, name, _kw in _OPTIONS}
    if not any(value not in (None, False, ()) for name, value in values.items() if name not in _WORDING_ONLY):
        return None  # no alerting asked for: skip importing the mail and webhook machinery
    from celery_probe.alerting.config import build_alert_config
    from celery_probe.config.settings import HTTP_CLIENT, as_cli_overrides, resolve_http_client
    from celery_probe.net.http import HttpOptions

    values["emails"] = tuple(values["emails"] or ())
    values["webhooks"] = tuple(values["webhooks"] or ())
    if values["webhooks"]:
        flags = as_cli_overrides(**{name: params.get(name) for name in HTTP_CLIENT})
        values["http"] = HttpOptions.from_settings(resolve_http_client(flags))
    return build_alert_config(**values)


def send_alerts(verdict: Mapping[str, Any], alerting: AlertConfig | None, *, source: str | None = None) -> Outcome | None:
    """Alert about ``verdict`` (a no-op without alert options); never raises."""
    if alerting is None:
        return None
    from celery_probe.alerting.dispatch import send_alerts as dispatch

    return dispatch(verdict, alerting, source=source)

"""Alert settings, validated once when the command starts.

Every operator mistake (a bad address, a webhook that is not http(s), a template with an
unknown placeholder, a password that would travel unencrypted) raises
:class:`~celery_probe.errors.ProbeUsageError` with one line naming the value and the option,
before any probe runs: a typo must not wait for the next outage to show up.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery_probe.alerting.channel import Channel, Wording
from celery_probe.alerting.host import mail_hostname
from celery_probe.alerting.mail import EmailChannel, MailTransport, address_problem
from celery_probe.alerting.state import Policy
from celery_probe.alerting.template import MailTemplates, load_template
from celery_probe.alerting.webhook import (
    FORMATS,
    Webhook,
    WebhookChannel,
    error_display,
    split_spec,
    url_problem,
    url_secrets,
)
from celery_probe.errors import ProbeUsageError
from celery_probe.config.urls import redact_url
from celery_probe.net.http import DIRECT, HttpOptions

PASSWORD_ENV = "CELERY_PROBE_SMTP_PASSWORD"
DEFAULT_REPEAT_EVERY = 3600.0
DEFAULT_ALERT_TIMEOUT = 10.0
DEFAULT_LOCK_TIMEOUT = 5.0
_UNIT = re.compile(r"^[A-Za-z0-9:_.@\\-]{1,255}$")  # systemd unit name characters
_CHAT_ID = re.compile(r"^(-?\d{1,20}|@[A-Za-z0-9_]{4,64})$")
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class AlertConfig:
    """Where alerts go and when; built by :func:`build_alert_config`."""

    channels: tuple[Channel, ...]
    state_file: Path | None = None
    policy: Policy = field(default_factory=Policy)
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    secrets: frozenset[str] = field(default=frozenset(), repr=False)


def _fail(option: str, value: Any, why: str) -> ProbeUsageError:
    shown = redact_url(value) if isinstance(value, str) else value
    return ProbeUsageError(f"invalid {option} {shown!r}: {why}")


def _seconds(option: str, raw: Any, default: float, lo: float, hi: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _fail(option, raw, "is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _fail(option, raw, f"must be between {lo:g} and {hi:g} seconds")
    return value


def _whole(option: str, raw: Any, default: int, lo: int, hi: int) -> int:
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise _fail(option, raw, "is not a whole number") from None
    if not lo <= value <= hi:
        raise _fail(option, raw, f"must be between {lo} and {hi}")
    return value


def parse_host_port(raw: str, option: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port``."""
    value = raw.strip()
    if value.startswith("["):
        match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d*))?", value)
        if not match:
            raise _fail(option, raw, "is not HOST[:PORT]")
        host, port_text = match[1], match[2] or ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _fail(option, raw, "is not HOST[:PORT]") from None
    else:
        host, _, port_text = value.partition(":")
        if ":" in port_text or not _HOST.match(host):
            raise _fail(option, raw, "is not HOST[:PORT] (write an IPv6 address as [addr]:port)")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _fail(option, raw, "has a port that is not 1-65535")
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unit(option: str, raw: str | None, default: str) -> str:
    if raw is None:
        return default
    if not _UNIT.match(raw):
        raise _fail(option, raw, "is not a systemd unit name (letters, digits, : _ . @ -)")
    return raw


def _label(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = raw.strip()
    if not value or len(value) > 80 or not all(ch.isprintable() for ch in value):
        raise _fail("--label", raw, "must be 1-80 printable characters")
    return value


def _impact(raw: str | None) -> str | None:
    """``--alert-impact``: one line of the operator's own words, shown in every problem alert."""
    if raw is None:
        return None
    value = raw.strip()
    if not value:
        return None
    if len(value) > 300 or not all(ch.isprintable() for ch in value):
        raise _fail("--alert-impact", raw, "must be one line of at most 300 printable characters")
    return value


def _default_from() -> str:
    """``celery-probe@`` this host's FQDN (its short name when it has none)."""
    candidate = f"celery-probe@{mail_hostname()}"
    return candidate if address_problem(candidate) is None else "celery-probe@localhost"


def build_alert_config(
    *,
    emails: Sequence[str] = (),
    smtp: str | None = None,
    smtp_starttls: bool = False,
    smtp_ssl: bool = False,
    smtp_user: str | None = None,
    mail_from: str | None = None,
    sendmail: str | None = None,
    mail_template: str | None = None,
    recovery_template: str | None = None,
    service_name: str | None = None,
    broker_service: str | None = None,
    label: str | None = None,
    impact: str | None = None,
    webhooks: Sequence[str] = (),
    webhook_format: str | None = None,
    telegram_chat_id: str | None = None,
    state_file: str | None = None,
    repeat_every: str | None = None,
    min_failures: str | None = None,
    alert_timeout: str | None = None,
    lock_timeout: str | None = None,
    http: HttpOptions = DIRECT,
    environ: Mapping[str, str] | None = None,
) -> AlertConfig | None:
    """Validate the alert options; None when no alerting was asked for."""
    environ = os.environ if environ is None else environ
    mail_given = any(v not in (None, False) for v in (smtp, smtp_starttls, smtp_ssl, smtp_user, mail_from, sendmail,
                                                      mail_template, recovery_template))
    others_given = any(v is not None for v in (service_name, broker_service, label, webhook_format, telegram_chat_id,
                                                state_file, repeat_every, min_failures, alert_timeout, lock_timeout))
    if not emails and not webhooks:
        if mail_given or others_given:
            raise ProbeUsageError("alert options given without a destination: add --email ADDR or --webhook URL")
        return None

    timeout = _seconds("--alert-timeout", alert_timeout, DEFAULT_ALERT_TIMEOUT, 0.1, 300)
    wording = Wording(
        templates=MailTemplates(
            problem=load_template(Path(mail_template), "--mail-template") if mail_template else MailTemplates().problem,
            recovery=(load_template(Path(recovery_template), "--recovery-template") if recovery_template
                      else MailTemplates().recovery),
        ),
        label=_label(label),
        service=_unit("--service-name", service_name, "celery"),
        broker_service=_unit("--broker-service", broker_service, "redis"),
        hostname=socket.gethostname() or "localhost",
        impact=_impact(impact),
    )
    secrets: set[str] = set()
    recipients = list(dict.fromkeys(e.strip() for e in emails))
    for address in recipients:
        problem = address_problem(address)
        if problem:
            raise _fail("--email", address, problem)
    transport: MailTransport | None = None
    if recipients:
        transport = _transport(smtp=smtp, starttls=smtp_starttls, implicit_tls=smtp_ssl, user=smtp_user,
                               mail_from=mail_from, sendmail=sendmail, timeout=timeout, environ=environ)
        if transport.password:
            secrets.add(transport.password)
    elif mail_given:
        raise ProbeUsageError("mail options (--smtp, --sendmail, --mail-from, --mail-template…) need --email ADDR")

    default_format = (webhook_format or "generic").strip().lower()
    if default_format not in FORMATS:
        raise _fail("--webhook-format", webhook_format, f"must be one of {', '.join(FORMATS)}")
    hooks: list[Webhook] = []
    for spec in dict.fromkeys(webhooks):
        try:
            fmt, url = split_spec(spec, default_format)
        except ValueError as exc:
            raise _fail("--webhook", error_display(spec.partition("=")[2]), str(exc)) from None
        problem = url_problem(url)
        if problem:
            raise _fail("--webhook", error_display(url), problem)
        hooks.append(Webhook(url, fmt, telegram_chat_id.strip() if fmt == "telegram" and telegram_chat_id else None))
        secrets.update(url_secrets(url))
    if any(h.format == "telegram" for h in hooks):
        if not telegram_chat_id or not _CHAT_ID.match(telegram_chat_id.strip()):
            raise _fail("--telegram-chat-id", telegram_chat_id or "",
                        "a telegram webhook needs a numeric chat id or @channel name")
    elif telegram_chat_id is not None:
        raise ProbeUsageError("--telegram-chat-id given but no webhook is in telegram form "
                              "(write --webhook telegram=URL or --webhook-format telegram)")
    frozen = frozenset(secrets)
    channels: list[Channel] = []
    if transport is not None:
        channels.extend(EmailChannel(address, transport, wording, frozen) for address in recipients)
    channels.extend(WebhookChannel(h, wording, timeout, frozen, http) for h in hooks)

    policy = Policy(
        repeat_every=_seconds("--repeat-every", repeat_every, DEFAULT_REPEAT_EVERY, 0, 366 * 86400),
        min_failures=_whole("--min-failures", min_failures, 1, 1, 1000),
    )
    path = Path(state_file).expanduser() if state_file else None
    if path is None:
        if policy.min_failures > 1 or repeat_every is not None:
            raise ProbeUsageError("--min-failures and --repeat-every need --state-file PATH "
                                  "(without it every non-healthy run alerts)")
    else:
        _check_state_path(path)
    return AlertConfig(
        channels=tuple(channels), state_file=path, policy=policy,
        lock_timeout=_seconds("--lock-timeout", lock_timeout, DEFAULT_LOCK_TIMEOUT, 0, 3600),
        secrets=frozen,
    )


def _check_state_path(path: Path) -> None:
    """Fail at start-up, not at the first outage, when the state cannot be kept."""
    if path.is_dir():
        raise _fail("--state-file", str(path), "is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail("--state-file", str(path), f"its folder cannot be created ({exc.strerror or exc})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise _fail("--state-file", str(path), "its folder is not writable (the state and its lock live there)")


def _transport(*, smtp: str | None, starttls: bool, implicit_tls: bool, user: str | None, mail_from: str | None,
               sendmail: str | None, timeout: float, environ: Mapping[str, str]) -> MailTransport:
    sender = (mail_from or _default_from()).strip()
    problem = address_problem(sender)
    if problem:
        raise _fail("--mail-from", sender, problem)
    if smtp and sendmail:
        raise ProbeUsageError("give either --smtp HOST:PORT or --sendmail PATH, not both")
    if sendmail:
        if starttls or implicit_tls or user:
            raise ProbeUsageError("--smtp-starttls, --smtp-ssl and --smtp-user apply to --smtp, not to --sendmail")
        program = Path(sendmail).expanduser()
        if not program.is_file() or not os.access(program, os.X_OK):
            raise _fail("--sendmail", str(program), "is not an executable file")
        return MailTransport(mail_from=sender, sendmail=program, timeout=timeout)
    if not smtp:
        raise ProbeUsageError("--email needs a way to send: --smtp HOST[:PORT] or --sendmail PATH")
    if starttls and implicit_tls:
        raise ProbeUsageError("give either --smtp-starttls (port 587) or --smtp-ssl (port 465), not both")
    host, port = parse_host_port(smtp, "--smtp", 465 if implicit_tls else 587 if starttls else 25)
    password: str | None = None
    if user is not None:
        if not user.strip() or any(not ch.isprintable() for ch in user):
            raise _fail("--smtp-user", user, "must be printable and not empty")
        password = environ.get(PASSWORD_ENV)
        if not password:
            raise ProbeUsageError(f"--smtp-user needs the password in the environment variable {PASSWORD_ENV}")
        if not (starttls or implicit_tls) and not _is_loopback(host):
            raise ProbeUsageError(f"--smtp-user would send the password unencrypted to {host}: "
                                  "add --smtp-starttls or --smtp-ssl")
    return MailTransport(mail_from=sender, smtp_host=host, smtp_port=port, starttls=starttls,
                         implicit_tls=implicit_tls, user=user, password=password, timeout=timeout)

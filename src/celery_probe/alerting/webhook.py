"""Alert webhooks: a JSON POST in one of three forms, chosen per webhook.

* ``generic``: the full alert as JSON (:func:`generic_payload`), for your own receiver;
* ``slack``: ``{"text": ...}``, what Slack incoming webhooks (and Mattermost, Rocket.Chat)
  accept; ``&``, ``<`` and ``>`` are escaped as Slack asks, so a reason cannot forge a link
  or a mention;
* ``telegram``: ``{"chat_id": ..., "text": ...}`` for the Bot API's ``sendMessage``, as
  plain text (no ``parse_mode``), at most 4096 characters.

A webhook is written ``[FORMAT=]URL``; without a prefix ``--webhook-format`` applies
(default ``generic``).

Webhook URLs are secrets: Slack and Telegram put the token in the path. So a webhook is
never printed as its URL: messages and the state file show ``scheme://host/…`` and a short
hash of the full URL (``https://hooks.slack.com/… (slack #3f2a91)``). User and password in
the URL are sent as HTTP Basic authentication; the ``http-auth-env`` header never is (a
receiver is a third party). Proxies, trust and client certificate follow the HTTP settings.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from celery_probe.alerting.channel import DeliveryError, Wording
from celery_probe.alerting.state import Notification
from celery_probe.alerting.template import advice, short_text
from celery_probe.config.urls import http_url_problem, scrub
from celery_probe.net.http import DIRECT, BoundedCallError, HttpOptions, request

FORMATS = ("generic", "slack", "telegram")
MAX_ANSWER = 64 * 1024
TELEGRAM_LIMIT = 4096


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook (http or https, a host, a numeric port), or None."""
    return http_url_problem(url)


def safe_display(url: str) -> str:
    """``scheme://host[:port]/…``: enough to recognise, never a token or a password."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def error_display(url: str) -> str:
    """How a webhook that failed validation is named in the error: host only, never the rest.

    It may not even parse, so this works on the text: the scheme, the host part without any
    ``user:password@``, and ``/…`` when something followed.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url[:24] + ("…" if len(url) > 24 else "")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    tail = rest[len(rest.split("/", 1)[0].split("?", 1)[0]):]
    return f"{scheme}://{host}" + ("/…" if tail.strip("/") else "")


def url_secrets(url: str) -> set[str]:
    """The parts of a webhook URL that may be secret, for :func:`celery_probe.config.urls.scrub`.

    A password is sent as HTTP Basic authentication, so a receiver that echoes the request
    in an error page could send back the password (of any length) or the header's token:
    both are secrets too.
    """
    parts = urlsplit(url)
    found = {url}
    for piece in (parts.path, parts.query):
        if len(piece) >= 8:
            found.add(piece)
    found.update(seg for seg in parts.path.split("/") if len(seg) >= 8)
    if parts.password:
        password = unquote(parts.password)
        # Two characters at least, as for broker URLs: a one-character "secret" would shred every message.
        found.update(p for p in (parts.password, password) if len(p) >= 2)
        pair = f"{unquote(parts.username or '')}:{password}".encode()
        found.add(base64.b64encode(pair).decode("ascii"))  # the Authorization header's token
    return found


@dataclass(frozen=True)
class Webhook:
    """One webhook: where (secret), in which form, for Telegram to which chat."""

    url: str = field(repr=False)
    format: str = "generic"
    chat_id: str | None = None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.url.encode()).hexdigest()[:6]

    @property
    def id(self) -> str:
        return f"webhook:{self.format}:{hashlib.sha256(self.url.encode()).hexdigest()[:16]}"

    @property
    def display(self) -> str:
        return f"{safe_display(self.url)} ({self.format} #{self.digest})"


def split_spec(spec: str, default_format: str) -> tuple[str, str]:
    """``slack=https://…`` -> (slack, url); a bare URL takes ``default_format``.

    Raises ValueError for ``teams=https://…``: a form we do not know is a typo, not a URL.
    """
    head, sep, rest = spec.partition("=")
    name = head.strip().lower()
    if sep and name.isalpha() and "://" in rest:
        if name not in FORMATS:
            raise ValueError(f"unknown form {head.strip()!r} (use {', '.join(FORMATS)})")
        return name, rest.strip()
    return default_format, spec.strip()


def generic_payload(note: Notification, values: dict[str, str], wording: Wording) -> dict[str, Any]:
    """The documented generic JSON body (``version`` 1; ``cause``, ``impact`` and ``steps`` added since)."""
    verdict = note.verdict
    cause, impact, steps = advice(note, service=wording.service, broker_service=wording.broker_service,
                                  impact=wording.impact)
    return {
        "source": "celery-probe",
        "version": 1,
        "id": note.id,
        "event": note.event,
        "status": note.status,
        "previous_status": note.previous_status,
        "severity": values["severity"],
        "title": values["subject"],
        "summary": values["headline"],
        "cause": cause,
        "impact": impact,
        "steps": steps,
        "label": wording.label,
        "target": verdict.get("target"),
        "endpoint": verdict.get("source"),
        "checked_at": verdict.get("checked_at"),
        "created_at": note.created_at,
        "since": note.since,
        "worker_alive": verdict.get("worker_alive"),
        "active_tasks": verdict.get("active_tasks"),
        "scheduled_tasks": verdict.get("scheduled_tasks"),
        "queue_length": verdict.get("queue_length"),
        "last_heartbeat": verdict.get("last_heartbeat"),
        "reasons": list(verdict.get("reasons") or []),
        "links": verdict.get("links"),
        "host": values["hostname"],
    }


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload_for(webhook: Webhook, note: Notification, wording: Wording) -> dict[str, Any]:
    values = wording.values(note)
    if webhook.format == "slack":
        return {"text": slack_escape(short_text(note, values))}
    if webhook.format == "telegram":
        return {"chat_id": webhook.chat_id, "text": short_text(note, values, TELEGRAM_LIMIT),
                "disable_web_page_preview": True}
    return generic_payload(note, values, wording)


@dataclass(frozen=True)
class WebhookChannel:
    """One webhook, posted to within ``timeout`` seconds."""

    webhook: Webhook
    wording: Wording
    timeout: float = 10.0
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    http: HttpOptions = DIRECT

    @property
    def id(self) -> str:
        return self.webhook.id

    @property
    def display(self) -> str:
        return self.webhook.display

    def _secrets(self) -> Iterable[str]:
        return {*self.secrets, *url_secrets(self.webhook.url)}

    def send(self, note: Notification) -> None:
        body = json.dumps(payload_for(self.webhook, note, self.wording), ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
                   "Idempotency-Key": note.id}
        try:
            answer = request("POST", self.webhook.url, body=body, headers=headers, options=self.http,
                             timeout=self.timeout, max_body=MAX_ANSWER)
        except BoundedCallError as exc:
            raise DeliveryError(str(scrub(str(exc), self._secrets()))) from None
        if not 200 <= answer.status < 300:
            said = " ".join(answer.body.decode("utf-8", "replace").split())[:200]
            detail = f"HTTP {answer.status} {answer.reason}".strip() + (f": {said}" if said else "")
            raise DeliveryError(str(scrub(detail, self._secrets())))

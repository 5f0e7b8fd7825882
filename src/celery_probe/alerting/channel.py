"""What every alert channel (one mail recipient, one webhook) offers the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from celery_probe.alerting.state import Notification
from celery_probe.alerting.template import MailTemplates, fields


class DeliveryError(Exception):
    """A channel did not accept an alert; ``str()`` is one line without credentials."""


@dataclass(frozen=True)
class Wording:
    """Everything needed to turn a notification into text, shared by all channels."""

    templates: MailTemplates = field(default_factory=MailTemplates)
    label: str | None = None
    service: str = "celery"
    broker_service: str = "redis"
    hostname: str = "localhost"
    impact: str | None = None  # --alert-impact: what Celery does for the product, in the operator's words

    def values(self, note: Notification) -> dict[str, str]:
        return fields(note, label=self.label, service=self.service,
                      broker_service=self.broker_service, hostname=self.hostname, impact=self.impact)


class Channel(Protocol):
    """One destination. ``id`` is stable and credential-free: it keys the state file."""

    @property
    def id(self) -> str: ...

    @property
    def display(self) -> str: ...

    def send(self, note: Notification) -> None:
        """Deliver ``note`` within the channel's time bound or raise :class:`DeliveryError`."""

"""Reading what a queued kombu message waits for, without taking it off the queue. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any


def eta_timestamp(value: Any) -> float | None:
    """Seconds since the epoch of a Celery ``eta`` header (ISO 8601; naive means UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def message_eta(message: Any) -> float | None:
    """The ETA of one kombu envelope (task protocol 2 keeps it in the headers), or None."""
    if not isinstance(message, Mapping):
        return None
    headers = message.get("headers")
    if isinstance(headers, Mapping):
        return eta_timestamp(headers.get("eta"))
    return None


def decode(raw: Any) -> Any:
    """A JSON value from Redis bytes or text; None when it is not JSON."""
    try:
        return json.loads(raw)
    except (TypeError, ValueError, UnicodeDecodeError, RecursionError):
        return None


def unacked_entry(raw: Any) -> tuple[Any, str] | None:
    """``(envelope, routing key)`` of one value of kombu's ``unacked`` hash."""
    value = decode(raw)
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], Mapping):
        return value[0], str(value[2] or "")
    return None


def versions_from_report(text: Any) -> tuple[str | None, str | None]:
    """``(celery, kombu)`` versions in an ``inspect report`` text (``software -> celery:5.7.0 …``)."""
    import re

    body = text.get("ok") if isinstance(text, Mapping) else text
    body = str(body or "")
    celery = re.search(r"\bcelery:(\d[\w.]*)", body)
    kombu = re.search(r"\bkombu:(\d[\w.]*)", body)
    return (celery.group(1) if celery else None, kombu.group(1) if kombu else None)

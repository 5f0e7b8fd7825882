"""Workers that sign their messages refuse a probe that does not: alive, not down.

Celery's ``auth`` serializer (``app.setup_security()``, as in Celery's examples/security)
signs every message with the worker's key and disables every other decoder. Such a
worker refuses the unsigned remote-control ping of a probe that has only a broker URL
(``ContentDisallowed`` in its log) and never answers it, exactly as a dead worker would
not. Its heartbeats tell the two apart: they still arrive, signed, with the content type
that the ``auth`` serializer registers. That is evidence that the workers live and that
the probe's messages are the ones refused: ``unknown``, never ``down``.

Pure: judges content types already collected.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REFUSE_CODE = "celery_workers_refuse_unsigned"
SIGNED_CONTENT_TYPE = "application/data"  # celery.security.serialization.register_auth
SIGNING_SERIALIZER = "auth"


def prober_signs(conf: Any) -> bool:
    """Whether this probe's own messages are signed (the app's ``task_serializer`` is ``auth``).

    Remote control sends with the task serializer, so then the workers can check them.
    """
    return str(getattr(conf, "task_serializer", "") or "") == SIGNING_SERIALIZER


def signed_workers(heartbeats: Mapping[str, str]) -> list[str]:
    """The hostnames whose heartbeats were signed, sorted."""
    return sorted(name for name, kind in heartbeats.items() if kind == SIGNED_CONTENT_TYPE)


def refusal_message(heartbeats: Mapping[str, str]) -> str | None:
    """Why silent workers are no evidence of a failure, or None when nothing says so."""
    names = signed_workers(heartbeats)
    if not names:
        return None
    return (
        f"no worker answered the probe's unsigned ping, but {', '.join(names[:5])} "
        f"{'is' if len(names) == 1 else 'are'} alive (signed heartbeats arrive): the workers use "
        "Celery's auth serializer and refuse unsigned messages. Probe with -A and the app's "
        "security settings (security_key, security_certificate, security_cert_store) so the "
        "probe's messages are signed too"
    )

"""The Celery app under test: loaded from ``-A`` or built from a broker URL, then bounded.

Bounding means every socket the app opens has a timeout and no connection is retried:
a probe must learn within its deadline that the broker does not answer, not wait out
kombu's retry schedule (about 6 s on a refused port) or block forever (a frozen broker).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from celery_probe.errors import ProbeUsageError
from celery_probe.settings import Settings

if TYPE_CHECKING:
    from celery import Celery


def import_app(path: str, source: str = "-A/--app") -> Celery:
    """Import a Celery app the way ``celery -A`` does (``proj``, ``proj.mod``, ``proj:app``)."""
    from celery import Celery
    from celery.app.utils import find_app

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found = find_app(path)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # an operator's module may raise anything, SystemExit too
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        raise ProbeUsageError(f"cannot load Celery app {path!r}: {reason} (from {source})") from None
    if not isinstance(found, Celery):
        raise ProbeUsageError(
            f"cannot load Celery app {path!r}: it is a {type(found).__name__}, not a Celery app (from {source})"
        )
    return found


def build_app(settings: Settings) -> Celery:
    """The app to probe: the operator's (with URL overrides) or a bare one for a broker URL."""
    from celery import Celery

    if settings.app:
        app = import_app(settings.app, settings.sources.get("app", "-A/--app"))
    else:
        app = Celery("celery_probe", set_as_current=False)
    if settings.broker:
        app.conf.broker_url = settings.broker
    if settings.backend:
        app.conf.result_backend = settings.backend
    bound_app(app, settings.deadline)
    return app


REDIS_POLL_STEP = 0.05


def _is_redis(url: str) -> bool:
    return url.split("://", 1)[0].lower() in {"redis", "rediss", "sentinel", "redis+socket", "socket"}


def _capped(options: Any, seconds: float, keys: tuple[str, ...]) -> dict[str, Any]:
    opts = dict(options or {})
    for key in keys:
        current = opts.get(key)
        opts[key] = seconds if not isinstance(current, (int, float)) else min(float(current), seconds)
    return opts


def bound_app(app: Celery, deadline: float) -> None:
    """Give every connection of ``app`` a timeout within ``deadline`` and no retries."""
    conf = app.conf
    transport_options = {
        **_capped(conf.broker_transport_options, deadline, ("socket_timeout", "socket_connect_timeout")),
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if _is_redis(str(conf.broker_url or "")):
        # kombu's Redis transport waits for replies with BRPOP in steps of polling_interval
        # (default 1 s) and must finish a step before it can close the connection or listen
        # to a new reply queue: short steps keep a probe run from idling a second per wait.
        transport_options["polling_interval"] = REDIS_POLL_STEP
    conf.broker_transport_options = transport_options
    conf.result_backend_transport_options = _capped(
        conf.result_backend_transport_options, deadline, ("socket_timeout", "socket_connect_timeout")
    )
    conf.broker_connection_timeout = min(float(conf.broker_connection_timeout or deadline), deadline)
    conf.broker_connection_retry = False
    conf.broker_connection_max_retries = 0
    conf.task_publish_retry = False
    conf.redis_socket_timeout = deadline
    conf.redis_socket_connect_timeout = deadline
    conf.redis_retry_on_timeout = False
    conf.result_backend_always_retry = False
    conf.broker_heartbeat = 0
    # The workers create the result tables; a probe only reads, and a sqlite backend would
    # otherwise create its file (and tables) wherever the probe happens to run.
    conf.database_create_tables_at_setup = False

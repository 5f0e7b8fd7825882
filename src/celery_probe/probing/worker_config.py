"""What the workers themselves are configured with, asked only after a round trip failed.

A round trip that does not come back has three very different causes: the worker stalled,
the worker is busy, or the worker ran the task and stored its result where this probe does
not look (``--backend`` given to the probe but not to the workers, a relative sqlite file
opened from another directory). Only the workers know their own settings, and two remote-
control questions tell them:

* ``inspect report`` names the backend the worker really uses (``results:…``), read
  through ``app.conf.result_backend``, which honours ``CELERY_RESULT_BACKEND`` and
  ``celery --result-backend``. ``inspect conf`` does not: it lists the raw setting, which is
  ``None`` when the backend came from the environment. Both mask passwords as ``********``.
* ``inspect conf(with_defaults=True)`` gives ``worker_prefetch_multiplier``,
  ``task_acks_late`` and whether the worker runs quorum queues (whose prefetch is static).

Healthy runs never ask: the questions cost two broadcasts, paid only on failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery_probe.config.urls import REDACTED, redact_url

if TYPE_CHECKING:
    from celery import Celery

DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671, "mongodb": 27017}
_RESULTS = re.compile(r"\bresults:(\S+)")
_LOOPBACK = {"localhost": "127.0.0.1", "::1": "127.0.0.1"}


@dataclass
class WorkerConfig:
    """The settings of one worker that explain a failed round trip."""

    backend: str | None = None  # as the worker reports it, passwords masked; "disabled" for none
    prefetch_multiplier: int | None = None
    acks_late: bool = False
    static_prefetch: bool = False  # quorum queues: global QoS is off, eta tasks cannot raise the prefetch


# ------------------------------------------------------------------------ pure logic


def backend_from_report(text: Any) -> str | None:
    """The ``results:`` URL in an ``inspect report`` text, or None."""
    match = _RESULTS.search(str(text or ""))
    return match.group(1) if match else None


def config_from_answers(report: Any, conf: Any) -> WorkerConfig:
    """One worker's :class:`WorkerConfig` from its ``report`` and ``conf`` answers."""
    text = report.get("ok") if isinstance(report, dict) else report
    conf = conf if isinstance(conf, dict) else {}
    multiplier = conf.get("worker_prefetch_multiplier")
    queues = str(conf.get("task_queues") or "")
    quorum = conf.get("task_default_queue_type") == "quorum" or "'x-queue-type': 'quorum'" in queues
    return WorkerConfig(
        backend=backend_from_report(text),
        prefetch_multiplier=multiplier if isinstance(multiplier, int) else None,
        acks_late=conf.get("task_acks_late") is True,
        static_prefetch=bool(quorum and conf.get("worker_detect_quorum_queues", True) is not False),
    )


def backend_key(url: str | None) -> tuple[Any, ...] | None:
    """What identifies a result store in ``url``, password left out (the worker masks it)."""
    if not url or url == "disabled":
        return None
    from kombu.utils.url import url_to_parts

    try:
        parts = url_to_parts(url)
    except Exception:
        return ("raw", url)
    scheme = (parts.scheme or "").lower()
    host = (parts.hostname or "").lower()
    host = _LOOPBACK.get(host, host)
    port = parts.port or DEFAULT_PORTS.get(scheme)
    path = (parts.path or "").strip("/") if not scheme.startswith("db+") else (parts.path or "")
    if scheme in ("redis", "rediss") and not path:
        path = "0"
    return (scheme, host, port, parts.username or None, path)


def same_backend(worker: str | None, probe: str | None) -> bool:
    """Whether the worker's reported backend and the probe's are the same store."""
    return backend_key(worker) == backend_key(probe)


def relative_file(url: str | None) -> str | None:
    """The relative file path of a ``db+sqlite:///relative.sqlite`` backend, else None.

    Such a path is opened relative to the working directory of each process: a probe run
    by cron from its home directory reads another file than the workers write.
    """
    if not url or not url.lower().startswith("db+sqlite://"):
        return None
    path = url[len("db+sqlite://"):]
    if not path.startswith("/"):
        return None
    path = path[1:].split("?", 1)[0]
    if not path or path.startswith("/") or path == ":memory:":
        return None
    return path


def shown(url: str | None) -> str:
    """A backend URL for a message: the worker's ``********`` mask becomes ``***``."""
    if not url or url == "disabled":
        return "no result backend"
    return redact_url(url.replace("********", REDACTED))


def resolved(path: str) -> Path:
    return Path.cwd() / path


# ------------------------------------------------------------------------ asking


def inspect_config(app: Celery, workers: list[str], *, timeout: float) -> dict[str, WorkerConfig]:
    """Ask exactly ``workers`` for their report and configuration; each call ends on the last reply."""
    from celery_probe.probing.workers import fresh_connection

    if not workers:
        return {}
    with fresh_connection(app) as conn:
        inspect = app.control.inspect(
            destination=workers, timeout=timeout, limit=len(workers), connection=conn
        )
        reports = inspect.report() or {}
        confs = inspect.conf(with_defaults=True) or {}
    return {
        name: config_from_answers(reports.get(name), confs.get(name))
        for name in workers
        if name in reports or name in confs
    }


def prefetch_full(
    name: str,
    config: WorkerConfig,
    *,
    reserved: int,
    scheduled: int,
    active: int,
    concurrency: int | None,
    reported: int | None,
) -> str | None:
    """Why ``name`` takes no new message, when tasks it holds fill its prefetch; else None.

    A worker takes at most concurrency × ``worker_prefetch_multiplier`` unacknowledged
    messages. Each task it holds for a countdown or an eta counts against that; with global
    QoS Celery raises the prefetch count by one per such task (``inspect stats`` then reports
    the raised ``prefetch_count``), but on quorum queues global QoS is off and the count is
    static, so a handful of countdown tasks stall the worker until their time comes.
    """
    multiplier = config.prefetch_multiplier
    if not concurrency or not multiplier or multiplier <= 0:
        return None  # a multiplier of 0 means no prefetch limit
    base = concurrency * multiplier
    limit = base if config.static_prefetch else max(base, reported or 0)
    held = reserved + scheduled + (active if config.acks_late else 0)
    if held < limit or not (reserved or scheduled):
        return None
    parts = [f"{scheduled} scheduled (countdown/eta)"] if scheduled else []
    if reserved:
        parts.append(f"{reserved} reserved")
    if config.acks_late and active:
        parts.append(f"{active} active (acks_late)")
    why = (
        f"{name} holds {' and '.join(parts)} tasks, which fill its prefetch of {limit}"
        + (f" (concurrency {concurrency} × worker_prefetch_multiplier {multiplier})" if limit == base else "")
        + ", so it takes no new message"
    )
    if config.static_prefetch and scheduled:
        why += "; on quorum queues global QoS is off and countdown tasks cannot raise the prefetch"
    return why

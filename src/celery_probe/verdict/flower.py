"""Links from a verdict to the Flower pages where a person looks next. Pure functions.

A verdict says *that* a worker is down or a queue is high; Flower shows the worker's pool,
its tasks and the broker's queues. With ``--flower-url`` every verdict carries links to the
pages of Flower 2.2 that fit (its routes, ``flower/urls.py``):

* ``/workers``: the list of workers (``/`` shows the same view);
* ``/worker/<name>``: one worker (404 when Flower cannot inspect it);
* ``/broker``: the broker's queues with their lengths.

The URL may carry credentials (``https://user:password@flower.example/``) because Flower is
often behind basic authentication. Links never do: :func:`flower_base` drops the user
information, so a link can be printed, mailed and posted as it is. The base keeps any
path, for a Flower started with ``--url_prefix`` or behind a proxy under a sub-path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from celery_probe.config.urls import http_url_problem
from celery_probe.verdict.model import Links, Verdict

WORKERS_PAGE = "/workers"
QUEUES_PAGE = "/broker"
WORKER_PAGE = "/worker/"

# Which page answers the question each built-in reason raises.
WORKER_CODES = frozenset({
    "celery_worker_down", "celery_workers_missing", "celery_worker_missing_by_name",
    "celery_worker_unresponsive", "celery_worker_drift", "celery_workers_saturated",
})
# Reasons whose message names the workers at fault: naming exactly one known worker links to
# that worker's page. (celery_workers_missing names those that did answer, so it does not.)
CULPRIT_CODES = frozenset({"celery_worker_unresponsive", "celery_worker_drift"})
QUEUE_CODES = frozenset({"celery_queue_high", "celery_queue_unconsumed", "celery_backlog_unreadable"})


def flower_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be Flower's address (http or https, a host, a path to append to)."""
    problem = http_url_problem(url)
    if problem is not None:
        return problem
    parts = urlsplit(url)
    if parts.query or parts.fragment or url.rstrip().endswith(("?", "#")):
        return "must not have a query or fragment (pages are appended to its path)"
    return None


def flower_base(url: Any) -> str | None:
    """``scheme://host[:port][/prefix]`` without credentials or a trailing slash; None if unusable."""
    if not isinstance(url, str) or flower_url_problem(url) is not None:
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


def worker_link(base: str, name: str) -> str:
    """Flower's page of one worker; the name is percent-encoded whole (``@`` included)."""
    return f"{base}{WORKER_PAGE}{quote(name, safe='')}"


def links(base: str, worker_names: list[str]) -> Links:
    """The ``links`` of a verdict: the dashboard, the workers and queues pages, each worker."""
    return {
        "flower": f"{base}/",
        "workers_page": f"{base}{WORKERS_PAGE}",
        "queues": f"{base}{QUEUES_PAGE}",
        "workers": {name: worker_link(base, name) for name in worker_names},
    }


def _named(message: str, names: list[str]) -> list[str]:
    """The known worker names that ``message`` mentions as whole words."""
    return [name for name in names
            if re.search(rf"(?<![\w@.\-]){re.escape(name)}(?![\w@.\-])", message)]


def reason_link(base: str, code: str, message: str, worker_names: list[str]) -> str | None:
    """The page for one reason: a worker's, the workers', the queues' or none."""
    if code in QUEUE_CODES:
        return f"{base}{QUEUES_PAGE}"
    if code in CULPRIT_CODES:
        named = _named(message, worker_names)
        if len(named) == 1:
            return worker_link(base, named[0])
    if code in WORKER_CODES:
        return f"{base}{WORKERS_PAGE}"
    return None


def worker_names(verdict: Mapping[str, Any]) -> list[str]:
    """The names of the workers that answered, sorted: the ones that get a page of their own."""
    workers = verdict.get("workers")
    return sorted(str(name) for name in workers) if isinstance(workers, Mapping) else []


def verdict_base(verdict: Mapping[str, Any]) -> str | None:
    """The Flower base a verdict's ``links`` were built on; None when the run had no Flower URL.

    Documents derived from a verdict (ops-alerts) receive only the verdict, whose ``links``
    exist only when the report recorded ``celery_probe.verdict.flower``. The value is checked again,
    so a verdict from elsewhere cannot smuggle in credentials or another scheme.
    """
    found = verdict.get("links")
    return flower_base(found.get("flower")) if isinstance(found, Mapping) else None


def add_flower_links(verdict: Verdict, url: Any) -> Verdict:
    """Add ``links`` and each fitting reason's ``link`` to ``verdict`` (in place, returned).

    ``url`` comes from a report, which may be foreign: anything that is not a usable
    http(s) URL adds nothing, and credentials in it never reach a link.
    """
    base = flower_base(url)
    if base is None:
        return verdict
    names = worker_names(verdict)
    verdict["links"] = links(base, names)
    for reason in verdict.get("reasons") or []:
        if isinstance(reason, dict):
            link = reason_link(base, str(reason.get("code") or ""), str(reason.get("message") or ""), names)
            if link is not None:
                reason["link"] = link
    return verdict


def safe_link(value: Any) -> str | None:
    """``value`` as a link fit to print: an http(s) URL without credentials, else None.

    For verdicts read from elsewhere (``check URL``): a link is shown only if it is one.
    """
    if not isinstance(value, str) or len(value) > 2000:
        return None
    base = flower_base(value)
    if base is None:
        return None
    return f"{base}/" if value.endswith("/") else base


def safe_links(links: Any, max_workers: int = 50) -> dict[str, Any]:
    """The ``links`` of a verdict from elsewhere, keeping only what :func:`safe_link` accepts."""
    if not isinstance(links, Mapping):
        return {}
    clean: dict[str, Any] = {}
    for key in ("flower", "workers_page", "queues"):
        link = safe_link(links.get(key))
        if link is not None:
            clean[key] = link
    workers = links.get("workers")
    if isinstance(workers, Mapping):
        named = {str(name)[:200]: safe_link(url) for name, url in list(workers.items())[:max_workers]}
        clean["workers"] = {name: url for name, url in named.items() if url is not None}
    return clean

"""The series that celery-exporter's dashboards and alert rules read, derived from a verdict.

Many teams already run the Grafana dashboards of celery-exporter's ``celery-mixin``
(grafana.com 17508 / 17509) and its alert rules. :func:`exporter_families` gives them the
series those panels read, with celery-exporter's names and labels, so the dashboards work
against ``serve --exporter-metrics`` unchanged:

==================================================  ==========================================
series                                              from which evidence of the run
==================================================  ==========================================
``celery_worker_up{hostname}``                      ping: 1 answered, 0 known but silent
``celery_worker_tasks_active{hostname}``            ``inspect active`` per worker
``celery_queue_length{queue_name}``                 the queue's length, as the probes measured it
``celery_active_consumer_count{queue_name}``        the queue's consumers (broker count, or the
                                                    workers that ``inspect`` says consume it)
``celery_active_worker_count{queue_name}``          workers whose ``inspect`` queues include it
``celery_active_process_count{queue_name}``         those workers' pool concurrency, summed
==================================================  ==========================================

Everything comes from the probes' own measurements, never from an event cache: a series is
absent when the run has no evidence for it (a broker that did not answer says nothing about
the workers, so no ``celery_worker_up`` at all rather than a row of zeros that would page
someone for the broker's fault).

``hostname`` is what celery-exporter puts there: the part of the worker's node name after
``@`` (``celery@web-1`` → ``web-1``). Two workers of one host therefore share a label set, as
they do in celery-exporter; this module keeps the exposition valid by combining them (up if
any answered, active tasks summed).

A worker that stops answering ping disappears from the verdict. celery-exporter keeps such a
worker at ``celery_worker_up 0`` until it is forgotten, and the mixin's ``CeleryWorkerDown``
alert (``celery_worker_up == 0``) depends on it; :func:`remember_workers` keeps the same memory
across runs, in the caller, so this mapping stays pure.

Not offered, because they count task events: ``celery_task_{sent,received,started,succeeded,
failed,rejected,revoked,retried}_total``, ``celery_task_runtime`` and
``celery_task_queue_wait_time``. celery-probe samples the deployment every interval and
does not consume the event stream continuously, so it cannot count every task; inventing
those counters from samples would draw plausible, wrong graphs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from celery_probe.numbers import number

FORGET_AFTER_S = 600.0
"""Seconds a silent worker stays at ``celery_worker_up 0`` (celery-exporter's default purge, 10 min)."""

HELP: dict[str, str] = {
    "celery_worker_up": "1 when the worker answered the probe's ping, 0 when it was seen recently and did not.",
    "celery_worker_tasks_active": "Tasks the worker was executing when the probe asked (inspect active).",
    "celery_queue_length": "Ready messages in the broker queue, as the probe measured it.",
    "celery_active_consumer_count": "Consumers of the broker queue.",
    "celery_active_worker_count": "Workers consuming the queue (inspect active_queues).",
    "celery_active_process_count": "Pool processes of the workers consuming the queue.",
}

NO_WORKER_EVIDENCE = frozenset({
    "celery_broker_unreachable", "celery_probe_no_evidence", "celery_probe_deadline_exceeded",
    "celery_probe_starved", "celery_workers_refuse_unsigned", "celery_app_config_error",
    "celery_probe_stale", "celery_probe_check_failed",
})
"""Reason codes after which the verdict's worker list says nothing about the workers."""


def exporter_hostname(node: str) -> str:
    """celery-exporter's ``hostname`` label: the part of ``name@host`` after the ``@``."""
    return node.split("@", 1)[1] if "@" in node else node


def pinged(verdict: Mapping[str, Any]) -> bool:
    """Whether the run measured the workers: someone answered, or ping ran and nobody did."""
    codes = {str(r.get("code")) for r in verdict.get("reasons") or [] if isinstance(r, Mapping)}
    if codes & NO_WORKER_EVIDENCE:
        return False
    if any(isinstance(w, Mapping) and w.get("last_heartbeat") for w in _mapping(verdict.get("workers")).values()):
        return True
    return "celery_worker_down" in codes


def remember_workers(memory: Mapping[str, float], verdict: Mapping[str, Any], now: float,
                     forget_after: float = FORGET_AFTER_S) -> dict[str, float]:
    """The workers to report, by node name, with when each last answered; pure.

    Workers that answered this run are stamped ``now``; the rest are kept until
    ``forget_after`` seconds after their last answer. A verdict without worker evidence
    changes nothing, so a broker outage does not make the workers forgotten.
    """
    kept = {name: seen for name, seen in memory.items() if now - seen <= forget_after}
    if not pinged(verdict):
        return kept
    for name, info in _mapping(verdict.get("workers")).items():
        if isinstance(info, Mapping) and info.get("last_heartbeat"):
            kept[str(name)] = now
    return kept


def exporter_families(verdict: Mapping[str, Any], *, remembered: Iterable[str] = (),
                      labels: Mapping[str, str] | None = None) -> list[Metric]:
    """celery-exporter's series for one deployment's verdict; pure.

    ``remembered``: node names seen recently (:func:`remember_workers`), reported as down
    when this run pinged and they did not answer. ``labels`` are added to every series
    (serve's ``target``).
    """
    extra = dict(labels or {})
    families: dict[str, GaugeMetricFamily] = {}

    def gauge(name: str, label: str, value: str, sample: float) -> None:
        family = families.get(name)
        if family is None:
            family = families[name] = GaugeMetricFamily(name, HELP[name], labels=[label, *extra])
        family.add_metric([value, *extra.values()], float(sample))

    workers = {str(k): v for k, v in _mapping(verdict.get("workers")).items() if isinstance(v, Mapping)}
    if pinged(verdict):
        up: dict[str, bool] = {}
        for node in {*workers, *remembered}:
            host = exporter_hostname(node)
            up[host] = up.get(host, False) or bool(workers.get(node, {}).get("last_heartbeat"))
        for host in sorted(up):
            gauge("celery_worker_up", "hostname", host, 1.0 if up[host] else 0.0)
    active: dict[str, float] = {}
    for node, info in workers.items():
        count = number(info.get("active"))
        if count is not None:
            host = exporter_hostname(node)
            active[host] = active.get(host, 0.0) + count
    for host in sorted(active):
        gauge("celery_worker_tasks_active", "hostname", host, active[host])

    inspected = {node: info for node, info in workers.items() if isinstance(info.get("queues"), list)}
    for queue, raw in sorted(_mapping(verdict.get("queues")).items()):
        info = _mapping(raw)
        length = number(info.get("length"))
        if length is not None:
            gauge("celery_queue_length", "queue_name", str(queue), length)
        consumers = number(info.get("consumers"))
        if consumers is not None:
            gauge("celery_active_consumer_count", "queue_name", str(queue), consumers)
        if inspected:
            serving = [w for w in inspected.values() if str(queue) in w["queues"]]
            gauge("celery_active_worker_count", "queue_name", str(queue), float(len(serving)))
            gauge("celery_active_process_count", "queue_name", str(queue),
                  sum(number(w.get("concurrency")) or 0.0 for w in serving))
    return list(families.values())


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}

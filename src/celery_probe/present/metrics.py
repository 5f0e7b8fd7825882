"""Prometheus metrics of a verdict: one pure function for ``serve``'s ``/metrics`` and ``--prom-file``.

:func:`metric_families` maps a verdict (and, when there is one, its report) to
``prometheus_client`` metric families. It does no I/O and reads no clock: the caller passes
``now`` when an age is wanted, so the scrape endpoint and the node_exporter textfile are
built by the same code and a test can check them against captured reports.

Labels carry only names that the probes measured (status, queue, worker, probe node id,
reason code, task state), never a URL, so a credential cannot reach a time series. The
textfile adds a ``deployment`` label to every series (the file's name): node_exporter merges
every ``*.prom`` file of its folder into one scrape, and two deployments' files without it
would give the same series, one of which node_exporter drops. Samples
carry no timestamps: Prometheus stamps them at scrape time, and node_exporter's textfile
collector refuses timestamped samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, write_to_textfile
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric

from celery_probe import __version__
from celery_probe.numbers import number
from celery_probe.verdict.mapper import STATUSES
from celery_probe.verdict.model import AnyVerdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LAST_SUCCESS = "celery_probe_last_success_timestamp_seconds"

# name -> help; the README's metrics table is generated from the same wording.
HELP: dict[str, str] = {
    "celery_probe_status": "1 for the status of the latest verdict, 0 for the other statuses.",
    "celery_probe_target_status": "With run --targets: 1 for each target's status, 0 for its other statuses.",
    "celery_probe_workers_up": "Workers that answered ping in the latest run.",
    "celery_probe_workers_expected": "Workers the run expected (--expect-workers); absent without it.",
    "celery_probe_worker_ping_latency_seconds": "Ping reply latency per worker.",
    "celery_probe_tasks": "Tasks on the workers that answered, by state (active, reserved, scheduled).",
    "celery_probe_queue_length": "Ready messages per watched queue, all priority lists summed.",
    "celery_probe_queue_unacked": "Messages taken from the queue but not acknowledged.",
    "celery_probe_queue_consumers": "Workers consuming the queue.",
    "celery_probe_queue_threshold": "Backlog at which the queue counts as high.",
    "celery_probe_delayed_messages": "Messages in RabbitMQ's native delayed delivery queues (countdown/eta tasks, whole vhost).",
    "celery_probe_roundtrip_seconds": "Round-trip latency of the no-op task per queue; absent when not confirmed.",
    "celery_probe_queue_sla_seconds": "Round-trip SLA of the queue (--sla).",
    "celery_probe_queue_sla_breach": "1 when the queue's round trip exceeded its SLA, 0 when within; absent when not measured.",
    "celery_probe_task_runs": "Task runs that succeeded in the events window, per task type.",
    "celery_probe_task_runtime_p95_seconds": "95th percentile runtime per task type in the events window.",
    "celery_probe_task_runtime_max_seconds": "Longest runtime per task type in the events window.",
    "celery_probe_task_sla_seconds": "Runtime SLA of the task type (--task-sla).",
    "celery_probe_task_sla_breach": "1 when the task type's p95 runtime exceeded its SLA, else 0; absent without an SLA.",
    "celery_probe_probe_duration_seconds": "Setup, call and teardown time of each probe in the latest run.",
    "celery_probe_probe_failed": "1 when the probe failed or errored in the latest run.",
    "celery_probe_reason": "1 for each reason code in the latest verdict.",
    "celery_probe_run_duration_seconds": "Duration of the latest probe session.",
    "celery_probe_last_run_timestamp_seconds": "Unix time the latest verdict was produced.",
    LAST_SUCCESS: "Unix time of the latest verdict whose status was healthy.",
    "celery_probe_verdict_age_seconds": "Seconds since the latest verdict was produced.",
    "celery_probe_runs": "Probe runs started by this process (each one pings, inspects and sends one task per queue).",
    "celery_probe_runs_killed": "Probe runs killed at their hard timeout.",
    "celery_probe": "celery-probe version.",
}


@dataclass(frozen=True)
class ServeLoopTotals:
    """The totals of serve's probe loop (runs started, runs killed): a one-shot run has none."""

    started: int = 0
    killed: int = 0


def metric_families(
    verdict: AnyVerdict,
    report: Mapping[str, Any] | None = None,
    *,
    produced_at: float | None = None,
    last_success: float | None = None,
    now: float | None = None,
    counters: ServeLoopTotals | None = None,
    deployment: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[Metric]:
    """The metric families of ``verdict``. Pure: same inputs, same families.

    ``produced_at`` (Unix time) defaults to the verdict's ``checked_at``; ``now`` adds the
    verdict age; ``last_success`` is carried by the caller across runs; ``counters`` adds
    the run counters of a long-running process; ``deployment`` labels every series with it
    (the textfile: see the module); ``labels`` are added to every series too (``serve
    --targets`` names each target's series with ``target``).
    """
    out: list[Metric] = []
    scope = {**({"deployment": deployment} if deployment is not None else {}), **(labels or {})}

    def gauge(name: str, value: float | None, labels: Mapping[str, str] | None = None) -> None:
        if value is None:
            return
        labels = {**scope, **(labels or {})}
        family = _family(out, name, labels)
        family.add_metric(list(labels.values()) if labels else [], float(value))

    status = str(verdict.get("status") or "unknown")
    for state in STATUSES:
        gauge("celery_probe_status", 1.0 if state == status else 0.0, {"status": state})

    meta = _mapping((report or {}).get("celery_probe"))
    targets = _mapping(verdict.get("targets"))
    if targets:  # run --targets: one deployment per target, each series labelled with it
        for name, raw in sorted(targets.items()):
            sub = _mapping(raw)
            sub_status = str(sub.get("status") or "unknown")
            for state in STATUSES:
                gauge("celery_probe_target_status", 1.0 if state == sub_status else 0.0,
                      {"target": str(name), "status": state})
            _deployment(gauge, sub, {"target": str(name)}, None)
    else:
        _deployment(gauge, verdict, {}, number(meta.get("expect_workers")))

    seen: set[str] = set()
    for probe, seconds, failed in _probe_timings(report):
        if probe in seen:  # a duplicate label set would make the whole exposition invalid
            continue
        seen.add(probe)
        gauge("celery_probe_probe_duration_seconds", seconds, {"probe": probe})
        gauge("celery_probe_probe_failed", 1.0 if failed else 0.0, {"probe": probe})

    reasons = {
        (str(r.get("target") or ""), str(r.get("code")), str(r.get("severity")))
        for r in verdict.get("reasons") or []
        if isinstance(r, Mapping)
    }
    for target, code, severity in sorted(reasons):
        where = {"target": target} if targets else {}
        gauge("celery_probe_reason", 1.0, {**where, "code": code, "severity": severity})

    gauge("celery_probe_run_duration_seconds", number(verdict.get("duration_s")))
    produced = produced_at if produced_at is not None else verdict_timestamp(verdict)
    gauge("celery_probe_last_run_timestamp_seconds", produced)
    gauge(LAST_SUCCESS, last_success)
    if now is not None and produced is not None:
        gauge("celery_probe_verdict_age_seconds", max(0.0, now - produced))

    if counters is not None:
        for name, value in (("celery_probe_runs", counters.started), ("celery_probe_runs_killed", counters.killed)):
            counter = CounterMetricFamily(name, HELP[name], labels=list(scope))
            counter.add_metric(list(scope.values()), float(value))
            out.append(counter)
    info_family = InfoMetricFamily("celery_probe", HELP["celery_probe"], labels=list(scope))
    info_family.add_metric(list(scope.values()), {"version": __version__})
    out.append(info_family)
    return out


def _deployment(gauge: Callable[..., None], verdict: Mapping[str, Any], base: Mapping[str, str],
                expect_workers: float | None) -> None:
    """Workers, tasks and queues of one deployment's verdict, each series labelled with ``base``."""
    workers = _mapping(verdict.get("workers"))
    alive = sum(1 for w in workers.values() if _mapping(w).get("last_heartbeat"))
    gauge("celery_probe_workers_up", float(alive), dict(base))
    gauge("celery_probe_workers_expected", expect_workers, dict(base))
    for name, info in sorted(workers.items()):
        gauge("celery_probe_worker_ping_latency_seconds", _ms(_mapping(info).get("latency_ms")),
              {**base, "worker": str(name)})
    for state in ("active", "reserved", "scheduled"):
        gauge("celery_probe_tasks", number(verdict.get(f"{state}_tasks")), {**base, "state": state})
    for queue, raw in sorted(_mapping(verdict.get("queues")).items()):
        info = _mapping(raw)
        labels = {**base, "queue": str(queue)}
        gauge("celery_probe_queue_length", number(info.get("length")), labels)
        gauge("celery_probe_queue_unacked", number(info.get("unacked")), labels)
        gauge("celery_probe_queue_consumers", number(info.get("consumers")), labels)
        gauge("celery_probe_queue_threshold", number(info.get("threshold")), labels)
        gauge("celery_probe_roundtrip_seconds", _ms(info.get("roundtrip_ms")), labels)
        gauge("celery_probe_queue_sla_seconds", _ms(info.get("sla_ms")), labels)
        breach = info.get("sla_breach")
        gauge("celery_probe_queue_sla_breach", float(breach) if isinstance(breach, bool) else None, labels)
    gauge("celery_probe_delayed_messages", number(verdict.get("delayed_messages")), dict(base))
    tasks = _mapping(_mapping(verdict.get("task_runtimes")).get("tasks"))
    for task, raw in sorted(tasks.items()):
        info = _mapping(raw)
        labels = {**base, "task": str(task)}
        gauge("celery_probe_task_runs", number(info.get("count")), labels)
        gauge("celery_probe_task_runtime_p95_seconds", _ms(info.get("p95_ms")), labels)
        gauge("celery_probe_task_runtime_max_seconds", _ms(info.get("max_ms")), labels)
        sla = _ms(info.get("sla_ms"))
        gauge("celery_probe_task_sla_seconds", sla, labels)
        gauge("celery_probe_task_sla_breach", None if sla is None else float(info.get("breach") is True), labels)


def merge_families(groups: Iterable[Iterable[Metric]]) -> list[Metric]:
    """One family per metric name from several lists of families (one list per target).

    The exposition format allows each name once (its HELP and TYPE, then every sample):
    two families of the same name, one per target, would make the whole scrape invalid.
    The samples' label sets differ by target, so concatenating them is enough.
    """
    merged: dict[str, Metric] = {}
    for families in groups:
        for family in families:
            kept = merged.get(family.name)
            if kept is None:
                kept = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            kept.samples.extend(family.samples)
    return list(merged.values())


def verdict_timestamp(verdict: AnyVerdict) -> float | None:
    """The verdict's ``checked_at`` as Unix time, or None."""
    return _timestamp(verdict.get("checked_at"))


def render(families: Iterable[Metric]) -> bytes:
    """The text exposition format (0.0.4) of ``families``."""
    return generate_latest(_registry(families))


def render_for(families: Iterable[Metric], accept: str | None) -> tuple[bytes, str]:
    """``families`` in the format a scraper's ``Accept`` header asks for, and its content type.

    prometheus_client's own negotiation (:func:`prometheus_client.exposition.choose_encoder`):
    OpenMetrics when ``application/openmetrics-text`` is accepted (Prometheus asks for it
    first), the 0.0.4 text format otherwise.
    """
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_registry(families)), content_type


def write_textfile(path: Path, families: Iterable[Metric]) -> None:
    """Write ``families`` for node_exporter's textfile collector: temp file, then rename.

    ``prometheus_client.write_to_textfile`` writes ``PATH.<pid>.<thread>`` beside ``path``
    (same filesystem, a name the collector ignores) and renames it over ``path``, so the
    collector never reads half a file; on failure it removes the temporary file.
    """
    write_to_textfile(str(path), _registry(families))


def last_success_in(text: str) -> float | None:
    """The ``celery_probe_last_success_timestamp_seconds`` value in an exposition, if any.

    ``run --prom-file`` is a one-shot process: it carries the last healthy time over from
    the file it is about to replace, so a degraded run does not erase it.
    """
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except Exception:  # noqa: BLE001 - a foreign or truncated file: start afresh
        return None
    return None


def _registry(families: Iterable[Metric]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families)))
    return registry


class _Fixed:
    """A collector that yields families already built (the registry API wants a collector)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _family(out: list[Metric], name: str, labels: Mapping[str, str] | None) -> GaugeMetricFamily:
    for family in out:
        if family.name == name and isinstance(family, GaugeMetricFamily):
            return family
    family = GaugeMetricFamily(name, HELP[name], labels=list(labels) if labels else None)
    out.append(family)
    return family


def _probe_timings(report: Mapping[str, Any] | None) -> Iterator[tuple[str, float, bool]]:
    """``(node id, seconds, failed)`` for each probe of a pytest-json-report report."""
    tests = (report or {}).get("tests")
    for test in tests if isinstance(tests, list) else []:
        if not isinstance(test, Mapping) or not isinstance(test.get("nodeid"), str):
            continue
        stages = [_mapping(test.get(when)).get("duration") for when in ("setup", "call", "teardown")]
        seconds = sum(s for s in (number(d) for d in stages) if s is not None)
        yield test["nodeid"], seconds, test.get("outcome") in ("failed", "error")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ms(value: Any) -> float | None:
    found = number(value)
    return None if found is None else found / 1000.0


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None

"""The verdict: a pure function from a pytest-json-report report to a health verdict.

No I/O, no clock, no pytest, no broker: given the same report it returns the same verdict,
and given anything at all (truncated, foreign, hostile) it returns a verdict instead of
raising. ``status`` is one of :data:`STATUSES`:

* ``down``: a ``critical`` probe failed, errored or timed out (a probe cut by its own
  per-probe timeout reports ``celery_probe_timeout`` at its declared severity);
* ``degraded``: a ``degraded`` probe failed;
* ``unknown``: the evidence itself is missing or broken (no report, no probe ran, a probe
  file did not load, the prober itself was starved of time: ``celery_probe_starved``, or
  a probe's failure proves nothing and says why in ``metadata.no_evidence``);
* ``healthy``: probes ran and none of the above holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal, cast, get_args

from celery_probe.numbers import number
from celery_probe.verdict.flower import add_flower_links
from celery_probe.verdict.markers import DEFAULT_CODE, DEFAULT_SEVERITY
from celery_probe.verdict.model import (
    Beat,
    Endpoint,
    ProbeCounts,
    Queue,
    Reason,
    SeedShape,
    Severity,
    Status,
    TargetsVerdict,
    TaskRuntime,
    TaskRuntimes,
    UnsplitVerdict,
    Verdict,
    Worker,
    empty_verdict,
)

STATUSES: tuple[Status, ...] = get_args(Status)
SEVERITY_ORDER: dict[str, int] = {"critical": 0, "degraded": 1, "error": 2, "info": 3}
# What a failed probe's marker may say; anything else is the default severity.
FAILURE_SEVERITIES: dict[str, Severity] = {"critical": "critical", "degraded": "degraded", "error": "error"}
FAILED_OUTCOMES = ("failed", "error")
RAN_OUTCOMES = ("passed", "failed", "error", "xfailed", "xpassed")
MAX_MESSAGE = 500
STARVED_CODE = "celery_probe_starved"  # a probe the prober could not give a fair chance
TIMEOUT_CODE = "celery_probe_timeout"  # a probe cut by its own (pytest-timeout) timeout, at its severity
# Failures of the whole target rather than of one probe's setup: shown without "setup: ".
TARGET_FAILURE_CODES = frozenset({"celery_app_config_error"})
# What inspect counts per worker, copied into the verdict's workers.
WORKER_COUNTS: tuple[Literal["active", "reserved", "scheduled", "concurrency"], ...] = (
    "active", "reserved", "scheduled", "concurrency")


CONSEQUENCE = "not attempted"  # how a reason that only follows from an earlier failure begins


def is_consequence(reason: Mapping[str, Any]) -> bool:
    """A reason that only follows from an earlier failure (``not attempted: …``)."""
    return str(reason.get("message", "")).startswith(CONSEQUENCE)


def unknown_verdict(message: str, code: str = "celery_probe_no_evidence") -> Verdict:
    """The verdict for a run that produced no usable report."""
    verdict = empty_verdict()
    verdict["reasons"] = [{"code": code, "severity": "error", "probe": None, "message": message[:MAX_MESSAGE]}]
    return verdict


def verdict_from_report(report: Any) -> Verdict:
    """Map a report (as loaded from JSON) to a verdict dict. Never raises."""
    try:
        return _map(report)
    except Exception as exc:  # a hostile report must still give a verdict
        return unknown_verdict(f"report could not be interpreted: {type(exc).__name__}: {exc}")


def _map(report: Any) -> Verdict:
    if not isinstance(report, Mapping):
        return unknown_verdict(f"report is not a JSON object but {type(report).__name__}")
    tests = report.get("tests")
    if not isinstance(tests, list):
        return unknown_verdict("report has no list of tests (not a pytest-json-report report?)")

    verdict = empty_verdict()
    verdict["checked_at"] = _iso(report.get("created"))
    verdict["duration_s"] = number(report.get("duration"))
    meta = report.get("celery_probe")
    if isinstance(meta, Mapping):
        verdict["target"] = _text(meta.get("target"))

    reasons: list[Reason] = []
    measured: dict[str, list[Any]] = {}
    counts = verdict["probes"]
    for test in sorted(tests, key=_causal_position):
        if not isinstance(test, Mapping):
            continue
        outcome = _text(test.get("outcome")) or "unknown"
        bucket: Literal["passed", "failed", "error", "skipped"] = (
            "error" if outcome == "error" else "failed" if outcome == "failed" else
            "passed" if outcome in RAN_OUTCOMES else "skipped"
        )
        counts[bucket] += 1
        metadata = test.get("metadata") if isinstance(test.get("metadata"), Mapping) else {}
        probe = metadata.get("probe") if isinstance(metadata.get("probe"), Mapping) else {}
        data = metadata.get("measured")
        if isinstance(data, Mapping):
            for key, value in data.items():
                measured.setdefault(str(key), []).append(value)
        for item in metadata.get("notes") or []:
            if isinstance(item, Mapping):
                reasons.append(_reason(item.get("code"), "info", test, item.get("message")))
        if outcome in FAILED_OUTCOMES:
            severity: Severity = FAILURE_SEVERITIES.get(_text(probe.get("severity")) or "", DEFAULT_SEVERITY)
            code = probe.get("code") or DEFAULT_CODE
            if metadata.get("starved"):  # the prober's own lack of time: no evidence either way
                code, severity = STARVED_CODE, "error"
            elif _text(metadata.get("no_evidence")):  # a failure that proves nothing, with its own code
                code, severity = metadata["no_evidence"], "error"
            elif metadata.get("timed_out"):  # the probe's own timeout: its severity, its own code
                code = TIMEOUT_CODE
            reason = _reason(code, severity, test, _failure_message(test, phased=code not in TARGET_FAILURE_CODES))
            if str(reason["probe"] or "").startswith("::") and _text(probe.get("file")):
                reason["probe"] = f"{probe['file']}{reason['probe']}"  # a probe file outside the rootdir
            reasons.append(reason)

    for collector in report.get("collectors") or []:
        if isinstance(collector, Mapping) and collector.get("outcome") == "failed":
            where = _text(collector.get("nodeid")) or "collection"
            message = _last_line(collector.get("longrepr")) or "could not be collected"
            reasons.append({"code": "celery_probe_error", "severity": "error", "probe": where,
                            "message": f"probe file did not load: {message}"[:MAX_MESSAGE]})

    _fill_metrics(verdict, measured)
    # Root causes first; "not attempted: …" reasons are consequences of an earlier failure.
    reasons.sort(key=lambda r: (is_consequence(r), SEVERITY_ORDER.get(r["severity"], 9)))
    verdict["reasons"] = reasons
    verdict["status"] = _status(reasons, ran=counts["passed"] + counts["failed"] + counts["error"])
    if verdict["status"] == "unknown" and not any(r["severity"] == "error" for r in reasons):
        reasons.append({"code": "celery_probe_no_evidence", "severity": "error", "probe": None,
                        "message": "no probe ran"})
    if isinstance(meta, Mapping) and meta.get("flower"):
        add_flower_links(verdict, meta.get("flower"))
    return verdict


def _status(reasons: list[Reason], *, ran: int) -> Status:
    severities = {r["severity"] for r in reasons}
    if "critical" in severities:
        return "down"
    if "degraded" in severities:
        return "degraded"
    if "error" in severities or ran == 0:
        return "unknown"
    return "healthy"


def _reason(code: Any, severity: Severity, test: Mapping[str, Any], message: Any) -> Reason:
    return {
        "code": _text(code) or DEFAULT_CODE,
        "severity": severity,
        "probe": _text(test.get("nodeid")),
        "message": (_text(message) or "")[:MAX_MESSAGE],
    }


def _failure_message(test: Mapping[str, Any], *, phased: bool = True) -> str:
    for when in ("setup", "call", "teardown"):
        stage = test.get(when)
        if not isinstance(stage, Mapping) or stage.get("outcome") != "failed":
            continue
        crash = stage.get("crash")
        text = _text(crash.get("message")) if isinstance(crash, Mapping) else None
        text = text or _last_line(stage.get("longrepr")) or "failed"
        text = text.strip().splitlines()[0] if text.strip() else "failed"  # pytest's explanation follows
        if "ProbeTimeout" in text:
            detail = text.split("ProbeTimeout:", 1)[-1].strip()
            return f"timed out: {detail}" if detail else "timed out"
        for prefix in ("Failed: ", "AssertionError: "):
            if text.startswith(prefix):
                text = text[len(prefix):]
        return text if when == "call" or not phased or text.startswith("not attempted") else f"{when}: {text}"
    return "failed"


def _fill_metrics(verdict: Verdict, measured: Mapping[str, list[Any]]) -> None:
    workers: dict[str, Worker] = {}
    for ping in _maps(measured.get("ping")):
        for reply in ping.get("workers") or []:
            if isinstance(reply, Mapping) and reply.get("name"):
                workers.setdefault(str(reply["name"]), {}).update({
                    "latency_ms": number(reply.get("latency_ms")),
                    "last_heartbeat": _text(reply.get("answered_at")),
                })
    activity_seen = False
    for activity in _maps(measured.get("activity")):
        for name, info in activity.items():
            if isinstance(info, Mapping):
                activity_seen = True
                entry = workers.setdefault(str(name), {})
                for key in WORKER_COUNTS:
                    entry[key] = _int(info.get(key))
                entry["queues"] = [str(q) for q in info.get("queues") or []]
    verdict["workers"] = dict(sorted(workers.items()))
    verdict["worker_alive"] = any("last_heartbeat" in w for w in workers.values())
    beats = [beat for w in workers.values() if (beat := w.get("last_heartbeat"))]
    verdict["last_heartbeat"] = max(beats) if beats else None
    if activity_seen:
        verdict["active_tasks"] = sum(w.get("active") or 0 for w in workers.values())
        verdict["scheduled_tasks"] = sum(w.get("scheduled") or 0 for w in workers.values())
        verdict["reserved_tasks"] = sum(w.get("reserved") or 0 for w in workers.values())

    queues: dict[str, Queue] = {}
    for table in _maps(measured.get("queues")):
        for name, info in table.items():
            if isinstance(info, Mapping):
                queues.setdefault(str(name), {}).update({
                    "length": _int(info.get("length")),
                    "by_priority": {str(k): _int(v) for k, v in (info.get("by_priority") or {}).items()},
                    "unacked": _int(info.get("unacked")),
                    "threshold": _int(info.get("threshold")),
                })
                if info.get("exists") is False:
                    queues[str(name)]["exists"] = False  # the broker does not know this queue
                if info.get("broker_consumers") is not None:
                    queues[str(name)]["consumers"] = _int(info.get("broker_consumers"))
    for table in _maps(measured.get("consumers")):
        for name, names in table.items():
            if isinstance(names, list):
                queue = queues.setdefault(str(name), {})
                queue["consumer_names"] = [str(n) for n in names]
                queue["consumers"] = max(len(names), queue.get("consumers") or 0)
    for table in _maps(measured.get("backlog")):
        for name, info in table.items():
            if isinstance(info, Mapping) and isinstance(info.get("by_task"), Mapping):
                queue = queues.setdefault(str(name), {})
                counts = {str(task): _int(count) for task, count in info["by_task"].items()}
                queue["backlog_by_task"] = {task: n for task, n in counts.items() if n is not None}
                queue["backlog_sampled"] = _int(info.get("sampled"))
    latencies: list[float] = []
    for table in _maps(measured.get("roundtrip")):
        for name, info in table.items():
            if isinstance(info, Mapping):
                latency = number(info.get("latency_ms"))
                queues.setdefault(str(name), {})["roundtrip_ms"] = latency
                if latency is not None:
                    latencies.append(latency)
    for table in _maps(measured.get("sla")):
        for name, info in table.items():
            if isinstance(info, Mapping):
                breach = info.get("breach")
                queues.setdefault(str(name), {}).update({
                    "sla_ms": number(info.get("sla_ms")), "sla_breach": breach if isinstance(breach, bool) else None})
    verdict["queues"] = dict(sorted(queues.items()))
    for delayed in _maps(measured.get("delayed")):
        verdict["delayed_messages"] = _int(delayed.get("messages"))
    lengths = [length for q in queues.values() if isinstance(length := q.get("length"), int)]
    verdict["queue_length"] = sum(lengths) if lengths else None
    verdict["roundtrip_ms"] = max(latencies) if latencies else None
    # Passed on as the endpoint probe recorded them.
    endpoints = [cast(Endpoint, dict(e)) for value in measured.get("endpoint") or []
                 for e in (value if isinstance(value, list) else [value]) if isinstance(e, Mapping)]
    if endpoints:
        verdict["endpoints"] = endpoints
    ticks = _maps(measured.get("beat"))
    if ticks:
        verdict["beat"] = _beat(ticks[-1])
    windows = _maps(measured.get("task_runtimes"))
    if windows:
        verdict["task_runtimes"] = _task_runtimes(windows[-1])


def _task_runtimes(info: Mapping[str, Any]) -> TaskRuntimes:
    """Runtimes per task type seen in the events window, each against its SLA."""
    tasks: dict[str, TaskRuntime] = {}
    raw = info.get("tasks")
    for name, entry in (raw.items() if isinstance(raw, Mapping) else ()):
        if isinstance(entry, Mapping):
            tasks[str(name)] = {
                "count": _int(entry.get("count")),
                "failed": _int(entry.get("failed")),
                "p50_ms": number(entry.get("p50_ms")),
                "p95_ms": number(entry.get("p95_ms")),
                "max_ms": number(entry.get("max_ms")),
                "sla_ms": number(entry.get("sla_ms")),
                "breach": entry.get("breach") is True,
            }
    return {"window_s": number(info.get("window_s")), "task_events": _int(info.get("task_events")),
            "unnamed": _int(info.get("unnamed")), "tasks": dict(sorted(tasks.items()))}


def _beat(info: Mapping[str, Any]) -> Beat:
    """The beat tick as measured: its age against the store's clock, and redbeat's keys."""
    beat: Beat = {
        "last_tick_age_s": number(info.get("age_s")),
        "interval_s": number(info.get("interval_s")),
        "grace": number(info.get("grace")),
        "worker": _text(info.get("worker")),
        "store": _text(info.get("store")),
        "key": _text(info.get("key")),
    }
    red = info.get("redbeat")
    if isinstance(red, Mapping):
        beat["redbeat"] = {
            "lock_ttl_s": number(red.get("lock_ttl_s")),
            "entries": _int(red.get("entries")),
            "next_entry": _text(red.get("next_entry")),
            "overdue_s": number(red.get("overdue_s")),
            "error": _text(red.get("error")),
        }
    return beat


def _maps(values: Any) -> list[Mapping[str, Any]]:
    return [v for v in values or [] if isinstance(v, Mapping)]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    found = number(value)
    return None if found is None else int(found)


def _iso(value: Any) -> str | None:
    seconds = number(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def _last_line(value: Any) -> str | None:
    if isinstance(value, list) and value:
        value = value[-1]
    if not isinstance(value, str):
        return None
    lines = [line.strip() for line in value.strip().splitlines() if line.strip()]
    if not lines:
        return None
    for line in reversed(lines):
        if line.startswith("E "):
            return line[2:].strip()
    return lines[-1]


def seed_shape(verdict: Mapping[str, Any]) -> SeedShape:
    """The six keys of the original ``get_celery_health`` contract."""
    keys = ("worker_alive", "active_tasks", "scheduled_tasks", "queue_length", "last_heartbeat", "status")
    return cast(SeedShape, {key: verdict.get(key) for key in keys})  # a verdict read back may lack some


STATUS_RANK = {"down": 0, "degraded": 1, "unknown": 2, "healthy": 3}


def overall_status(statuses: list[Status]) -> Status:
    """The worst of several targets' statuses (down, then degraded, unknown, healthy)."""
    if not statuses:
        return "unknown"
    return min(statuses, key=lambda s: STATUS_RANK.get(s, 2))


def verdicts_by_target(report: Any) -> TargetsVerdict | UnsplitVerdict:
    """Map a report of several targets to one verdict per target plus an overall one.

    Each probe carries its target in ``metadata.probe.target``; the tests of each target
    are mapped exactly as a single-target report would be. Never raises.
    """
    try:
        return _by_target(report)
    except Exception as exc:  # a hostile report must still give a verdict
        return {**unknown_verdict(f"report could not be interpreted: {type(exc).__name__}: {exc}"), "targets": {}}


def _by_target(report: Any) -> TargetsVerdict | UnsplitVerdict:
    if not isinstance(report, Mapping) or not isinstance(report.get("tests"), list):
        return {**verdict_from_report(report), "targets": {}}
    groups: dict[str, list[Any]] = {}
    meta = report.get("celery_probe") if isinstance(report.get("celery_probe"), Mapping) else {}
    for name in meta.get("targets") or []:
        groups.setdefault(str(name), [])
    for test in report["tests"]:
        metadata = test.get("metadata") if isinstance(test, Mapping) else None
        probe = metadata.get("probe") if isinstance(metadata, Mapping) else None
        name = probe.get("target") if isinstance(probe, Mapping) else None
        groups.setdefault(str(name) if isinstance(name, str) else "", []).append(test)
    targets: dict[str, Verdict] = {}
    for name, tests in groups.items():
        part = {key: value for key, value in report.items() if key not in ("tests", "collectors", "celery_probe")}
        part["tests"] = tests
        verdict = verdict_from_report(part)
        verdict["duration_s"] = _probe_seconds(tests)
        target_meta = (meta.get("target_details") or {}).get(name) if isinstance(meta.get("target_details"), Mapping) else None
        if isinstance(target_meta, Mapping):
            verdict["target"] = _text(target_meta.get("target"))
            if target_meta.get("flower"):
                add_flower_links(verdict, target_meta.get("flower"))
        targets[name] = verdict
    run_wide = verdict_from_report({**report, "tests": [], "celery_probe": {}})
    errors = [r for r in run_wide["reasons"] if r["code"] == "celery_probe_error"]
    reasons: list[Reason] = [{**reason, "target": name} for name, verdict in targets.items() for reason in verdict["reasons"]]
    reasons.sort(key=lambda r: (is_consequence(r), SEVERITY_ORDER.get(r["severity"], 9)))
    statuses: list[Status] = [v["status"] for v in targets.values()] + (["unknown"] if errors else [])
    counts: ProbeCounts = {
        "passed": sum(v["probes"]["passed"] for v in targets.values()),
        "failed": sum(v["probes"]["failed"] for v in targets.values()),
        "error": sum(v["probes"]["error"] for v in targets.values()),
        "skipped": sum(v["probes"]["skipped"] for v in targets.values()),
    }
    return {
        "status": overall_status(statuses),
        "targets": targets,
        "reasons": errors + reasons,
        "checked_at": run_wide["checked_at"],
        "duration_s": run_wide["duration_s"],
        "probes": counts,
    }


def _probe_seconds(tests: list[Any]) -> float | None:
    """Time spent in one target's probes (setup, call and teardown of each)."""
    total = 0.0
    for test in tests:
        for when in ("setup", "call", "teardown"):
            stage = test.get(when) if isinstance(test, Mapping) else None
            seconds = number(stage.get("duration")) if isinstance(stage, Mapping) else None
            total += seconds or 0.0
    return round(total, 6) if tests else None


def _causal_position(test: Any) -> float:
    """Where a probe ran in causal order (reports from parallel workers arrive in any order)."""
    metadata = test.get("metadata") if isinstance(test, Mapping) else None
    probe = metadata.get("probe") if isinstance(metadata, Mapping) else None
    order = number(probe.get("order")) if isinstance(probe, Mapping) else None
    return order if order is not None else float("inf")

"""The verdict model (celery_probe.verdict.model) declares exactly what the mapper emits.

Every verdict the mapper builds, from the captured reports and from a report that exercises
every measurement, is walked key by key against the TypedDicts: an undeclared key, a
value of the wrong type or a missing required key fails, naming its path. The walk also
records which declared keys were seen, so a key the model declares but nothing emits fails
too. The JSON Schema generated from the model (what serve's OpenAPI document publishes)
must accept the same verdicts and only tighten the schema that used to be written by hand,
and docs/probes.md's verdict table must name the model's keys.
"""

from __future__ import annotations

import copy
import json
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import jsonschema_rs  # schemathesis's validator
import pytest

from celery_probe.present.ops_alerts import get_ops_alerts
from celery_probe.serve.app import openapi_document
from celery_probe.verdict import model
from celery_probe.verdict.mapper import (
    STATUSES,
    seed_shape,
    unknown_verdict,
    verdict_from_report,
    verdicts_by_target,
)
from celery_probe.verdict.model import (  # the typing names as the model has them (3.10: typing_extensions)
    CeleryHealth,
    HealthDocument,
    HealthzDocument,
    NotRequired,
    OpsAlertsDocument,
    Required,
    SeedShape,
    TargetsVerdict,
    UnsplitVerdict,
    Verdict,
    empty_verdict,
    get_type_hints,
    is_typeddict,
    json_schema,
)

ROOT = Path(__file__).resolve().parents[2]
REPORTS = sorted((ROOT / "tests" / "reports").glob("*.json"))
FLOWER = "https://ops:secret@flower.example/f/"


# ------------------------------------------------------------------------------ the walk

MODEL_TYPES = [value for value in vars(model).values() if is_typeddict(value)]


def owner(tp: Any, key: str) -> str:
    """The TypedDict that declares ``key`` for ``tp``: the smallest one with the key whose keys ``tp`` has.

    TypedDicts keep no bases at run time; this maps an inherited key (UnsplitVerdict's
    ``beat``) to where it is declared (Verdict's), so coverage is counted once per key.
    """
    keys = set(get_type_hints(tp))
    candidates = [t for t in MODEL_TYPES if key in get_type_hints(t) and set(get_type_hints(t)) <= keys]
    return min(candidates, key=lambda t: (len(get_type_hints(t)), t.__name__)).__name__


def walk(value: Any, tp: Any, path: str = "$", seen: set[tuple[str, str]] | None = None) -> list[str]:
    """Where ``value`` does not fit ``tp`` (empty: it fits); ``seen`` collects (class, key) met."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return walk(value, args[0], path, seen)
    if origin in (NotRequired, Required):
        return walk(value, args[0], path, seen)
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, not an object ({tp.__name__})"]
        hints = get_type_hints(tp, include_extras=True)
        problems = [f"{path}.{key}: not declared in {tp.__name__}" for key in value if key not in hints]
        problems += [f"{path}.{key}: required by {tp.__name__}, missing"
                     for key in tp.__required_keys__ if key not in value]
        for key, item in value.items():
            if key in hints:
                if seen is not None:
                    seen.add((owner(tp, key), key))
                problems += walk(item, hints[key], f"{path}.{key}", seen)
        return problems
    if origin in (Union, types.UnionType):
        attempts = []
        for arg in args:
            met: set[tuple[str, str]] = set()
            attempts.append(walk(value, arg, path, met))
            if not attempts[-1]:
                if seen is not None:
                    seen |= met
                return []
        return [f"{path}: fits no member of {tp}: " + " | ".join("; ".join(a[:2]) for a in attempts)]
    if origin is Literal:
        known = any(type(value) is type(arg) and value == arg for arg in args)
        return [] if known else [f"{path}: {value!r} not in {args}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, not a list"]
        return [problem for i, item in enumerate(value) for problem in walk(item, args[0], f"{path}[{i}]", seen)]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, not an object"]
        return [problem for key, item in value.items()
                for problem in ([f"{path}: key {key!r} is not a string"] if not isinstance(key, str) else [])
                + walk(item, args[1], f"{path}[{key!r}]", seen)]
    if tp is type(None) or tp is None:
        return [] if value is None else [f"{path}: {value!r}, not null"]
    if tp is float:  # an int is a float to the type checker, a bool is not
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = type(value) is tp
    return [] if ok else [f"{path}: {value!r} is not {tp.__name__}"]


def fits(value: Any, tp: Any, seen: set[tuple[str, str]] | None = None) -> None:
    problems = walk(value, tp, seen=seen)
    assert not problems, "\n".join(problems[:20])


def declared(tp: Any, out: set[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
    """Every (class, key) reachable from ``tp``."""
    out = set() if out is None else out
    origin, args = get_origin(tp), get_args(tp)
    if is_typeddict(tp):
        for key, hint in get_type_hints(tp, include_extras=True).items():
            if (owner(tp, key), key) not in out:
                out.add((owner(tp, key), key))
                declared(hint, out)
    for arg in args if origin is not Literal else ():
        declared(arg, out)
    return out


# ------------------------------------------------------------------------------ verdicts to walk


def real_reports() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in REPORTS]


def probe_result(nodeid: str, outcome: str, measured: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"nodeid": nodeid, "outcome": outcome,
                             "metadata": {**metadata, **({"measured": measured} if measured else {})}}
    if outcome == "failed":
        entry["call"] = {"outcome": "failed", "duration": 0.01,
                         "crash": {"message": "Failed: worker1@host did not answer"}}
    return entry


def every_measurement() -> dict[str, Any]:
    """A report in which every measurement the mapper reads was taken, some probes failed and Flower is set."""
    measured = {
        "ping": {"workers": [{"name": "worker1@host", "latency_ms": 3.5, "answered_at": "2026-11-24T12:10:40+00:00"},
                             {"name": "worker2@host", "latency_ms": 4, "answered_at": "2026-11-24T12:10:41+00:00"}]},
        "activity": {"worker1@host": {"active": 1, "reserved": 0, "scheduled": 2, "concurrency": 4,
                                      "queues": ["celery", "bulk"]},
                     "worker3@host": {"active": 0, "reserved": 0, "scheduled": 0, "concurrency": 1, "queues": []}},
        "queues": {"celery": {"length": 3, "by_priority": {"0": 3}, "unacked": 1, "threshold": 100,
                              "broker_consumers": 2},
                   "gone": {"length": 0, "by_priority": {}, "unacked": 0, "threshold": 100, "exists": False}},
        "consumers": {"celery": ["worker1@host"], "bulk": []},
        "backlog": {"celery": {"by_task": {"proj.add": 2, "proj.mul": 1}, "sampled": 3}},
        "roundtrip": {"celery": {"latency_ms": 7.25}, "bulk": {"latency_ms": None}},
        "sla": {"celery": {"sla_ms": 2000.0, "breach": False}},
        "delayed": {"messages": 4},
        "endpoint": [{"url": "https://app.example/health", "ok": True, "http_status": 200, "status": "ok",
                      "latency_ms": 12.5, "error": None}],
        "beat": {"age_s": 1.5, "interval_s": 60.0, "grace": 2.0, "worker": "worker1@host", "store": "broker",
                 "key": "celery-probe:beat:last-tick",
                 "redbeat": {"lock_ttl_s": 12.0, "entries": 2, "next_entry": "nightly", "overdue_s": -3.0,
                             "error": None}},
        "task_runtimes": {"window_s": 3.0, "task_events": 10, "unnamed": 1,
                          "tasks": {"proj.add": {"count": 5, "failed": 0, "p50_ms": 1.0, "p95_ms": 2.0,
                                                 "max_ms": 2.5, "sla_ms": 1000.0, "breach": False}}},
    }
    return {
        "created": 1764000000.0, "duration": 0.5,
        "celery_probe": {"target": "app proj on redis://127.0.0.1:6379/0", "flower": FLOWER},
        "tests": [
            probe_result("probes/test_workers.py::test_workers", "passed", measured,
                 notes=[{"code": "celery_roundtrip_unconfirmed", "message": "no backend"}],
                 probe={"order": 1}),
            probe_result("probes/test_workers.py::test_unresponsive", "failed",
                 probe={"severity": "degraded", "code": "celery_worker_unresponsive", "order": 2}),
            probe_result("probes/test_queues.py::test_high", "failed",
                 probe={"severity": "degraded", "code": "celery_queue_high", "order": 3}),
            {"nodeid": "probes/test_x.py::test_skipped", "outcome": "skipped"},
        ],
        "collectors": [{"nodeid": "probes/test_broken.py", "outcome": "failed", "longrepr": "E   SyntaxError: x"}],
    }


def targets_report() -> dict[str, Any]:
    """``run --targets`` with two targets: one healthy with Flower, one down, and a probe file that did not load."""
    one = every_measurement()
    tests = []
    for name, source in (("main", one["tests"]), ("edge", real_reports()[0]["tests"])):
        for entry in copy.deepcopy(source):
            metadata = entry.setdefault("metadata", {})
            metadata.setdefault("probe", {})["target"] = name
            tests.append(entry)
    return {
        "created": 1764000000.0, "duration": 1.0, "tests": tests, "collectors": one["collectors"],
        "celery_probe": {"targets": ["main", "edge"],
                         "target_details": {"main": {"target": "app main", "flower": FLOWER},
                                            "edge": {"target": "app edge"}}},
    }


def single_verdicts() -> list[Verdict]:
    hostile = [None, [], {"tests": 3}, {"tests": [1, {"outcome": "failed", "metadata": {"probe": {"severity": 9}}}]}]
    return ([verdict_from_report(r) for r in real_reports()] + [verdict_from_report(every_measurement())]
            + [verdict_from_report(r) for r in hostile] + [unknown_verdict("x"), empty_verdict()])


# ------------------------------------------------------------------------------ the model fits the mapper


class TestMapperFitsTheModel:
    """Whatever the mapper emits is declared, with its type, and what is required is there."""

    @pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
    def test_real_reports(self, path):
        fits(verdict_from_report(json.loads(path.read_text())), Verdict)

    def test_every_measurement(self):
        verdict = verdict_from_report(every_measurement())
        fits(verdict, Verdict)
        assert {"links", "beat", "endpoints", "task_runtimes", "delayed_messages"} <= set(verdict)

    def test_through_json(self):
        """What verdict.json holds, read back, still fits (floats stay floats, no tuple becomes a list)."""
        for verdict in single_verdicts():
            fits(json.loads(json.dumps(verdict)), Verdict)

    def test_unreadable_reports(self):
        for verdict in single_verdicts():
            fits(verdict, Verdict)

    def test_targets(self):
        verdict = verdicts_by_target(targets_report())
        fits(verdict, TargetsVerdict)
        assert verdict["reasons"] and any("target" in r for r in verdict["reasons"])
        assert any("target" not in r for r in verdict["reasons"])  # the probe file that did not load
        for path in REPORTS:
            fits(verdicts_by_target(json.loads(path.read_text())), TargetsVerdict)

    def test_targets_of_no_report_is_unsplit(self):
        for report in (None, {"tests": "no"}):
            fits(verdicts_by_target(report), UnsplitVerdict)

    def test_derived_documents(self):
        for verdict in single_verdicts():
            fits(seed_shape(verdict), SeedShape)
            fits(get_ops_alerts(verdict), OpsAlertsDocument)
        document = get_ops_alerts(verdict_from_report(every_measurement()))
        assert any("link" in alert for alert in document["alerts"])

    def test_every_declared_key_is_emitted(self):
        """No key is declared that the mapper never writes: the model is no wish list."""
        seen: set[tuple[str, str]] = set()
        fits(verdict_from_report(every_measurement()), Verdict, seen)
        fits(verdicts_by_target(targets_report()), TargetsVerdict, seen)
        fits(verdicts_by_target(None), UnsplitVerdict, seen)
        fits(get_ops_alerts(verdict_from_report(every_measurement())), OpsAlertsDocument, seen)
        expected = declared(Verdict) | declared(TargetsVerdict) | declared(UnsplitVerdict) | declared(OpsAlertsDocument)
        assert sorted(expected - seen) == []

    def test_the_walk_catches_drift(self):
        """The walk is no rubber stamp: an extra key, a wrong type, a missing key each fail."""
        verdict = verdict_from_report(every_measurement())
        for broken, where in (
            ({**verdict, "age": 1}, "$.age: not declared"),
            ({**verdict, "queue_length": "3"}, "$.queue_length"),
            ({**verdict, "worker_alive": 1}, "$.worker_alive"),
            ({key: value for key, value in verdict.items() if key != "probes"}, "$.probes: required"),
            ({**verdict, "queues": {"celery": {"lenght": 3}}}, "lenght: not declared in Queue"),
            ({**verdict, "reasons": [{**verdict["reasons"][0], "severity": "fatal"}]}, "$.reasons[0].severity"),
        ):
            problems = walk(broken, Verdict)
            assert any(where in problem for problem in problems), (where, problems)

    def test_statuses_are_the_models(self):
        assert STATUSES == get_args(model.Status)


# ------------------------------------------------------------------------------ the schema


def validator(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft202012Validator(schema)


class TestJsonSchema:
    """json_schema turns the TypedDicts into JSON Schema, which real verdicts satisfy."""

    def test_shapes(self):
        assert json_schema(int | None) == {"type": ["integer", "null"]}
        assert json_schema(model.Status) == {"type": "string", "enum": list(STATUSES)}
        assert json_schema(Literal[False]) == {"type": "boolean", "const": False}
        assert json_schema(list[str]) == {"type": "array", "items": {"type": "string"}}
        assert json_schema(dict[str, float]) == {"type": "object", "additionalProperties": {"type": "number"}}
        assert json_schema(Annotated[float, {"minimum": 0}]) == {"type": "number", "minimum": 0}
        schema = json_schema(HealthzDocument)
        assert schema["required"] == ["status", "age_s", "checked_at"] and schema["additionalProperties"] is False
        reason = json_schema(Verdict)["properties"]["reasons"]["items"]
        assert reason["required"] == ["code", "severity", "probe", "message"]
        assert set(reason["properties"]) == {"code", "severity", "probe", "message", "link", "target"}
        with pytest.raises(TypeError):
            json_schema(set[int])

    def test_components_are_shared(self):
        components: dict[str, Any] = {}
        assert json_schema(HealthDocument, components) == {"$ref": "#/components/schemas/HealthDocument"}
        assert {"HealthDocument", "Reason", "Queue", "Worker", "Beat", "RedBeat", "Links"} <= set(components)
        assert components["HealthDocument"]["properties"]["reasons"]["items"] == {"$ref": "#/components/schemas/Reason"}

    def test_real_verdicts_validate(self):
        single = validator(json_schema(Verdict))
        for verdict in single_verdicts():
            single.validate(json.loads(json.dumps(verdict)))
        validator(json_schema(TargetsVerdict)).validate(json.loads(json.dumps(verdicts_by_target(targets_report()))))
        alerts = validator(json_schema(OpsAlertsDocument))
        for verdict in single_verdicts():
            alerts.validate(json.loads(json.dumps(get_ops_alerts(verdict))))

    def test_schema_rejects_drift(self):
        single = validator(json_schema(Verdict))
        verdict = json.loads(json.dumps(verdict_from_report(every_measurement())))
        assert not single.is_valid({**verdict, "surprise": 1})
        assert not single.is_valid({**verdict, "queues": {"celery": {"length": "3"}}})

    def test_openapi_bodies_validate_served_documents(self):
        document = openapi_document("/health", "/alerts", "/healthz", "/metrics")
        schemas = document["components"]["schemas"]

        def body(path: str, code: str = "200") -> Any:
            ref = document["paths"][path]["get"]["responses"][code]["content"]["application/json"]["schema"]
            return validator({**ref, "components": document["components"]})

        verdict = json.loads(json.dumps(verdict_from_report(every_measurement())))
        body("/health").validate({"age_s": 1.5, "produced_at": "2026-11-24T12:10:40.000+00:00",
                                  "interval_s": 15.0, **verdict})
        assert not body("/health").is_valid({"age_s": -1, "produced_at": None, "interval_s": 15.0, **verdict})
        assert not body("/health").is_valid({"age_s": 1, "produced_at": None, "interval_s": 0, **verdict})
        body("/healthz", "503").validate({"status": "down", "age_s": None, "checked_at": None})
        body("/alerts").validate(json.loads(json.dumps(get_ops_alerts(verdict))))
        assert set(schemas) >= {"HealthDocument", "HealthzDocument", "OpsAlertsDocument", "CeleryHealth", "OpsAlert"}
        json.dumps(document)  # served as JSON

    def test_only_tightens_the_hand_written_schema(self):
        """Each key the former hand-written OpenAPI schema described keeps its type and stays required."""
        generated = {name: json_schema(tp) for name, tp in
                     (("verdict", HealthDocument), ("healthz", HealthzDocument), ("alerts", OpsAlertsDocument),
                      ("health", CeleryHealth))}
        for name, old in HAND_WRITTEN.items():
            new = generated[name]
            assert set(old["required"]) <= set(new["required"]), name
            for key, schema in old["properties"].items():
                for keyword in ("type", "enum"):
                    if keyword in schema:
                        assert new["properties"][key][keyword] == schema[keyword], (name, key, keyword)
        for verdict in single_verdicts():  # and what the new one accepts, the old one did
            document = json.loads(json.dumps({"age_s": 0.5, "produced_at": None, "interval_s": 15.0, **verdict}))
            validator(HAND_WRITTEN["verdict"]).validate(document)


_NULLABLE_STRING = {"type": ["string", "null"]}
_STATUS = {"type": "string", "enum": ["healthy", "degraded", "down", "unknown"]}
_REASON = {"type": "object", "required": ["code", "severity", "message"], "properties": {
    "code": {"type": "string"}, "severity": {"type": "string", "enum": ["critical", "degraded", "error", "info"]},
    "probe": _NULLABLE_STRING, "message": {"type": "string"}, "link": {"type": "string"}}}
_SEED = {"status": _STATUS, "worker_alive": {"type": "boolean"}, "active_tasks": {"type": ["integer", "null"]},
         "scheduled_tasks": {"type": ["integer", "null"]}, "queue_length": {"type": ["integer", "null"]},
         "last_heartbeat": _NULLABLE_STRING}
HAND_WRITTEN = {  # serve's OpenAPI bodies as they were written by hand, before the model
    "verdict": {"type": "object",
                "required": [*_SEED, "age_s", "produced_at", "interval_s", "reasons", "checked_at", "queues", "workers"],
                "properties": {**_SEED, "age_s": {"type": ["number", "null"], "minimum": 0},
                               "produced_at": _NULLABLE_STRING, "interval_s": {"type": "number", "exclusiveMinimum": 0},
                               "reserved_tasks": {"type": ["integer", "null"]},
                               "roundtrip_ms": {"type": ["number", "null"]},
                               "queues": {"type": "object"}, "workers": {"type": "object"},
                               "reasons": {"type": "array", "items": _REASON}, "checked_at": _NULLABLE_STRING,
                               "duration_s": {"type": ["number", "null"]}, "target": _NULLABLE_STRING,
                               "links": {"type": "object"}, "task_runtimes": {"type": "object"}}},
    "healthz": {"type": "object", "required": ["status", "age_s", "checked_at"], "additionalProperties": False,
                "properties": {"status": _STATUS, "age_s": {"type": ["number", "null"]}, "checked_at": _NULLABLE_STRING}},
    "alerts": {"type": "object", "required": ["alerts", "celery_health"], "properties": {
        "alerts": {"type": "array", "items": {"type": "object", "required": ["code", "severity", "source", "message"]}},
        "celery_health": {"type": "object"}}},
    "health": {"type": "object", "required": [*_SEED, "reasons", "checked_at"],
               "properties": {**_SEED, "reasons": {"type": "array", "items": _REASON}, "checked_at": _NULLABLE_STRING}},
}


# ------------------------------------------------------------------------------ the docs


def verdict_table() -> dict[str, str]:
    """docs/probes.md's table under "The verdict": each key named in the first column, with its meaning."""
    text = (ROOT / "docs" / "probes.md").read_text()
    start = text.index("\n## The verdict\n")
    section = text[start:text.index("\n## ", start + 1)]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 2:
            for key in re.findall(r"`([a-z_]+)`", cells[0]):
                rows[key] = cells[1]
    return rows


class TestDocs:
    def test_the_table_names_every_key_of_the_verdict(self):
        assert sorted(verdict_table()) == sorted(get_type_hints(Verdict))

    @pytest.mark.parametrize("key, part", [("queues", model.Queue), ("workers", model.Worker),
                                           ("endpoints", model.Endpoint), ("beat", model.Beat),
                                           ("task_runtimes", model.TaskRuntimes), ("probes", model.ProbeCounts)])
    def test_a_nested_row_names_every_key_of_its_part(self, key, part):
        keys = set(get_type_hints(part)) | (set(get_type_hints(model.RedBeat)) if part is model.Beat else set())
        named = set(re.findall(r"`([a-z_0-9]+)`", verdict_table()[key]))
        assert sorted(keys - named) == [], f"docs/probes.md's {key} row does not name these keys"

    def test_the_reasons_row_names_every_key_of_a_reason(self):
        row = verdict_table()["reasons"]
        named = set(re.findall(r"`([a-z_]+)`", row)) | set(re.findall(r"[{,]\s*([a-z_]+)", row))
        assert sorted(set(get_type_hints(model.Reason)) - named) == []

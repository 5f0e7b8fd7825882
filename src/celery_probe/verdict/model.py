"""The verdict's shape, declared once: TypedDicts for every document the verdict becomes.

A verdict stays a plain ``dict`` (it is written as JSON, read back from files and HTTP, and
compared by tests), so the model is made of TypedDicts: they cost nothing at run time and
change nothing on the wire, while the mapper, the renderers and the type checker agree on
every key. :func:`empty_verdict` is the verdict before any evidence, and :func:`json_schema`
turns a TypedDict into the JSON Schema that ``serve``'s OpenAPI document publishes, so the
published schema cannot drift from what the mapper builds.

No ``from __future__ import annotations`` here: the annotations are evaluated when each
class is defined, which is what makes ``__required_keys__`` (and so ``NotRequired``) exact
at run time for :func:`json_schema` and the tests that walk a verdict against the model.
"""

import sys
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union, get_args, get_origin

if sys.version_info >= (3, 11):
    from typing import NotRequired, Required, TypedDict, get_type_hints, is_typeddict
else:  # typing.TypedDict of 3.10 knows no NotRequired
    from typing_extensions import NotRequired, Required, TypedDict, get_type_hints, is_typeddict
if TYPE_CHECKING:  # typing has it from 3.13 on; only the type checker reads it
    from typing_extensions import TypeIs

Status = Literal["healthy", "degraded", "down", "unknown"]
Severity = Literal["critical", "degraded", "error", "info"]
AlertSeverity = Literal["critical", "medium", "low"]

class Reason(TypedDict):
    """Why the verdict is what it is: one failed probe, a note, or missing evidence."""

    code: str
    severity: Severity
    probe: str | None  # the probe's node id; None when no probe is to blame
    message: str
    link: NotRequired[Annotated[str, {
        "description": "the Flower page for this reason (with --flower-url), credentials removed"}]]
    # In a --targets verdict, the target the reason is about; run-wide errors (a probe file
    # that did not load) name none.
    target: NotRequired[str]


class ProbeCounts(TypedDict):
    """How many probes passed (xfailed and xpassed count as ran), failed, errored or were skipped."""

    passed: int
    failed: int
    error: int
    skipped: int


class Worker(TypedDict, total=False):
    """One worker: its ping reply and what ``inspect`` said (a worker may have only one of them)."""

    latency_ms: float | None
    last_heartbeat: str | None  # present once the worker answered ping
    active: int | None
    reserved: int | None
    scheduled: int | None
    concurrency: int | None
    queues: list[str]


class Queue(TypedDict, total=False):
    """One watched queue, from every measurement that saw it (each key comes with its measurement)."""

    length: int | None
    by_priority: dict[str, int | None]
    unacked: int | None
    threshold: int | None
    exists: Literal[False]  # only when the broker does not know the queue
    consumers: int | None
    consumer_names: list[str]
    backlog_by_task: dict[str, int]
    backlog_sampled: int | None
    roundtrip_ms: float | None
    sla_ms: float | None
    sla_breach: bool | None


class Endpoint(TypedDict):
    """What one ``--endpoint`` URL answered."""

    url: str
    ok: bool
    http_status: int | None
    status: str | None
    latency_ms: float | None
    error: str | None


class RedBeat(TypedDict):
    """redbeat's own keys, when beat stores its schedule with redbeat."""

    lock_ttl_s: float | None
    entries: int | None
    next_entry: str | None
    overdue_s: float | None
    error: str | None


class Beat(TypedDict):
    """The beat tick as measured (``--beat-interval``): its age against the store's clock."""

    last_tick_age_s: float | None
    interval_s: float | None
    grace: float | None
    worker: str | None
    store: str | None
    key: str | None
    redbeat: NotRequired[RedBeat]


class TaskRuntime(TypedDict):
    """One task type's runtimes in the events window, against its ``--task-sla``."""

    count: int | None
    failed: int | None
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    sla_ms: float | None
    breach: bool


class TaskRuntimes(TypedDict):
    """What the ``--events-window`` saw, per task type."""

    window_s: float | None
    task_events: int | None
    unnamed: int | None
    tasks: dict[str, TaskRuntime]


class Links(TypedDict):
    """Flower's pages (``--flower-url``), without credentials."""

    flower: str
    workers_page: str
    queues: str
    workers: dict[str, str]


class Verdict(TypedDict):
    """The verdict of one target: ``reports/verdict.json``, ``--format json``, the health document."""

    status: Status
    worker_alive: bool
    active_tasks: int | None
    scheduled_tasks: int | None
    reserved_tasks: int | None
    queue_length: int | None
    last_heartbeat: str | None
    queues: dict[str, Queue]
    workers: dict[str, Worker]
    roundtrip_ms: float | None
    reasons: list[Reason]
    checked_at: str | None
    duration_s: float | None
    target: str | None
    probes: ProbeCounts
    delayed_messages: NotRequired[int | None]
    endpoints: NotRequired[list[Endpoint]]
    beat: NotRequired[Beat]
    task_runtimes: NotRequired[Annotated[TaskRuntimes, {
        "description": "with --events-window: runtimes per task type against --task-sla"}]]
    links: NotRequired[Annotated[Links, {
        "description": "Flower's pages (with --flower-url), credentials removed"}]]


class TargetsVerdict(TypedDict):
    """The verdict of ``run --targets``: the worst status, each target's own verdict, all reasons."""

    status: Status
    targets: dict[str, Verdict]
    reasons: list[Reason]
    checked_at: str | None
    duration_s: float | None
    probes: ProbeCounts


class UnsplitVerdict(Verdict):
    """A ``--targets`` report that could not be split by target: its own verdict, with no targets."""

    targets: dict[str, Verdict]


AnyVerdict: TypeAlias = Union[Verdict, TargetsVerdict]  # what a run of one or several targets gives


def is_targets_verdict(verdict: AnyVerdict) -> "TypeIs[TargetsVerdict]":
    """Whether ``verdict`` is of ``run --targets`` (an :class:`UnsplitVerdict` is one too)."""
    return isinstance(verdict.get("targets"), Mapping)


class HealthDocument(Verdict):
    """``serve``'s health route: the latest verdict, its age and when it was produced."""

    age_s: Annotated[float | None, {"minimum": 0, "description": "age of the verdict; null before the first run"}]
    produced_at: str | None
    interval_s: Annotated[float, {"exclusiveMinimum": 0}]


class HealthzDocument(TypedDict):
    """``serve``'s load-balancer route: the status alone."""

    status: Status
    age_s: float | None
    checked_at: str | None


class SeedShape(TypedDict):
    """The six keys of the original ``get_celery_health`` contract."""

    worker_alive: bool
    active_tasks: int | None
    scheduled_tasks: int | None
    queue_length: int | None
    last_heartbeat: str | None
    status: Status


class CeleryHealth(SeedShape):
    """The verdict as an ops-alerts document carries it."""

    reasons: list[Reason]
    checked_at: str | None


class OpsAlert(TypedDict):
    """One alert of an ops-alerts document."""

    code: str
    severity: AlertSeverity
    source: str
    message: str
    link: NotRequired[Annotated[str, {
        "description": "the Flower page for this alert (with --flower-url), credentials removed"}]]


class OpsAlertsDocument(TypedDict):
    """``{"alerts": [...], "celery_health": {...}}``, what an operations dashboard polls."""

    alerts: list[OpsAlert]
    celery_health: CeleryHealth


class FleetHealthDocument(TypedDict):
    """``serve --targets``' overall health route: the worst status and each target's health document."""

    status: Status
    targets: dict[str, HealthDocument]


class FleetHealthzTarget(TypedDict):
    """One target's line in the overall ``/healthz`` of ``serve --targets``."""

    status: Status
    age_s: float | None
    checked_at: str | None


class FleetHealthzDocument(TypedDict):
    """``serve --targets``' load-balancer route: the worst status, and each target's."""

    status: Status
    targets: dict[str, FleetHealthzTarget]


class FleetAlert(OpsAlert):
    """One alert of the overall ops-alerts document of ``serve --targets``: it names its target."""

    target: str


class FleetOpsAlertsDocument(TypedDict):
    """``serve --targets``' overall ops-alerts: every target's alerts, and each target's health."""

    alerts: list[FleetAlert]
    celery_health: dict[str, CeleryHealth]


def empty_verdict() -> Verdict:
    """The verdict before any evidence: ``unknown``, nothing measured, no reason yet."""
    return {
        "status": "unknown",
        "worker_alive": False,
        "active_tasks": None,
        "scheduled_tasks": None,
        "reserved_tasks": None,
        "queue_length": None,
        "last_heartbeat": None,
        "queues": {},
        "workers": {},
        "roundtrip_ms": None,
        "reasons": [],
        "checked_at": None,
        "duration_s": None,
        "target": None,
        "probes": {"passed": 0, "failed": 0, "error": 0, "skipped": 0},
    }


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def json_schema(
    tp: Any, components: dict[str, Any] | None = None, ref: str = "#/components/schemas/",
) -> dict[str, Any]:
    """The JSON Schema of ``tp``: a TypedDict, or any type the model's annotations use.

    A TypedDict becomes a closed object (``additionalProperties: false``) whose required keys
    are those not marked ``NotRequired``; ``Annotated[T, {...}]`` adds the dict's keywords
    (a description, a minimum). With ``components``, each TypedDict is stored there under
    its class name and referred to by ``ref + name``, as OpenAPI's ``components/schemas``
    wants; without, everything is inlined.
    """
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        schema = dict(json_schema(args[0], components, ref))
        for extra in tp.__metadata__:
            if isinstance(extra, Mapping):
                schema.update(extra)
        return schema
    if origin in (NotRequired, Required):
        return json_schema(args[0], components, ref)
    if is_typeddict(tp):
        return _object_schema(tp, components, ref)
    if tp in _JSON_TYPES:
        return {"type": _JSON_TYPES[tp]}
    if origin is Literal:
        kinds = {_JSON_TYPES[type(value)] for value in args}
        schema = {"type": kinds.pop()} if len(kinds) == 1 else {}
        return {**schema, "const": args[0]} if len(args) == 1 else {**schema, "enum": list(args)}
    if origin in (Union, types.UnionType):
        members = [json_schema(arg, components, ref) for arg in args]
        if all(set(member) == {"type"} for member in members):  # int | None -> ["integer", "null"]
            return {"type": [member["type"] for member in members]}
        return {"anyOf": members}
    if origin is list:
        return {"type": "array", "items": json_schema(args[0], components, ref)}
    if origin is dict:
        return {"type": "object", "additionalProperties": json_schema(args[1], components, ref)}
    raise TypeError(f"no JSON schema for {tp!r}")


def _object_schema(tp: Any, components: dict[str, Any] | None, ref: str) -> dict[str, Any]:
    name = tp.__name__
    if components is not None and name in components:
        return {"$ref": ref + name}
    if components is not None:
        components[name] = {}  # claimed before the walk, so a type that refers to itself ends
    hints = get_type_hints(tp, include_extras=True)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {key: json_schema(hint, components, ref) for key, hint in hints.items()},
    }
    required = [key for key in hints if key in tp.__required_keys__]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    if components is None:
        return schema
    components[name] = schema
    return {"$ref": ref + name}

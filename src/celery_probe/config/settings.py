"""Settings: one typed object built once from flags, environment and ``pyproject.toml``.

Precedence, highest first (the same order pytest-timeout documents):

1. command-line options (``celery-probe run`` flags or ``pytest --celery-*`` options);
2. environment variables ``CELERY_PROBE_*``;
3. the ``[tool.celery-probe]`` table of the nearest ``pyproject.toml`` (from the working
   directory upwards);
4. built-in defaults (and, for the broker only, Celery's own ``CELERY_BROKER_URL``).

Every value is validated where it is read, and a bad one raises
:class:`~celery_probe.errors.ProbeUsageError` naming the value and its source.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from celery_probe.config import durations
from celery_probe.errors import ProbeUsageError
from celery_probe.config.urls import redact_bad_url, redact_url, url_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "CELERY_PROBE_"
# The broker's last fallback, Celery's own variable: Celery's choice, not a broker the operator named.
CELERY_BROKER_URL_SOURCE = "environment variable CELERY_BROKER_URL"
FORMATS = ("text", "json", "nagios")

# Transport names kombu knows; checked lazily against kombu itself when importable.
_FALLBACK_BROKER_SCHEMES = (
    "amqp", "amqps", "pyamqp", "librabbitmq", "redis", "rediss", "sentinel", "memory",
    "filesystem", "sqs", "sqla", "sqlalchemy", "mongodb", "zookeeper", "consul", "etcd",
    "qpid", "confluentkafka", "azurestoragequeues", "azureservicebus", "gcpubsub", "pyro",
)
_FALLBACK_BACKEND_SCHEMES = (
    "rpc", "redis", "rediss", "sentinel", "db", "database", "cache", "mongodb", "file",
    "elasticsearch", "cassandra", "couchbase", "couchdb", "dynamodb", "s3", "gs", "azureblockblob",
    "arangodb", "consul", "cosmosdbsql", "disabled", "filesystem",
)


@dataclass(frozen=True)
class Settings:
    """Everything one probe run needs to know. Built by :func:`resolve_settings`."""

    app: str | None = None
    broker: str | None = None
    backend: str | None = None
    queues: tuple[str, ...] = ()
    expect_workers: int | None = None
    endpoints: tuple[str, ...] = ()
    deadline: float = 5.0
    queue_threshold: int = 100
    queue_thresholds: Mapping[str, int] = field(default_factory=dict)
    roundtrip_slow: float = 1.0
    roundtrip_task: str = "celery.accumulate"
    roundtrip_max_queues: int = 20
    ping_window: float = 0.3
    report_dir: Path = Path("reports")
    format: str = "text"
    probes: tuple[Path, ...] = ()
    backlog_sample: int = 100
    beat_interval: float | None = None
    beat_grace: float = 2.0
    beat_key: str = "celery-probe:beat:last-tick"
    expect_worker_names: tuple[str, ...] = ()
    expect_consumers: tuple[tuple[str, str], ...] = ()
    on_down: tuple[str, ...] = ()  # argv of the auto-remediation command (celery_probe.remediation)
    on_down_after: float = 300.0
    on_down_every: float = 1800.0
    on_down_timeout: float = 60.0
    on_down_dry_run: bool = False
    on_down_codes: tuple[str, ...] = ()  # empty: any down verdict without celery_broker_unreachable
    flower_url: str | None = None  # may carry credentials: links use celery_probe.verdict.flower.flower_base
    sla: tuple[tuple[str, float], ...] = ()  # (queue, seconds): round-trip SLA per queue
    task_sla: tuple[tuple[str, float], ...] = ()  # (fnmatch pattern, seconds), first match wins
    events_window: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def threshold_for(self, queue: str) -> int:
        """The backlog at which ``queue`` counts as high."""
        return self.queue_thresholds.get(queue, self.queue_threshold)

    def sla_for(self, queue: str) -> float | None:
        """The round-trip SLA of ``queue`` in seconds, if it has one."""
        return next((seconds for name, seconds in self.sla if name == queue), None)

    def describe_target(self) -> str:
        """A printable name for the target, with credentials masked."""
        if self.app:
            return f"app {self.app}"
        return redact_url(self.broker or "")

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


# ---------------------------------------------------------------- parsers, each one line of error


def _fail(name: str, raw: Any, why: str, source: str) -> ProbeUsageError:
    shown = redact_url(raw) if isinstance(raw, str) else raw
    return ProbeUsageError(f"invalid {name} {shown!r}: {why} (from {source})")


def _as_list(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        items = [raw]
    out: list[str] = []
    for item in items:
        out.extend(part.strip() for part in str(item).split(",") if part.strip())
    return out


def _parse_str(name: str, raw: Any, source: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _fail(name, raw, "must be a string", source)
    value = raw.strip()
    return value or None


def _parse_float(lo: float, hi: float) -> Callable[[str, Any, str], float]:
    def parse(name: str, raw: Any, source: str) -> float:
        try:
            value = float(raw) if not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            raise _fail(name, raw, "is not a number", source) from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise _fail(name, raw, f"must be between {lo:g} and {hi:g} seconds", source)
        return value

    return parse


def _parse_int(name: str, raw: Any, source: str, *, lo: int = 1, hi: int = 10**9) -> int:
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        value = int(str(raw).strip()) if not isinstance(raw, (int, float)) else int(raw)
    except (TypeError, ValueError):
        raise _fail(name, raw, "is not a whole number", source) from None
    if not lo <= value <= hi:
        raise _fail(name, raw, f"must be between {lo} and {hi}", source)
    return value


def _parse_expect_workers(name: str, raw: Any, source: str) -> int | None:
    if raw is None or raw == "":
        return None
    return _parse_int(name, raw, source, lo=1, hi=100_000)


def _broker_schemes() -> tuple[str, ...]:
    try:
        from kombu.transport import TRANSPORT_ALIASES
    except ImportError:  # pragma: no cover
        return _FALLBACK_BROKER_SCHEMES
    return tuple({*TRANSPORT_ALIASES, *_FALLBACK_BROKER_SCHEMES})


def _backend_schemes() -> tuple[str, ...]:
    try:
        from celery.app.backends import BACKEND_ALIASES
    except ImportError:  # pragma: no cover
        return _FALLBACK_BACKEND_SCHEMES
    return tuple({*BACKEND_ALIASES, *_FALLBACK_BACKEND_SCHEMES})


def _parse_url(kind: str) -> Callable[[str, Any, str], str | None]:
    def parse(name: str, raw: Any, source: str) -> str | None:
        value = _parse_str(name, raw, source)
        if value is None:
            return None
        schemes = _broker_schemes() if kind == "broker" else _backend_schemes()
        problem = url_problem(value, schemes)
        if problem:
            raise _fail(name, redact_bad_url(value), problem, source)
        return value

    return parse


def _parse_app(name: str, raw: Any, source: str) -> str | None:
    value = _parse_str(name, raw, source)
    if value is None:
        return None
    module, _, attr = value.partition(":")
    ident_ok = all(part.isidentifier() for part in module.split(".")) and (
        not attr or all(part.isidentifier() for part in attr.split("."))
    )
    if not ident_ok:
        raise _fail(name, value, "is not a MODULE[:ATTRIBUTE] path", source)
    return value


def _parse_queues(name: str, raw: Any, source: str) -> tuple[str, ...]:
    queues = _as_list(raw)
    for queue in queues:
        if any(ord(ch) < 32 for ch in queue):
            raise _fail(name, queue, "contains a control character", source)
    return tuple(dict.fromkeys(queues))


def _parse_endpoints(name: str, raw: Any, source: str) -> tuple[str, ...]:
    urls = tuple(dict.fromkeys(_as_list(raw)))
    for url in urls:
        problem = url_problem(url, ("http", "https"))
        if problem:
            raise _fail(name, redact_bad_url(url), problem, source)
    return urls


def _parse_format(name: str, raw: Any, source: str) -> str:
    value = str(raw).strip().lower()
    if value not in FORMATS:
        raise _fail(name, raw, f"must be one of {', '.join(FORMATS)}", source)
    return value


def _parse_path(name: str, raw: Any, source: str) -> Path:
    value = _parse_str(name, raw, source)
    if value is None:
        raise _fail(name, raw, "is empty", source)
    return Path(value).expanduser()


def _parse_paths(name: str, raw: Any, source: str) -> tuple[Path, ...]:
    paths = tuple(Path(p).expanduser() for p in _as_list(raw))
    for path in paths:
        if not path.exists():
            raise _fail(name, str(path), "does not exist", source)
    return paths


def _parse_thresholds(name: str, raw: Any, source: str) -> tuple[int | None, dict[str, int]]:
    """``100``, ``high=500`` or a mix (``100,high=500``); a TOML table maps queue to number."""
    default: int | None = None
    per_queue: dict[str, int] = {}
    items: list[Any]
    if isinstance(raw, Mapping):
        items = [f"{k}={v}" for k, v in raw.items()]
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        items = [raw]
    else:
        items = _as_list(raw)
    for item in items:
        if isinstance(item, str) and "=" in item:
            queue, _, number = item.partition("=")
            if not queue.strip():
                raise _fail(name, item, "has no queue name before '='", source)
            per_queue[queue.strip()] = _parse_int(name, number, source)
        else:
            default = _parse_int(name, item, source)
    return default, per_queue


def _parse_sample(name: str, raw: Any, source: str) -> int:
    return _parse_int(name, raw, source, lo=0, hi=10_000)


def _parse_factor(name: str, raw: Any, source: str) -> float:
    try:
        value = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        raise _fail(name, raw, "is not a number", source) from None
    if not math.isfinite(value) or not 1 <= value <= 1000:
        raise _fail(name, raw, "must be a factor between 1 and 1000", source)
    return value


def _parse_patterns(name: str, raw: Any, source: str) -> tuple[str, ...]:
    patterns = _as_list(raw)
    for pattern in patterns:
        if any(ord(ch) < 32 for ch in pattern):
            raise _fail(name, pattern, "contains a control character", source)
    return tuple(dict.fromkeys(patterns))


def _parse_duration_rules(what: str) -> Callable[[str, Any, str], tuple[tuple[str, float], ...]]:
    """``NAME=DURATION`` items (``celery=2s``); a TOML table maps a name to a duration."""

    def parse(name: str, raw: Any, source: str) -> tuple[tuple[str, float], ...]:
        items = [f"{k}={v}" for k, v in raw.items()] if isinstance(raw, Mapping) else _as_list(raw)
        rules: dict[str, float] = {}
        for item in items:
            key, sep, duration = str(item).partition("=")
            if not sep or not key.strip() or not duration.strip():
                raise _fail(name, item, f"must be {what}=DURATION (e.g. {what.lower()}=2s)", source)
            if any(ord(ch) < 32 for ch in str(item)):
                raise _fail(name, item, "contains a control character", source)
            try:
                seconds = durations.parse_duration(duration)
            except ValueError as exc:
                raise _fail(name, item, f"duration {duration.strip()!r} {exc}", source) from None
            if not 0 < seconds <= 86_400:
                raise _fail(name, item, "duration must be more than 0 and at most a day", source)
            rules[key.strip()] = seconds
        return tuple(rules.items())

    return parse


def _parse_consumers(name: str, raw: Any, source: str) -> tuple[tuple[str, str], ...]:
    """``QUEUE=PATTERN`` items; a TOML table maps a queue to a pattern or a list of them."""
    items: list[Any]
    if isinstance(raw, Mapping):
        items = [f"{q}={p}" for q, ps in raw.items() for p in (ps if isinstance(ps, (list, tuple)) else [ps])]
    else:
        items = _as_list(raw)
    rules: list[tuple[str, str]] = []
    for item in items:
        queue, sep, pattern = str(item).partition("=")
        if not sep or not queue.strip() or not pattern.strip():
            raise _fail(name, item, "must be QUEUE=PATTERN", source)
        if any(ord(ch) < 32 for ch in str(item)):
            raise _fail(name, item, "contains a control character", source)
        rules.append((queue.strip(), pattern.strip()))
    return tuple(dict.fromkeys(rules))


def _parse_flower_url(name: str, raw: Any, source: str) -> str | None:
    """Flower's address; it may carry credentials, so an error shows it masked."""
    from celery_probe.verdict.flower import flower_url_problem

    value = _parse_str(name, raw, source)
    if value is None:
        return None
    problem = flower_url_problem(value)
    if problem:
        raise _fail(name, redact_bad_url(value), problem, source)
    return value


def _parse_wait(lo: float, hi: float) -> Callable[[str, Any, str], float]:
    """A length of time that may be zero (``0s``, ``90s``, ``5m``, ``1.5h``; a bare number is seconds)."""

    def parse(name: str, raw: Any, source: str) -> float:
        try:
            value = durations.parse_duration(raw)
        except ValueError as exc:
            raise _fail(name, raw, str(exc), source) from None
        if not lo <= value <= hi:
            raise _fail(name, raw, f"must be between {lo:g} and {hi:g} seconds", source)
        return value

    return parse


def _parse_bool(name: str, raw: Any, source: str) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _fail(name, raw, "must be true or false (1/0, yes/no, on/off)", source)


def _parse_command(name: str, raw: Any, source: str) -> tuple[str, ...]:
    """An argv list: a string split as a POSIX shell would (``shlex``), or a TOML list.

    It is run without a shell, so the executable must exist now: a typo fails at start,
    in one line, rather than on the night the workers go down.
    """
    if isinstance(raw, str):
        try:
            argv = shlex.split(raw)
        except ValueError as exc:
            raise _fail(name, raw, f"cannot be split into arguments ({exc})", source) from None
    elif isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
        argv = list(raw)
    else:
        raise _fail(name, raw, "must be a command line or a list of strings", source)
    if not argv or not argv[0].strip():
        raise _fail(name, raw, "is empty", source)
    shown = " ".join(argv)
    if any(ch in arg for arg in argv for ch in "\x00\n\r"):
        raise _fail(name, shown, "contains a NUL or a line break", source)
    executable = argv[0]
    if os.sep in executable:
        if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
            raise _fail(name, shown, f"{executable!r} is not an executable file", source)
    elif shutil.which(executable) is None:
        raise _fail(name, shown, f"executable {executable!r} not found on PATH", source)
    return tuple(argv)


@dataclass(frozen=True)
class _Spec:
    name: str
    env: str
    flag: str
    parse: Callable[[str, Any, str], Any]


SPECS: tuple[_Spec, ...] = (
    _Spec("app", "APP", "-A/--app", _parse_app),
    _Spec("broker", "BROKER", "-b/--broker", _parse_url("broker")),
    _Spec("backend", "BACKEND", "--backend", _parse_url("backend")),
    _Spec("queues", "QUEUES", "-Q/--queue", _parse_queues),
    _Spec("expect_workers", "EXPECT_WORKERS", "--expect-workers", _parse_expect_workers),
    _Spec("endpoints", "ENDPOINTS", "--endpoint", _parse_endpoints),
    _Spec("deadline", "DEADLINE", "--deadline", _parse_float(0.1, 3600)),
    _Spec("queue_threshold", "QUEUE_THRESHOLD", "--queue-threshold", _parse_thresholds),
    _Spec("roundtrip_slow", "ROUNDTRIP_SLOW", "--roundtrip-slow", _parse_float(0.001, 3600)),
    _Spec("roundtrip_task", "ROUNDTRIP_TASK", "--roundtrip-task", _parse_str),
    _Spec("roundtrip_max_queues", "ROUNDTRIP_MAX_QUEUES", "--roundtrip-max-queues",
          lambda name, raw, source: _parse_int(name, raw, source, lo=0, hi=1_000_000)),
    _Spec("ping_window", "PING_WINDOW", "--ping-window", _parse_float(0.01, 60)),
    _Spec("report_dir", "REPORT_DIR", "--report-dir", _parse_path),
    _Spec("format", "FORMAT", "--format", _parse_format),
    _Spec("probes", "PROBES", "--probes", _parse_paths),
    _Spec("backlog_sample", "BACKLOG_SAMPLE", "--backlog-sample", _parse_sample),
    _Spec("beat_interval", "BEAT_INTERVAL", "--beat-interval", _parse_float(0.1, 604_800)),
    _Spec("beat_grace", "BEAT_GRACE", "--beat-grace", _parse_factor),
    _Spec("beat_key", "BEAT_KEY", "--beat-key", _parse_str),
    _Spec("expect_worker_names", "EXPECT_WORKER_NAMES", "--expect-worker-name", _parse_patterns),
    _Spec("expect_consumers", "EXPECT_CONSUMERS", "--expect-consumer", _parse_consumers),
    _Spec("on_down", "ON_DOWN", "--on-down", _parse_command),
    _Spec("on_down_after", "ON_DOWN_AFTER", "--on-down-after", _parse_wait(0, 30 * 86400)),
    _Spec("on_down_every", "ON_DOWN_EVERY", "--on-down-every", _parse_wait(0, 30 * 86400)),
    _Spec("on_down_timeout", "ON_DOWN_TIMEOUT", "--on-down-timeout", _parse_wait(0.1, 86400)),
    _Spec("on_down_dry_run", "ON_DOWN_DRY_RUN", "--on-down-dry-run", _parse_bool),
    _Spec("on_down_codes", "ON_DOWN_CODES", "--on-down-codes", _parse_patterns),
    _Spec("flower_url", "FLOWER_URL", "--flower-url", _parse_flower_url),
    _Spec("sla", "SLA", "--sla", _parse_duration_rules("QUEUE")),
    _Spec("task_sla", "TASK_SLA", "--task-sla", _parse_duration_rules("PATTERN")),
    _Spec("events_window", "EVENTS_WINDOW", "--events-window", _parse_wait(0.1, 3600)),
)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
# In pyproject.toml, keys are written with dashes or underscores; queue_thresholds is a table.
_PYPROJECT_ALIASES = {"queue_thresholds": "queue_threshold", "queue": "queues", "endpoint": "endpoints",
                      "expect_worker_name": "expect_worker_names", "expect_consumer": "expect_consumers",
                      "slas": "sla", "task_slas": "task_sla"}


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_pyproject_table(path: Path | None) -> tuple[dict[str, Any], str]:
    """The ``[tool.celery-probe]`` table of ``path`` and its source label."""
    if path is None:
        return {}, ""
    label = f"[tool.celery-probe] in {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProbeUsageError(f"cannot read {path}: {exc}") from None
    table = data.get("tool", {}).get("celery-probe", {})
    return normalize_table(table, label), label


def normalize_table(table: Any, label: str) -> dict[str, Any]:
    """Setting names of a TOML table (dashes or underscores), each checked to exist."""
    if not isinstance(table, dict):
        raise ProbeUsageError(f"{label} is not a table")
    merged: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        name = _PYPROJECT_ALIASES.get(name, name)
        if name not in SPEC_BY_NAME:
            raise ProbeUsageError(f"unknown setting {key!r} ({label})")
        if name == "queue_threshold" and name in merged:
            merged[name] = _merge_threshold_items(merged[name], value)
        else:
            merged[name] = value
    return merged


RUN_WIDE = ("report_dir", "format", "probes")  # settings of the run, not of one target
# Auto-remediation: acted on by `celery-probe run` alone (never by serve or get_celery_health).
REMEDIATION = ("on_down", "on_down_after", "on_down_every", "on_down_timeout", "on_down_dry_run", "on_down_codes")
def _merge_threshold_items(a: Any, b: Any) -> list[str]:
    def items(raw: Any) -> list[str]:
        if isinstance(raw, Mapping):
            return [f"{k}={v}" for k, v in raw.items()]
        return [str(x) for x in (raw if isinstance(raw, (list, tuple)) else [raw])]

    return items(a) + items(b)


def resolve_settings(
    cli: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    pyproject: Path | None | bool = True,
    cli_labels: Mapping[str, str] | None = None,
    ignore: Collection[str] = (),
) -> Settings:
    """Build :class:`Settings` from CLI values, the environment and ``pyproject.toml``.

    ``cli`` maps setting names to raw values (None or an empty tuple means "not given").
    ``pyproject=True`` looks for the nearest file; a path uses that file; False skips it.
    ``cli_labels`` lets the pytest plugin name its own option spelling in error messages.
    ``ignore`` names settings a command never uses: they keep their defaults and are not
    read or checked (``on-down`` naming a tool missing on the serving host must not stop
    ``serve``, which never remediates).
    """
    cli = cli or {}
    environ = os.environ if environ is None else environ
    if pyproject is True:
        table, table_label = read_pyproject_table(find_pyproject())
    elif pyproject:
        table, table_label = read_pyproject_table(Path(pyproject))  # type: ignore[arg-type]
    else:
        table, table_label = {}, ""
    labels = cli_labels or {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SPECS:
        if spec.name in ignore:
            continue
        layers: list[tuple[Any, str]] = [
            (cli.get(spec.name), labels.get(spec.name, spec.flag)),
            (environ.get(ENV_PREFIX + spec.env), f"environment variable {ENV_PREFIX}{spec.env}"),
            (table.get(spec.name), table_label),
        ]
        if spec.name == "broker":
            layers.append((environ.get("CELERY_BROKER_URL"), CELERY_BROKER_URL_SOURCE))
        for raw, source in layers:
            if raw is None or raw == () or raw == [] or (isinstance(raw, str) and not raw.strip()):
                continue
            values[spec.name] = spec.parse(spec.name.replace("_", "-"), raw, source)
            sources[spec.name] = source
            break

    threshold = values.pop("queue_threshold", (None, {}))
    default_threshold, per_queue = threshold
    if default_threshold is not None:
        values["queue_threshold"] = default_threshold
    values["queue_thresholds"] = per_queue
    _check_events_window(values, sources)
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known}, sources=sources)


EVENTS_RESERVE = 1.0  # seconds of the deadline kept for the other probes beside the events window


def _check_events_window(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """The events window must leave the other probes time within the deadline.

    The window is spent listening after every other probe; a window as long as the
    deadline would leave nothing for the broker, ping and round trip before it.
    """
    window = values.get("events_window")
    deadline = values.get("deadline", Settings.deadline)
    if window is None:
        if values.get("task_sla"):
            raise ProbeUsageError(
                f"task-sla needs an events window to measure runtimes: add --events-window SECONDS "
                f"(from {sources['task_sla']})"
            )
        return
    if window > deadline - EVENTS_RESERVE:
        raise _fail("events-window", window, f"must leave at least {EVENTS_RESERVE:g}s of the "
                    f"{deadline:g}s deadline to the other probes: raise --deadline to at least "
                    f"{window + EVENTS_RESERVE:g}", sources["events_window"])


def require_target(settings: Settings, where: str = "") -> None:
    """Refuse to run without something to probe."""
    if not settings.app and not settings.broker:
        if where:
            raise ProbeUsageError(f"no app or broker for the target ({where})")
        raise ProbeUsageError(
            "no target: give -A/--app MODULE[:ATTR] or -b/--broker URL "
            f"(or {ENV_PREFIX}APP / {ENV_PREFIX}BROKER, or [tool.celery-probe] in pyproject.toml)"
        )


def as_cli_overrides(**values: Any) -> dict[str, Any]:
    """Drop unset values so they do not shadow lower layers."""
    return {k: v for k, v in values.items() if v not in (None, (), [])}


__all__ = [
    "ENV_PREFIX",
    "FORMATS",
    "SPECS",
    "Settings",
    "as_cli_overrides",
    "find_pyproject",
    "require_target",
    "resolve_settings",
]



"""Settings: one typed object built once from flags, environment and ``pyproject.toml``.

Precedence, highest first (the same order pytest-timeout documents):

1. command-line options (``celery-probe run`` flags or ``pytest --celery-*`` options);
2. environment variables ``CELERY_PROBE_*``;
3. the ``[tool.celery-probe]`` table of the nearest ``pyproject.toml`` (from the working
   directory upwards);
4. built-in defaults (and, for the broker only, Celery's own ``CELERY_BROKER_URL``).

Every value is validated where it is read, and a bad one raises
:class:`~celery_probe.errors.ProbeUsageError` naming the value and its source.

Each setting is declared once, as a :class:`Settings` field made by :func:`setting`; the
flags, the pytest options, the child process's variables and docs/configuration.md are
generated from :data:`SPECS`, so adding a setting is one field (and its sample in
tests/integration/test_settings_spec.py).
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


_PROXIES_OFF = ("off", "false", "no", "0")
_PROXIES_ENV = ("env", "environment", "on", "true", "yes", "1")


def _parse_proxies(name: str, raw: Any, source: str) -> str:
    """``off`` (always direct) or ``env`` (the *_PROXY / NO_PROXY variables); booleans too."""
    value = str(raw).strip().lower()
    if value in _PROXIES_OFF:
        return "off"
    if value in _PROXIES_ENV:
        return "env"
    raise _fail(name, raw, "must be off or env (use the HTTP_PROXY/HTTPS_PROXY/NO_PROXY variables)", source)


def _parse_file(name: str, raw: Any, source: str) -> Path | None:
    value = _parse_str(name, raw, source)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise _fail(name, value, "is not a file", source)
    if not os.access(path, os.R_OK):
        raise _fail(name, value, "cannot be read", source)
    return path


def _parse_env_name(name: str, raw: Any, source: str) -> str | None:
    """The name of an environment variable (its value is a secret, read when a request is sent)."""
    value = _parse_str(name, raw, source)
    if value is None:
        return None
    if not (value.replace("_", "a").isalnum() and value.isascii() and not value[0].isdigit()):
        raise _fail(name, value, "is not an environment variable name (letters, digits, '_')", source)
    if value.upper().startswith(ENV_PREFIX):
        raise _fail(name, value, f"must not start with {ENV_PREFIX}: those variables are settings", source)
    return value


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


def _parse_count(lo: int, hi: int) -> Callable[[str, Any, str], int]:
    def parse(name: str, raw: Any, source: str) -> int:
        return _parse_int(name, raw, source, lo=lo, hi=hi)

    return parse


# ------------------------------------------------------------- the declaration of every setting

# Help sections of ``celery-probe run --help``, in the order the command shows them.
TARGET = "Target"
PROBES = "Probes"
OUTPUT = "Output"
REMEDIATION_SECTION = "Remediation"
HTTP = "Outgoing HTTP"  # celery_probe.net.http: the endpoints, check, webhooks, ingest --post


class _LongFlag:
    """The default pytest spelling of a setting: the same as its long flag."""


_LONG_FLAG = _LongFlag()
_META = "celery_probe.setting"  # the key of a setting's declaration in its field's metadata


def _show(value: Any) -> str:
    """A default as the help text shows it: ``5`` for ``5.0``, ``reports`` for a path."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting(
    default: Any = None,
    *,
    parse: Callable[[str, Any, str], Any],
    help: str,
    section: str,
    flags: tuple[str, ...] = (),
    pytest: str | None | _LongFlag = _LONG_FLAG,
    metavar: str | None = None,
    multiple: bool = False,
    is_flag: bool = False,
    refuse_empty: bool = False,
    show: Callable[[Any], str] = _show,
    aliases: tuple[str, ...] = (),
    param: str | None = None,
    pytest_owner: str | None = None,
) -> Any:
    """A :class:`Settings` field together with everything the front ends need to offer it.

    ``help`` is the one text of the flag, the pytest option and docs/configuration.md;
    ``{default}`` in it is replaced by the default as ``show`` writes it, so no help text
    repeats a number that could drift. The environment variable is ``CELERY_PROBE_`` and the
    upper-case name, the ``pyproject.toml`` key the name with dashes (or underscores, or one
    of ``aliases``). ``flags`` default to ``--NAME-WITH-DASHES``, ``pytest`` to the long flag
    (None: no pytest option), ``param`` (click's keyword) to the name. ``refuse_empty``: an empty flag value is an error rather than
    "unset". ``pytest_owner`` names the plugin that declares the pytest option (pytest-timeout's
    ``--timeout``): it is read, never added a second time.
    """
    declared = {"parse": parse, "help": help, "section": section, "flags": flags,
                "pytest": pytest, "metavar": metavar, "multiple": multiple, "is_flag": is_flag,
                "refuse_empty": refuse_empty, "show": show, "aliases": aliases, "param": param,
                "pytest_owner": pytest_owner}
    return field(default=default, metadata={_META: declared})


@dataclass(frozen=True)
class SettingSpec:
    """One setting as every front end offers it: flag, pytest option, variable, key and help.

    Built from the :func:`setting` declaration of a :class:`Settings` field; the click
    options (:mod:`celery_probe.cli.options`), the pytest options, the child process's
    environment (:mod:`celery_probe.run.child`) and docs/configuration.md are generated
    from these.
    """

    name: str
    default: Any
    parse: Callable[[str, Any, str], Any]
    help: str
    section: str
    flags: tuple[str, ...]
    env: str
    pytest: str | None
    metavar: str | None
    multiple: bool
    is_flag: bool
    refuse_empty: bool
    show: Callable[[Any], str]
    aliases: tuple[str, ...]
    param: str
    pytest_owner: str | None = None  # another plugin declares the pytest option

    @property
    def flag(self) -> str:
        """The flags as error messages name them (``-A/--app``)."""
        return "/".join(self.flags)

    @property
    def key(self) -> str:
        """The ``pyproject.toml`` key (underscores are accepted too)."""
        return self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        """The environment variable, ``CELERY_PROBE_*``."""
        return ENV_PREFIX + self.env

    @property
    def pytest_dest(self) -> str:
        """Where pytest stores the option's value in ``config.option`` (empty without one)."""
        return (self.pytest or "").lstrip("-").replace("-", "_")

    @property
    def help_text(self) -> str:
        """The help, its default rendered from the value."""
        return self.help.replace("{default}", self.show(self.default))


def _spec_of(item: Any) -> SettingSpec | None:
    declared = item.metadata.get(_META)
    if declared is None:
        return None
    flags = declared["flags"] or (f"--{item.name.replace('_', '-')}",)
    return SettingSpec(
        name=item.name, default=item.default, parse=declared["parse"], help=declared["help"],
        section=declared["section"], flags=flags, env=item.name.upper(),
        pytest=flags[-1] if declared["pytest"] is _LONG_FLAG else declared["pytest"],
        metavar=declared["metavar"], multiple=declared["multiple"], is_flag=declared["is_flag"],
        refuse_empty=declared["refuse_empty"], show=declared["show"], aliases=declared["aliases"],
        param=declared["param"] or item.name, pytest_owner=declared["pytest_owner"],
    )


@dataclass(frozen=True)
class Settings:
    """Everything one probe run needs to know. Built by :func:`resolve_settings`.

    Each field declared with :func:`setting` is a setting: its declaration is the only
    place that names its flag, pytest option, environment variable, ``pyproject.toml`` key,
    parser, default and help.
    """

    app: str | None = setting(
        parse=_parse_app, section=TARGET, flags=("-A", "--app"), pytest="--celery-app",
        help="Celery app, MODULE[:ATTR] as for celery -A.")
    broker: str | None = setting(
        parse=_parse_url("broker"), section=TARGET, flags=("-b", "--broker"), pytest="--celery-broker",
        help="Broker URL (instead of, or overriding, the app's).")
    backend: str | None = setting(
        parse=_parse_url("backend"), section=TARGET, pytest="--celery-backend",
        help="The workers' own result backend URL (round-trip results are read from it).")
    queues: tuple[str, ...] = setting(
        (), parse=_parse_queues, section=TARGET, flags=("-Q", "--queue"), pytest="--celery-queue",
        multiple=True, aliases=("queue",),
        help="Queue to watch (repeatable or comma-separated). Default: the default queue, task_queues, "
             "every queue task_routes names and every queue a worker consumes.")
    expect_workers: int | None = setting(
        parse=_parse_expect_workers, section=TARGET, metavar="N",
        help="Workers that should answer ping; return as soon as N did.")
    endpoints: tuple[str, ...] = setting(
        (), parse=_parse_endpoints, section=TARGET, flags=("--endpoint",), pytest="--celery-endpoint",
        multiple=True, metavar="URL", aliases=("endpoint",),
        help="HTTP health URL to query (repeatable).")
    deadline: float = setting(
        5.0, parse=_parse_float(0.1, 3600), section=PROBES, pytest="--probe-deadline", metavar="SECONDS",
        help="The whole run answers within this (default {default}).")
    queue_threshold: int = setting(
        100, parse=_parse_thresholds, section=PROBES, multiple=True, metavar="N|QUEUE=N",
        aliases=("queue_thresholds",),
        help="Backlog at which a queue is high (default {default}); QUEUE=N for one queue.")
    queue_thresholds: Mapping[str, int] = field(default_factory=dict)  # the QUEUE=N of queue_threshold
    roundtrip_slow: float = setting(
        1.0, parse=_parse_float(0.001, 3600), section=PROBES, metavar="SECONDS",
        help="A round trip slower than this is degraded (default {default}).")
    roundtrip_task: str = setting(
        "celery.accumulate", parse=_parse_str, section=PROBES, metavar="NAME",
        help="Task sent for the round trip (default {default}).")
    roundtrip_max_queues: int = setting(
        20, parse=_parse_count(0, 1_000_000), section=PROBES, metavar="N",
        help="Round trips per run at most; more queues take turns (default {default}, 0 = all).")
    ping_window: float = setting(
        0.3, parse=_parse_float(0.01, 60), section=PROBES, metavar="SECONDS",
        help="Idle time to wait for more ping replies (default {default}).")
    report_dir: Path = setting(
        Path("reports"), parse=_parse_path, section=OUTPUT, pytest="--probe-report-dir", metavar="DIR",
        help="Where latest.json, verdict.json and history.jsonl go (default {default}).")
    format: str = setting(
        "text", parse=_parse_format, section=OUTPUT, pytest=None, metavar="|".join(FORMATS), param="format_",
        help="Output: text, json or nagios (default {default}).")
    probes: tuple[Path, ...] = setting(
        (), parse=_parse_paths, section=PROBES, pytest=None, multiple=True, metavar="PATH",
        help="Extra probe files or folders (repeatable).")
    backlog_sample: int = setting(
        100, parse=_parse_count(0, 10_000), section=PROBES, metavar="N",
        help="Messages read from each queue head to count waiting tasks by name (default {default}, 0 = off).")
    beat_interval: float | None = setting(
        parse=_parse_float(0.1, 604_800), section=PROBES, metavar="SECONDS",
        help="Check celery beat: its tick (install_beat_tick) runs this often.")
    beat_grace: float = setting(
        2.0, parse=_parse_factor, section=PROBES, metavar="FACTOR",
        help="Beat is stale after interval × FACTOR without a tick (default {default}).")
    beat_key: str = setting(
        "celery-probe:beat:last-tick", parse=_parse_str, section=PROBES, metavar="KEY",
        help="Redis key of the beat tick (default {default}).")
    expect_worker_names: tuple[str, ...] = setting(
        (), parse=_parse_patterns, section=TARGET, flags=("--expect-worker-name",), multiple=True,
        metavar="PATTERN", aliases=("expect_worker_name",),
        help="A worker matching PATTERN (fnmatch, e.g. sync@*) must answer (repeatable).")
    expect_consumers: tuple[tuple[str, str], ...] = setting(
        (), parse=_parse_consumers, section=TARGET, flags=("--expect-consumer",), multiple=True,
        metavar="QUEUE=PATTERN", aliases=("expect_consumer",),
        help="Workers matching PATTERN consume QUEUE, and no others (repeatable).")
    # Auto-remediation (celery_probe.remediation): acted on by `celery-probe run` alone.
    on_down: tuple[str, ...] = setting(
        (), parse=_parse_command, section=REMEDIATION_SECTION, pytest=None, metavar="'CMD ARGS'",
        refuse_empty=True,
        help="Run this command (split like a shell would, run without one) once down has lasted --on-down-after.")
    on_down_after: float = setting(
        300.0, parse=_parse_wait(0, 30 * 86400), section=REMEDIATION_SECTION, pytest=None,
        metavar="DURATION", show=durations.format_duration,
        help="How long down must last before --on-down runs (default {default}; 90s, 1.5h, 250ms).")
    on_down_every: float = setting(
        1800.0, parse=_parse_wait(0, 30 * 86400), section=REMEDIATION_SECTION, pytest=None,
        metavar="DURATION", show=durations.format_duration,
        help="Run --on-down at most once per this (default {default}).")
    on_down_timeout: float = setting(
        60.0, parse=_parse_wait(0.1, 86400), section=REMEDIATION_SECTION, pytest=None,
        metavar="DURATION", show=durations.format_duration,
        help="Kill the command's process group after this (default {default}).")
    on_down_dry_run: bool = setting(
        False, parse=_parse_bool, section=REMEDIATION_SECTION, pytest=None, is_flag=True,
        help="Say and record what --on-down would run, run nothing.")
    on_down_codes: tuple[str, ...] = setting(
        (), parse=_parse_patterns, section=REMEDIATION_SECTION, pytest=None, multiple=True,
        metavar="CODE,...",
        help="Run only when the verdict has one of these reason codes "
             "(default: any down verdict without celery_broker_unreachable).")
    flower_url: str | None = setting(  # may carry credentials: links use verdict.flower.flower_base
        parse=_parse_flower_url, section=OUTPUT, metavar="URL",
        help="Flower's address: verdicts and alerts link to its worker and queue pages (credentials never shown).")
    sla: tuple[tuple[str, float], ...] = setting(  # (queue, seconds): round-trip SLA per queue
        (), parse=_parse_duration_rules("QUEUE"), section=PROBES, multiple=True, metavar="QUEUE=DURATION",
        aliases=("slas",),
        help="Round-trip SLA of a queue, e.g. celery=2s or mail=250ms (repeatable).")
    task_sla: tuple[tuple[str, float], ...] = setting(  # (fnmatch pattern, seconds), first match wins
        (), parse=_parse_duration_rules("PATTERN"), section=PROBES, multiple=True,
        metavar="PATTERN=DURATION", aliases=("task_slas",),
        help="Runtime SLA of task types matching PATTERN (fnmatch), e.g. 'app.sync.*=2m' "
             "(repeatable; needs --events-window).")
    events_window: float | None = setting(
        parse=_parse_wait(0.1, 3600), section=PROBES, metavar="SECONDS",
        help="Listen this long to task events (workers started with -E) for runtimes per task type.")
    http_proxies: str = setting(
        "off", parse=_parse_proxies, section=HTTP, metavar="off|env",
        help="Outgoing HTTP goes direct (off, the default) or through the proxies HTTPS_PROXY/HTTP_PROXY/"
             "NO_PROXY name (env); loopback is always direct.")
    http_ca_file: Path | None = setting(
        parse=_parse_file, section=HTTP, metavar="PATH",
        help="CA certificates (PEM) trusted for https:// (default REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, "
             "else the system's).")
    http_client_cert: Path | None = setting(
        parse=_parse_file, section=HTTP, metavar="PATH",
        help="Client certificate (PEM) for https:// servers that ask for one; the key may be in it.")
    http_client_key: Path | None = setting(
        parse=_parse_file, section=HTTP, metavar="PATH",
        help="Key of --http-client-cert (PEM, unencrypted), when not in the certificate file.")
    http_auth_env: str | None = setting(  # the variable's name; its value is read when a request is sent
        parse=_parse_env_name, section=HTTP, metavar="NAME",
        help="Send variable NAME's value as the Authorization header to endpoints, check and ingest --post "
             "(never to webhooks).")
    timeout: float | None = setting(  # per-probe default; 0 means none, as for pytest-timeout
        parse=_parse_float(0, 86_400), section=PROBES, metavar="SECONDS", pytest_owner="pytest-timeout",
        help="Per-probe timeout: a probe running longer fails as celery_probe_timeout "
             "(default none; a probe's timeout marker wins).")
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


SPECS: tuple[SettingSpec, ...] = tuple(spec for spec in map(_spec_of, fields(Settings)) if spec is not None)
SPEC_BY_NAME = {spec.name: spec for spec in SPECS}
# In pyproject.toml, keys are written with dashes or underscores, and some have a second spelling.
_PYPROJECT_ALIASES = {alias: spec.name for spec in SPECS for alias in spec.aliases}


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


RUN_WIDE = ("report_dir", "format", "probes", "timeout")  # settings of the run, not of one target
# Auto-remediation: acted on by `celery-probe run` alone (never by serve or get_celery_health).
REMEDIATION = tuple(spec.name for spec in SPECS if spec.section == REMEDIATION_SECTION)
# Outgoing HTTP: also read by the commands that probe nothing (check, ingest) and by alert webhooks.
HTTP_CLIENT = tuple(spec.name for spec in SPECS if spec.section == HTTP)


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
    _check_http_client(values, sources)
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


def _check_http_client(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """The HTTP client's files load, so a typo or a wrong file fails at start, in one line.

    An encrypted key is refused here: OpenSSL would otherwise ask for its passphrase on the
    terminal in the middle of a probe run.
    """
    import ssl

    cert, key = values.get("http_client_cert"), values.get("http_client_key")
    if key is not None and cert is None:
        raise ProbeUsageError(f"http-client-key needs http-client-cert, the certificate it belongs to "
                              f"(from {sources['http_client_key']})")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cert is not None:
        try:
            context.load_cert_chain(cert, key, password=lambda: "")
        except (ssl.SSLError, OSError) as exc:
            source = sources["http_client_key" if key is not None else "http_client_cert"]
            raise _fail("http-client-cert", str(cert), f"cannot be loaded{' with key ' + str(key) if key else ''}: "
                        f"{getattr(exc, 'reason', None) or exc} (an encrypted key is not supported)", source) from None
    ca_file = values.get("http_ca_file")
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise _fail("http-ca-file", str(ca_file), f"holds no PEM certificate ({getattr(exc, 'reason', None) or exc})",
                        sources["http_ca_file"]) from None


def resolve_http_client(cli: Mapping[str, Any] | None = None) -> Settings:
    """Settings with only the HTTP client's resolved (flags, environment, pyproject.toml).

    For what sends HTTP without probing anything: ``check``, ``ingest --post`` and alert
    webhooks. The other settings keep their defaults and are not read or checked.
    """
    return resolve_settings(cli, ignore=[spec.name for spec in SPECS if spec.name not in HTTP_CLIENT])


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
    "HTTP_CLIENT",
    "SPECS",
    "SettingSpec",
    "Settings",
    "as_cli_overrides",
    "find_pyproject",
    "require_target",
    "resolve_http_client",
    "resolve_settings",
    "setting",
]



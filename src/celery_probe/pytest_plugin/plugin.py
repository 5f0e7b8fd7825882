"""The pytest plugin: options, the ``probe`` marker, fixtures, the deadline and the report.

It is inert in an ordinary test session. It turns a session into a probe run when
``celery-probe run`` hands it a :class:`~celery_probe.pytest_plugin.session_state.ProbeSession`,
or when a target is given on the pytest command line (``pytest probes/ --celery-app proj``),
from which it builds one. In a probe run it:

* arms the run's single deadline around every setup, call and teardown;
* records each probe's severity and code, and what it measured, in the JSON report;
* leaves the report to the session, which scrubs credentials from it, maps it to a verdict,
  and writes ``latest.json``, ``verdict.json`` and ``history.jsonl`` atomically.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from celery_probe.probing.deadline import Deadline, ProbeTimeout, Starved, alarm
from celery_probe.errors import AppLoadError, ProbeUsageError
from celery_probe.verdict.markers import MARKER_HELP, ProbeMark, probe_mark
from celery_probe.probing.measurements import (
    KnownFailure,
    MeasurementFailed,
    NoEvidence,
    Measurements,
    StarvedFailure,
    UnknownFailure,
)
from celery_probe.config.settings import Settings, resolve_settings
from celery_probe.pytest_plugin.session_state import PLUGIN_NAME, ProbeSession, TargetState, session_of

if TYPE_CHECKING:
    from celery import Celery

TEARDOWN_GRACE = 0.5  # seconds past the deadline that cleanup may take (inside the +1 s slack)

_PYTEST_LABELS = {
    "app": "--celery-app",
    "broker": "--celery-broker",
    "backend": "--celery-backend",
    "queues": "--celery-queue",
    "expect_workers": "--expect-workers",
    "endpoints": "--celery-endpoint",
    "deadline": "--probe-deadline",
    "queue_threshold": "--queue-threshold",
    "roundtrip_slow": "--roundtrip-slow",
    "roundtrip_task": "--roundtrip-task",
    "roundtrip_max_queues": "--roundtrip-max-queues",
    "ping_window": "--ping-window",
    "report_dir": "--probe-report-dir",
    "backlog_sample": "--backlog-sample",
    "beat_interval": "--beat-interval",
    "beat_grace": "--beat-grace",
    "beat_key": "--beat-key",
    "expect_worker_names": "--expect-worker-name",
    "expect_consumers": "--expect-consumer",
    "flower_url": "--flower-url",
    "sla": "--sla",
    "task_sla": "--task-sla",
    "events_window": "--events-window",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("celery-probe", "celery-probe health probes")
    group.addoption("--celery-app", help="Celery app to probe, MODULE[:ATTR] as for celery -A")
    group.addoption("--celery-broker", help="broker URL to probe (instead of, or overriding, the app's)")
    group.addoption("--celery-backend", help="result backend URL for the round trip")
    group.addoption("--celery-queue", action="append", default=[], help="queue to watch (repeatable)")
    group.addoption("--expect-workers", help="number of workers that should answer ping")
    group.addoption("--celery-endpoint", action="append", default=[], help="HTTP health URL to query (repeatable)")
    group.addoption("--probe-deadline", help="seconds the whole probe run may take (default 5)")
    group.addoption("--queue-threshold", action="append", default=[], help="backlog at which a queue is high: N or QUEUE=N")
    group.addoption("--roundtrip-slow", help="seconds above which a round trip counts as slow (default 1)")
    group.addoption("--roundtrip-task", help="task sent for the round trip (default celery.accumulate)")
    group.addoption("--roundtrip-max-queues", help="round trips per run at most; more queues rotate (default 20, 0 = all)")
    group.addoption("--ping-window", help="seconds to wait for further ping replies (default 0.3)")
    group.addoption("--probe-report-dir", help="where latest.json, verdict.json and history.jsonl go")
    group.addoption("--backlog-sample", help="messages read from each queue head to count tasks by name (default 100, 0 = off)")
    group.addoption("--beat-interval", help="check celery beat: seconds between beat ticks (install_beat_tick)")
    group.addoption("--beat-grace", help="beat is stale after interval x this factor without a tick (default 2)")
    group.addoption("--beat-key", help="Redis key of the beat tick (default celery-probe:beat:last-tick)")
    group.addoption("--expect-worker-name", action="append", default=[], help="a worker matching this pattern must answer (repeatable)")
    group.addoption("--expect-consumer", action="append", default=[], help="QUEUE=PATTERN: matching workers consume QUEUE, no others (repeatable)")
    group.addoption("--flower-url", help="Flower's URL: verdicts link to its worker and queue pages")
    group.addoption("--sla", action="append", default=[], help="QUEUE=DURATION: round-trip SLA of a queue, e.g. celery=2s (repeatable)")
    group.addoption("--task-sla", action="append", default=[], help="PATTERN=DURATION: runtime SLA of matching task types (repeatable)")
    group.addoption("--events-window", help="seconds to listen to task events for runtimes per task type")
    group.addoption("--celery-targets", help="a targets file: probe every [targets.NAME] it lists (use with -n for parallel)")


def _probe_mode_requested(config: pytest.Config) -> bool:
    opt = config.option
    return bool(
        getattr(opt, "celery_app", None) or getattr(opt, "celery_broker", None)
        or getattr(opt, "celery_targets", None)
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if session_of(config) is None:  # celery-probe run's session is registered already
        if not _probe_mode_requested(config):
            return
        config.pluginmanager.register(_session_from_options(config), PLUGIN_NAME)
    # The report is produced in memory and written by us, atomically (pytest-json-report
    # writes with a plain open(), which a concurrent reader can catch half-written).
    config.option.json_report = True
    config.option.json_report_file = None


def _session_from_options(config: pytest.Config) -> ProbeSession:
    from celery_probe.probing.app import build_app

    deadline_started = Deadline(5.0)
    opt = config.option
    cli = {
        "app": opt.celery_app,
        "broker": opt.celery_broker,
        "backend": opt.celery_backend,
        "queues": tuple(opt.celery_queue),
        "expect_workers": opt.expect_workers,
        "endpoints": tuple(opt.celery_endpoint),
        "deadline": opt.probe_deadline,
        "queue_threshold": tuple(opt.queue_threshold),
        "roundtrip_slow": opt.roundtrip_slow,
        "roundtrip_task": opt.roundtrip_task,
        "roundtrip_max_queues": opt.roundtrip_max_queues,
        "ping_window": opt.ping_window,
        "report_dir": opt.probe_report_dir,
        "backlog_sample": opt.backlog_sample,
        "beat_interval": opt.beat_interval,
        "beat_grace": opt.beat_grace,
        "beat_key": opt.beat_key,
        "expect_worker_names": tuple(opt.expect_worker_name),
        "expect_consumers": tuple(opt.expect_consumer),
        "flower_url": opt.flower_url,
        "sla": tuple(opt.sla),
        "task_sla": tuple(opt.task_sla),
        "events_window": opt.events_window,
    }
    try:
        if opt.celery_targets:
            from celery_probe.config.targets import load_targets

            overrides = {k: v for k, v in cli.items() if v not in (None, (), [])}
            named = load_targets(Path(opt.celery_targets), overrides)
            run_wide = resolve_settings(overrides, cli_labels=_PYTEST_LABELS)
            # Apps are built where the probes run: in each xdist worker, at first use.
            targets = {name: TargetState(name, settings) for name, settings in named.items()}
            return ProbeSession(run_wide, targets)
        settings = resolve_settings(cli, cli_labels=_PYTEST_LABELS)
        app, app_error = build_app(settings), None
    except ProbeUsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    except AppLoadError as exc:  # a verdict, not a usage error: every probe says why
        app, app_error = None, exc
    deadline = Deadline(settings.deadline, since=deadline_started)
    return ProbeSession.one_target(settings, app, deadline, app_error=app_error)


# ------------------------------------------------------------------------- fixtures


def _require_session(request: pytest.FixtureRequest) -> ProbeSession:
    session = session_of(request.config)
    if session is None:
        pytest.skip("not a celery-probe run: give --celery-app or --celery-broker")
    return session


@pytest.fixture(scope="session")
def probe_target(request: pytest.FixtureRequest) -> TargetState:
    """The target these probes run against (parametrized by name with several targets)."""
    return _require_session(request).targets[getattr(request, "param", "")]


@pytest.fixture(scope="session")
def probe_run(probe_target: TargetState) -> Iterator[Measurements]:
    """The target's shared, lazily measured state (broker, workers, queues, round trips).

    Celery's URL variables are withheld while the probes run, so the URLs pinned on the app
    (:func:`celery_probe.probing.app.pin_urls`) are the ones probed.
    """
    from celery_probe.probing.app import celery_url_variables_withheld

    with celery_url_variables_withheld():
        measurements = Measurements(probe_target.settings, probe_target.ensure_app(), probe_target.ensure_deadline())
        probe_target.measurements = measurements
        yield measurements
        try:
            with alarm(TEARDOWN_GRACE, "cleanup"):
                measurements.close()
        except ProbeTimeout:
            pass


@pytest.fixture(scope="session")
def probe_settings(probe_target: TargetState) -> Settings:
    """The resolved :class:`~celery_probe.config.settings.Settings` of this target."""
    return probe_target.settings


@pytest.fixture(scope="session")
def probe_deadline(probe_target: TargetState) -> Deadline:
    """The target's deadline: ``probe_deadline.remaining()`` seconds are left for everything."""
    return probe_target.ensure_deadline()


@pytest.fixture(scope="session")
def celery_app(probe_run: Measurements) -> Celery:
    """The Celery app under test, with every connection bounded by the deadline."""
    return probe_run.app


@pytest.fixture
def record(json_metadata: dict[str, Any]) -> dict[str, Any]:
    """A dict whose contents land in this probe's ``metadata.measured`` in the report."""
    measured: dict[str, Any] = json_metadata.setdefault("measured", {})
    return measured


@pytest.fixture
def note(json_metadata: dict[str, Any]) -> Any:
    """``note(code, message)`` adds an informational reason to the verdict."""

    def add(code: str, message: str) -> None:
        json_metadata.setdefault("notes", []).append({"code": code, "message": message})

    return add


@pytest.fixture
def known(request: pytest.FixtureRequest) -> Any:
    """Turn a :class:`KnownFailure` into an immediate failure with its reason.

    A measurement that failed in this very call (:class:`MeasurementFailed`) is this
    probe's own root cause; one that had already failed is a consequence: "not attempted".
    A :class:`~celery_probe.probing.deadline.Starved` measurement, and every consequence of one,
    fails as no evidence at all: the verdict says ``unknown`` (``celery_probe_starved``).
    So does a :class:`NoEvidence` one, with its own code (workers that refuse unsigned
    messages: ``celery_workers_refuse_unsigned``), and its consequences.
    """
    item = request.node

    class _Known:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
            if isinstance(exc, Starved):
                mark_starved(item, str(exc))
                pytest.fail(str(exc), pytrace=False)
            if isinstance(exc, NoEvidence):
                mark_unknown(item, exc.code)
                pytest.fail(str(exc), pytrace=False)
            if isinstance(exc, StarvedFailure):
                mark_starved(item, f"not attempted: {exc}")
            elif isinstance(exc, UnknownFailure):
                mark_unknown(item, exc.code)
            if isinstance(exc, MeasurementFailed):
                pytest.fail(str(exc), pytrace=False)
            if isinstance(exc, KnownFailure):
                pytest.fail(f"not attempted: {exc}", pytrace=False)
            return False

    return _Known()


_STARVED = pytest.StashKey[str]()
_NO_EVIDENCE = pytest.StashKey[str]()


def mark_starved(item: pytest.Item, message: str) -> None:
    """Record that ``item`` failed for the prober's own lack of time, not for Celery's fault."""
    item.stash[_STARVED] = message


def mark_unknown(item: pytest.Item, code: str) -> None:
    """Record that ``item`` failed for a reason that proves nothing either way: ``code`` says which.

    The verdict then reports the failure with that code at ``error`` severity (``unknown``).
    """
    item.stash[_NO_EVIDENCE] = code


def _unknown_metadata(item: pytest.Item) -> dict[str, str]:
    marks = {}
    if _STARVED in item.stash:
        marks["starved"] = item.stash[_STARVED]
    if _NO_EVIDENCE in item.stash:
        marks["no_evidence"] = item.stash[_NO_EVIDENCE]
    return marks


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    session = session_of(metafunc.config)
    if session is None or not session.multi or "probe_target" not in metafunc.fixturenames:
        return
    names = list(session.targets)
    metafunc.parametrize("probe_target", names, indirect=True, scope="session", ids=names)


# ------------------------------------------------------------------ deadline and marks


# Built-in probes run in causal order (the broker before the workers before the round
# trip), so a failure upstream is known before anything downstream waits for it.
# Probes that wait on something other than Celery (an HTTP endpoint, an events window) run
# after the round trip, so a slow dependency of degraded severity never starves it.
BUILTIN_ORDER = (
    "test_broker.py", "test_workers.py", "test_drift.py", "test_queues.py", "test_backlog.py",
    "test_beat.py", "test_roundtrip.py", "test_sla.py", "test_endpoint.py", "test_task_runtimes.py",
)


def _order_key(item: pytest.Item) -> int:
    name = item.path.name
    return BUILTIN_ORDER.index(name) if name in BUILTIN_ORDER else len(BUILTIN_ORDER)


def _item_target(item: pytest.Item) -> str:
    callspec = getattr(item, "callspec", None)
    return str(callspec.params.get("probe_target", "")) if callspec is not None else ""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    session = session_of(config)
    if session is None:
        return
    names = list(session.targets)
    items.sort(key=lambda item: (names.index(_item_target(item)) if _item_target(item) in names else 0,
                                 _order_key(item)))
    for position, item in enumerate(items):
        item.stash[_ORDER] = position
        if session.multi:
            # pytest-xdist's loadgroup sends every probe of a target to the same worker.
            item.add_marker(pytest.mark.xdist_group(_item_target(item) or "_run"))
        marker = item.get_closest_marker("probe")
        try:
            mark = probe_mark(marker.args if marker else (), dict(marker.kwargs) if marker else {}, item.nodeid)
        except ValueError as exc:
            # The probe cannot be judged: it fails at setup and makes the verdict unknown.
            mark = ProbeMark("error", "celery_probe_error")
            item.stash[_MARK_ERROR] = str(exc)
        item.stash[_MARK] = mark


_MARK = pytest.StashKey[ProbeMark]()
_MARK_ERROR = pytest.StashKey[str]()
_ORDER = pytest.StashKey[int]()  # position in causal order; reports from xdist arrive in any order


def _phase(item: pytest.Item, when: str) -> Generator[None, None, None]:
    session = session_of(item.config)
    if session is None:
        return (yield)
    if when == "setup" and _MARK_ERROR in item.stash:
        pytest.fail(f"invalid probe marker: {item.stash[_MARK_ERROR]}", pytrace=False)
    target = session.targets.get(_item_target(item)) or next(iter(session.targets.values()))
    deadline = target.ensure_deadline()
    budget = deadline.remaining()
    if when == "teardown":
        budget += TEARDOWN_GRACE
    elif budget <= 0:
        # No evidence either way: whatever used the deadline up reports its own reason.
        mark_starved(item, "not attempted: the deadline was used up")
        pytest.fail(
            f"not attempted: the {deadline.total:g}s deadline was used up by earlier probes"
            + (f" ({deadline.cpu_wait():.2f}s of it waiting for a CPU)" if deadline.starved_run() else ""),
            pytrace=False,
        )
    with deadline.wait(f"the {when} of {item.name}") as waited:
        try:
            with alarm(budget, f"{when} of {item.nodeid}"):
                if when == "setup":
                    _fail_if_app_failed(item, target)
                return (yield)
        except ProbeTimeout:
            if when != "teardown" and not waited.fair():
                mark_starved(item, str(waited.starved()))
            raise


def _fail_if_app_failed(item: pytest.Item, target: TargetState) -> None:
    """A target whose app did not load: each probe fails with that reason, severity error.

    So the verdict is ``unknown`` with its own code, never ``down``: that the app's settings
    failed is no evidence about the broker or the workers.
    """
    failure = target.app_failure()
    if failure is None:
        return
    from celery_probe.probing.app import APP_CONFIG_ERROR_CODE

    item.stash[_MARK] = ProbeMark("error", APP_CONFIG_ERROR_CODE)
    if target.app_error_shown:
        pytest.fail(f"not attempted: app {failure.app!r} did not load", pytrace=False)
    target.app_error_shown = True
    pytest.fail(str(failure), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _phase(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _phase(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _phase(item, "teardown"))


# ------------------------------------------------------------------------- report


@pytest.hookimpl(optionalhook=True)
def pytest_json_runtest_metadata(item: pytest.Item, call: pytest.CallInfo[Any]) -> dict[str, Any]:
    mark = item.stash.get(_MARK, None)
    if mark is None:
        return {}
    if call.when != "setup":
        return _unknown_metadata(item)
    doc = (getattr(item, "obj", None).__doc__ or "").strip().splitlines() if hasattr(item, "obj") else []
    probe = {**mark.as_dict(), "title": doc[0] if doc else item.name, "file": item.path.name,
             "order": item.stash.get(_ORDER, 0)}
    if _item_target(item):
        probe["target"] = _item_target(item)
    return {"probe": probe, **_unknown_metadata(item)}

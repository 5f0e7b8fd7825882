"""The pytest plugin: options, the ``probe`` marker, fixtures, the deadline and the report.

It is inert in an ordinary test session. It turns a session into a probe run when
``celery-probe run`` hands it a :class:`~celery_probe.pytest_plugin.session_state.ProbeSession`,
or when a target is given on the pytest command line (``pytest probes/ --celery-app proj``),
from which it builds one. In a probe run it:

* arms the run's single deadline around every setup, call and teardown, and keeps
  pytest-timeout's per-probe timeouts with the same alarm (:mod:`.timeouts`);
* records each probe's severity and code, and what it measured, in the JSON report;
* leaves the report to the session, which scrubs credentials from it, maps it to a verdict,
  and writes ``latest.json``, ``verdict.json`` and ``history.jsonl`` atomically.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

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
from celery_probe.config.settings import SPECS, Settings, resolve_settings
from celery_probe.pytest_plugin import timeouts
from celery_probe.pytest_plugin.session_state import PLUGIN_NAME, ProbeSession, TargetState, session_of

if TYPE_CHECKING:
    from celery import Celery


TEARDOWN_GRACE = 0.5  # seconds past the deadline that cleanup may take (inside the +1 s slack)

# The plugin's options: every setting that has a pytest spelling (``--celery-app``…).
_PYTEST_LABELS = {spec.name: spec.pytest for spec in SPECS if spec.pytest}  # also named in errors
_PYTEST_SPECS = tuple(spec for spec in SPECS if spec.name in _PYTEST_LABELS)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("celery-probe", "celery-probe health probes")
    for spec in _PYTEST_SPECS:
        if spec.pytest_owner:
            continue  # declared by its own plugin (pytest-timeout's --timeout)
        repeatable: dict[str, Any] = {"action": "append", "default": []} if spec.multiple else {}
        group.addoption(_PYTEST_LABELS[spec.name], metavar=spec.metavar, help=spec.help_text, **repeatable)
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
    session = session_of(config)
    if session is None:  # celery-probe run's session is registered already
        if not _probe_mode_requested(config):
            return
        session = _session_from_options(config)
        config.pluginmanager.register(session, PLUGIN_NAME)
    _hand_timeout_to_pytest_timeout(config, session.settings)
    # The report is produced in memory and written by us, atomically (pytest-json-report
    # writes with a plain open(), which a concurrent reader can catch half-written).
    config.option.json_report = True
    config.option.json_report_file = None


def _hand_timeout_to_pytest_timeout(config: pytest.Config, settings: Settings) -> None:
    """The run's ``timeout`` setting (flag, ``CELERY_PROBE_TIMEOUT`` or pyproject) as ``--timeout``.

    pytest-timeout reads it in its own ``pytest_configure``, which runs after this one.
    """
    if settings.timeout is None:
        return
    if not hasattr(config.hook, "pytest_timeout_set_timer"):
        raise pytest.UsageError(
            f"timeout {settings.timeout:g} (from {settings.sources.get('timeout', '--timeout')}) needs "
            "pytest-timeout in the session: add -p pytest_timeout"
        )
    if config.getoption("timeout", None) is None:
        config.option.timeout = settings.timeout


def _session_from_options(config: pytest.Config) -> ProbeSession:
    from celery_probe.probing.app import build_app

    deadline_started = Deadline(5.0)
    opt = config.option
    cli = settings_from_options(opt)
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


def settings_from_options(option: Any) -> dict[str, Any]:
    """The settings given as pytest options (``config.option``), by setting name, raw.

    Repeatable options come as tuples; :func:`resolve_settings` parses them all, with the
    environment and ``pyproject.toml`` below, naming the pytest spelling in its errors.
    """
    # An option of another plugin is absent when that plugin is not loaded.
    values = {spec.name: getattr(option, spec.pytest_dest, None) for spec in _PYTEST_SPECS}
    return {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}


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
    return _Known(request.node)


class _Known:
    """The context manager behind the ``known`` fixture (a class of its own, not one per probe)."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        item = self.item
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
    return {**marks, **timeouts.timeout_metadata(item)}


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
            item.stash[_MARK_ERROR] = f"invalid probe marker: {exc}"
        problem = timeouts.timeout_marker_problem(item)
        if problem is not None:
            # pytest-timeout would raise it in pytest_runtest_protocol and end the session:
            # a closer timeout(0) (no timeout) keeps it from reading the bad one.
            item.add_marker(pytest.mark.timeout(0), append=False)
            mark = ProbeMark("error", "celery_probe_error")
            item.stash[_MARK_ERROR] = f"invalid timeout marker: {problem}"
        item.stash[_MARK] = mark


_MARK = pytest.StashKey[ProbeMark]()
_MARK_ERROR = pytest.StashKey[str]()
_ORDER = pytest.StashKey[int]()  # position in causal order; reports from xdist arrive in any order


def _phase(item: pytest.Item, when: str) -> Generator[None, None, None]:
    session = session_of(item.config)
    if session is None:
        return (yield)
    if when == "setup" and _MARK_ERROR in item.stash:
        pytest.fail(item.stash[_MARK_ERROR], pytrace=False)
    target = session.targets.get(_item_target(item)) or next(iter(session.targets.values()))
    deadline = target.ensure_deadline()
    timer = timeouts.timer(item)
    own = timer if timer is not None and timer.left() < deadline.remaining() else None  # it ends first
    budget = own.left() if own is not None else deadline.remaining()
    if when == "teardown":
        budget += TEARDOWN_GRACE
    elif deadline.remaining() <= 0:
        # No evidence either way: whatever used the deadline up reports its own reason.
        mark_starved(item, "not attempted: the deadline was used up")
        pytest.fail(
            f"not attempted: the {deadline.total:g}s deadline was used up by earlier probes"
            + (f" ({deadline.cpu_wait():.2f}s of it waiting for a CPU)" if deadline.starved_run() else ""),
            pytrace=False,
        )
    with deadline.wait(f"the {when} of {item.name}") as waited:
        try:
            with alarm(budget, f"{when} of {item.nodeid}", probe_timeout=own is not None):
                if when == "setup":
                    _fail_if_app_failed(item, target)
                return (yield)
        except ProbeTimeout:
            if own is not None:
                _timed_out(item, when, own)
            if when != "teardown" and not waited.fair():
                mark_starved(item, str(waited.starved()))
            raise


def _timed_out(item: pytest.Item, when: str, timer: timeouts.ProbeTimer) -> NoReturn:
    """Fail ``item`` for its own timeout, or as starved if a busy host ate that time."""
    if when != "teardown" and not timer.fair():
        starved = str(timer.starved())
        mark_starved(item, starved)
        pytest.fail(starved, pytrace=False)
    timeouts.mark_timed_out(item, timer)
    pytest.fail(timer.message(), pytrace=False)


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


# trylast: inside pytest-timeout's own wrapper, which sets a func_only timer around the call.
@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _phase(item, "call"))


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's timer for one probe, kept by the run's alarm (see :mod:`.timeouts`).

    True tells pytest-timeout not to arm its own; an ordinary test session keeps it.
    """
    session = session_of(item.config)
    if session is None:
        return None
    target = session.targets.get(_item_target(item)) or next(iter(session.targets.values()))
    timeouts.start_timer(item, float(settings.timeout), session.settings, target.ensure_deadline())
    return True


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    if session_of(item.config) is None:
        return None
    timeouts.cancel_timer(item)
    return True


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

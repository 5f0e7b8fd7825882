"""Running the probe suite in-process and guaranteeing an answer within the deadline.

pytest runs in this interpreter (a second interpreter would double the start-up cost of a
healthy run). Every probe phase is bounded by the run's deadline (see
:mod:`celery_probe.probing.deadline`); as a last resort a watchdog thread writes an ``unknown``
verdict and ends the process if anything unbounded still holds on past deadline + 0.8 s.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery_probe.config.settings import Settings
from celery_probe.probing.deadline import Deadline

if TYPE_CHECKING:
    from celery import Celery

    from celery_probe.errors import AppLoadError
    from celery_probe.pytest_plugin.session_state import ProbeSession

WATCHDOG_SLACK = 0.8  # seconds past the deadline before the watchdog gives up on pytest


def builtin_probes_dir() -> Path:
    """The built-in probes: packaged in the wheel, or ``probes/`` of a checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_probes", package.parents[1] / "probes"):
        if (candidate / "test_workers.py").is_file():
            return candidate
    raise FileNotFoundError("the built-in probes are missing from this installation")


UNUSED_PLUGINS = ("doctest", "pastebin", "stepwise", "unraisableexception", "threadexception", "warnings")


def pytest_args(settings: Settings, probes_dir: Path, *, verbose: bool, junitxml: Path | None = None) -> list[str]:
    args = [
        str(probes_dir),
        *(str(path) for path in settings.probes),
        "-p", "pytest_jsonreport.plugin",
        "-p", "pytest_timeout",  # per-probe timeouts, kept by the run's alarm (pytest_plugin.timeouts)
        "-p", "no:cacheprovider",  # a health check must not litter .pytest_cache around
        "-p", "no:faulthandler",
        # Plugins a probe run never uses; each costs start-up or per-probe time.
        *[arg for name in UNUSED_PLUGINS for arg in ("-p", f"no:{name}")],
        "-c", str(Path(__file__).resolve().parents[1] / "pytest_plugin" / "probe-session.ini"),
        "--rootdir", str(probes_dir),
        "--confcutdir", str(probes_dir),
        "--tb=short",
        "-rN",
    ]
    if not settings.probes:
        # Only built-in probes, which carry their own messages: skip pytest's assertion
        # rewriting import hook (operator probes keep it for their assert introspection).
        args.append("--assert=plain")
    if settings.timeout is not None:
        args.append(f"--timeout={settings.timeout!r}")
    args.append("-v" if verbose else "-q")
    if junitxml is None:
        args += ["-p", "no:junitxml"]
    else:  # pytest's own JUnit XML, one testcase per probe, named for the target
        args += [f"--junitxml={junitxml}", "-o", f"junit_suite_name=celery-probe {settings.describe_target()}"]
    return args


# What the environment may tell pytest, pinned for a probe session: no plugin autoload
# (faster, and immune to a broken plugin), and none of the operator's own test-suite
# settings (``PYTEST_ADDOPTS="--cov -x"`` in a CI job must not change a health check;
# ``PYTEST_TIMEOUT=300`` meant for that suite must not time out every probe: a probe run's
# per-probe timeout is its own ``timeout`` setting, ``CELERY_PROBE_TIMEOUT``).
PROBE_SESSION_ENV: dict[str, str | None] = {
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    "PYTEST_ADDOPTS": None,
    "PYTEST_PLUGINS": None,
    "PYTEST_TIMEOUT": None,
}


@contextlib.contextmanager
def _isolated_pytest_env() -> Iterator[None]:
    """Apply PROBE_SESSION_ENV for the probe session, and restore the environment after it."""
    previous = {name: os.environ.get(name) for name in PROBE_SESSION_ENV}
    for name, value in PROBE_SESSION_ENV.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Watchdog:
    """Calls ``on_expiry`` from a daemon thread unless cancelled within ``seconds``.

    A warm session (:mod:`celery_probe.run.warm`) pauses the one in force (``current``)
    before it forks runs, and each run restarts it: ``seconds`` count from the fork.

    Expiry and cancelling exclude each other: once ``__exit__`` (or :meth:`pause`) has
    returned, ``on_expiry`` never starts, and an expiry already under way is waited for.
    Without that, a run finishing at its deadline closed the descriptor ``on_expiry`` was
    about to write the give-up verdict to, and the write went to whatever reused its number.
    """

    current: Watchdog | None = None

    def __init__(self, seconds: float, on_expiry: Callable[[], None]) -> None:
        self._seconds, self._on_expiry = seconds, on_expiry
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._watch, args=(self._cancelled,), daemon=True)

    def _watch(self, cancelled: threading.Event) -> None:
        if cancelled.wait(self._seconds):
            return
        with self._lock:
            if not cancelled.is_set():  # cancelled between the timeout and the lock: the run won
                self._on_expiry()

    def _cancel(self) -> None:
        with self._lock:
            self._cancelled.set()

    def __enter__(self) -> Watchdog:
        self._thread.start()
        Watchdog.current = self
        return self

    def __exit__(self, *exc: object) -> None:
        self._cancel()
        Watchdog.current = None

    def pause(self) -> None:
        """Stop watching, and wait for the thread to end (so a fork copies no thread)."""
        self._cancel()
        self._thread.join(1.0)

    def restart(self) -> None:
        """Watch again for ``seconds`` from now."""
        self._cancelled = threading.Event()
        self._thread = self._new_thread()
        self._thread.start()


def run_in_process(
    settings: Settings,
    app: Celery | None,
    deadline: Deadline,
    *,
    verbose: bool = False,
    write_reports: bool = True,
    junitxml: Path | None = None,
    app_error: AppLoadError | None = None,
) -> ProbeSession:
    """Run the probe suite against ``app``; the returned session carries the verdict.

    With ``app_error`` (the app did not load) the session still runs: each probe fails
    with that reason, so the report, verdict, history and alerts say why.
    """
    import pytest

    from celery_probe.pytest_plugin import plugin
    from celery_probe.pytest_plugin.session_state import ProbeSession

    session = ProbeSession.one_target(settings, app, deadline, app_error=app_error,
                                      write_reports=write_reports, from_cli=True)
    args = pytest_args(settings, builtin_probes_dir(), verbose=verbose, junitxml=junitxml)
    plugins: list[object] = [session, plugin, *_warm_plugins(deadline)]
    sink: Any = sys.stderr if verbose else io.StringIO()
    with _isolated_pytest_env(), contextlib.redirect_stdout(sink):
        code = pytest.main(args, plugins=plugins)
    if session.verdict is None:
        from celery_probe.verdict.mapper import unknown_verdict

        session.verdict = unknown_verdict(
            f"the probe session ended without a report (pytest exit code {int(code)})"
            + ("" if verbose else "; rerun with --verbose to see pytest's output"),
            code="celery_probe_error",
        )
    return session


def _warm_plugins(deadline: Deadline) -> list[object]:
    """The pause of a warm session (:mod:`celery_probe.run.warm`), when this run prepares one."""
    from celery_probe.run import warm

    if not warm.requested():
        return []
    return [warm.WarmPlugin(Watchdog.current, lambda _session: deadline.restart())]


XDIST_STARTUP_ALLOWANCE = 10.0  # seconds for pytest-xdist to start its worker processes


def _pytest_flags(overrides: dict[str, Any]) -> list[str]:
    """The run's common flags as the plugin's pytest options, for the xdist workers."""
    from celery_probe.pytest_plugin.plugin import _PYTEST_LABELS

    flags: list[str] = []
    for name, value in overrides.items():
        flag = _PYTEST_LABELS.get(name)
        # timeout: pytest_args already gives it, as pytest-timeout's own --timeout
        if flag is None or name in ("report_dir", "timeout") or value in (None, (), []):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            flags.append(f"{flag}={item}")
    return flags


def targets_watchdog_seconds(targets: dict[str, Settings], parallel: int) -> float:
    """How long a run over several targets may take before the watchdog ends it."""
    rounds = -(-len(targets) // max(1, parallel))
    return XDIST_STARTUP_ALLOWANCE + rounds * max(s.deadline for s in targets.values()) + WATCHDOG_SLACK


def run_targets(
    settings: Settings,
    targets: dict[str, Settings],
    targets_file: Path,
    overrides: dict[str, Any],
    *,
    parallel: int,
    verbose: bool = False,
    junitxml: Path | None = None,
) -> ProbeSession:
    """Probe several targets in one pytest session, spread over xdist worker processes.

    Every probe of a target runs in the same worker (``--dist loadgroup``), in causal
    order, under that target's own deadline; the controller merges the reports and maps
    one verdict per target plus the overall one.
    """
    import pytest

    from celery_probe.errors import AppLoadError
    from celery_probe.probing.app import build_app
    from celery_probe.pytest_plugin.session_state import ProbeSession, TargetState

    states: dict[str, TargetState] = {}
    for name, target in targets.items():
        try:  # a usage error of any target stops the run here, before the session starts
            states[name] = TargetState(name, target, app=build_app(target))
        except AppLoadError as exc:  # that target is unknown; the others are still probed
            states[name] = TargetState(name, target, app_error=exc)
    session = ProbeSession(settings, states, from_cli=True)
    args = pytest_args(settings, builtin_probes_dir(), verbose=verbose, junitxml=junitxml)
    args += [
        "-p", "celery_probe.pytest_plugin.plugin", "-p", "xdist.plugin",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
        "-n", str(max(1, min(parallel, len(targets)))), "--dist", "loadgroup",
        f"--celery-targets={targets_file}", *_pytest_flags(overrides),
    ]
    sink: Any = sys.stderr if verbose else io.StringIO()
    with _isolated_pytest_env(), contextlib.redirect_stdout(sink):
        code = pytest.main(args, plugins=[session])
    if session.verdict is None:
        from celery_probe.verdict.mapper import unknown_verdict

        session.verdict = {**unknown_verdict(
            f"the probe session ended without a report (pytest exit code {int(code)})"
            + ("" if verbose else "; rerun with --verbose to see pytest's output"),
            code="celery_probe_error",
        ), "targets": {}}
    return session

"""The probe session: one object per probe run, registered with pytest, owning the run's state.

Like pytest-json-report's ``JSONReport`` or xdist's ``DSession``, a :class:`ProbeSession` is a
plugin object registered under :data:`PLUGIN_NAME`: by ``celery-probe run``, which builds it
with the targets' apps and deadlines and hands it to ``pytest.main``, or by the plugin's
``pytest_configure`` from the pytest options (``pytest probes/ --celery-app proj``). Every
hook and fixture finds it with :func:`session_of`; there is no module-level registry.

It holds the targets probed (each a :class:`TargetState`) and, once pytest-json-report has
built the report, finishes it: scrubs the credentials of every target, maps it to the verdict
and writes ``latest.json``, ``verdict.json`` and ``history.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from celery_probe.config.settings import Settings
from celery_probe.errors import AppLoadError, ReportWriteError
from celery_probe.probing.deadline import Deadline

if TYPE_CHECKING:
    from celery import Celery

    from celery_probe.probing.measurements import Measurements
    from celery_probe.verdict.model import AnyVerdict

PLUGIN_NAME = "celery_probe_session"


@dataclass(eq=False)
class TargetState:
    """One target of a run: its settings, app and deadline, each made when first needed.

    With several targets the probes of each run in an xdist worker process of their own,
    which builds the app itself and starts the target's deadline at its first probe.
    """

    name: str
    settings: Settings
    app: Celery | None = None
    deadline: Deadline | None = None
    measurements: Measurements | None = None
    app_error: AppLoadError | None = None  # the app's own code or settings failed to load
    app_error_shown: bool = False  # the first probe gives the error, the others "not attempted"

    def ensure_app(self) -> Celery:
        if self.app_error is not None:
            raise self.app_error
        if self.app is None:
            from celery_probe.probing.app import build_app

            self.app = build_app(self.settings)
        return self.app

    def app_failure(self) -> AppLoadError | None:
        """Why the app did not load (building it first if needed); None when it did."""
        if self.app is None and self.app_error is None:
            try:
                self.ensure_app()
            except AppLoadError as exc:
                self.app_error = exc
        return self.app_error

    def ensure_deadline(self) -> Deadline:
        if self.deadline is None:
            self.deadline = Deadline(self.settings.deadline)
        return self.deadline

    def secrets(self) -> set[str]:
        """Every password this target knows of: its URLs, its app's, what its probes met."""
        from celery_probe.config.urls import secrets_in

        conf = self.app.conf if self.app is not None else None
        backend = conf.result_backend if conf is not None else None
        measured = set(self.measurements.secrets) if self.measurements is not None else set()
        return measured | secrets_in([
            self.settings.broker, self.settings.backend, conf.broker_url if conf is not None else None,
            self.probed_broker_url(), backend if isinstance(backend, str) else None,
            *self.settings.endpoints, self.settings.flower_url,
        ])

    def probed_broker_url(self) -> str | None:
        """The broker URL pinned on the app (what was probed), whatever the environment says now."""
        from celery_probe.probing.app import probed_broker_url

        return probed_broker_url(self.app) if self.app is not None else None

    def details(self) -> dict[str, Any]:
        """What the report says about this target under ``celery_probe`` (URLs redacted)."""
        from celery_probe.config.urls import redact_url

        settings, measured, probed = self.settings, self.measurements, self.probed_broker_url()
        broker_url = measured.broker_url if measured is not None else (redact_url(probed) if probed else None)
        described = settings.describe_target()
        if settings.app and broker_url:
            described = f"{described} on {broker_url}"
        details: dict[str, Any] = {
            "target": described,
            "broker": broker_url,
            "queues": measured.queues if measured is not None else list(settings.queues),
            "deadline_s": settings.deadline,
            "expect_workers": settings.expect_workers,
            "queue_threshold": settings.queue_threshold,
            "queue_thresholds": dict(settings.queue_thresholds),
        }
        if settings.flower_url:  # without its credentials: the verdict links to it
            from celery_probe.verdict.flower import flower_base

            details["flower"] = flower_base(settings.flower_url)
        return details


@dataclass(eq=False)
class ProbeSession:
    """One probe run as pytest sees it: its targets, and the report, verdict and files it ends with.

    ``settings`` holds the run-wide settings (report folder, format); ``targets`` the
    targets probed, one unnamed target (``""``) unless a targets file names several.
    """

    settings: Settings
    targets: dict[str, TargetState]
    write_reports: bool = True
    from_cli: bool = False  # celery-probe run prints its own summary
    verdict: AnyVerdict | None = None
    report: dict[str, Any] | None = None
    write_error: str | None = None
    written: list[Path] = field(default_factory=list)

    # pytest.main(plugins=[...]) registers an object under its ``__name__`` (as it does a
    # module): a session handed in by ``celery-probe run`` has the name one built here gets.
    __name__ = PLUGIN_NAME

    @classmethod
    def one_target(cls, settings: Settings, app: Celery | None, deadline: Deadline | None, *,
                   app_error: AppLoadError | None = None, **kwargs: Any) -> ProbeSession:
        """The session of a run against one unnamed target."""
        return cls(settings, {"": TargetState("", settings, app, deadline, app_error=app_error)}, **kwargs)

    @property
    def multi(self) -> bool:
        return list(self.targets) != [""]

    def secrets(self) -> set[str]:
        """Every password the run knows of, for scrubbing whatever leaves it (report, JUnit, commands)."""
        from celery_probe.config.urls import secrets_in

        found = secrets_in([self.settings.broker, self.settings.backend, *self.settings.endpoints,
                            self.settings.flower_url])
        for target in self.targets.values():
            found |= target.secrets()
        return found

    def finish_report(self, report: dict[str, Any]) -> None:
        """Scrub, annotate and map the finished report; write the files unless told not to."""
        from celery_probe.config.urls import scrub
        from celery_probe.storage.reports import write_run_files
        from celery_probe.verdict.mapper import verdict_from_report, verdicts_by_target

        details = {name: target.details() for name, target in self.targets.items()}
        if self.multi:
            report["celery_probe"] = {"targets": list(details), "target_details": details}
        else:
            report["celery_probe"] = details[""]
        report.pop("environment", None)  # always {} with pytest-metadata 3; may carry env vars
        clean = scrub(report, self.secrets())
        report.clear()
        report.update(clean)
        self.report = report
        self.verdict = verdicts_by_target(report) if self.multi else verdict_from_report(report)
        if self.write_reports:
            try:
                self.written = write_run_files(self.settings.report_dir, report, self.verdict)
            except ReportWriteError as exc:
                self.write_error = str(exc)

    # -------------------------------------------------------------- hooks of the run's end

    @pytest.hookimpl(optionalhook=True, trylast=True)
    def pytest_json_modifyreport(self, json_report: dict[str, Any]) -> None:
        self.finish_report(json_report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.from_cli:
            return  # celery-probe run prints its own summary
        status = (self.verdict or {}).get("status", "unknown")
        where = ", ".join(str(p) for p in self.written) or "not written"
        terminalreporter.write_sep("-", f"celery-probe verdict: {status} ({where})")
        if self.write_error:
            terminalreporter.write_line(f"celery-probe: {self.write_error}", red=True)


def session_of(config: pytest.Config) -> ProbeSession | None:
    """The probe session of this pytest session; None in an ordinary test session."""
    return cast("ProbeSession | None", config.pluginmanager.get_plugin(PLUGIN_NAME))

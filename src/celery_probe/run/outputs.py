"""Extra outputs of ``celery-probe run`` for CI and monitoring: ``--junitxml``, ``--prom-file``, ``--fail-on``.

Their paths are checked when the options are parsed, so a typo fails in one line before the
probes run, not after. ``--junitxml`` creates its folder (a CI job's artifact folder often
does not exist yet); ``--prom-file`` refuses a folder that does not exist (exit 73): the
textfile collector reads one folder it was configured with, so a file written anywhere else
would be read by nobody, silently. :func:`finish_outputs` runs once the verdict is printed: it finalises the
JUnit file, writes the node_exporter textfile and applies the CI gate to the exit code.

The gate (``--fail-on``), with the default exit codes (Nagios ones with ``--format nagios``):

=====================  ========  ==========  ======  =========
                       healthy   degraded    down    unknown
=====================  ========  ==========  ======  =========
no ``--fail-on``       0         3           2       4
``--fail-on degraded`` 0         3           2       4
``--fail-on down``     0         **0**       2       4
=====================  ========  ==========  ======  =========

``unknown`` always fails: a gate that passes without evidence proves nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from celery_probe.errors import ProbeUsageError, ReportWriteError

if TYPE_CHECKING:
    from celery_probe.pytest_plugin.session_state import ProbeSession
    from celery_probe.verdict.model import AnyVerdict

FAIL_ON = ("degraded", "down")
MAX_PROM_BYTES = 1_000_000


def _writable_file(flag: str, suffix: str | None = None, *, create_folder: bool = True,
                   ) -> Callable[[click.Context, click.Parameter, Any], Path | None]:
    """A click callback: the path's folder exists (or, with ``create_folder``, is created) and can be written."""

    def check(_ctx: click.Context, _param: click.Parameter, value: Any) -> Path | None:
        if value is None or str(value).strip() == "":
            return None
        path = Path(str(value)).expanduser()
        if suffix and path.suffix != suffix:
            raise ProbeUsageError(
                f"invalid {flag.lstrip('-')} {str(value)!r}: must end in {suffix} "
                f"(node_exporter's textfile collector reads only *{suffix} files) (from {flag})"
            )
        if suffix == ".prom":
            try:
                import prometheus_client  # noqa: F401
            except ImportError as exc:
                raise ProbeUsageError(
                    f"{flag} needs prometheus_client: pip install 'celery-probe[serve]' ({exc})"
                ) from None
        if path.is_dir():
            raise ProbeUsageError(f"invalid {flag.lstrip('-')} {str(value)!r}: is a directory (from {flag})")
        if not create_folder and not path.parent.exists():
            raise ReportWriteError(
                f"cannot write {path} ({flag}): folder {path.parent} does not exist "
                "(give the folder node_exporter reads, its --collector.textfile.directory)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path.parent)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise ReportWriteError(f"cannot write {path} ({flag}): {exc.strerror or exc}") from None
        return path.resolve()

    return check


def run_output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The ``run`` options of this module, as one decorator."""
    options = [
        click.option("--junitxml", metavar="PATH", callback=_writable_file("--junitxml"),
                     help="Also write pytest's JUnit XML of the probes (one testcase per probe)."),
        click.option("--prom-file", metavar="PATH", callback=_writable_file("--prom-file", ".prom", create_folder=False),
                     help="Also write the metrics for node_exporter's textfile collector (*.prom)."),
        click.option("--fail-on", type=click.Choice(FAIL_ON, case_sensitive=False), metavar="degraded|down",
                     help="CI gate: exit 0 for statuses below this (unknown always fails). Default: degraded."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def gate_exit_code(code: int, status: str, fail_on: str | None) -> int:
    """The exit code under ``--fail-on``: only ``down`` lets a degraded verdict pass."""
    if fail_on is not None and fail_on.lower() == "down" and status == "degraded":
        return 0
    return code


def finish_outputs(session: ProbeSession, code: int, raw: dict[str, Any]) -> int:
    """Write the JUnit and textfile outputs asked for, and return the gated exit code."""
    verdict = session.verdict or {}
    junitxml: Path | None = raw.get("junitxml")
    if junitxml is not None:
        from celery_probe.present.junit import finalize_junit

        try:  # one target, or each of --targets: the secrets of every one are scrubbed
            finalize_junit(junitxml, verdict, session.secrets())
        except OSError as exc:
            raise ReportWriteError(f"cannot write {junitxml} (--junitxml): {exc.strerror or exc}") from None
    prom_file: Path | None = raw.get("prom_file")
    if prom_file is not None:
        write_prom_file(prom_file, verdict, session.report)
    return gate_exit_code(code, str(verdict.get("status", "unknown")), raw.get("fail_on"))


def write_prom_file(path: Path, verdict: AnyVerdict, report: dict[str, Any] | None) -> None:
    """The textfile for node_exporter, every series labelled ``deployment`` with the file's name.

    One file per deployment, so the file's name tells deployments apart in node_exporter's
    one merged scrape (``billing.prom`` gives ``deployment="billing"``). The last healthy
    time is carried over from the file being replaced: that file belongs to this deployment
    alone, while the report folder's history may be shared by several (its default,
    ``reports``, is relative to cron's working directory) and its lines do not say whose
    run they record.
    """
    from celery_probe.present import metrics

    produced = metrics.verdict_timestamp(verdict)
    if verdict.get("status") == "healthy":
        last_success = produced
    else:
        last_success = metrics.last_success_in(_read_small(path))
    try:
        metrics.write_textfile(path, metrics.metric_families(verdict, report, last_success=last_success,
                                                               deployment=path.stem))
    except OSError as exc:
        raise ReportWriteError(f"cannot write {path} (--prom-file): {exc.strerror or exc}") from None


def _read_small(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(MAX_PROM_BYTES)
    except OSError:
        return ""

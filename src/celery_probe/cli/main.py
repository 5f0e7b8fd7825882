"""The ``celery-probe`` command.

Exit codes (documented in docs/cli.md):

====  =====================================================================
0     healthy
2     down
3     degraded
4     unknown (no usable evidence, or the app's own code or settings failed to load)
64    usage or configuration error (bad option, setting, app path or URL)
73    the report directory cannot be written
130   interrupted
====  =====================================================================

With ``--format nagios`` every exit follows the Nagios plugin convention instead
(0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN): usage, report-folder, interruption and crash
are all 3, with a ``CELERY UNKNOWN - ...`` line on stdout.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from celery_probe import __version__
from celery_probe.alerting.options import alert_options
from celery_probe.probing.deadline import Deadline
from celery_probe.errors import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ProbeUsageError,
    ReportWriteError,
    describe_error,
)
from celery_probe.cli.options import (
    ALERTS,
    SEVERAL_TARGETS,
    SectionedCommand,
    in_section,
    remediation_options,
    setting_option,
    setting_options,
    targets_file_option,
)
from celery_probe.present.emit import emit
from celery_probe.run.outputs import run_output_options
from celery_probe.config.settings import (
    HTTP,
    OUTPUT,
    PROBES,
    REMEDIATION,
    SPEC_BY_NAME,
    SPECS,
    TARGET,
    Settings,
    _parse_int,
    as_cli_overrides,
    find_pyproject,
    read_pyproject_table,
    require_target,
    resolve_settings,
)


def _settings_from(raw: dict[str, Any], *, remediation: bool = True) -> Settings:
    """The command's settings; the ``on-down`` ones are not read at all without remediation."""
    off = not remediation or raw.get("no_on_down")
    return resolve_settings(_cli_overrides(raw), ignore=REMEDIATION if off else ())


def _cli_overrides(raw: dict[str, Any]) -> dict[str, Any]:
    """The settings given as flags, by setting name (unset ones left out).

    Each setting's flag stores its value under the setting's click keyword
    (:attr:`~celery_probe.config.settings.SettingSpec.param`).
    """
    return as_cli_overrides(**{spec.name: raw.get(spec.param) for spec in SPECS})




class LazyGroup(click.Group):
    """A click group whose rarer commands are imported only when invoked or listed.

    ``celery-probe run`` is what cron starts every minute: it should not pay for importing
    the web server, the HTTP client or the status page (the pattern of click's documentation,
    "Lazily Loading Subcommands").
    """

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}  # name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_subcommands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        import importlib

        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


LAZY_COMMANDS = {
    "serve": "celery_probe.cli.serve:serve",
    "check": "celery_probe.cli.check:check",
    "ingest": "celery_probe.cli.ingest:ingest",
    "report": "celery_probe.cli.report:report",
    "doctor": "celery_probe.cli.doctor:doctor",
    "worker-check": "celery_probe.cli.worker_check:worker_check",
}


@click.group(cls=LazyGroup, lazy_subcommands=LAZY_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="celery-probe")
def cli() -> None:
    """Health checks for Celery: is Celery healthy right now, with evidence."""


def all_commands() -> dict[str, click.Command]:
    """Every subcommand by name, the lazy ones imported (for the docs and their tests)."""
    ctx = click.Context(cli)
    found = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    return {name: command for name, command in found.items() if command is not None}


@cli.command(cls=SectionedCommand)
@setting_options(TARGET, PROBES, OUTPUT, HTTP)
@in_section(OUTPUT, run_output_options)
@in_section(
    SEVERAL_TARGETS,
    targets_file_option(),
    click.option("--parallel", metavar="N",
                 help="Worker processes for --targets (default: one per CPU it may use, at most one per target)."),
)
@in_section(ALERTS, alert_options)
@remediation_options
@click.option("-v", "--verbose", is_flag=True, help="Show pytest's own output on stderr.")
def run(verbose: bool, targets_file: Path | None, parallel: str | None, **raw: Any) -> int:
    """Run the probes against a Celery deployment and print the verdict.

    Writes REPORT_DIR/latest.json (the pytest-json-report report), REPORT_DIR/verdict.json
    and one line of REPORT_DIR/history.jsonl.
    """
    from celery_probe.run import metadata_memo

    metadata_memo.install()  # before Celery, kombu and redis-py ask for the same metadata per connection
    if targets_file is not None:
        return _run_targets(targets_file, parallel, verbose, raw)
    started = Deadline(0.0)  # the deadline counts from here, before settings and app import
    settings = _settings_from(raw)
    require_target(settings)
    from celery_probe.run.life import run_one_target

    return run_one_target(settings, Deadline(settings.deadline, since=started), raw, verbose=verbose)


def _run_targets(targets_file: Path, parallel: str | None, verbose: bool, raw: dict[str, Any]) -> int:
    """``run --targets FILE``: one verdict per named target plus the overall one."""
    from celery_probe.config.targets import load_targets
    from celery_probe.run.life import run_many_targets

    started = Deadline(0.0)
    if raw.get("app") or raw.get("broker"):
        raise ProbeUsageError("give either --targets FILE or -A/--app / -b/--broker, not both (from --targets)")
    settings = _settings_from(raw)
    if settings.on_down and not raw.get("no_on_down"):
        raise ProbeUsageError("on-down acts on a single target and cannot be used with --targets "
                              f"(from {settings.sources.get('on_down', '--on-down')}; --no-on-down ignores it)")
    overrides = _cli_overrides(raw)
    targets = load_targets(targets_file, overrides)
    workers = _parse_parallel(parallel, len(targets))
    return run_many_targets(settings, targets, targets_file, overrides, raw, parallel=workers,
                            started=started, verbose=verbose)


def _parse_parallel(raw: str | None, targets: int) -> int:
    if raw is None:
        from celery_probe.run.cpus import usable_cpus

        return max(1, min(targets, usable_cpus()))
    return _parse_int("parallel", raw, "--parallel", lo=1, hi=256)


@cli.command()
@click.argument("report", type=click.Path(dir_okay=False, path_type=Path))
@setting_option(SPEC_BY_NAME["format"])
def verdict(report: Path, format_: str | None) -> int:
    """Map an existing pytest-json-report REPORT to a verdict (same output and exit codes)."""
    from celery_probe.storage.reports import verdict_for_file

    settings = resolve_settings(as_cli_overrides(format=format_), ignore=REMEDIATION)
    result, _report = verdict_for_file(report)
    return emit(result, settings.format)


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo's report folder instead of removing it.")
def demo(keep: bool) -> int:
    """Start a throwaway broker and worker, probe them healthy, stop the worker, probe again."""
    from celery_probe.cli.demo import run_demo

    return run_demo(keep=keep)


NAGIOS_UNKNOWN = 3


def _flag_format(argv: list[str]) -> str | None:
    """The last ``--format`` of the raw arguments."""
    found = None
    for position, arg in enumerate(argv):
        if arg == "--format" and position + 1 < len(argv):
            found = argv[position + 1]
        elif arg.startswith("--format="):
            found = arg.partition("=")[2]
    return found.strip().lower() if found else None


def requested_format(argv: list[str], environ: Mapping[str, str], cwd: Path | None = None) -> str | None:
    """The ``--format`` asked for, read before the settings resolve: the raw arguments,
    then ``CELERY_PROBE_FORMAT``, then ``format`` of the nearest ``[tool.celery-probe]``.

    A usage error can stop the command before its settings are resolved (or be the reason
    they cannot be); Nagios still needs its own exit code for it. A ``pyproject.toml`` that
    cannot be read names no format here: its own error is reported as usual.
    """
    found = _flag_format(argv) or environ.get("CELERY_PROBE_FORMAT")
    if not found:
        try:
            table, _label = read_pyproject_table(find_pyproject(cwd))
        except Exception:  # noqa: BLE001 - on an error path: an unreadable file or folder names no format
            return None
        if not isinstance(table, Mapping):
            return None
        found = table.get("format")
    return str(found).strip().lower() if found else None


def requested_junitxml(argv: list[str]) -> Path | None:
    """The ``--junitxml`` path asked for (the last one, as click takes it), read from the raw arguments."""
    found = None
    for position, arg in enumerate(argv):
        if arg == "--junitxml" and position + 1 < len(argv) and not argv[position + 1].startswith("-"):
            found = argv[position + 1]
        elif arg.startswith("--junitxml="):
            found = arg.partition("=")[2]
    return Path(found).expanduser() if found and found.strip() else None


def _junit_for_usage_error(message: str, argv: list[str]) -> None:
    """The JUnit file asked for, saying the run could not start, so CI reports a failure, not "no results".

    The path is taken as the option takes it (its folder created if missing). One that cannot be
    written, or is a folder (often the very error being reported), stays unwritten: the line on
    stderr is the error either way.
    """
    path = requested_junitxml(argv)
    if path is None or path.is_dir():
        return
    from celery_probe.present.junit import write_not_started

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_not_started(path, message)
    except OSError:
        return


# The commands that print no verdict: a format from the environment or pyproject.toml is not theirs.
FORMATLESS_COMMANDS = {"serve", "check", "ingest", "report", "demo", "doctor", "worker-check"}


def _nagios_mode(argv: list[str] | None) -> bool:
    """Whether this exit must be a Nagios state: ``--format nagios`` given, or set in the
    environment or ``pyproject.toml`` for a command that prints a verdict (or a mistyped one)."""
    args = sys.argv[1:] if argv is None else argv
    if _flag_format(args) == "nagios":
        return True
    command = next((arg for arg in args if not arg.startswith("-")), None)
    return command not in FORMATLESS_COMMANDS and requested_format(args, os.environ) == "nagios"


def _error_exit(message: str, argv: list[str] | None, *, code: int, what: str, say: str | None = None,
                status_line_shown: bool = False) -> None:
    """``say`` (default: the error line) on stderr and exit ``code``; under Nagios, its UNKNOWN (3)
    with a ``CELERY UNKNOWN - WHAT: MESSAGE`` status line on stdout (unless already shown).

    Nagios Core treats any exit above 3 as CRITICAL and drops the output: a typo in a
    check command must read UNKNOWN, with its reason.
    """
    if say != "":
        click.echo(say or f"celery-probe: error: {message}", err=True)
    if _nagios_mode(argv):
        from celery_probe.present.text import nagios_error_line

        if not status_line_shown:
            click.echo(nagios_error_line(what, message))
        sys.exit(NAGIOS_UNKNOWN)
    sys.exit(code)


def _usage_exit(message: str, argv: list[str] | None) -> None:
    """A usage error: its line and exit (64, or 3 under Nagios); with ``--junitxml PATH`` given,
    PATH also gets a JUnit file saying the run could not start."""
    _junit_for_usage_error(message, sys.argv[1:] if argv is None else argv)
    _error_exit(message, argv, code=EXIT_USAGE, what="usage error")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: map every operator mistake to one line and its exit code.

    Under ``--format nagios`` every exit is a Nagios state (0-3): usage, report-folder,
    interruption and crash alike are UNKNOWN.
    """
    try:
        code = cli.main(args=argv, prog_name="celery-probe", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        hint = f" (see 'celery-probe {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else ""
        _usage_exit(f"{exc.format_message()}{hint}", argv)
    except click.exceptions.Abort:
        _error_exit("the run was stopped", argv, code=EXIT_INTERRUPTED, what="interrupted", say="")
    except ProbeUsageError as exc:
        _usage_exit(str(exc), argv)
    except ReportWriteError as exc:
        _error_exit(str(exc), argv, code=exc.exit_code, what="report folder",
                    status_line_shown=exc.status_line_shown)
    except KeyboardInterrupt:
        _error_exit("the run was stopped", argv, code=EXIT_INTERRUPTED, what="interrupted",
                    say="celery-probe: interrupted")
    except Exception as exc:
        if not _nagios_mode(argv):
            raise
        traceback.print_exc()  # a bug: its traceback is for the bug report
        _error_exit(f"crashed: {describe_error(exc)}", argv, code=NAGIOS_UNKNOWN, what="internal error")
    sys.exit(code if isinstance(code, int) else 0)

"""Exit codes, and the errors an operator can fix, each with its documented exit code.

The errors carry a one-line message that names the bad value and where it came from; the
CLI prints that line and exits, never a traceback. :class:`AppLoadError` is the exception:
it becomes a verdict, not an exit. :data:`EXIT_CODES` is the one table of what a verdict's
status exits with (``run``, ``verdict``, ``check`` and ``ingest``; Nagios has its own), and
:func:`describe_error` the one way an exception becomes a line of a message.
"""

from __future__ import annotations

# The status of a verdict -> the exit code of the commands that answer with one.
EXIT_CODES = {"healthy": 0, "down": 2, "degraded": 3, "unknown": 4}
EXIT_USAGE = 64  # EX_USAGE: bad option, bad setting, bad app path, malformed URL
EXIT_CANTCREAT = 73  # EX_CANTCREAT: the report directory cannot be written
EXIT_INTERRUPTED = 130


def exit_code(status: str) -> int:
    """The documented exit code for a verdict's ``status``; anything unknown exits as ``unknown``."""
    return EXIT_CODES.get(status, EXIT_CODES["unknown"])


def status_of_exit_code(code: int) -> str | None:
    """The status a status exit code stands for (None for other codes: usage, interrupted…)."""
    return next((status for status, known in EXIT_CODES.items() if known == code), None)


def describe_error(exc: BaseException) -> str:
    """One line naming an exception, without its traceback: ``TypeName: first line``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ProbeUsageError(Exception):
    """A usage or configuration error; exits 64."""

    exit_code = EXIT_USAGE


class ReportWriteError(Exception):
    """The report directory or a report file cannot be written; exits 73.

    ``status_line_shown``: the run already printed its Nagios UNKNOWN line for it, ahead of
    the verdict (found only after probing, the error must still be the status line).
    """

    exit_code = EXIT_CANTCREAT

    def __init__(self, message: str, *, status_line_shown: bool = False) -> None:
        super().__init__(message)
        self.status_line_shown = status_line_shown


class AppLoadError(Exception):
    """The app's own code or configuration failed while it was loaded or first configured.

    Not the operator's typing (the named module and attribute exist) but the deployment's
    environment: a settings module that raises, a missing dependency, ``DATABASE_URL``
    unset under cron. So it is no usage error: the run still gives an ``unknown`` verdict
    (exit 4), writes its reports and sends its alerts, because under cron nobody reads stderr.
    """

    def __init__(self, app: str, message: str) -> None:
        super().__init__(message)
        self.app = app

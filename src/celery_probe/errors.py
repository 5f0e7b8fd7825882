"""Errors an operator can fix, each with its documented exit code.

They carry a one-line message that names the bad value and where it came from; the CLI
prints that line and exits, never a traceback. :class:`AppLoadError` is the exception: it
becomes a verdict, not an exit.
"""

from __future__ import annotations

EXIT_HEALTHY = 0
EXIT_DOWN = 2
EXIT_DEGRADED = 3
EXIT_UNKNOWN = 4
EXIT_USAGE = 64  # EX_USAGE: bad option, bad setting, bad app path, malformed URL
EXIT_CANTCREAT = 73  # EX_CANTCREAT: the report directory cannot be written
EXIT_INTERRUPTED = 130


class ProbeUsageError(Exception):
    """A usage or configuration error; exits 64."""

    exit_code = EXIT_USAGE


class ReportWriteError(Exception):
    """The report directory or a report file cannot be written; exits 73."""

    exit_code = EXIT_CANTCREAT


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

"""Running the operator's ``--on-down`` command: an argument list, never a shell, always bounded.

* The command starts in a session of its own. At its timeout the whole process group gets
  SIGTERM, then SIGKILL :data:`KILL_GRACE` seconds later, so a hung script (and whatever it
  started in its group) never holds the run past timeout + grace.
* Its output goes to an unlinked temporary file, not a pipe: a worker the command starts in
  the background may keep the descriptor for days, and must neither keep us waiting for an
  end of file nor die of a broken pipe when we stop reading. Only the tail is kept.
* Its environment is ours without ``CELERY_PROBE_*`` (which may carry the broker URL, the
  SMTP password or webhook tokens), plus the verdict in three variables.
* The tail is scrubbed of every known secret and URL password before anyone sees it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from celery_probe.config.urls import scrub

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a command past its timeout
TAIL_BYTES = 4096  # read from the end of the output
TAIL_LINES = 20
TAIL_CHARS = 2000


@dataclass(frozen=True)
class CommandResult:
    """How the command ended; ``exit_code`` is None when it did not start or was killed."""

    exit_code: int | None
    duration_s: float
    timed_out: bool
    output_tail: str
    error: str | None = None


def command_environment(extra: Mapping[str, str], base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The command's environment: ours minus ``CELERY_PROBE_*``, plus ``extra``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("CELERY_PROBE_")}
    env.update(extra)
    return env


def tail(raw: bytes, secrets: Iterable[str] = ()) -> str:
    """The last lines of ``raw`` as text, scrubbed and capped."""
    text = raw.decode("utf-8", errors="replace")
    lines = text.splitlines()[-TAIL_LINES:]
    shown = str(scrub("\n".join(lines), secrets))
    return shown[-TAIL_CHARS:]


def run_command(argv: Sequence[str], *, env: Mapping[str, str], timeout: float,
                secrets: Iterable[str] = ()) -> CommandResult:
    """Run ``argv`` to its end or its timeout; never raises for the command's failures."""
    secrets = list(secrets)
    started = time.monotonic()
    with tempfile.TemporaryFile(prefix="celery-probe-on-down-") as output:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                env=dict(env), start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            why = str(scrub(f"cannot start {argv[0]}: {exc.strerror or exc}", secrets))
            return CommandResult(None, round(time.monotonic() - started, 3), False, "", why)
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        duration = round(time.monotonic() - started, 3)
        output.seek(0, os.SEEK_END)
        output.seek(max(0, output.tell() - TAIL_BYTES))
        shown = tail(output.read(TAIL_BYTES), secrets)
    code = None if timed_out else proc.returncode
    error = f"killed after its {timeout:g}s timeout" if timed_out else None
    return CommandResult(code, duration, timed_out, shown, error)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group, SIGKILL it after the grace, and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        pass
    # Whatever else of the group ignored SIGTERM (or the leader did) goes now.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(KILL_GRACE)

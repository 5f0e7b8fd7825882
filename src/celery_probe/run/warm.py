"""A warm probe session: prepared once per target, forked once per run at the first probe.

A forked run (:mod:`celery_probe.run.forked`) still spends most of its CPU before its first
probe: the command line and settings, the operator's app import, pytest's configuration
(plugins, hooks, options) and the collection of the probes. For a given target all of that
comes out the same every time, as long as its command line, environment, working directory
and files are the same. So the resident runner starts one such run per target as a *warm
session*: it does all of that, and stops where pytest would start the first probe
(``pytest_runtestloop``). From then on, every run of that target is a fork of the warm
session, taken at that point: the forked process goes on into the probes, the report and
the verdict, exactly the code a run goes through, and exits.

Runs stay isolated from each other: each is a fork of the same prepared state, and nothing
a run does flows back into the warm session. What a fork at that point shares with the
others is only what the preparation made, so the preparation must not have made anything a
run could wear out or depend on:

* no socket and no thread but the main one (a broker connection, a thread holding a lock);
* no app that failed to load (its error would stick however the files change);

otherwise the warm session says ``unfit`` and the target keeps to plain forked runs.

Each run of a warm session gets what a fresh run would: its deadline and watchdog start at
the fork, the random generator is reseeded, its standard output and error are the pipes the
resident runner made for it (every descriptor of the warm session's own pipes is pointed at
them, including the copies pytest's capture and the watchdog keep), leftovers in pytest's
capture files are dropped, and the report's start time is the fork's.

A warm session is only as fresh as its files. Before each fork it compares the files its
preparation read (every module imported since the resident runner forked it, with their
folders, so a new probe file counts too, and every ``pyproject.toml`` from the working
directory up) with what they were; if any changed it says ``stale`` and ends, and the run
is made plainly while a new warm session is prepared. It also ends after :data:`MAX_AGE`.

The warm session talks to the resident runner on a Unix socket: requests carry the run's
pipes as descriptors (``SCM_RIGHTS``). It enforces each run's hard timeout itself (the run
is its child, so the PID it kills is the run's), and every run dies with it
(``PR_SET_PDEATHSIG``).

Messages (JSON lines; see :mod:`celery_probe.run.resident` for the runner's side):

* to the runner: ``{"op": "ready"}``, ``{"op": "unfit", "why": "..."}``,
  ``{"op": "started", "id": N, "pid": G}``, ``{"op": "done", "id": N, "returncode": R,
  "killed": bool}``, ``{"op": "stale", "id": N, "why": "..."}``
* from the runner: ``{"op": "run", "id": N, "timeout": T}`` with the run's standard output
  and error write ends attached
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from celery_probe.run.file_stamps import first_change, module_files, stamps
from celery_probe.run.forked import _die_with_parent, _open_descriptors

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_AGE = 3600.0  # seconds a warm session serves before it is prepared afresh
MAX_MESSAGE = 65536
MTIME_SLACK_NS = 1_000_000_000  # file times come from a coarser clock than time.time_ns()
HIGH_FD = 200
MAX_WATCHED = 20000  # paths compared before each fork (a stat each: about 1 µs)  # the control socket lives above the descriptors a run would allocate

# Set by the forked process that becomes a warm session (run.forked), before __main__ runs.
control: socket.socket | None = None
modules_before: frozenset[str] = frozenset()
prepared_since = 0  # time.time_ns() when the preparation began
own_pipes: tuple[tuple[int, int], tuple[int, int]] | None = None  # (st_dev, st_ino) of fds 1, 2


def requested() -> bool:
    """Whether this process is preparing a warm session."""
    return control is not None


def become_warm(sock: socket.socket) -> None:
    """Called in the forked process before ``__main__``: prepare a warm session on ``sock``."""
    global control, modules_before, own_pipes, prepared_since
    prepared_since = time.time_ns()
    high = _dup_high(sock.fileno())
    sock.close()
    control = socket.socket(fileno=high)
    control.set_inheritable(False)
    modules_before = frozenset(sys.modules)
    own_pipes = (_identity(1), _identity(2))


def _dup_high(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


class WarmPlugin:
    """Registered in a warm session's pytest run: the pause before the first probe."""

    def __init__(self, watchdog: Any, reset: Callable[[pytest.Session], None]) -> None:
        self.watchdog = watchdog  # the run's Watchdog: paused in the warm session, re-armed per run
        self.reset = reset  # the run's own per-run state (its deadline), made fresh at each fork

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        """Never returns in the warm session; returns (into the probes) in each forked run."""
        assert control is not None
        if self.watchdog is not None:
            self.watchdog.pause()
        problem = unfit(session) or _threads_or_sockets()
        if problem is not None:  # the target keeps to plain runs; this preparation probes nothing
            send({"op": "unfit", "why": problem})
            os._exit(0)
        serve_runs(session, Watched.now([str(arg) for arg in session.config.args]), self)
        # the forked run: on into pytest's own loop


def unfit(session: pytest.Session) -> str | None:
    """Why this prepared session must not be forked for runs, or None."""
    from celery_probe.pytest_plugin.session_state import session_of

    probe_session = session_of(session.config)
    if probe_session is None:
        return "not a probe session"
    for target in probe_session.targets.values():
        if target.app_error is not None:
            return "its app did not load"
    return None


def _threads_or_sockets() -> str | None:
    if threading.active_count() > 1:
        return "its preparation left a thread running"
    assert control is not None
    for name in _open_descriptors():
        if name == control.fileno():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                return "its preparation left a socket open"
    return None


class Watched:
    """The files a preparation read, as they were: path to (mtime_ns, size), None if absent."""

    def __init__(self, files: dict[str, tuple[int, int] | None], born: float, suspect: str | None = None) -> None:
        self.files = files
        self.born = born
        self.suspect = suspect  # a file written while it was being read: the preparation may be older

    @classmethod
    def now(cls, probe_paths: list[str]) -> Watched:
        """Every module imported since the fork from the resident runner, every folder of the
        probes (a new probe file changes its folder), every ``pyproject.toml`` from here up."""
        paths = module_files(skip=modules_before)
        for root in probe_paths:
            paths.add(root)
            if os.path.isdir(root):
                for folder, subfolders, _files in os.walk(root):
                    subfolders[:] = [name for name in subfolders if name != "__pycache__" and not name.startswith(".")]
                    paths.add(folder)
                    if len(paths) > MAX_WATCHED:
                        break
        folder = Path.cwd()
        for candidate in (folder, *folder.parents):
            paths.add(str(candidate / "pyproject.toml"))
        files = stamps(paths)
        # A file changed since the preparation began may have been read as it was before the
        # change, and would then look unchanged ever after: such a session is stale at once.
        since = prepared_since - MTIME_SLACK_NS
        suspect = next((path for path, seen in files.items() if seen is not None and seen[0] >= since), None)
        return cls(files, time.monotonic(), suspect)

    def changed(self) -> str | None:
        if self.suspect is not None:
            return f"{self.suspect} changed while the session was prepared"
        if time.monotonic() - self.born > MAX_AGE:
            return f"prepared over {MAX_AGE:g}s ago"
        return first_change(self.files)


# ---------------------------------------------------------------------- the warm session's loop


def send(message: dict[str, Any]) -> None:
    assert control is not None
    control.sendall((json.dumps(message, separators=(",", ":")) + "\n").encode())


def _close_control() -> None:
    global control
    if control is not None:
        control.close()
        control = None


def serve_runs(session: pytest.Session, watched: Watched, plugin: WarmPlugin) -> None:
    """The warm session: fork a run per request; returns only in a forked run."""
    send({"op": "ready"})
    buffer = b""
    while True:
        request, fds, buffer = _receive(buffer)
        if request is None:  # the resident runner closed the socket or sent nonsense
            os._exit(0)
        why = watched.changed()
        if why is not None or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            send({"op": "stale", "id": request.get("id"), "why": why or "a request without its pipes"})
            os._exit(0)
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()  # nothing buffered here may reach a run's output
        pid = os.fork()
        if pid == 0:
            _become_forked_run(session, fds, plugin)
            return
        for fd in fds:
            os.close(fd)
        send({"op": "started", "id": request.get("id"), "pid": pid})
        returncode, killed = _wait(pid, float(request.get("timeout", 60)))
        send({"op": "done", "id": request.get("id"), "returncode": returncode, "killed": killed})


def _receive(buffer: bytes) -> tuple[dict[str, Any] | None, list[int], bytes]:
    """The next request line and the descriptors sent with it."""
    assert control is not None
    fds: list[int] = []
    while b"\n" not in buffer:
        try:
            data, more, _flags, _address = socket.recv_fds(control, MAX_MESSAGE, 4)
        except OSError:
            return None, fds, b""
        fds += more
        if not data:
            return None, fds, b""
        buffer += data
    line, buffer = buffer.split(b"\n", 1)
    try:
        request = json.loads(line)
    except ValueError:
        return None, fds, b""
    return (request if isinstance(request, dict) else None), fds, buffer


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """Wait for run ``pid`` up to its hard timeout, SIGKILLing its process group at it."""
    killed = False
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], max(0.0, timeout))
        if not ready:
            killed = True
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    return os.waitstatus_to_exitcode(status), killed


# ---------------------------------------------------------------------- in each forked run


def _become_forked_run(session: pytest.Session, fds: list[int], plugin: WarmPlugin) -> None:
    """Make this fork of the warm session into the run the request describes."""
    out_fd, err_fd = fds
    os.setsid()
    _die_with_parent()
    _close_control()
    assert own_pipes is not None
    for fd in _open_descriptors():  # every copy of the warm session's stdout/stderr, pytest's included
        with contextlib.suppress(OSError):
            identity = _identity(fd)
            if identity == own_pipes[0]:
                os.dup2(out_fd, fd, inheritable=fd <= 2)
            elif identity == own_pipes[1]:
                os.dup2(err_fd, fd, inheritable=fd <= 2)
    os.close(out_fd)
    os.close(err_fd)
    random.seed()
    _fresh_session_state(session)
    plugin.reset(session)
    if plugin.watchdog is not None:
        plugin.watchdog.restart()


def _fresh_session_state(session: pytest.Session) -> None:
    """pytest's per-session state that a run reads after the fork: start times, captured leftovers."""
    config = session.config
    capture = config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with contextlib.suppress(Exception):
            capture.read_global_capture()  # what the warm session (or nobody) left in the capture files
    report = getattr(config, "_json_report", None)
    if report is not None and hasattr(report, "_start_time"):
        report._start_time = time.time()
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None and hasattr(terminal, "_session_start"):
        from _pytest import timing

        with contextlib.suppress(Exception):
            terminal._session_start = timing.Instant()

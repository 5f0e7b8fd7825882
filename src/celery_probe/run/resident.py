"""The fork server: a warm ``python -m celery_probe`` that forks one process per probe run.

A probe run in a fresh interpreter spends about half a second of CPU starting Python and
importing pytest, Celery, kombu and redis-py before it sends a single byte to the broker. A
server that probes every 15 s pays that on every run. This process pays it once: it imports
those modules (:data:`PRELOAD`), then waits for requests on a pipe from ``serve``
(:mod:`celery_probe.run.runner`) and forks one process per run. That forked process
(:mod:`celery_probe.run.forked`) becomes exactly what a fresh ``python -m celery_probe run``
child would be (its own session, the run's environment and working directory, descriptors
0-2 only, Python's start-up signal dispositions) and runs the same ``__main__``, so it
prints the same JSON verdict and writes the same reports.

Isolation is the fork's: every run starts from this server's memory as it was after the
imports and nothing a run does (module globals, the Celery app registry, kombu's connection
pools, pytest's plugin manager, signal handlers, ``os.environ``, the working directory,
descriptors) flows back. So the server must hold nothing a run could depend on: it **only
imports**. It never creates a Celery app, never opens a broker connection, never imports
the operator's app module (``-A``) or their probes, never reads a run's settings: those
happen in the forked process, after the fork, from the files as they are at that run.

After a target's plain run passes, the server also forks a **warm session** for it
(:mod:`celery_probe.run.warm`): the same run, prepared up to pytest's first probe (settings, the
operator's app, pytest's configuration, collection) and paused there. Later runs of that target
(same argv, environment and working directory: :func:`warm_key`) are forked from it, so they
skip the preparation; the server hands it each run's pipes over a Unix socket and keeps the
same bookkeeping (output, hard timeout, ``done``). A warm session is the server's child, so it
is killed and reaped like a run; its runs are its own children, killed at their hard timeout
by it, and with it (``PR_SET_PDEATHSIG``) if the server has to kill it.
At most ``--warm-sessions`` of them live at once (:data:`MAX_WARM` by default, ``serve
--warm-sessions``); a target beyond that gets one only when another's target has stopped asking
for runs (:func:`room_for`), and keeps to plain forks meanwhile.

Why a fork server of our own rather than :mod:`multiprocessing`'s ``forkserver`` context:
that one runs a pickled target after re-running its parent's ``__main__`` preparation in
the child, gives the child neither its own session nor pipes for its standard output and
error, and leaves hard timeouts and reaping to the parent, which is not the process that
forks. Here the process that forks is the one that enforces the hard timeout (SIGKILL to
the run's process group) and reaps, so a PID is never killed after it could be reused, and
the protocol (one JSON object per line, :func:`encode`/:func:`decode`) carries exactly what
a subprocess call returns: exit code, standard output and standard error.

The server ends when ``serve`` closes its request pipe or sends SIGTERM: every run still
going is killed with its process group and reaped first. A run also dies with the server
if the server is killed (``PR_SET_PDEATHSIG`` where Linux offers it).

Requests (``serve`` to the server) and replies, one JSON object per line:

* ``{"op": "run", "id": N, "argv": [...], "env": {...}, "cwd": "...", "timeout": T}``
* ``{"op": "kill", "id": N}``: a run ``serve`` no longer waits for (shutting down)
* ``{"op": "ready", "pid": P, "preloaded": K}``: once, after the imports
* ``{"op": "started", "id": N, "pid": G}``
* ``{"op": "outdated", "why": "..."}``: once, when a file of the server's own imports changed
  on disk; runs keep being answered, and serve sends the next ones to a new server
* ``{"op": "done", "id": N, "returncode": R, "killed": bool, "stdout": B64, "stderr": B64}``,
  or ``{"op": "done", "id": N, "error": "..."}`` when the run could not be forked

(A run forked by a warm session is answered with the same ``started`` and ``done``.)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery_probe.run import metadata_memo
from celery_probe.run.file_stamps import first_change, module_files, stamps
from celery_probe.run.forked import become_run

READ_CHUNK = 65536
MAX_WARM = 64  # warm sessions at once by default (serve --warm-sessions); targets beyond get plain forks
ABANDONED_AFTER = 2.0  # a target unasked for this many of its own intervals no longer holds its room
WARM_IDLE = 1800.0  # seconds a warm session may go unused before it ends
UNFIT_RETRY = 600.0  # seconds before a target whose preparation was unfit is tried warm again
WARM_CHECK_EVERY = 60.0  # seconds between looks for idle warm sessions
WARM_BACKSTOP = 1.0  # seconds past a warm run's hard timeout before its warm session is killed
IMPORTS_CHECK_EVERY = 10.0  # seconds between looks at the files of the server's own imports

# Imported once by the server: what a probe run imports before it touches a broker. Import
# only, never run: none of these creates a Celery app or a connection at import. (They are
# named, not imported with ``import`` statements, because the server warms ``python -m
# celery_probe``, whose command line lives in ``cli``; this module itself does not depend on it.)
PRELOAD = (
    "celery_probe.cli.entry",  # `python -m celery_probe` goes through it where it exists
    "celery_probe.cli.main",
    "celery_probe.run.life",
    "celery_probe.run.in_process",
    "celery_probe.run.outputs",
    "celery_probe.present.emit",
    "celery_probe.present.text",
    "celery_probe.storage.reports",
    "celery_probe.alerting.options",
    "celery_probe.pytest_plugin.plugin",
    "celery_probe.pytest_plugin.session_state",
    "celery_probe.pytest_plugin.timeouts",
    "celery_probe.probing.app",
    "celery_probe.probing.measurements",
    "celery_probe.probing.roundtrip",
    "celery_probe.probing.workers",
    "celery_probe.probing.control_round",
    "celery_probe.probing.broker",
    "celery_probe.probing.backlog",
    "celery_probe.probing.beat",
    "celery_probe.probing.endpoint",
    "celery_probe.probing.events",
    "celery_probe.probing.redis_access",
    "celery_probe.probing.signed",
    "celery_probe.probing.watchlist",
    "celery_probe.probing.worker_config",
    "celery_probe.verdict.mapper",
    "celery_probe.verdict.drift",
    "celery_probe.verdict.sla",
    "celery_probe.net.http",
    "pytest",
    "_pytest.config",
    "_pytest._argcomplete",
    "pdb",  # pytest's debugging plugin imports it in every session
    "runpy",
    "pytest_jsonreport.plugin",
    "pytest_timeout",
    "celery",
    "celery.app.base",
    "celery.app.control",
    "celery.app.amqp",
    "celery.result",
    "celery.backends.redis",
    "celery.loaders.app",
    "celery.fixups.django",
    "celery.events.receiver",
    "celery.app.events",
    "celery.worker.state",
    "kombu",
    "kombu.transport.redis",
    "kombu.transport.pyamqp",
    "kombu.pools",
    "redis",
    "amqp",
    # Imported on first use in every run, so in every forked run again unless imported here:
    "secrets",  # redis-py, at each connection pool
    "hmac",
    "encodings.idna",  # the socket module, for a host name given as text
    "stringprep",
)


def encode(message: dict[str, Any]) -> bytes:
    """One protocol message: a JSON object on one line."""
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> dict[str, Any]:
    """The message of one protocol line; ValueError if it is not a JSON object."""
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - callers catch what json.loads raises
    return message


def preload() -> int:
    """Import :data:`PRELOAD` and pytest's built-in plugins; the number of modules loaded.

    A module that is not installed (an optional transport) is skipped: the run imports it
    itself if it needs it, as a fresh process would.
    """
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from _pytest.config import default_plugins  # pytest imports these in every session

    for name in default_plugins:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"_pytest.{name}")
    _preload_builtin_probes()
    metadata_memo.install()  # after the imports: it rebinds those that took the functions by name
    metadata_memo.warm()
    return len(sys.modules)


def _preload_builtin_probes() -> None:
    """Import the built-in probe modules under the names pytest gives them (``prepend`` import
    mode: the folder first on ``sys.path``, the file's base name), so a run's collection finds
    them imported. They hold no bare ``assert``, so pytest's assertion rewriting, which a
    run with operator probes turns on, would not change them."""
    from celery_probe.run.in_process import builtin_probes_dir

    folder = str(builtin_probes_dir())
    sys.path.insert(0, folder)
    try:
        for path in sorted(builtin_probes_dir().glob("test_*.py")):
            with contextlib.suppress(Exception):
                importlib.import_module(path.stem)
    finally:
        sys.path.remove(folder)


@dataclass
class Run:
    """One forked probe run, from fork to reaping (or, forked by a warm session, to its ``done``)."""

    id: int
    pid: int  # 0 until a warm session says which process it forked
    deadline: float  # monotonic time of the hard timeout
    stdout_fd: int
    stderr_fd: int
    outputs: dict[int, bytearray] = field(default_factory=dict)  # pipe fds still open -> bytes read
    stdout: bytes = b""
    stderr: bytes = b""
    returncode: int | None = None  # once reaped, or once its warm session reported it
    killed: bool = False
    warm: WarmSession | None = None  # the warm session that forked it, if one did
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> object:
        return ("warm", self.id) if self.warm is not None else self.pid


@dataclass
class WarmSession:
    """A warm session (:mod:`celery_probe.run.warm`) of one target: this server's child."""

    key: str  # the runs it serves: their command line, environment and working directory
    pid: int
    control: socket.socket
    drains: list[int]  # its own standard output and error, read and dropped
    prepared_by: float = 0.0  # monotonic time by which it must be ready, or be killed
    ready: bool = False
    run: Run | None = None  # the run it is making, at most one
    buffer: bytes = b""
    last_used: float = field(default_factory=time.monotonic)
    gone: bool = False
    asked_at: float = field(default_factory=time.monotonic)  # its target's latest run request
    gap: float | None = None  # the longest time between two of its target's run requests


def room_for(sessions: Collection[WarmSession], now: float) -> WarmSession | None:
    """The warm session to end so that another target can have one, or None: keep them all.

    Only a session whose target has stopped asking for runs gives up its room: an idle one not
    asked for in :data:`ABANDONED_AFTER` times the longest gap seen between its target's runs (the
    target left the targets file, or its settings changed and it is another key now); the one
    asked for the longest ago goes first. A target still on its schedule keeps its session. With
    more targets than room, ending the least recently used one instead would end every session
    just before its next run (the targets take turns), so every run would be a plain fork and a
    preparation: the targets beyond the room keep to plain forks instead.
    """
    gone = [session for session in sessions
            if session.run is None and session.gap is not None
            and now - session.asked_at > ABANDONED_AFTER * session.gap]
    return min(gone, key=lambda session: session.asked_at, default=None)


def warm_key(request: dict[str, Any]) -> str:
    """What makes two runs the same preparation: command line, environment, working directory."""
    return json.dumps([request.get("argv"), request.get("env"), request.get("cwd")], sort_keys=True)


class ForkServer:
    """The server's loop: requests in, one forked process per run, replies out."""

    def __init__(self, requests: int, replies: int, start_signals: dict[int, Any], *,
                 max_warm: int = MAX_WARM) -> None:
        self.requests, self.replies = requests, replies
        self.max_warm = max_warm  # warm sessions at once; 0: every run a plain fork
        # What the preload read: a run forked from here runs these files as they were then.
        self.imported = stamps(module_files())
        self.imports_checked = time.monotonic()
        self.outdated: str | None = None  # why the imports are no longer the files on disk
        self.start_signals = start_signals  # dispositions to give back to every run
        self.selector = selectors.DefaultSelector()
        self.runs: dict[object, Run] = {}  # by Run.key
        self.warm: dict[str, WarmSession] = {}  # by warm_key
        self.unfit: dict[str, float] = {}  # keys whose preparation could not be kept warm, since when
        self.ending: set[int] = set()  # warm sessions told to end, not yet reaped
        self.buffer = b""
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    def serve(self) -> int:
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _note_signal)
        self.selector.register(self.requests, selectors.EVENT_READ, "requests")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        try:
            while not (self.stopping and not self.runs):
                self._step()
        finally:
            self._kill_all()
        return 0

    def _step(self) -> None:
        timeout = WARM_CHECK_EVERY if self.warm else None
        pending = [run.deadline for run in self.runs.values() if not run.killed]
        pending += [session.prepared_by for session in self.warm.values() if not session.ready]
        if pending:
            timeout = min(timeout or float("inf"), max(0.0, min(pending) - time.monotonic()))
        for key, _events in self.selector.select(timeout):
            if self.selector.get_map().get(key.fd) is not key:
                continue  # closed (and maybe reused) by an earlier event of this round
            if key.data == "requests":
                self._read_requests()
            elif key.data == "wake":
                self._read_wakeups()
            elif isinstance(key.data, WarmSession):
                self._read_warm(key.data)
            elif isinstance(key.data, tuple):  # a warm session's own output: read and dropped
                self._drain(key.data[1], key.fd)
            else:
                self._read_output(key.data, key.fd)
        self._reap()
        now = time.monotonic()
        for run in list(self.runs.values()):
            if not run.killed and now >= run.deadline:
                self._kill(run)
            self._finish_if_done(run)
        for session in list(self.warm.values()):
            if not session.ready and now >= session.prepared_by:  # hung in its preparation
                self.unfit[session.key] = now
                self._kill_warm(session)
                self._forget_warm(session)
            elif session.run is None and now - session.last_used > WARM_IDLE:
                self._forget_warm(session)

    # ------------------------------------------------------------------ requests

    def _read_requests(self) -> None:
        chunk = os.read(self.requests, READ_CHUNK)
        if not chunk:  # serve closed the pipe: stop, killing what still runs
            self.selector.unregister(self.requests)
            self._stop()
            return
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    request = decode(line)
                except ValueError:
                    sys.stderr.write("celery-probe: the resident runner ignored a request it cannot read\n")
                    continue
                self._handle(request)

    def _handle(self, request: dict[str, Any]) -> None:
        if request.get("op") == "run" and not self.stopping:
            self._check_imports()
            self._run(request)
        elif request.get("op") == "kill":
            for run in self.runs.values():
                if run.id == request.get("id") and not run.killed:
                    self._kill(run)

    def _run(self, request: dict[str, Any]) -> None:
        """Fork the run from its target's warm session if one is ready, plainly otherwise
        (and then prepare a warm session for the next runs of that target)."""
        key = warm_key(request)
        session = self.warm.get(key)
        if session is not None:  # its target's demand: what says when the session is abandoned
            now = time.monotonic()
            session.gap = max(session.gap or 0.0, now - session.asked_at)
            session.asked_at = now
        if session is not None and session.ready and session.run is None and not session.gone:
            self._run_warm(session, request)
            return
        self._fork(request)

    def _check_imports(self) -> None:
        """Tell serve, once, when a file the preload imported changed (an upgrade of celery-probe,
        Celery or another dependency): runs forked from here would run the old code. Serve
        starts a new server and sends it the next runs; this one goes on with the runs it has.
        Looked at when a run is asked for, at most every :data:`IMPORTS_CHECK_EVERY` seconds."""
        now = time.monotonic()
        if self.outdated is not None or now - self.imports_checked < IMPORTS_CHECK_EVERY:
            return
        self.imports_checked = now
        self.outdated = first_change(self.imported)
        if self.outdated is not None:
            self.reply({"op": "outdated", "why": self.outdated})

    def _warm_after(self, run: Run) -> None:
        """After a plain run that passed (exit 0), prepare a warm session for its target's next runs.

        Never after one that failed, gave up or was killed: its preparation could hang or fail
        the same way, and while a target is in trouble its runs stay exactly the plain ones.
        """
        key = warm_key(run.request)
        if run.killed or run.returncode != 0 or self.stopping or self.outdated or key in self.warm:
            return  # (outdated: a new server takes the target's next runs)
        if len(self.warm) >= self.max_warm:
            leaving = room_for(list(self.warm.values()), time.monotonic())
            if leaving is None:
                return  # every session's target still runs on schedule: this one keeps to plain forks
            self._forget_warm(leaving)  # its socket closes: it ends (and is reaped) like an idle one
        if time.monotonic() - self.unfit.get(key, -UNFIT_RETRY) >= UNFIT_RETRY:
            self._start_warm(key, run.request)

    def _fork(self, request: dict[str, Any]) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of the server's own may reach a run's output
        fds: list[int] = []
        try:
            out_r, out_w = os.pipe()
            fds += (out_r, out_w)
            err_r, err_w = os.pipe()
            fds += (err_r, err_w)
            pid = os.fork()
        except OSError as exc:  # out of processes or descriptors: this run fails, the server stays
            for fd in fds:
                os.close(fd)
            self.reply({"op": "done", "id": request.get("id"), "error": f"cannot fork a probe run: {exc}"})
            return
        if pid == 0:
            become_run(request, out_w, err_w, self.start_signals)  # never returns
        os.close(out_w)
        os.close(err_w)
        run = Run(int(request["id"]), pid, time.monotonic() + float(request["timeout"]), out_r, err_r,
                  request=request)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
            run.outputs[fd] = bytearray()
            self.selector.register(fd, selectors.EVENT_READ, run)
        self.runs[pid] = run
        self.reply({"op": "started", "id": run.id, "pid": pid})

    # ------------------------------------------------------------------ warm sessions

    def _start_warm(self, key: str, request: dict[str, Any]) -> None:
        """Fork a warm session for the runs like ``request``: the same run, paused before its probes."""
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        fds: list[int] = []
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            out_r, out_w = os.pipe()
            fds += (out_r, out_w)
            err_r, err_w = os.pipe()
            fds += (err_r, err_w)
            pid = os.fork()
        except OSError:  # the plain runs go on; this target is tried warm again later
            for fd in fds:
                os.close(fd)
            self.unfit[key] = time.monotonic()
            return
        if pid == 0:
            ours.close()
            become_run(request, out_w, err_w, self.start_signals, warm_socket=theirs)  # never returns
        theirs.close()
        os.close(out_w)
        os.close(err_w)
        session = WarmSession(key, pid, ours, [out_r, err_r], prepared_by=time.monotonic() + float(request["timeout"]))
        ours.setblocking(False)
        self.selector.register(ours, selectors.EVENT_READ, session)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, ("drain", session))
        self.warm[key] = session

    def _run_warm(self, session: WarmSession, request: dict[str, Any]) -> None:
        """Ask ``session`` to fork the run, handing it the run's pipes."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        timeout = float(request["timeout"])
        message = encode({"op": "run", "id": request.get("id"), "timeout": timeout})
        try:
            socket.send_fds(session.control, [message], [out_w, err_w])
        except OSError:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            self._kill_warm(session)
            self._forget_warm(session)
            self._fork(request)
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(out_w)
            with contextlib.suppress(OSError):
                os.close(err_w)
        run = Run(int(request["id"]), 0, time.monotonic() + timeout + WARM_BACKSTOP, out_r, err_r,
                  warm=session, request=request)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
            run.outputs[fd] = bytearray()
            self.selector.register(fd, selectors.EVENT_READ, run)
        session.run = run
        session.last_used = time.monotonic()
        self.runs[run.key] = run

    def _read_warm(self, session: WarmSession) -> None:
        try:
            chunk = session.control.recv(READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._warm_ended(session)
            return
        session.buffer += chunk
        *lines, session.buffer = session.buffer.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                self._warm_message(session, decode(line))

    def _warm_message(self, session: WarmSession, message: dict[str, Any]) -> None:
        op, run = message.get("op"), session.run
        if op == "ready":
            session.ready = True
        elif op == "unfit":
            self.unfit[session.key] = time.monotonic()
            sys.stderr.write(f"celery-probe: a target's runs are forked plainly: {message.get('why')}\n")
        elif run is not None and message.get("id") == run.id:
            if op == "started":
                run.pid = int(message.get("pid", 0))
                self.reply({"op": "started", "id": run.id, "pid": run.pid})
            elif op == "done":
                run.returncode = int(message.get("returncode", 1))
                run.killed = run.killed or bool(message.get("killed"))
                session.run = None
            elif op == "stale":  # its files changed: this run is made plainly, the next session afresh
                self._drop_run(run)
                session.run = None
                self._forget_warm(session)
                self._run(run.request)

    def _warm_ended(self, session: WarmSession) -> None:
        """Its control socket closed: it exited (or was killed), with or without a run."""
        run = session.run
        if not session.ready:
            self.unfit.setdefault(session.key, time.monotonic())
        self._forget_warm(session)
        if run is not None and run.returncode is None:
            run.killed = True
            run.returncode = -signal.SIGKILL

    def _drop_run(self, run: Run) -> None:
        for fd in list(run.outputs):
            self.selector.unregister(fd)
            os.close(fd)
        run.outputs.clear()
        self.runs.pop(run.key, None)

    def _drain(self, session: WarmSession, fd: int) -> None:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(fd)
            os.close(fd)
            session.drains.remove(fd)

    def _kill_warm(self, session: WarmSession) -> None:
        if session.pid and not session.gone:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(session.pid, signal.SIGKILL)

    def _forget_warm(self, session: WarmSession) -> None:
        """Close our ends of its socket and pipes; it is still reaped by :meth:`_reap`."""
        if self.warm.get(session.key) is session:
            del self.warm[session.key]
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(session.control)
        session.control.close()
        for fd in session.drains:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(fd)
            os.close(fd)
        session.drains = []
        if session.pid and not session.gone:
            self.ending.add(session.pid)
        session.gone = True

    # ------------------------------------------------------------------ runs

    def _read_output(self, run: Run, fd: int) -> None:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        if chunk:
            run.outputs[fd] += chunk
        else:
            self._close_output(run, fd)

    def _close_output(self, run: Run, fd: int) -> None:
        data = bytes(run.outputs.pop(fd))
        if fd == run.stdout_fd:
            run.stdout = data
        else:
            run.stderr = data
        self.selector.unregister(fd)
        os.close(fd)

    def _read_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            signals = os.read(self.wake_r, READ_CHUNK)
            if signal.SIGTERM in signals or signal.SIGINT in signals:
                self._stop()

    def _reap(self) -> None:
        while self.runs or self.warm or self.ending:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.runs:
                self.runs[pid].returncode = os.waitstatus_to_exitcode(status)
            self.ending.discard(pid)
            for session in self.warm.values():
                if session.pid == pid:
                    session.gone = True
                    session.pid = 0

    def _kill(self, run: Run) -> None:
        """SIGKILL the run's process group (its own session; its PID is ours until reaped), and the
        run itself, in case it is killed before its ``setsid`` made that group."""
        run.killed = True
        if run.warm is not None:  # not our child: its warm session is, and the run dies with it
            self._kill_warm(run.warm)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(run.pid, signal.SIGKILL)

    def _finish_if_done(self, run: Run) -> None:
        """A run is done when reaped and its output read to the end (as ``communicate`` waits);
        a killed one as soon as it is reaped, whatever still holds its pipes."""
        if run.returncode is None or (run.outputs and not run.killed):
            return
        for fd in list(run.outputs):
            self._close_output(run, fd)
        del self.runs[run.key]
        if run.warm is None:
            self._warm_after(run)
        self.reply({
            "op": "done", "id": run.id, "returncode": run.returncode,
            "killed": run.killed, "stdout": base64.b64encode(run.stdout).decode(),
            "stderr": base64.b64encode(run.stderr).decode(),
        })

    def _stop(self) -> None:
        self.stopping = True
        for run in list(self.runs.values()):
            if not run.killed:
                self._kill(run)
        for session in list(self.warm.values()):
            self._forget_warm(session)

    def _kill_all(self) -> None:
        """On the way out: no run outlives the server, none is left a zombie."""
        for run in list(self.runs.values()):
            self._kill(run)
            if run.warm is None:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(run.pid, 0)
        for session in list(self.warm.values()):
            self._kill_warm(session)
            self._forget_warm(session)
        for pid in list(self.ending):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def reply(self, message: dict[str, Any]) -> None:
        data = encode(message)
        try:
            while data:
                data = data[os.write(self.replies, data):]
        except BrokenPipeError:  # serve is gone: nobody waits for this reply
            self._stop()


def _note_signal(_signum: int, _frame: Any) -> None:
    """Signals only wake the loop (through the wakeup descriptor); the loop decides."""


def not_import_only() -> str | None:
    """What the imports left behind that every run would share, or None.

    A thread (a fork copies its locks, never the thread), a Celery app (the registry every
    run would start with) or a socket (a connection every run would share).
    """
    if threading.active_count() > 1:
        return "its imports started a thread"
    celery_state = sys.modules.get("celery._state")
    if celery_state is not None and (getattr(celery_state, "_apps", None) or getattr(celery_state, "default_app", None)):
        return "its imports created a Celery app"
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                    return "its imports opened a socket"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m celery_probe.run.resident [--warm-sessions N]``: requests on fd 0, replies on fd 1."""
    parser = argparse.ArgumentParser(prog="python -m celery_probe.run.resident")
    parser.add_argument("--warm-sessions", type=int, default=MAX_WARM, metavar="N")
    options = parser.parse_args(argv)
    start_signals: dict[int, Any] = {sig: signal.getsignal(sig) for sig in signal.valid_signals()
                     if sig not in (signal.SIGKILL, signal.SIGSTOP)}
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # nothing may read the requests but the loop
    os.dup2(2, 1)  # anything an import prints goes to the log, not into the replies
    os.close(devnull)
    gc.disable()  # freeze what the imports allocated, so runs do not copy it when they collect
    preloaded = preload()
    gc.freeze()
    gc.enable()
    problem = not_import_only()
    if problem:
        sys.stderr.write(f"celery-probe: the resident runner will not fork runs: {problem}\n")
        return 1
    server = ForkServer(requests, replies, start_signals, max_warm=options.warm_sessions)
    server.reply({"op": "ready", "pid": os.getpid(), "preloaded": preloaded})
    return server.serve()


if __name__ == "__main__":
    sys.exit(main())

"""One probe run forked from the resident server, made into a fresh ``python -m celery_probe``.

What a new interpreter would get from ``serve``'s ``create_subprocess_exec``, this process
gets here before it runs ``celery_probe``'s ``__main__`` (the very module ``python -m
celery_probe`` runs, so the output is the same code's output):

* its own session and process group (``start_new_session``), so a hard timeout kills the
  run and whatever it started, and never the server;
* death with the server (``PR_SET_PDEATHSIG``), so no run outlives a killed server;
* the signal dispositions the server itself started with, an empty signal mask and no
  wakeup descriptor: none of the server's handlers;
* standard input on ``/dev/null``, standard output and error on the server's pipes, and no
  other descriptor (the server's request pipe and other runs' pipes are closed);
* the run's environment (broker URLs travel there, never on a command line), working
  directory, ``sys.argv`` and ``sys.path[0]``, and ``PYTHONPATH`` entries the server
  started without; import caches invalidated, so an app module edited since the server
  started is read as it is now;
* Python's exit: ``SystemExit`` codes as the interpreter maps them, a traceback for an
  uncaught exception, buffers flushed, ``atexit`` functions run.

It never returns: every path ends in ``os._exit``, so a run can never fall back into the
server's loop.

What a fork cannot redo, and so differs from a fresh interpreter: the interpreter's own start-up
variables (``PYTHONHASHSEED``, ``PYTHONWARNINGS``, ``PYTHONDONTWRITEBYTECODE``...) are the
server's, which it took from serve's environment, the same one serve gives fresh runs; the
installed packages are those the server imported (serve is restarted after an upgrade); and a
non-daemon thread a probe leaves behind is not waited for at exit (a fresh interpreter would
wait for it until the hard timeout killed it, after the verdict was printed).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import os
import runpy
import signal
import socket
import sys
import traceback
from typing import Any, NoReturn

PR_SET_PDEATHSIG = 1


def become_run(request: dict[str, Any], stdout_fd: int, stderr_fd: int,
               start_signals: dict[int, Any], warm_socket: socket.socket | None = None) -> NoReturn:
    """Turn this freshly forked process into the run ``request`` describes; exits with its code.

    With ``warm_socket`` it prepares a warm session (:mod:`celery_probe.run.warm`) on it instead:
    the same run, paused before its first probe, forked once per later run.
    """
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        _restore_signals(start_signals)
        _standard_descriptors(stdout_fd, stderr_fd, keep=() if warm_socket is None else (warm_socket.fileno(),))
        if warm_socket is not None:
            from celery_probe.run import warm

            warm.become_warm(warm_socket)
        code = _run_main(request)
    except BaseException:  # noqa: BLE001 - set-up failed: say why on the run's stderr, exit 1
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """SIGKILL this run when the server dies (Linux); elsewhere the server's own exit kills runs."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the server died before the prctl took effect
        os._exit(1)


def _restore_signals(start_signals: dict[int, Any]) -> None:
    signal.set_wakeup_fd(-1)
    for sig, handler in start_signals.items():
        if handler is not None:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _standard_descriptors(stdout_fd: int, stderr_fd: int, keep: tuple[int, ...] = ()) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((devnull, 0), (stdout_fd, 1), (stderr_fd, 2)):
        os.dup2(source, target)
    for fd in _open_descriptors():
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: every possible descriptor
        return list(range(3, os.sysconf("SC_OPEN_MAX")))


def _run_main(request: dict[str, Any]) -> int:
    """Run ``celery_probe``'s ``__main__`` as ``python -m celery_probe ARGV`` would; its exit code."""
    server_pythonpath = os.environ.get("PYTHONPATH", "")
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = os.getcwd()  # what ``-m`` puts first
    added = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
             if entry and entry not in server_pythonpath.split(os.pathsep)]
    sys.path[1:1] = [os.path.abspath(entry) for entry in added]
    gc.enable()
    importlib.invalidate_caches()
    try:
        sys.argv = ["-m", *request["argv"]]  # run_module puts the module's file first
        runpy.run_module("celery_probe", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    return code


def _exit_code(value: object) -> int:
    """``sys.exit(value)`` as the interpreter maps it to an exit status."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    with contextlib.suppress(Exception):
        print(value, file=sys.stderr)
    return 1

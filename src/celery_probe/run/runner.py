"""How ``serve`` starts a probe run: forked from a resident server, or as a fresh process.

Both ways run the same thing, ``python -m celery_probe ARGS`` with an environment and a
hard timeout, and answer with the same :class:`Outcome` (exit code, standard output and
error, whether the hard timeout killed it), so the loop maps either to the same verdict.

* :class:`FreshRunner` starts a new interpreter per run: about half a second of CPU, most
  of it start-up and imports.
* :class:`ResidentServer` talks to one fork server (:mod:`celery_probe.run.resident`),
  which has done those imports once and forks a process per run.
* :class:`ProbeRunner` is what the loop holds: the resident server when it is up, the fresh
  process otherwise. The server is started in the background; runs before it is ready, and
  while it is restarted after dying, take the fresh path. If it cannot start at all, that
  is logged once and runs keep to the fresh path (a new start is tried every
  :data:`RETRY_AFTER` seconds); the same when :data:`DEATHS_IN_A_ROW` servers died during a
  run (something in the runs kills it), so a crash loop never costs more than fresh processes.

Each request carries its own argv, environment and working directory, so one server runs
probe runs for any number of targets with different settings.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from celery_probe.config.settings import ENV_PREFIX
from celery_probe.run.cpus import usable_cpus
from celery_probe.run.resident import MAX_WARM, decode, encode

log = logging.getLogger("celery_probe.serve")

READY_TIMEOUT = 60.0  # seconds for the server's imports, on a busy host
BACKSTOP = 2.0  # seconds past a run's hard timeout before the server itself is deemed stuck
REAP_TIMEOUT = 5.0
RETRY_AFTER = 300.0  # seconds between attempts to start a server that could not start
RETIRE_POLL = 0.1  # seconds between looks at an outdated server's runs still going
DEATHS_IN_A_ROW = 3  # servers that died during a run, with no run answered between: a crash loop
LINE_LIMIT = 64 * 1024 * 1024  # a reply carries a run's whole output
RUNS_PER_CPU = 2  # serve's default --runs-at-once, per CPU
SLOT_HOLD = 1.0  # seconds a run holds its slot at most (RunSlots)


@dataclass(frozen=True)
class RunMode:
    """How serve starts its probe runs (``serve --fresh-runs``, ``--warm-sessions``,
    ``--runs-at-once``)."""

    resident: bool = True  # forked from a resident runner; False: a fresh interpreter every run
    warm_sessions: int = MAX_WARM  # warm sessions the resident runner keeps at once; 0: plain forks
    runs_at_once: int | None = None  # runs in their first second at once (RunSlots); None: the default


def default_runs_at_once() -> int:
    """Two per CPU this process may use (its affinity and its cgroup's quota): a run spends
    most of its time waiting on the network."""
    return RUNS_PER_CPU * usable_cpus()


class RunSlots:
    """At most N probe runs in their first :data:`SLOT_HOLD` seconds at once; the others wait.

    Without it, a hundred targets due together start a hundred runs together on a few CPUs:
    each waits for a CPU inside its own measurements, so the deployment looks slower than it
    is, and a host that also runs the workers has them slowed by the prober itself (seen:
    70 targets on one worker, 2 CPUs, 61 of them ``down`` for lack of a ping reply within
    the window). A run holds its slot until it ends, or for its first :data:`SLOT_HOLD`
    seconds at most: a run's CPU goes mostly on its start and a healthy run ends within a
    second, while a run waiting on a frozen broker uses no CPU, so a target that hangs holds
    up no other target for more than that.
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = default_runs_at_once() if size is None else size
        self._free = asyncio.Semaphore(self.size)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        await self._free.acquire()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._free.release()

        timer = asyncio.get_running_loop().call_later(SLOT_HOLD, release)
        try:
            yield
        finally:
            timer.cancel()
            release()


@dataclass(frozen=True)
class Outcome:
    """What a probe process left: as ``subprocess`` reports it."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool = False  # killed at the hard timeout


class FreshRunner:
    """One new interpreter per run (``python -m celery_probe ARGS``)."""

    def __init__(self, python: str) -> None:
        self.python = python

    async def run(self, args: Sequence[str], env: Mapping[str, str], timeout: float) -> Outcome:
        proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "celery_probe", *args, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            await _kill_group(proc)
            return Outcome(proc.returncode, b"", b"", timed_out=True)
        except BaseException:  # cancelled (server shutting down): leave no probe run behind
            await _kill_group(proc)
            raise
        return Outcome(proc.returncode, stdout, stderr)


class ServerGone(Exception):
    """The fork server ended (or stopped answering) before it answered a run.

    ``before_request``: it never took the request, so the run can still be made elsewhere.
    """

    def __init__(self, message: str, *, before_request: bool = False) -> None:
        super().__init__(message)
        self.before_request = before_request


class ResidentServer:
    """One fork server process and its pipes; runs are matched to replies by number."""

    def __init__(self, python: str, *, warm_sessions: int = MAX_WARM) -> None:
        self.python = python
        self.warm_sessions = warm_sessions
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._next = 0
        self._reader: asyncio.Task[None] | None = None
        self._last_due = 0.0  # monotonic time by which every run sent so far is answered or given up
        self.outdated: str | None = None  # set when the server says its imports changed on disk

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None and self._reader is not None \
            and not self._reader.done()

    async def start(self) -> None:
        """Start the server and wait for its ``ready`` (its imports done); raise ServerGone if it fails."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        self.proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "celery_probe.run.resident", "--warm-sessions", str(self.warm_sessions),
            env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, start_new_session=True, limit=LINE_LIMIT,
        )
        try:
            assert self.proc.stdout is not None
            line = await asyncio.wait_for(self.proc.stdout.readline(), READY_TIMEOUT)
            ready = decode(line) if line else {}
        except (asyncio.TimeoutError, ValueError) as exc:
            await self.close()
            raise ServerGone(f"no ready message within {READY_TIMEOUT:g}s" if isinstance(exc, asyncio.TimeoutError)
                             else "it answered something else than ready") from None
        except BaseException:
            await self.close()
            raise
        if ready.get("op") != "ready":
            code = await self._exit_code()
            await self.close()
            raise ServerGone(f"it exited (code {code}) before it was ready")
        self.pid = self.proc.pid
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="celery-probe resident replies")

    async def _exit_code(self) -> int | None:
        assert self.proc is not None
        with contextlib.suppress(asyncio.TimeoutError):
            return await asyncio.wait_for(self.proc.wait(), REAP_TIMEOUT)
        return None

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                reply = decode(line)
                if reply.get("op") == "outdated":
                    self.outdated = str(reply.get("why") or "a file it imported changed")
                    continue
                number = int(reply.get("id", -1))
                if reply.get("op") == "done" and number in self._waiting:
                    future = self._waiting.pop(number)
                    if not future.done():
                        future.set_result(reply)
        finally:  # the server is gone: nobody will answer the runs still waiting
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ServerGone("the resident runner exited during the run"))
            self._waiting.clear()

    async def run(self, args: Sequence[str], env: Mapping[str, str], timeout: float) -> Outcome:
        if not self.alive:
            raise ServerGone("the resident runner is not running", before_request=True)
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        number = self._next
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        self._last_due = max(self._last_due, time.monotonic() + timeout + BACKSTOP)
        request = {"op": "run", "id": number, "argv": list(args), "env": dict(env), "cwd": os.getcwd(),
                   "timeout": timeout}
        try:
            self.proc.stdin.write(encode(request))
            await self.proc.stdin.drain()
            reply = await asyncio.wait_for(asyncio.shield(future), timeout + BACKSTOP)
        except asyncio.TimeoutError:  # the server itself is stuck: it goes, and the run with it
            self._waiting.pop(number, None)
            await self.close()
            return Outcome(None, b"", b"", timed_out=True)
        except (ConnectionError, RuntimeError) as exc:
            self._waiting.pop(number, None)
            raise ServerGone(f"the resident runner does not take requests ({exc})", before_request=True) from None
        except asyncio.CancelledError:  # serve is stopping: the server kills that run
            self._waiting.pop(number, None)
            with contextlib.suppress(Exception):
                self.proc.stdin.write(encode({"op": "kill", "id": number}))
            raise
        if "error" in reply:
            return Outcome(None, b"", f"{reply['error']}\n".encode())
        return Outcome(
            int(reply["returncode"]),  # type: ignore[call-overload]
            base64.b64decode(str(reply["stdout"])), base64.b64decode(str(reply["stderr"])),
            timed_out=bool(reply.get("killed")),
        )

    async def retire(self) -> None:
        """Close once every run it holds is answered; each is bounded by its own hard timeout."""
        try:
            while self._waiting and self.alive and time.monotonic() < self._last_due:
                await asyncio.sleep(RETIRE_POLL)
        finally:  # cancelled too (serve stopping): the server still goes, with whatever it runs
            await self.close()

    async def close(self) -> None:
        """End the server: close its requests (it kills and reaps its runs), SIGKILL it if it lingers.

        Runs are never killed from here by PID: they are the server's children, reaped by it, so a
        PID seen here may already name another process. A server killed outright takes its runs
        with it (``PR_SET_PDEATHSIG``, :mod:`celery_probe.run.forked`).
        """
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), REAP_TIMEOUT)
        except asyncio.TimeoutError:
            await _kill_group(proc)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None


class ProbeRunner:
    """The resident server when it is up, a fresh process otherwise (see the module)."""

    def __init__(self, python: str, *, mode: RunMode = RunMode()) -> None:
        self.fresh = FreshRunner(python)
        self.python = python
        self.mode = mode
        self.resident = mode.resident
        # Every loop sharing this runner takes a slot before its run starts (see RunSlots).
        self.slots = RunSlots(mode.runs_at_once)
        self.server: ResidentServer | None = None
        self._starting: asyncio.Task[None] | None = None
        self._failed_at: float | None = None
        self._told = False
        self._deaths = 0  # servers that died during a run since the last run one answered
        self._wanted = False  # set by start(): a caller that never starts it keeps to fresh processes
        self._renewed_at: float | None = None  # when an outdated server was last replaced
        self._retiring: set[asyncio.Task[None]] = set()  # outdated servers finishing their runs
        self.resident_runs = 0
        self.fresh_runs = 0
        self.server_starts = 0

    def start(self) -> None:
        """Start the resident server in the background (on the running event loop)."""
        self._wanted = self.resident
        if not self.resident or (self._starting is not None and not self._starting.done()):
            return
        if self.server is not None and self.server.alive:
            return
        if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_AFTER:
            return
        self._starting = asyncio.get_running_loop().create_task(self._start(), name="celery-probe resident start")

    async def started(self) -> bool:
        """Wait for a start in progress to end; whether a resident server is up."""
        if self._starting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._starting)
        return self.server is not None and self.server.alive

    async def _start(self) -> None:
        server = ResidentServer(self.python, warm_sessions=self.mode.warm_sessions)
        try:
            await server.start()
        except (ServerGone, OSError) as exc:
            self._failed_at = time.monotonic()
            if not self._told:
                self._told = True
                log.warning("celery-probe: resident probe runs unavailable (%s); each run starts a "
                            "fresh process", exc)
            return
        self.server_starts += 1
        self._failed_at = None
        old, self.server = self.server, server
        if old is not None and old is not server:  # an outdated one: it finishes its runs, then goes
            retiring = asyncio.get_running_loop().create_task(old.retire(), name="celery-probe resident retire")
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)

    def _renew(self, server: ResidentServer) -> None:
        """Start a new server beside an outdated one (once per :data:`RETRY_AFTER` at most);
        runs keep going to the old one until the new one is ready."""
        if self._starting is not None and not self._starting.done():
            return
        now = time.monotonic()
        if self._renewed_at is not None and now - self._renewed_at < RETRY_AFTER:
            return
        self._renewed_at = now
        log.warning("celery-probe: %s since the resident runner started; starting a new one for the next "
                    "runs (serve itself keeps the code it started with: restart serve after upgrading "
                    "celery-probe)", server.outdated)
        self._starting = asyncio.get_running_loop().create_task(self._start(), name="celery-probe resident start")

    async def run(self, args: Sequence[str], env: Mapping[str, str], timeout: float) -> Outcome:
        server = self.server
        if server is not None and server.alive:
            try:
                outcome = await server.run(args, env, timeout)
            except ServerGone as exc:
                if not exc.before_request:
                    self._deaths += 1
                if self._deaths >= DEATHS_IN_A_ROW:  # something kills it at every run: stop restarting
                    self._deaths = 0
                    self._failed_at = time.monotonic()
                    log.warning("celery-probe: %s, %d times in a row; each run starts a fresh process "
                                "(the resident runner is tried again in %gs)", exc, DEATHS_IN_A_ROW, RETRY_AFTER)
                else:
                    log.warning("celery-probe: %s; restarting it", exc)
                await self._replace(server)
                if not exc.before_request:
                    return Outcome(None, b"", f"{exc}\n".encode())
                self.fresh_runs += 1  # it never started: this run goes to a fresh process
                return await self.fresh.run(args, env, timeout)
            self.resident_runs += 1
            self._deaths = 0
            if not server.alive:
                await self._replace(server)
            elif server.outdated is not None and self._wanted:
                self._renew(server)
            return outcome
        if server is not None:  # died between runs
            log.warning("celery-probe: the resident runner exited; restarting it")
            await self._replace(server)
        elif self._wanted:
            self.start()
        self.fresh_runs += 1
        return await self.fresh.run(args, env, timeout)

    async def _replace(self, server: ResidentServer) -> None:
        await server.close()
        if self.server is server:
            self.server = None
        self.start()

    async def close(self) -> None:
        """Stop the server and any run it holds; a start in progress is abandoned."""
        self._wanted = False
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
            self._starting = None
        server, self.server = self.server, None
        if server is not None:
            await server.close()
        for retiring in list(self._retiring):  # outdated servers: their runs are killed too
            retiring.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await retiring


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group of ``proc`` and reap it, within a bound."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
        await asyncio.wait_for(proc.wait(), REAP_TIMEOUT)

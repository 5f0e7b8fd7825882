#!/usr/bin/env python
"""Fault matrix: every fault against real processes, a verdict within the deadline + 1 s.

Run it as ``python bench/fault_matrix.py`` with the Python that has celery-probe installed.
Each fault is set up on real processes (private ``redis-server`` on free loopback ports,
real ``celery worker`` processes of ``bench/fault_app.py``, the local RabbitMQ through a
loopback :class:`~celery_probe.testing.TcpProxy`, an HTTP server of this script's own),
then ``celery-probe run -A fault_app --deadline 3 --format json`` runs as its own process
and is timed from spawn to exit, interpreter start-up included, as cron would see it.

A row is ok when the verdict has the expected status and reason code, names a root cause
(its first reason is not "not attempted: …"), and arrived within the deadline + 1 s. The
script prints a Markdown table and exits 1 when a row is not ok. Every process it starts
is stopped on the way out, also on Ctrl-C or SIGTERM; every wait is bounded; a probe still
running after CAP seconds is killed and reported as a hang.
RabbitMQ is only ever reached with a queue and control exchange named for this run,
deleted at the end; it is never stopped or frozen (the proxy fakes that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.support's fault tools
try:
    from tests.support.faults import TcpProxy, cpu_hogs
    from tests.support.http import HealthEndpoint
    from tests.support.rabbitmq import delete_rabbitmq_names

    from celery_probe.testing import CeleryWorker, RedisServer, free_port, wait_until
except ImportError:  # pragma: no cover - wrong interpreter
    sys.exit("fault_matrix.py: celery_probe is not importable; run it with the virtualenv's python")

BENCH_DIR = Path(__file__).resolve().parent
APP = "fault_app"
CAP = 30.0  # a probe process still running after this is a hang: killed, reported, not ok
RABBITMQ = ("127.0.0.1", 5672)
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:{port}//"
TEST_APPS = BENCH_DIR.parent / "tests" / "apps"  # signed_app and its key maker
HANG_LIMIT = 20.0  # the hanging endpoint still lets go after this, so no thread lingers


# ------------------------------------------------------------------------------ data


@dataclass
class Row:
    """One fault and what the probe made of it."""

    fault: str
    expected: tuple[str, ...]  # acceptable statuses
    codes: tuple[str, ...]  # acceptable root reason codes ("" when healthy is acceptable)
    status: str | None = None
    exit_code: int | None = None
    code: str | None = None  # the first reason code that is not informational
    seconds: float | None = None
    bound: float = 0.0
    note: str = ""
    skipped: bool = False
    root_named: bool = True  # the first reason is a cause, not "not attempted: …"

    @property
    def ok(self) -> bool:
        if self.skipped or self.status is None or self.seconds is None:
            return False
        code_ok = (self.code or "") in self.codes
        return self.status in self.expected and code_ok and self.seconds <= self.bound and self.root_named


@dataclass
class Probe:
    seconds: float
    exit_code: int | None
    verdict: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""

    @property
    def status(self) -> str | None:
        return self.verdict.get("status")

    @property
    def root(self) -> dict[str, Any] | None:
        for reason in self.verdict.get("reasons") or []:
            if reason.get("severity") != "info":
                return dict(reason)
        return None

    @property
    def code(self) -> str | None:
        return str(self.root["code"]) if self.root else None


# --------------------------------------------------------------------- the probe run


class Matrix:
    """Shared state: the deadline, a scratch folder, and everything to stop at the end."""

    def __init__(self, deadline: float, stack: ExitStack) -> None:
        self.deadline = deadline
        self.bound = deadline + 1.0
        self.stack = stack
        self.scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fault-matrix-")))

    def env(self, broker: str, backend: str | None, **extra: str) -> dict[str, str]:
        return {"FAULT_BROKER": broker, "FAULT_BACKEND": backend or "", **extra}

    def spawn(self, env: dict[str, str], *extra: str, cwd: Path | None = None,
              target: tuple[str, ...] = ("-A", APP)) -> tuple[subprocess.Popen[str], float]:
        report_dir = tempfile.mkdtemp(dir=self.scratch)
        full_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")])}
        for key in [k for k in full_env if k.startswith("CELERY_PROBE_")]:
            del full_env[key]  # the operator's own settings must not change what is probed
        command = [sys.executable, "-m", "celery_probe", "run", *target, "--deadline", f"{self.deadline:g}",
                   "--format", "json", "--report-dir", report_dir, *extra]
        started = time.monotonic()
        proc = subprocess.Popen(command, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=cwd)
        return proc, started

    def finish(self, proc: subprocess.Popen[str], started: float) -> Probe:
        try:
            out, err = proc.communicate(timeout=max(0.1, CAP - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=10)
            return Probe(time.monotonic() - started, None, {}, f"killed at the {CAP:g}s cap (hang)")
        seconds = time.monotonic() - started
        try:
            verdict = json.loads(out)
        except ValueError:
            verdict = {}
        return Probe(seconds, proc.returncode, verdict if isinstance(verdict, dict) else {}, err)

    def probe(self, env: dict[str, str], *extra: str, cwd: Path | None = None,
              target: tuple[str, ...] = ("-A", APP)) -> Probe:
        return self.finish(*self.spawn(env, *extra, cwd=cwd, target=target))

    def worker(self, env: dict[str, str], *, queue: str = "celery", pool: str = "solo",
               concurrency: int = 1, cwd: Path | None = None, app: str = APP,
               heartbeat: bool = False) -> CeleryWorker:
        worker = CeleryWorker(app, name=f"fault-{uuid.uuid4().hex[:6]}@%h", queues=(queue,), pool=pool,
                              concurrency=concurrency, env=env, pythonpath=[BENCH_DIR, TEST_APPS],
                              heartbeat=heartbeat, cwd=cwd)
        self.stack.callback(worker.close)
        return worker.start(timeout=40)

    def redis(self) -> RedisServer:
        server = RedisServer().start()
        self.stack.callback(server.close)
        return server

    def row(self, fault: str, expected: tuple[str, ...], codes: tuple[str, ...], probe: Probe, note: str = "") -> Row:
        if probe.exit_code is None:
            note = probe.stderr
        elif not probe.verdict:
            note = (probe.stderr.strip().splitlines() or ["no JSON on stdout"])[-1][:120]
        root_named = probe.root is None or not str(probe.root.get("message", "")).startswith("not attempted")
        if not root_named:
            note = "; ".join(filter(None, [note, "no root cause: every reason says not attempted"]))
        return Row(fault, expected, codes, probe.status, probe.exit_code, probe.code, probe.seconds, self.bound,
                   note, root_named=root_named)


# ----------------------------------------------------------------------- the faults


def redis_cases(m: Matrix) -> Iterator[Row]:
    redis = m.redis()
    env = m.env(redis.url(0), redis.url(1))

    worker = m.worker(env)
    worker.kill()
    yield m.row("worker SIGKILL", ("down",), ("celery_worker_down",), m.probe(env))

    worker = m.worker(env)
    worker.freeze()
    try:
        yield m.row("worker SIGSTOP", ("down",), ("celery_worker_down",), m.probe(env))
    finally:
        worker.thaw()
        worker.close()

    yield busy_pool(m, env)

    worker = m.worker(env)
    redis.freeze()
    try:
        yield m.row("Redis frozen (SIGSTOP)", ("down",), ("celery_broker_unreachable",), m.probe(env))
    finally:
        redis.thaw()
    yield restarted_during_run(m, redis, env)
    worker.close()

    refused = free_port()
    yield m.row("Redis refused", ("down",), ("celery_broker_unreachable",),
                m.probe(m.env(f"redis://127.0.0.1:{refused}/0", f"redis://127.0.0.1:{refused}/1")))

    backend = m.redis()
    split = m.env(redis.url(0), backend.url(0))
    worker = m.worker(split)
    backend.stop()
    yield m.row("result backend down, broker up", ("down",), ("celery_backend_unreachable",), m.probe(split))
    worker.close()

    yield m.row("broker host does not resolve (.invalid)", ("down",), ("celery_broker_unreachable",),
                m.probe(m.env("redis://celery-probe-fault.invalid:6379/0", "redis://celery-probe-fault.invalid:6379/1")))


def broker_only_cases(m: Matrix) -> Iterator[Row]:
    """``-b`` alone (no app): what the probe can tell without the deployment's configuration."""
    redis = m.redis()
    bare = ("-b", redis.url(0), "--backend", redis.url(1))
    env = m.env(redis.url(0), redis.url(1))

    worker = m.worker(env, queue="math")
    yield m.row("-b, workers consume only math (celery empty)", ("healthy",), ("",), m.probe({}, target=bare))
    worker.close()

    sys.path.insert(0, str(TEST_APPS))
    try:
        from signing_keys import make_keys
    except ImportError as exc:  # cryptography comes with the test extra
        yield Row("-b, signed workers (auth serializer)", ("unknown",), ("celery_workers_refuse_unsigned",),
                  bound=m.bound, skipped=True, note=f"needs pip install -e '.[test]': {exc}")
        return
    finally:
        sys.path.remove(str(TEST_APPS))
    keys = make_keys(Path(tempfile.mkdtemp(dir=m.scratch)))
    signed = {"PROBE_TEST_BROKER": redis.url(0), "PROBE_TEST_BACKEND": redis.url(1), **keys}
    worker = m.worker(signed, app="signed_app", heartbeat=True)
    yield m.row("-b, signed workers (auth serializer)", ("unknown",), ("celery_workers_refuse_unsigned",),
                m.probe({}, target=bare))
    worker.close()


def busy_pool(m: Matrix, env: dict[str, str]) -> Row:
    """Prefork, concurrency 1, its only child running a long task: busy, not dead."""
    from celery import Celery

    worker = m.worker(env, pool="prefork", concurrency=1)
    client = Celery(broker=env["FAULT_BROKER"], set_as_current=False)  # no backend: no result kept
    busy = client.send_task("fault.sleep", args=(20,))

    def one_active() -> bool:
        active = client.control.inspect(timeout=0.5).active() or {}
        return sum(len(v) for v in active.values()) == 1

    try:
        wait_until(one_active, timeout=15, what="the long task active")
        return m.row("every pool process busy (prefork -c 1)", ("degraded",), ("celery_workers_saturated",),
                     m.probe(env))
    finally:
        busy.revoke(terminate=True)
        client.close()
        worker.close()


def restarted_during_run(m: Matrix, redis: RedisServer, env: dict[str, str]) -> Row:
    """redis-server stopped and started again on its port while the probe process runs.

    The restart is triggered by the probe's own first connection to Redis (a client that was
    not there before), so it falls inside the run, not before it; if none shows up within
    2 s the restart happens anyway and the note says so.
    """
    with redis.client() as admin:
        before = {c["id"] for c in admin.client_list()}
        proc, started = m.spawn(env)

        def probe_connected() -> bool:
            mine = admin.client_id()
            return any(c["id"] not in before and c["id"] != mine for c in admin.client_list())

        try:
            wait_until(probe_connected, timeout=2.0, interval=0.01, what="the probe's connection")
            note = f"restarted {time.monotonic() - started:.2f}s into the run, at the probe's first connection"
        except TimeoutError:
            note = "the probe's connection was not seen within 2 s; restarted then"
    redis.restart()
    probe = m.finish(proc, started)
    return m.row("Redis restarted during the run", ("healthy", "down"),
                 ("", "celery_broker_unreachable", "celery_worker_down", "celery_roundtrip_failed",
                  "celery_backend_unreachable"), probe, note)


def rabbitmq_cases(m: Matrix) -> Iterator[Row]:
    names = ("rabbitmq unreachable (proxy refuses)", "rabbitmq frozen (proxy blackholes)")
    try:
        socket.create_connection(RABBITMQ, timeout=3).close()
    except OSError:
        for name in names:
            yield Row(name, ("down",), ("celery_broker_unreachable",), bound=m.bound, skipped=True,
                      note="RabbitMQ is not listening on 127.0.0.1:5672")
        return
    suffix = uuid.uuid4().hex[:10]
    queue = exchange = f"fault-{suffix}"
    direct = RABBITMQ_URL.format(port=RABBITMQ[1])
    env = m.env(direct, "rpc://", FAULT_DEFAULT_QUEUE=queue, FAULT_CONTROL_EXCHANGE=exchange)
    m.stack.callback(delete_rabbitmq_names, direct, [queue], exchange)
    m.worker(env, queue=queue)
    with TcpProxy(RABBITMQ[1]) as proxy:
        via = RABBITMQ_URL.format(port=proxy.port)
        healthy = m.probe(env, "-b", via)
        note = "" if healthy.status == "healthy" else f"through the proxy before the fault: {healthy.status}"
        proxy.refuse()
        yield m.row(names[0], ("down",), ("celery_broker_unreachable",), m.probe(env, "-b", via), note)
    with TcpProxy(RABBITMQ[1]) as proxy:
        proxy.blackhole()
        yield m.row(names[1], ("down",), ("celery_broker_unreachable",),
                    m.probe(env, "-b", RABBITMQ_URL.format(port=proxy.port)))


# -- why a round trip did not come back: another backend, a relative file, a full prefetch


def roundtrip_cause_cases(m: Matrix) -> Iterator[Row]:
    redis = m.redis()
    env = m.env(redis.url(0), redis.url(1))
    worker = m.worker(env)
    time.sleep(1.0)  # a worker answers active_queues with no queue for a moment after " ready."
    yield m.row("probe --backend is not the workers' (db 2, workers db 1)", ("unknown",),
                ("celery_backend_mismatch",), m.probe(env, "--backend", redis.url(2)))
    worker.close()

    relative = m.env(redis.url(0), "db+sqlite:///results.sqlite")
    workers_dir, probe_dir = m.scratch / "workers", m.scratch / "cron-home"
    workers_dir.mkdir()
    probe_dir.mkdir()
    worker = m.worker(relative, cwd=workers_dir)
    time.sleep(1.0)
    probe = m.probe(relative, cwd=probe_dir)
    left = " (left a results.sqlite behind)" if (probe_dir / "results.sqlite").exists() else ""
    yield m.row("relative sqlite backend, probe run from another directory", ("unknown",),
                ("celery_backend_mismatch",), probe, left.strip(" ()"))
    worker.close()


def quorum_cases(m: Matrix) -> Iterator[Row]:
    """Celery's examples/quorum-queues shape in a vhost of this run's own, deleted at the end."""
    from celery import Celery

    names = ("quorum queue, prefetch held by countdown tasks", "native delayed delivery backlog (celery_delayed_*)")
    try:
        socket.create_connection(RABBITMQ, timeout=3).close()
    except OSError:
        for name, status, code in zip(names, ("down", "healthy"), ("celery_roundtrip_failed", "")):
            yield Row(name, (status,), (code,), bound=m.bound, skipped=True,
                      note="RabbitMQ is not listening on 127.0.0.1:5672")
        return
    redis = m.redis()  # the result backend

    ctl = ["rabbitmqctl", "-q"]
    for exchange_type in ("direct", "topic"):  # a vhost each: the default exchange differs in type
        vhost = f"fault-{uuid.uuid4().hex[:10]}"
        subprocess.run([*ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
        m.stack.callback(subprocess.run, [*ctl, "delete_vhost", vhost], capture_output=True, timeout=60)
        subprocess.run([*ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True,
                       capture_output=True, timeout=60)
        broker = f"amqp://guest:guest@127.0.0.1:{RABBITMQ[1]}/{vhost}"
        env = m.env(broker, redis.url(1), FAULT_QUEUE_TYPE="quorum", FAULT_EXCHANGE_TYPE=exchange_type)
        worker = m.worker(env, pool="threads", concurrency=2)
        client = Celery(broker=broker, set_as_current=False)
        client.conf.task_default_queue_type = "quorum"
        client.conf.broker_transport_options = {"confirm_publish": True}
        client.conf.task_default_exchange_type = exchange_type
        sent = [client.send_task("fault.sleep", args=(0,), countdown=600) for _ in range(2)]
        if exchange_type == "direct":
            def held() -> bool:
                found = client.control.inspect(destination=[worker.name], timeout=1).scheduled() or {}
                return len(found.get(worker.name) or []) == 2

            wait_until(held, timeout=20, what="two countdown tasks held by the worker")
            probe = m.probe(env)
            message = str((probe.root or {}).get("message", ""))
            yield m.row(names[0], ("down",), ("celery_roundtrip_failed",),
                        probe, "" if "fill its prefetch" in message else "the reason does not name the prefetch")
        else:
            probe = m.probe(env)
            delayed = probe.verdict.get("delayed_messages")
            yield m.row(names[1], ("healthy",), ("",), probe,
                        f"delayed_messages={delayed}")
        for result in sent:
            result.revoke()
        client.close()
        worker.close()


# -- what a real deployment looks like: routed queues, a busy host


def routed_cases(m: Matrix) -> Iterator[Row]:
    """150 tasks routed by task_routes to a queue no worker consumes, and no -Q given."""
    from celery import Celery

    redis = m.redis()
    env = m.env(redis.url(0), redis.url(1), FAULT_ROUTED_QUEUE="math")
    m.worker(env)  # consumes celery only
    client = Celery(broker=env["FAULT_BROKER"], set_as_current=False)
    client.conf.task_routes = {"fault.add": {"queue": "math"}}
    for _ in range(150):
        client.send_task("fault.add", args=(1, 1))
    client.close()
    yield m.row("150 tasks routed (task_routes) to a queue nobody consumes, no -Q", ("down",),
                ("celery_queue_unconsumed",), m.probe(env))


BUSY_HOGS_PER_CORE = 5


def busy_host_cases(m: Matrix) -> Iterator[Row]:
    """A healthy worker while five CPU-bound processes per core keep the host busy.

    The prober's start-up then takes most of the deadline: the verdict may honestly be
    unknown (celery_probe_starved), never down. Its bound is twice the deadline plus 1 s, as
    the interpreter's own start-up before the deadline's clock is slowed as much.
    """
    redis = m.redis()
    env = m.env(redis.url(0), redis.url(1))
    m.worker(env, pool="prefork", concurrency=2)
    with cpu_hogs(BUSY_HOGS_PER_CORE * (os.cpu_count() or 1), 60, settle=1.0) as hogs:
        for attempt in range(3):
            row = m.row(f"healthy worker, host busy ({len(hogs)} CPU-bound processes), run {attempt + 1}",
                        ("healthy", "unknown"), ("", "celery_probe_starved"), m.probe(env))
            row.bound = 2 * m.deadline + 1.0
            yield row


def app_cases(m: Matrix) -> Iterator[Row]:
    """What the operator names wins over Celery's environment; an app that cannot load its settings."""
    redis = m.redis()
    env = m.env(redis.url(0), redis.url(1))
    m.worker(env)
    exported = {**env, "CELERY_BROKER_URL": redis.url(0), "CELERY_RESULT_BACKEND": redis.url(1)}
    dead = f"redis://127.0.0.1:{free_port()}/0"
    yield m.row("-b names a dead port, CELERY_BROKER_URL exported to a healthy broker", ("down",),
                ("celery_broker_unreachable",), m.probe(exported, "-b", dead))
    yield m.row("app settings fail to load (config_from_object names a missing module)", ("unknown",),
                ("celery_app_config_error",), m.probe({**env, "FAULT_CONFIG_MODULE": "fault_settings_not_deployed"}))


@contextmanager
def endpoint_server() -> Iterator[Callable[[str], str]]:
    """/hang never answers, /500 is an error, /html is not JSON, /big sends 50 MB."""
    with HealthEndpoint(hang_limit=HANG_LIMIT) as server:
        yield server.url


def endpoint_cases(m: Matrix) -> Iterator[Row]:
    redis = m.redis()
    env = m.env(redis.url(0), redis.url(1))
    m.worker(env)
    with endpoint_server() as url:
        for fault, path in (("endpoint hanging", "/hang"), ("endpoint answering 500", "/500"),
                            ("endpoint answering HTML", "/html"), ("endpoint sending a 50 MB body", "/big")):
            yield m.row(fault, ("degraded",), ("celery_endpoint_down",), m.probe(env, "--endpoint", url(path)))


# ---------------------------------------------------------------------------- output


def machine_line() -> str:
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                                       timeout=10, check=False).stdout.split()[2].removeprefix("v=")
    except (OSError, IndexError, subprocess.TimeoutExpired):
        redis_version = "?"
    import celery
    import kombu

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, celery {celery.__version__}, kombu {kombu.__version__}, "
            f"Redis {redis_version}, load {os.getloadavg()[0]:.2f}")


def table(rows: list[Row], deadline: float) -> str:
    lines = [
        f"| fault | expected status | got (exit) | code | time to verdict | bound (deadline {deadline:g} s + 1 s) | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.skipped:
            lines.append(f"| {row.fault} | {' or '.join(row.expected)} | skipped: {row.note} | – | – | "
                         f"{row.bound:.1f} s | – |")
            continue
        got = f"{row.status or 'no verdict'} ({row.exit_code if row.exit_code is not None else 'killed'})"
        seconds = f"{row.seconds:.2f} s" if row.seconds is not None else "–"
        verdict = "ok" if row.ok else "**FAILED**"
        note = f" ({row.note})" if row.note else ""
        lines.append(f"| {row.fault}{note} | {' or '.join(row.expected)} | {got} | {row.code or '–'} | {seconds} | "
                     f"{row.bound:.1f} s | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=3.0, help="--deadline of every probe run (default 3)")
    parser.add_argument("--skip-rabbitmq", action="store_true", help="leave out the RabbitMQ rows")
    parser.add_argument("--json", metavar="PATH", help="also write every row as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: every process gets stopped

    rows: list[Row] = []
    print(machine_line(), flush=True)
    with ExitStack() as stack:
        m = Matrix(args.deadline, stack)
        groups: list[Callable[[Matrix], Iterator[Row]]] = [redis_cases, broker_only_cases, endpoint_cases,
                                                           roundtrip_cause_cases, routed_cases, app_cases,
                                                           busy_host_cases]
        if not args.skip_rabbitmq:
            groups += [quorum_cases, rabbitmq_cases]
        for group in groups:
            with ExitStack() as group_stack:
                m.stack = group_stack  # what a group started stops before the next group starts
                for row in group(m):
                    rows.append(row)
                    state = "ok" if row.ok else ("skipped" if row.skipped else "FAILED")
                    print(f"  {row.fault}: {row.status} {row.code or ''} "
                          f"{'' if row.seconds is None else f'{row.seconds:.2f}s'} {state}", file=sys.stderr,
                          flush=True)
            m.stack = stack
    print()
    print(table(rows, args.deadline))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) | {"ok": r.ok} for r in rows], indent=1) + "\n")
    failed = [r for r in rows if not r.ok and not r.skipped]
    if failed:
        print(f"\n!!! FAILED: {', '.join(r.fault for r in failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A public `celery-probe serve` under abuse: floods, slow clients, generated requests.

One real `celery-probe serve` process (uvicorn) against a real Redis and worker, hit over
loopback only (and a second one, with a short --header-timeout, for clients that never finish
their request head). tests/integration/test_serve.py already shows that 500 sequential requests start no
probe run; here the flood is 10,000 requests from 50 concurrent clients, the server's
memory is watched, 50 slow clients dribble their headers while others are served, and
schemathesis checks every answer against the server's own OpenAPI description.
Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import time
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from celery_probe.config.settings import Settings
from celery_probe.serve.app import OPENAPI_PATH, ProbeService
from celery_probe.testing import CeleryWorker, wait_until
from tests.support.environment import APPS, app_env
from tests.support.serving import HEALTH, ServeProcess, http_get

pytestmark = pytest.mark.redis_only  # a private redis-server; nothing here depends on --broker

INTERVAL = 10.0  # seconds between probe runs: a flood of a few seconds may see the timer start one
OPS_ALERTS = "/api/interactions/metrics/ops-alerts"
ROUTES = {HEALTH: 200, "/healthz": 200, "/metrics": 200, OPS_ALERTS: 200, OPENAPI_PATH: 200, "/no/such/path": 404}
BURST = 10_000
CONCURRENCY = 50
PER_CONNECTION = 20  # a client reconnects after this many keep-alive requests
BURST_LIMIT = 120.0  # seconds: the whole flood, or the test fails instead of hanging
RSS_GROWTH_LIMIT = 30 * 1024 * 1024
SLOW_CLIENTS = 50


@pytest.fixture(scope="module")
def server(module_redis, tmp_path_factory):
    env = app_env(module_redis.url(0), module_redis.url(1))
    with CeleryWorker("probe_test_app", name="abuse@%h", env=env, pythonpath=[APPS]):
        # Generous probe limits: every run must be healthy even on a machine this test loads.
        # --header-timeout 60: the dribbling clients below must outlast their test, not be cut by
        # the deadline on request heads (TestHeaderDeadline has its own server for that).
        args = ["-A", "probe_test_app", "--expect-workers", "1", "--deadline", "5", "--roundtrip-slow", "4",
                "--interval", str(INTERVAL), "--header-timeout", "60"]
        with ServeProcess(*args, env=env, cwd=tmp_path_factory.mktemp("abuse")) as serving:
            serving.wait_status("healthy", timeout=30)
            yield serving


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ------------------------------------------------------------------ a small HTTP/1.1 client


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: abuse\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    await reader.readexactly(int(headers["content-length"]))
    return status


async def flood(port: int, total: int) -> tuple[Counter[tuple[str, int]], list[str]]:
    """``total`` requests over the routes from CONCURRENCY clients; (path, status) counts and errors."""
    answered: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []
    numbers = iter(range(total))  # shared: each client takes the next request number
    paths = list(ROUTES)

    async def client() -> None:
        reader = writer = None
        used = 0
        for number in numbers:
            path = paths[number % len(paths)]
            try:
                if writer is None or used >= PER_CONNECTION:
                    if writer is not None:
                        writer.close()
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                    used = 0
                answered[(path, await asyncio.wait_for(one_request(reader, writer, path), 5))] += 1
                used += 1
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                errors.append(f"{path}: {exc!r}")
                writer = None
        if writer is not None:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(CONCURRENCY))), BURST_LIMIT)
    return answered, errors


# ------------------------------------------------------------------------------- the tests


class TestFlood:
    def test_10000_requests_start_no_extra_run_and_keep_memory_bounded(self, server):
        asyncio.run(flood(server.port, 600))  # warm-up: first-use allocations are not growth
        rss_before = rss_bytes(server.pid)
        runs_before = server.runs()
        started = time.monotonic()
        answered, errors = asyncio.run(flood(server.port, BURST))
        took = time.monotonic() - started
        runs_after = server.runs()
        rss_after = rss_bytes(server.pid)

        assert errors == [], errors[:5]
        assert sum(answered.values()) == BURST
        assert {status for (path, status) in answered if path != "/healthz"} <= {200, 404}
        assert all(status == ROUTES[path] for (path, status) in answered if path != "/healthz"), answered
        assert {status for (path, status) in answered if path == "/healthz"} == {200}
        # The timer starts a run every INTERVAL seconds; requests start none.
        allowed = math.floor(took / INTERVAL) + 1
        assert runs_after - runs_before <= allowed, (runs_after - runs_before, allowed, took)
        assert rss_after - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_after)
        assert server.health()["status"] == "healthy"


class TestSlowClients:
    def test_slow_headers_do_not_block_other_requests(self, server):
        fds_before = open_fds(server.pid)
        latencies = asyncio.run(self.dribble_while_requesting(server.port))
        assert len(latencies) == 4 and max(latencies) < 1.0, latencies
        # The slow clients hung up: the server lets go of their sockets.
        wait_until(lambda: open_fds(server.pid) <= fds_before + 2, timeout=10, what="the slow sockets closed")
        assert server.get("/healthz").status == 200

    async def dribble_while_requesting(self, port: int) -> list[float]:
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n\r\n"
        stop = asyncio.Event()
        sent = [0] * SLOW_CLIENTS
        progress = asyncio.Condition()

        async def slow(index: int) -> None:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                for byte in request[:12]:  # bounded: never a whole request
                    writer.write(bytes([byte]))
                    await writer.drain()
                    sent[index] += 1
                    async with progress:
                        progress.notify_all()
                    try:  # one byte per second, unless the test is done
                        await asyncio.wait_for(stop.wait(), 1.0)
                        return
                    except asyncio.TimeoutError:
                        pass
            finally:
                writer.close()

        async def every_client_sent(count: int) -> None:
            async with progress:
                await asyncio.wait_for(progress.wait_for(lambda: min(sent) >= count), 15)

        dribblers = [asyncio.create_task(slow(i)) for i in range(SLOW_CLIENTS)]
        latencies = []
        try:
            for count in (1, 2, 3, 4):  # while every slow client is mid-header
                await every_client_sent(count)
                reply = await asyncio.to_thread(http_get, port, HEALTH, timeout=5)
                assert reply.status == 200
                latencies.append(reply.elapsed)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*dribblers, return_exceptions=True), 10)
        return latencies


HEADER_TIMEOUT = 2.0  # seconds: --header-timeout of the deadline server
CLOSE_SLACK = 4.0  # seconds a busy host may add before the server's timer closes a socket
IDLE_CONNECTIONS = 50


@pytest.fixture(scope="module")
def deadline_server(tmp_path_factory):
    """serve with a 2 s deadline on request heads; its broker port refuses (these tests read routes only)."""
    with ServeProcess("-A", "probe_test_app", "--deadline", "3", "--interval", "30",
                      "--header-timeout", str(HEADER_TIMEOUT),
                      env=app_env("redis://127.0.0.1:1/0"), cwd=tmp_path_factory.mktemp("deadline")) as serving:
        yield serving


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` seconds (EOF or reset), reading any answer."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


class TestHeaderDeadline:
    """--header-timeout: a request head not complete within the bound loses its connection."""

    def test_dripping_client_is_cut_after_the_bound_while_others_are_answered(self, deadline_server):
        sock = connect(deadline_server.port)
        started = time.monotonic()
        partial = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        latencies = []
        closed_at = None
        try:
            for index in range(40):  # bounded: 40 bytes at 0.2 s, 8 s in all, far past the bound
                try:
                    sock.sendall(partial[index:index + 1] or b"y")
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic() - started
                    break
                if index % 5 == 0:  # meanwhile another client is answered at once
                    reply = http_get(deadline_server.port, "/healthz", timeout=5)
                    assert reply.status in (200, 503)
                    latencies.append(reply.elapsed)
                if closed_by_server(sock, 0.2):
                    closed_at = time.monotonic() - started
                    break
        finally:
            sock.close()
        assert closed_at is not None, "the dripping client kept its connection"
        assert HEADER_TIMEOUT - 0.1 <= closed_at <= HEADER_TIMEOUT + CLOSE_SLACK, closed_at
        assert latencies and max(latencies) < 1.0, latencies

    def test_silent_connection_is_cut_after_the_bound(self, deadline_server):
        sock = connect(deadline_server.port)
        started = time.monotonic()
        try:
            assert closed_by_server(sock, HEADER_TIMEOUT + CLOSE_SLACK)
            took = time.monotonic() - started
        finally:
            sock.close()
        assert HEADER_TIMEOUT - 0.1 <= took <= HEADER_TIMEOUT + CLOSE_SLACK, took

    def test_next_keep_alive_request_gets_the_same_bound(self, deadline_server):
        sock = connect(deadline_server.port)
        try:
            # Requests on one connection for longer than the bound: the deadline is per head.
            for _ in range(5):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    assert chunk, "connection closed during keep-alive requests"
                    head += chunk
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += sock.recv(4096)
                assert head.startswith(b"HTTP/1.1 ")
                time.sleep(0.6)  # 5 x 0.6 s = 3 s on this connection, more than its 2 s bound
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # then a head that never ends
            started = time.monotonic()
            assert closed_by_server(sock, HEADER_TIMEOUT + CLOSE_SLACK)
            took = time.monotonic() - started
        finally:
            sock.close()
        assert HEADER_TIMEOUT - 0.1 <= took <= HEADER_TIMEOUT + CLOSE_SLACK, took

    def test_idle_half_open_connections_do_not_stop_a_request(self, deadline_server):
        fds_before = open_fds(deadline_server.pid)
        idle = [connect(deadline_server.port) for _ in range(IDLE_CONNECTIONS)]
        try:
            for sock in idle:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 1")
            wait_until(lambda: open_fds(deadline_server.pid) >= fds_before + IDLE_CONNECTIONS, timeout=10,
                       what="the server holding the idle connections")
            reply = http_get(deadline_server.port, "/healthz", timeout=5)
            assert reply.status in (200, 503) and reply.elapsed < 1.0, reply
            # Then the server lets go of every one of them, not the clients.
            wait_until(lambda: open_fds(deadline_server.pid) <= fds_before + 2,
                       timeout=HEADER_TIMEOUT + CLOSE_SLACK + 5, what="the idle connections closed by serve")
            assert all(closed_by_server(sock, 1.0) for sock in idle)
        finally:
            for sock in idle:
                sock.close()


class TestOpenApi:
    def test_describes_the_five_routes(self, server):
        reply = server.get(OPENAPI_PATH)
        assert reply.status == 200 and reply.headers["content-type"] == "application/json"
        document = reply.json()
        assert document["openapi"].startswith("3.1")
        assert set(document["paths"]) == {HEALTH, "/healthz", "/metrics", OPS_ALERTS, "/"}
        assert list(document["paths"]["/"]["get"]["responses"]["200"]["content"]) == ["text/html"]
        assert set(document["paths"]["/healthz"]["get"]["responses"]) == {"200", "503"}
        # Mounted in a host app the host's own /openapi.json stays the host's.
        service = ProbeService(Settings(broker="redis://127.0.0.1:1/0"), interval=1)
        assert OPENAPI_PATH not in service.paths


class TestSchemathesis:
    """schemathesis against the live server: status codes, content types, headers, bodies; no 5xx.

    Its Python API drives hypothesis directly (its pytest plugin's lazy fixture loading
    does not support pytest 9), one property per operation, bounded to 50 examples.
    """

    def test_every_answer_matches_the_openapi_description(self, server):
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{server.port}{OPENAPI_PATH}")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert sorted(op.path for op in operations) == sorted([HEALTH, "/healthz", "/metrics", OPS_ALERTS, "/"])
        calls: Counter[str] = Counter()
        for operation in operations:
            answers_as_described(operation, calls)()
        assert set(calls) == {op.path for op in operations}, calls


def answers_as_described(operation, calls: Counter[str]):
    """A hypothesis property over ``operation``'s generated requests, at most 50 examples."""

    @given(case=operation.as_strategy())
    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:
        response = case.call_and_validate(timeout=5)
        calls[operation.path] += 1
        if response.headers.get("content-type", [""])[0].startswith("application/json"):
            json.loads(response.content)

    return check

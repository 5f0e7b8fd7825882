"""Redis as operators deploy it: TLS (rediss://) and Sentinel, with real servers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from celery_probe.testing import RedisServer, free_port, wait_until
from tests.support.environment import app_env

pytestmark = pytest.mark.redis_only


@pytest.fixture
def tls_redis(tmp_path: Path):
    """A redis-server that speaks only TLS, with a self-signed certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=127.0.0.1", "-days", "1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    port = free_port()
    server = RedisServer(port=free_port(), extra=[
        "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
    ])
    server.start()  # the plain port is only used by the fixture's own readiness check
    query = f"ssl_cert_reqs=required&ssl_ca_certs={cert}"
    yield f"rediss://127.0.0.1:{port}/0?{query}", f"rediss://127.0.0.1:{port}/1?{query}"
    server.close()


@pytest.fixture
def sentinel(tmp_path: Path):
    """A master redis-server and one Sentinel watching it as `mymaster`."""
    with RedisServer() as master:
        port = free_port()
        config = tmp_path / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        )
        proc = subprocess.Popen(["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            import redis

            def answers() -> bool:
                with redis.Redis(port=port, socket_timeout=0.5) as client:
                    return client.sentinel_get_master_addr_by_name("mymaster") is not None

            wait_until(answers, timeout=10, what="sentinel up")
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_rediss_broker_and_backend(tls_redis, start_worker, cli):
    broker, backend = tls_redis
    env = app_env(broker, backend)
    start_worker(env)
    result = cli("run", "-A", "probe_test_app", "--expect-workers", "1", "--deadline", "3", "--format", "json", env=env)
    verdict = result.verdict()
    assert result.code == 0, verdict["reasons"]
    assert verdict["target"].startswith("app probe_test_app on rediss://")
    assert verdict["queues"]["celery"]["by_priority"] == {"0": 0}  # measured the Redis way
    plain = cli("run", "-b", broker, "--backend", backend, "--deadline", "3", "--format", "json")
    assert plain.code == 0, plain.stdout


def test_sentinel_broker_and_backend(sentinel, start_worker, cli):
    options = json.dumps({"master_name": "mymaster"})
    env = app_env(f"sentinel://127.0.0.1:{sentinel}/0", f"sentinel://127.0.0.1:{sentinel}/1",
                  PROBE_TEST_TRANSPORT_OPTIONS=options, PROBE_TEST_BACKEND_TRANSPORT_OPTIONS=options)
    start_worker(env)
    result = cli("run", "-A", "probe_test_app", "--expect-workers", "1", "--deadline", "3", "--format", "json", env=env)
    verdict = result.verdict()
    assert result.code == 0, verdict["reasons"]
    assert verdict["target"].startswith("app probe_test_app on sentinel://")
    assert verdict["roundtrip_ms"] is not None and "by_priority" in verdict["queues"]["celery"]


def test_sentinel_that_does_not_answer_is_bounded(cli, tmp_path):
    from tests.support.faults import TcpProxy

    with RedisServer() as master, TcpProxy(master.port) as proxy:
        proxy.blackhole()
        options = json.dumps({"master_name": "mymaster"})
        env = app_env(f"sentinel://127.0.0.1:{proxy.port}/0", f"sentinel://127.0.0.1:{proxy.port}/1",
                      PROBE_TEST_TRANSPORT_OPTIONS=options, PROBE_TEST_BACKEND_TRANSPORT_OPTIONS=options)
        result = cli("run", "-A", "probe_test_app", "--deadline", "2", "--format", "json", env=env)
    assert result.code == 2 and result.verdict()["reasons"][0]["code"] == "celery_broker_unreachable"
    assert result.elapsed < 2 + 1 + 0.6

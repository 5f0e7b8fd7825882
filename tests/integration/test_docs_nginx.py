"""docs/deploy/nginx-celery-probe.conf, run by a real nginx in front of a real ``celery-probe serve``.

The sample is used as published, with only its ports and paths substituted: the TLS listener
moves to a free loopback port, the upstream to serve's port, the certificate to a throwaway
one and the cache to a temporary folder. nginx runs in the foreground (``daemon off``) under a
temporary prefix, with its pid, logs and temp folders there too, so no root is needed (as
root, its workers run as the same user, because the temporary folder is private). Requests
go through nginx over TLS and check what docs/production.md says nginx does: the verdict is
public and cached, ``/metrics``, the ops-alerts document and the status page answer only
internal addresses, everything else is 404.

Where nginx is missing the test skips, except under CI, where it fails: a check that never
runs is no check (``scripts/install-test-deps`` installs Debian's nginx-light).
"""

from __future__ import annotations

import getpass
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from celery_probe.testing import CeleryWorker, GaveUp, GroupProcess, free_port, wait_until
from tests.support.environment import APPS, ROOT, app_env, missing_system_program
from tests.support.serving import HEALTH, Reply, ServeProcess

pytestmark = pytest.mark.redis_only  # a private redis-server; nginx does not depend on --broker

SAMPLE = ROOT / "docs" / "deploy" / "nginx-celery-probe.conf"
OPS_ALERTS = "/api/interactions/metrics/ops-alerts"
INSIDE = "127.0.0.1"  # allowed by the sample's `allow 127.0.0.1`
OUTSIDE = "127.0.0.2"  # loopback too, but in none of the sample's allow lines
START_TIMEOUT = 20.0


def nginx_binary() -> str | None:
    """nginx on PATH, or in /usr/sbin (not on a non-root PATH on Debian)."""
    return shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))


def substitute(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced; the sample must contain it exactly once, or the test is stale."""
    assert text.count(old) == 1, f"{SAMPLE.name} no longer contains {old!r} exactly once: update this test"
    return text.replace(old, new)


def site_config(port: int, upstream: int, folder: Path, cert: Path, key: Path) -> str:
    """The published sample with its port and paths substituted, nothing else."""
    text = SAMPLE.read_text()
    text = substitute(text, "listen 443 ssl;", f"listen {INSIDE}:{port} ssl;")
    text = substitute(text, "server 127.0.0.1:8001;", f"server 127.0.0.1:{upstream};")
    text = substitute(text, "/etc/ssl/certs/status.example.com.pem", str(cert))
    text = substitute(text, "/etc/ssl/private/status.example.com.key", str(key))
    return substitute(text, "/var/cache/nginx/celery-probe", str(folder / "cache"))


def main_config(nginx: str, folder: Path) -> str:
    """A minimal nginx.conf around the sample: foreground, every path under ``folder``."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=30, check=True).stderr
    temp = ["client_body", "proxy"] + [m for m in ("fastcgi", "uwsgi", "scgi")
                                       if f"--without-http_{m}_module" not in built]
    lines = ["daemon off;", f"pid {folder}/nginx.pid;", f"error_log {folder}/error.log info;",
             "worker_processes 1;", "events { worker_connections 64; }", "http {",
             f"  access_log {folder}/access.log;",
             *(f"  {name}_temp_path {folder}/{name}_temp;" for name in temp),
             f"  include {folder}/site.conf;", "}"]
    if os.geteuid() == 0:  # workers would drop to www-data, which cannot enter the private tmp folder
        lines.insert(0, f"user {getpass.getuser()};")
    return "\n".join(lines) + "\n"


@dataclass
class Nginx(GroupProcess):
    """A foreground nginx with its own prefix; requests over TLS from a chosen source address."""

    binary: str
    folder: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def command(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"),
                "-e", str(self.folder / "error.log"), *extra]

    def start(self) -> Nginx:
        test = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30, check=False)
        assert test.returncode == 0, f"nginx -t refused the sample: {test.stderr}"
        with open(self.folder / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         start_new_session=True)

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise GaveUp(f"nginx exited with {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection((INSIDE, self.port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_until(listening, timeout=START_TIMEOUT, interval=0.05, what="nginx listening")
        return self

    def log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def get(self, path: str, *, source: str = INSIDE) -> Reply:
        """GET over TLS (the throwaway certificate is not verified) from ``source``."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(INSIDE, self.port, timeout=10, context=context,
                                           source_address=(source, 0))
        try:
            conn.request("GET", path, headers={"Host": "status.example.com"})
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(), 0.0)
        finally:
            conn.close()

    def stop(self) -> None:
        """SIGQUIT (graceful) to its process group, then SIGKILL if it lingers past 10 s."""
        if self.proc is None:
            return
        self._signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@pytest.fixture(scope="module")
def nginx_binary_or_skip() -> str:
    binary = nginx_binary()
    if binary is None:
        missing_system_program("nginx is not installed")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def served(module_redis, tmp_path_factory) -> Iterator[ServeProcess]:
    """A healthy ``celery-probe serve`` with a report dir (so ``/`` has a history to show)."""
    env = app_env(module_redis.url(0), module_redis.url(1))
    folder = tmp_path_factory.mktemp("served")
    worker = CeleryWorker("probe_test_app", name="nginx@%h", env=env, pythonpath=[APPS]).start(timeout=40)
    args = ["-A", "probe_test_app", "--expect-workers", "1", "--interval", "60", "--roundtrip-slow", "4",
            "--report-dir", str(folder / "reports")]
    try:
        with ServeProcess(*args, env=env, cwd=folder) as server:
            wait_until(lambda: server.health()["status"] == "healthy", timeout=30, what="a healthy verdict")
            yield server
    finally:
        worker.close()


@pytest.fixture(scope="module")
def nginx(nginx_binary_or_skip, served, tmp_path_factory) -> Iterator[Nginx]:
    folder = tmp_path_factory.mktemp("nginx")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=status.example.com",
                    "-keyout", str(key), "-out", str(cert), "-days", "1"],
                   capture_output=True, timeout=60, check=True)
    port = free_port()
    (folder / "site.conf").write_text(site_config(port, served.port, folder, cert, key))
    (folder / "nginx.conf").write_text(main_config(nginx_binary_or_skip, folder))
    server = Nginx(nginx_binary_or_skip, folder, port)
    try:
        yield server.start()
    finally:
        server.stop()


def test_the_published_routes_through_nginx(nginx, served):
    """Public: the verdict (from nginx's cache while serve's max-age lasts) and /healthz."""
    first = nginx.get(HEALTH)
    assert first.status == 200, (first, nginx.log())
    assert first.json()["status"] == "healthy" and "max-age=" in first.headers["cache-control"]
    age = first.json()["age_s"]
    # serve's own answer moves on (age_s grows); nginx keeps answering the stored copy.
    wait_until(lambda: served.health()["age_s"] != age, timeout=10, interval=0.05, what="serve's age_s to move")
    again = nginx.get(HEALTH)
    assert again.status == 200 and again.body == first.body, "the health verdict was not served from nginx's cache"

    healthz = nginx.get("/healthz")
    assert healthz.status == 200 and healthz.headers["x-celery-probe-status"] == "healthy"
    assert healthz.headers["cache-control"] == "no-store"


def test_internal_routes_answer_inside_only(nginx):
    """/metrics, ops-alerts and the status page: 200 from the allowed address, 403 from another."""
    metrics = nginx.get("/metrics")
    assert metrics.status == 200 and 'celery_probe_status{status="healthy"} 1.0' in metrics.body.decode()
    alerts = nginx.get(OPS_ALERTS)
    assert alerts.status == 200 and "celery_health" in alerts.json()
    page = nginx.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert re.search(r'id="verdict"[^>]*data-status="healthy"', page.body.decode()), page.body[:500]

    for path in ("/metrics", OPS_ALERTS, "/"):
        assert nginx.get(path, source=OUTSIDE).status == 403, path
    assert nginx.get(HEALTH, source=OUTSIDE).status == 200  # public from anywhere


def test_everything_else_is_404_at_nginx(nginx, served):
    assert served.get("/openapi.json").status == 200  # serve has it...
    for path in ("/openapi.json", "/api/interactions/health", "/status", "/metrics/extra"):
        assert nginx.get(path).status == 404, path  # ...nginx does not publish it

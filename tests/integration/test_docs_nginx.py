"""docs/deploy/nginx-celery-probe.conf, checked by Debian's nginx as shipped and run in front of ``serve``.

As shipped: the sample with only what an operator must change (its hostname, certificate and
upstream port, as its comments and docs/production.md list them) and its listener moved to a
free loopback port (``nginx -t`` binds it) goes through real ``nginx -t``
under a copy of Debian's own /etc/nginx/nginx.conf. The copy differs only where a test must not
touch the host, each change named in :func:`debian_main_config`.

Running: the sample with only its ports and paths substituted: the TLS listener
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

import contextlib
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
SHIPPED_CACHE = "/var/cache/nginx-celery-probe"  # the sample's proxy_cache_path
DEBIAN_NGINX_CONF = Path("/etc/nginx/nginx.conf")  # as Debian's nginx-common ships it
OPS_ALERTS = "/api/interactions/metrics/ops-alerts"
INSIDE = "127.0.0.1"  # allowed by the sample's `allow 127.0.0.1`
OUTSIDE = "127.0.0.2"  # loopback too, but in none of the sample's allow lines
START_TIMEOUT = 20.0


def nginx_binary() -> str | None:
    """nginx on PATH, or in /usr/sbin (not on a non-root PATH on Debian)."""
    return shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"]))


def substitute(text: str, old: str, new: str, where: str = SAMPLE.name) -> str:
    """``text`` with ``old`` replaced; ``where`` must contain it exactly once, or the test is stale."""
    assert text.count(old) == 1, f"{where} no longer contains {old!r} exactly once: update this test"
    return text.replace(old, new)


def operator_site(*, hostname: str, cert: Path, key: Path, upstream: int) -> str:
    """The sample with what an operator must change (its comments' list), and nothing else."""
    text = SAMPLE.read_text()
    text = substitute(text, "server_name status.example.com;", f"server_name {hostname};")
    text = substitute(text, "/etc/ssl/certs/status.example.com.pem", str(cert))
    text = substitute(text, "/etc/ssl/private/status.example.com.key", str(key))
    return substitute(text, "server 127.0.0.1:8001;", f"server 127.0.0.1:{upstream};")


def site_config(port: int, upstream: int, folder: Path, cert: Path, key: Path) -> str:
    """The operator's sample, its listener on a free loopback port and its cache in ``folder``."""
    text = operator_site(hostname="status.example.com", cert=cert, key=key, upstream=upstream)
    text = substitute(text, "listen 443 ssl;", f"listen {INSIDE}:{port} ssl;")
    return substitute(text, SHIPPED_CACHE, str(folder / "cache"))


def built_temp_paths(nginx: str) -> dict[str, str]:
    """The temp folders compiled into ``nginx`` (``--http-proxy-temp-path=...``), by directive prefix."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=30, check=True).stderr
    found = re.findall(r"--http-(client-body|proxy|fastcgi|uwsgi|scgi)-temp-path=(\S+)", built)
    return {name.replace("-", "_"): path for name, path in found}


def debian_main_config(folder: Path, temp_paths: dict[str, str], *, as_root: bool) -> str:
    """Debian's own /etc/nginx/nginx.conf, changed only where a test must not touch the host.

    - the ``conf.d`` include reads the test's folder: the sample is not installed into the host's
      /etc/nginx/conf.d (which is where an operator puts it);
    - the ``sites-enabled`` include is dropped: the host's own sites are not under test, and
      ``nginx -t`` would bind their listeners (Debian's default site: port 80);
    - ``pid``, ``error_log`` and ``access_log`` go to the test's folder: ``nginx -t`` opens all three,
      and the host's (a running nginx's pid file, its logs) are not the test's to write;
    - not as root only: the compiled-in temp folders (in /var/lib/nginx) move to the test's
      folder, as a user other than root cannot create them.
    """
    where = str(DEBIAN_NGINX_CONF)
    text = DEBIAN_NGINX_CONF.read_text()
    text = substitute(text, "include /etc/nginx/conf.d/*.conf;", f"include {folder}/conf.d/*.conf;", where)
    text = substitute(text, "include /etc/nginx/sites-enabled/*;", "", where)
    text = substitute(text, "pid /run/nginx.pid;", f"pid {folder}/nginx.pid;", where)
    text = substitute(text, "error_log /var/log/nginx/error.log;", f"error_log {folder}/error.log;", where)
    text = substitute(text, "access_log /var/log/nginx/access.log;", f"access_log {folder}/access.log;", where)
    if not as_root:
        temp = "".join(f"\n\t{name}_temp_path {folder}/{name}_temp;" for name in temp_paths)
        text = substitute(text, "http {\n", "http {" + temp + "\n", where)
    return text


def throwaway_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=status.example.com",
                    "-keyout", str(key), "-out", str(cert), "-days", "1"],
                   capture_output=True, timeout=60, check=True)
    return cert, key


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
    cert, key = throwaway_certificate(folder)
    port = free_port()
    (folder / "site.conf").write_text(site_config(port, served.port, folder, cert, key))
    (folder / "nginx.conf").write_text(main_config(nginx_binary_or_skip, folder))
    server = Nginx(nginx_binary_or_skip, folder, port)
    try:
        yield server.start()
    finally:
        server.stop()


def test_the_shipped_file_passes_nginx_t_under_debians_nginx_conf(nginx_binary_or_skip, tmp_path):
    """Only hostname, certificate and upstream port changed, and Debian's nginx accepts it."""
    if not DEBIAN_NGINX_CONF.is_file():
        missing_system_program(f"{DEBIAN_NGINX_CONF} is missing (Debian's nginx-common ships it)")
    as_root = os.geteuid() == 0
    cert, key = throwaway_certificate(tmp_path)
    site = operator_site(hostname="probe.example.test", cert=cert, key=key, upstream=18001)
    # nginx -t binds every listener: 443 is privileged and may be taken on this host.
    site = substitute(site, "listen 443 ssl;", f"listen {INSIDE}:{free_port()} ssl;")
    assert f"proxy_cache_path {SHIPPED_CACHE} " in site
    if not as_root:  # nginx cannot create it in /var/cache; it creates the last part only, so:
        assert Path(SHIPPED_CACHE).parent.is_dir(), f"{SHIPPED_CACHE}'s folder does not exist here"
        site = substitute(site, SHIPPED_CACHE, str(tmp_path / "cache"))
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "celery-probe.conf").write_text(site)
    temp_paths = built_temp_paths(nginx_binary_or_skip)
    (tmp_path / "nginx.conf").write_text(debian_main_config(tmp_path, temp_paths, as_root=as_root))
    # As root, nginx -t creates the cache and temp folders as it would for the operator; those
    # this test created are removed again (only if still empty).
    host_folders = [Path(p) for p in (SHIPPED_CACHE, *temp_paths.values())] if as_root else []
    created = [p for p in host_folders if not p.exists()]
    try:
        test = subprocess.run([nginx_binary_or_skip, "-t", "-c", str(tmp_path / "nginx.conf"),
                               "-e", str(tmp_path / "error.log")],
                              capture_output=True, text=True, timeout=30, check=False)
    finally:
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()
    assert test.returncode == 0 and "test is successful" in test.stderr, test.stderr


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

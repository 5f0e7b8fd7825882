"""The Kubernetes manifests' own command lines, run for real, probed with the manifests' own probes.

What a kubelet would do, without a cluster: start the container's command line with the
Secret's values in the environment variables the manifest names, then run each probe as the
manifest gives it (an exec probe's argument array, an httpGet, a tcpSocket), each within its
``timeoutSeconds``. Only what cannot be the same on a test machine is substituted: the program
paths (this environment's ``celery`` and ``celery-probe``), the ``emptyDir`` mount (a temporary
folder), the listening address (loopback, not 0.0.0.0) and port (a free one), and the app
module ``proj`` (a small one written here, from a private redis-server).

The worker test needs ``celery_probe.worker.install`` and ``celery-probe worker-check``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from celery_probe.testing import GaveUp, GroupProcess, RedisServer, free_port, wait_until
from tests.support.kubernetes import MANIFESTS, Container, option_value, resource, the_container
from tests.support.serving import ServeProcess, http_get

pytestmark = pytest.mark.redis_only  # a private redis-server, stopped and started by the worker test

WORKER = MANIFESTS / "worker-deployment.yaml"
SERVE = MANIFESTS / "serve-deployment.yaml"
BIN = Path(sys.executable).parent
WORKER_APP = """\
from celery import Celery

from celery_probe.worker import install

app = Celery("proj")  # broker and backend from CELERY_BROKER_URL / CELERY_RESULT_BACKEND
install(app)
"""
PLAIN_APP = 'from celery import Celery\n\napp = Celery("proj")\n'


def program(argv: list[str]) -> list[str]:
    """``argv`` with its program taken from this environment, as the image's PATH would give it."""
    found = BIN / argv[0]
    assert found.exists(), f"{argv[0]} is not installed in {BIN}"
    return [str(found), *argv[1:]]


def environment(container: Container, secret: dict[str, str], **extra: str) -> dict[str, str]:
    """The container's variables as the kubelet sets them: each secretKeyRef read from ``secret``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CELERY")}
    for name, item in container.env().items():
        ref = item["valueFrom"]["secretKeyRef"]
        env[name] = secret[ref["key"]]
    return {**env, **extra}


@dataclass
class Outcome:
    code: int
    output: str
    elapsed: float


def run_probe(container: Container, kind: str, folder: str, real_folder: Path, env: dict[str, str]) -> Outcome:
    """One exec probe as the kubelet runs it: its argument array, killed at its timeoutSeconds."""
    probe = container.spec[kind]
    argv = [str(real_folder) if arg == folder else arg for arg in program(probe["exec"]["command"])]
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=probe["timeoutSeconds"], check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{kind} ran past its timeoutSeconds ({probe['timeoutSeconds']} s): Kubernetes counts a failure")
    elapsed = time.monotonic() - started
    assert "Traceback" not in proc.stderr, proc.stderr
    return Outcome(proc.returncode, (proc.stdout + proc.stderr).strip(), elapsed)


class ManifestWorker(GroupProcess):
    """The worker container's command line, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.argv, self.env, self.cwd = argv, env, cwd
        self.log = cwd / "worker.log"

    def start(self) -> ManifestWorker:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        return self

    def check_alive(self) -> None:
        if not self.alive():
            raise GaveUp(f"the worker exited: {self.log.read_text(errors='replace')[-2000:]}")


@pytest.mark.slow
def test_worker_manifest_probes_a_real_worker_through_a_broker_outage(tmp_path):
    """Startup, liveness and readiness pass on a worker started as the Deployment starts it; with
    the broker stopped it turns unready but stays live past liveness' max age (no restart); with
    the broker back it is ready again."""
    container = the_container(WORKER)
    folder = option_value(container.argv, "--probe-dir")
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()  # the emptyDir: there before the container starts
    (tmp_path / "proj.py").write_text(WORKER_APP)
    argv = [str(probe_dir) if arg == folder else arg for arg in program(container.argv)]
    timings: list[float] = []
    with RedisServer() as redis:
        secret = {"broker-url": redis.url(0), "result-backend": redis.url(1)}
        env = environment(container, secret, PYTHONPATH=str(tmp_path))
        worker = ManifestWorker(argv, env, tmp_path).start()
        try:
            def passes(kind: str) -> Outcome | None:
                worker.check_alive()
                outcome = run_probe(container, kind, folder, probe_dir, env)
                timings.append(outcome.elapsed)
                return outcome if outcome.code == 0 else None

            def fails(kind: str) -> Outcome | None:
                worker.check_alive()
                outcome = run_probe(container, kind, folder, probe_dir, env)
                timings.append(outcome.elapsed)
                return outcome if outcome.code != 0 else None

            wait_until(lambda: passes("startupProbe"), timeout=60, interval=0.5, what="the startup probe passing")
            wait_until(lambda: passes("readinessProbe"), timeout=60, interval=0.5, what="the worker ready")
            assert passes("livenessProbe"), "a ready worker is live"

            redis.stop()
            stopped = time.monotonic()
            ready_age = float(option_value(container.spec["readinessProbe"]["exec"]["command"], "--max-age"))
            unready = wait_until(lambda: fails("readinessProbe"), timeout=ready_age + 30, interval=1,
                                 what="the worker unready without its broker")
            assert len(unready.output.splitlines()) == 1 and unready.output, unready.output
            live_age = float(option_value(container.spec["livenessProbe"]["exec"]["command"], "--max-age"))
            for _ in range(60):  # every 2 s until liveness' max age has passed with the broker down
                outcome = run_probe(container, "livenessProbe", folder, probe_dir, env)
                timings.append(outcome.elapsed)
                assert outcome.code == 0, f"liveness failed with the broker down: {outcome.output}"
                if time.monotonic() - stopped > live_age + 5:
                    break
                time.sleep(2)
            else:
                pytest.fail("liveness' max age never passed")
            worker.check_alive()

            redis.start()
            wait_until(lambda: passes("readinessProbe"), timeout=120, interval=1,
                       what="the worker ready again with its broker back")
        finally:
            worker.stop(timeout=30)
    slowest = max(timings)
    timeout = min(container.spec[kind]["timeoutSeconds"] for kind in container.probes())
    assert slowest < timeout, f"a probe took {slowest:.2f}s of its {timeout}s"


def test_serve_manifest_probes_answer_while_celery_is_down(tmp_path):
    """``serve`` started as its Deployment starts it, with a broker nobody listens on: its verdict
    is down (and /healthz 503), yet both of its probes pass within their timeouts, so Kubernetes
    neither restarts it nor takes it out of its Service."""
    container = the_container(SERVE)
    assert option_value(container.argv, "--host") == "0.0.0.0"
    shipped_port = option_value(container.argv, "--port")
    argv = program(container.argv)
    argv = [{"0.0.0.0": "127.0.0.1", shipped_port: "{port}"}.get(arg, arg) for arg in argv]
    (tmp_path / "proj.py").write_text(PLAIN_APP)
    nobody = free_port()
    secret = {"broker-url": f"redis://127.0.0.1:{nobody}/0", "result-backend": f"redis://127.0.0.1:{nobody}/1"}
    env = environment(container, secret, PYTHONPATH=str(tmp_path))
    ports = {item["name"]: item["containerPort"] for item in container.spec["ports"]}
    assert resource(SERVE, "Service")["spec"]["ports"][0]["targetPort"] in ports
    with ServeProcess(command=argv, env=env, cwd=tmp_path) as server:
        server.wait_status("down", timeout=60, path="/healthz")
        assert server.get("/healthz").status == 503, "the reason /healthz is no liveness probe"
        live = container.spec["livenessProbe"]
        assert ports[live["httpGet"]["port"]] == int(shipped_port)
        reply = http_get(server.port, live["httpGet"]["path"], timeout=live["timeoutSeconds"])
        assert 200 <= reply.status < 400 and reply.elapsed < live["timeoutSeconds"], reply
        ready = container.spec["readinessProbe"]
        assert ports[ready["tcpSocket"]["port"]] == int(shipped_port)
        with socket.create_connection(("127.0.0.1", server.port), timeout=ready["timeoutSeconds"]):
            pass

"""``celery-probe demo`` as an operator runs it: a real process that must clean up after itself.

Every process the demo starts inherits its environment, so the tests tag that environment
with a unique value and afterwards look for any live process still carrying the tag (worker,
probe run). redis-server overwrites its environment block when it sets its process title, so
it is found by the port the demo printed instead, and the worker also by its printed pid.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

DEMO_TIMEOUT = 120.0
TAG_VAR = "CELERY_PROBE_DEMO_TEST_TAG"
HEALTHY_LINE = "celery-probe: HEALTHY"
DOWN_LINE = "celery-probe: DOWN"

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find leaks")


def demo_command() -> list[str]:
    """The installed console script when there is one next to this interpreter."""
    script = Path(sys.executable).with_name("celery-probe")
    return [str(script), "demo"] if script.exists() else [sys.executable, "-m", "celery_probe", "demo"]


def demo_env(tag: str, **overrides: str) -> dict[str, str]:
    """Plain text output (no colour codes to match around) and the leak-detection tag."""
    env = {k: v for k, v in os.environ.items() if k != "FORCE_COLOR"}
    env.update({"NO_COLOR": "1", TAG_VAR: tag, **overrides})
    return env


def _live(pid: str) -> bool:
    """Running or stopped, not a zombie (a zombie holds no port and runs no code)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def tagged_processes(tag: str) -> list[int]:
    """Pids of live processes whose environment carries ``tag``."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0") and _live(entry.name):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def redis_servers_on(port: str) -> list[str]:
    """``pgrep -f`` for the process title redis-server gives itself: ``redis-server 127.0.0.1:PORT``."""
    found = subprocess.run(
        ["pgrep", "-f", f"^redis-server 127\\.0\\.0\\.1:{port}( |$)"], capture_output=True, text=True, timeout=10,
    ).stdout.split()
    return [pid for pid in found if _live(pid)]


def worker_running(pid: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"celery_probe.cli.demo_app" in cmdline and _live(pid)


def port_listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check, timeout: float) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes (children may take a moment to go)."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)
    return True


def assert_cleaned_up(tag: str, output: str) -> None:
    """Nothing the demo started is left: no tagged process, redis-server, worker or temp folder."""
    ports = re.findall(r"redis-server on 127\.0\.0\.1:(\d+)", output)
    workers = re.findall(r"solo pool, pid (\d+)", output)
    assert workers, f"the demo did not print its worker's pid:\n{output}"

    def gone() -> bool:
        return not (
            tagged_processes(tag)
            or any(redis_servers_on(port) or port_listening(int(port)) for port in ports)
            or any(worker_running(pid) for pid in workers)
        )

    if not wait_for(gone, 5.0):
        redis = [pid for port in ports for pid in redis_servers_on(port)]
        running = [pid for pid in workers if worker_running(pid)]
        pytest.fail(f"left running: tagged {tagged_processes(tag)}, redis-server {redis}, worker {running}\n{output}")
    for folder in set(re.findall(r"(/\S*celery-probe-demo-[^/\s]+)", output)):
        assert not Path(folder).exists(), f"temp folder {folder} not removed"


def run_demo(tag: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        demo_command(), env=demo_env(tag, **env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=DEMO_TIMEOUT,
    )


def assert_healthy_then_down(proc: subprocess.CompletedProcess[str]) -> None:
    out = proc.stdout
    assert proc.returncode == 0, out
    assert HEALTHY_LINE in out and DOWN_LINE in out, out
    assert out.index(HEALTHY_LINE) < out.index(DOWN_LINE), out
    assert "celery_worker_down" in out[out.index(DOWN_LINE):], out
    assert "run 1 healthy (exit 0), run 2 down (exit 2" in out, out
    assert "Traceback" not in out, out


def test_demo_shows_healthy_then_down_and_cleans_up() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    tag = uuid.uuid4().hex
    proc = run_demo(tag)
    assert_healthy_then_down(proc)
    assert "private redis-server on 127.0.0.1:" in proc.stdout
    assert_cleaned_up(tag, proc.stdout)


def test_demo_without_redis_uses_the_filesystem_transport() -> None:
    """With no redis-server on PATH the demo falls back to kombu's filesystem transport."""
    bindir = Path(sys.executable).parent
    if (bindir / "redis-server").exists():
        pytest.skip("redis-server sits next to the interpreter; cannot hide it via PATH")
    tag = uuid.uuid4().hex
    proc = run_demo(tag, PATH=str(bindir))
    assert_healthy_then_down(proc)
    assert "kombu filesystem transport" in proc.stdout
    assert_cleaned_up(tag, proc.stdout)


def read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float) -> str:
    """Read the child's output incrementally until ``marker`` shows up (bounded)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    end = time.monotonic() + timeout
    while marker.encode() not in seen:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{marker!r} not seen within {timeout:g}s:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"demo exited before {marker!r}:\n{seen.decode(errors='replace')}")
            seen += chunk
    return seen.decode(errors="replace")


def drain(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The rest of the output until EOF, bounded (an orphan holding the pipe must not hang us)."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    rest = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            rest += chunk
    return rest.decode(errors="replace")


@pytest.mark.parametrize(("signum", "expected_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_demo_exits_promptly_and_leaves_nothing_behind(signum: int, expected_code: int) -> None:
    """Ctrl-C (SIGINT) or a service manager's SIGTERM after the first verdict: cleanup still runs."""
    tag = uuid.uuid4().hex
    proc = subprocess.Popen(
        demo_command(), env=demo_env(tag), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output = read_until(proc, HEALTHY_LINE, timeout=60.0)
        assert tagged_processes(tag), "the demo should have a worker running at this point"
        started = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=30.0)
        elapsed = time.monotonic() - started
        output += drain(proc, timeout=5.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == expected_code, output
    assert "interrupted" in output, output
    assert elapsed < 30.0
    assert "Traceback" not in output, output
    assert_cleaned_up(tag, output)

"""An --on-down command for the tests: note the call, then start a fresh worker, detached.

    python restart_worker.py CALLS PIDFILE LOGFILE NAME QUEUE DELAY [URL]

Appends one JSON line to CALLS (its arguments and the CELERY_PROBE_* variables it got),
prints URL and the password in it (the run must scrub both from what it records), then
starts ``celery worker`` for probe_test_app in a session of its own, DELAY seconds later,
adding its pid to PIDFILE so the test can stop it. The worker inherits the broker settings
(PROBE_TEST_*) from this process's environment, as a real restart script would from its unit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def launch(delay: float, logfile: str, name: str, queue: str) -> None:
    """The detached child: wait, then become the worker (same pid, so PIDFILE stays right)."""
    time.sleep(delay)
    log = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.execv(sys.executable, [
        sys.executable, "-m", "celery", "-A", "probe_test_app", "worker", "-P", "solo", "-c", "1",
        "-n", name, "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO",
    ])


def main(argv: list[str]) -> int:
    if argv[0] == "--launch":
        launch(float(argv[1]), argv[2], argv[3], argv[4])
        return 1
    calls, pidfile, logfile, name, queue, delay = argv[:6]
    url = argv[6] if len(argv) > 6 else ""
    seen = {key: value for key, value in os.environ.items() if key.startswith("CELERY_PROBE_")}
    with open(calls, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"argv": argv, "env": seen}) + "\n")
    if url:
        print(f"restarting workers of {url}")
        print(f"password was {urlsplit(url).password}", file=sys.stderr)
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--launch", delay, logfile, name, queue],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    with open(pidfile, "a", encoding="utf-8") as handle:  # one line per start: the test stops them all
        handle.write(f"{proc.pid}\n")
    print(f"started worker {name} (pid {proc.pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

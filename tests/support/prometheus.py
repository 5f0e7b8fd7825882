"""Debian's Prometheus (and promtool) for tests: a real server on a free loopback port.

Where the program is missing the test skips, except under CI, where it fails
(``scripts/install-test-deps`` installs Debian's ``prometheus``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from celery_probe.testing import GaveUp, GroupProcess, free_port, wait_until
from tests.support.environment import missing_system_program


def program(name: str) -> str:
    """``name`` on PATH or in /usr/bin, or skip (fail under CI)."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found is None:
        missing_system_program(f"{name} (Debian package prometheus) is not installed")
    assert found is not None
    return found


class PrometheusServer(GroupProcess):
    """Prometheus with ``config`` (a dict written as its YAML file) on a free loopback port."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.folder = folder
        (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.log = folder / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [program("prometheus"), f"--config.file={self.folder / 'prometheus.yml'}",
                 f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise GaveUp(f"prometheus exited with {self.proc.returncode}: {self.log.read_text()}")
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as reply:
                return reply.status == 200

        try:
            wait_until(ready, timeout=30, interval=0.1, what="prometheus ready")
        except BaseException:
            self.stop(timeout=15)  # a server that never got ready is not left running
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(timeout=15)

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}{query}", timeout=2) as reply:
            return json.load(reply)["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr``: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        return self.api("query", query=expr)["result"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """``{alertname: [labels of each firing alert]}``."""
        found: dict[str, list[dict[str, str]]] = {}
        for alert in self.alerts():
            if alert["state"] == "firing":
                found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return found

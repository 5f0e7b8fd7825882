"""Debian's real Prometheus on a free loopback port, scraping every second, queried over its API."""

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
    """Prometheus scraping ``scrape_configs`` and evaluating ``rules`` (a rules file's text) every second."""

    def __init__(self, folder: Path, scrape_configs: list[dict[str, Any]], rules: str | None = None) -> None:
        self.port = free_port()
        self.folder = folder
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }
        if rules is not None:
            (folder / "rules.yml").write_text(rules)
            config["rule_files"] = [str(folder / "rules.yml")]
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

    def api(self, path: str, **params: str | list[str]) -> Any:
        """``data`` of a GET on Prometheus' HTTP API; an error answer raises with its message."""
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}?{query}", timeout=5) as reply:
            body = json.load(reply)
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one row) that ``expr`` evaluates to now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """``{alertname: [labels of each firing alert]}``."""
        found: dict[str, list[dict[str, str]]] = {}
        for alert in self.alerts():
            if alert["state"] == "firing":
                found.setdefault(alert["labels"]["alertname"], []).append(alert["labels"])
        return found

    def targets_health(self) -> list[str]:
        """The health (``up``, ``down``, ``unknown``) of every active scrape target."""
        return [t["health"] for t in self.api("targets")["activeTargets"]]

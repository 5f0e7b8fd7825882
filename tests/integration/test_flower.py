"""``--flower-url``: verdicts, text output, mail and webhooks link to the Flower pages that fit.

The links are checked against a real Flower 2.2 process behind basic authentication: every
link celery-probe prints answers 200 (and 401 without the password, so it is the real page),
while the password in ``--flower-url`` appears nowhere.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from celery_probe.config.settings import resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.net.http import request
from celery_probe.testing import GroupProcess, free_port, wait_until
from tests.support.environment import APPS, Target, run_cli
from tests.support.serving import HEALTH, ServeProcess

USER, PASSWORD = "ops", "fl0wer-s3cret"
OPS_ALERTS = "/api/interactions/metrics/ops-alerts"
OPS = "ops@example.com"
FLOWER_PAGE_MAX = 5_000_000  # bytes of one Flower page read at most


class TestSetting:
    """``--flower-url`` follows the settings' precedence and rejects bad values in one line."""

    def test_flag_env_pyproject(self, tmp_path):
        path = tmp_path / "pyproject.toml"
        path.write_text('[tool.celery-probe]\nflower-url = "http://from-file:5555"\n')
        assert resolve_settings({}, environ={}, pyproject=path).flower_url == "http://from-file:5555"
        env = {"CELERY_PROBE_FLOWER_URL": "http://from-env:5555"}
        assert resolve_settings({}, environ=env, pyproject=path).flower_url == "http://from-env:5555"
        assert resolve_settings({"flower_url": "http://flag/"}, environ=env, pyproject=path).flower_url == "http://flag/"

    def test_bad_value_names_source_and_hides_password(self):
        env = {"CELERY_PROBE_FLOWER_URL": "ftp://ops:hunter22@flower/"}
        with pytest.raises(ProbeUsageError) as caught:
            resolve_settings({}, environ=env, pyproject=False)
        text = str(caught.value)
        assert "CELERY_PROBE_FLOWER_URL" in text and "http:// or https://" in text
        assert "hunter22" not in text

    def test_cli_exit_64_one_line(self, tmp_path):
        result = run_cli("run", "-b", "redis://127.0.0.1:1/0", "--flower-url", "http://ops:hunter22@flower/?a=b",
                         cwd=tmp_path, timeout=30)
        assert result.code == 64
        assert result.stderr.count("\n") == 1 and "--flower-url" in result.stderr
        assert "hunter22" not in result.stderr + result.stdout and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ real Flower


class Flower(GroupProcess):
    """``celery -A probe_test_app flower`` on a free loopback port, behind basic authentication."""

    def __init__(self, target: Target, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "flower.log"
        self.env = {**os.environ, **target.env(), "PYTHONPATH": str(APPS)}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What an operator gives ``--flower-url``: with the password in it."""
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.port}/"

    def start(self) -> Flower:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "probe_test_app", "flower", "--address=127.0.0.1",
                 f"--port={self.port}", f"--basic_auth={USER}:{PASSWORD}", "--inspect_timeout=2000"],
                env=self.env, cwd=self.log.parent, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )

        def listening() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"flower exited: {self.log.read_text(errors='replace')[-2000:]}")
            return self.get(f"http://127.0.0.1:{self.port}/healthcheck", auth=False)[0] == 200

        wait_until(listening, timeout=40, interval=0.2, what="flower listening")
        return self

    def get(self, url: str, *, auth: bool = True) -> tuple[int, str]:
        """GET ``url`` (a link as printed) through celery-probe's own HTTP client, with the
        password sent separately as Basic auth."""
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1" and parts.port == self.port, url
        headers = {}
        if auth:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        answer = request("GET", url, timeout=15, max_body=FLOWER_PAGE_MAX, headers=headers)
        return answer.status, answer.body.decode("utf-8", "replace")

    def close(self) -> None:
        """SIGTERM to its process group, SIGKILL if it has not gone within 10 s."""
        self.stop(timeout=10)


@pytest.fixture(scope="module")
def flower(module_target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    server = Flower(module_target, tmp_path_factory.mktemp("flower"))
    try:
        yield server.start()
    finally:
        server.close()


def probe(flower: Flower, target: Target, folder: Path, *args: str):
    result = run_cli("run", "-A", "probe_test_app", "--flower-url", flower.url, "--format", "json",
                     "--report-dir", str(folder), *args, env=target.env(), cwd=folder, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode() not in text


def test_healthy_links_answer_200_on_real_flower(flower, module_target, start_worker, tmp_path):
    worker = start_worker(module_target.env(), name="flowerlink@%h")
    result = probe(flower, module_target, tmp_path, "--expect-workers", "1")
    verdict = result.verdict()
    assert result.code == 0, result.stdout
    links = verdict["links"]
    assert set(links["workers"]) == {worker.name}
    pages = [links["flower"], links["workers_page"], links["queues"], links["workers"][worker.name]]
    for page in pages:
        status, body = flower.get(page)
        assert status == 200, (page, body[:300])
        assert flower.get(page, auth=False)[0] == 401, page  # the real, protected page
    assert worker.name in flower.get(links["workers"][worker.name])[1]
    assert "%40" in links["workers"][worker.name]  # the name is quoted; Flower decodes it
    assert_no_password(result.stdout, result.stderr, *(p.read_text() for p in tmp_path.glob("*.json*")))

    again = run_cli("verdict", str(tmp_path / "latest.json"), "--format", "json", cwd=tmp_path)
    assert again.verdict()["links"] == links  # the report carries the URL: same links later
    text = run_cli("verdict", str(tmp_path / "latest.json"), cwd=tmp_path, env={"NO_COLOR": "1"})
    assert f"  flower     http://127.0.0.1:{flower.port}/" in text.stdout
    assert_no_password(again.stdout, text.stdout)


def test_down_links_reach_mail_and_webhook(flower, module_target, smtp, hooks, tmp_path):
    queue = module_target.queue("flowerq")
    client = module_target.client(backend=False)
    try:
        for _ in range(3):
            client.send_task("probe_test.sleep", args=(0,), queue=queue)
    finally:
        client.close()
    result = probe(flower, module_target, tmp_path, "-Q", queue, "--queue-threshold", "1",
                   "--email", OPS, "--smtp", smtp.address, "--mail-from", "probe@example.com",
                   "--webhook", hooks.url())
    verdict = result.verdict()
    assert verdict["status"] == "down", result.stdout
    by_code = {r["code"]: r.get("link") for r in verdict["reasons"]}
    base = f"http://127.0.0.1:{flower.port}"
    assert by_code["celery_worker_down"] == f"{base}/workers"
    assert by_code["celery_queue_high"] == f"{base}/broker"
    assert by_code["celery_queue_unconsumed"] == f"{base}/broker"
    for link in {link for link in by_code.values() if link}:
        assert flower.get(link)[0] == 200, link

    body = smtp.wait_for(1)[0].body
    assert "- celery_worker_down [critical]: no worker answered ping" in body
    assert f"  Flower: {base}/workers" in body and f"  Flower: {base}/broker" in body
    payload = hooks.wait_for(1)[0].json()
    assert payload["links"]["workers_page"] == f"{base}/workers"
    assert {r["code"]: r.get("link") for r in payload["reasons"]}["celery_worker_down"] == f"{base}/workers"
    assert_no_password(result.stdout, result.stderr, body, json.dumps(payload),
                       *(p.read_text() for p in tmp_path.glob("*.json*")))


def test_killed_worker_ops_alerts_link_to_flower(flower, module_target, start_worker, hooks, tmp_path):
    """A real run after the only worker is killed: ingest prints and posts the /workers link."""
    worker = start_worker(module_target.env(), name="flowerkill@%h")
    worker.kill()
    with_flower, without = tmp_path / "with", tmp_path / "without"
    with_flower.mkdir()
    without.mkdir()
    result = probe(flower, module_target, with_flower, "--expect-workers", "1")
    assert result.code == 2, result.stdout

    ingested = run_cli("ingest", str(with_flower / "latest.json"), "--post", hooks.url("/ops"), cwd=tmp_path)
    assert ingested.code == 2, ingested.stderr
    document = json.loads(ingested.stdout)
    down = document["alerts"][0]
    base = f"http://127.0.0.1:{flower.port}"
    assert (down["code"], down["link"]) == ("celery_worker_down", f"{base}/workers")
    for link in {a["link"] for a in document["alerts"] if "link" in a}:
        assert flower.get(link)[0] == 200, link
    posted = hooks.wait_for(1)[0]
    assert posted.json() == document
    assert_no_password(ingested.stdout, ingested.stderr, posted.body.decode())

    plain = run_cli("run", "-A", "probe_test_app", "--expect-workers", "1", "--format", "json",
                    "--report-dir", str(without), env=module_target.env(), cwd=without, timeout=60)
    assert plain.code == 2, plain.stdout
    bare = run_cli("ingest", str(without / "latest.json"), cwd=tmp_path)
    alerts = json.loads(bare.stdout)["alerts"]
    assert alerts[0]["code"] == "celery_worker_down"
    assert all("link" not in alert for alert in alerts)  # no --flower-url: no link key at all


def test_served_verdict_links_to_flower(module_target, tmp_path):
    """``celery-probe serve --flower-url`` serves the same links; its log never shows the password."""
    url = f"https://{USER}:{PASSWORD}@flower.example/ops/"
    args = ["-A", "probe_test_app", "--deadline", "2", "--interval", "30", "--flower-url", url]
    with ServeProcess(*args, env=module_target.env(), cwd=tmp_path) as server:
        verdict = wait_until(lambda: (v := server.health())["status"] != "unknown" and v, timeout=30,
                             what="the first verdict")
        assert verdict["status"] == "down"  # no worker
        assert verdict["links"]["workers_page"] == "https://flower.example/ops/workers"
        assert {r["code"]: r.get("link") for r in verdict["reasons"]}["celery_worker_down"] == \
            "https://flower.example/ops/workers"
        alerts = server.get(OPS_ALERTS).json()["alerts"]
        assert {a["code"]: a.get("link") for a in alerts}["celery_worker_down"] == \
            "https://flower.example/ops/workers"
        assert_no_password(server.get(HEALTH).body.decode(), server.get(OPS_ALERTS).body.decode(),
                           server.log_text())

"""Run real commands and write their outputs into the docs, so every example is a real run.

    python docs/capture_examples.py            # everything (about a minute)
    python docs/capture_examples.py --only cli # just the CLI reference (no broker needed)

A page asks for an example with a pair of markers; everything between them is replaced:

    <!-- example: NAME -->
    <!-- /example -->

What runs: a private ``redis-server`` on a free loopback port, real ``celery worker``
processes of the ``proj.py`` that docs/getting-started.md shows (written to a temporary
folder), the installed ``celery-probe`` command as an operator types it, ``celery-probe
serve`` queried over HTTP, and an SMTP server (aiosmtpd) that receives the alert mail. The
feature pages add a worker started with ``-E`` while tasks flow (SLA tracking), a killed worker
brought back by a real ``--on-down`` script, a Flower process behind basic authentication, and
``celery-probe report --html`` of all those runs, photographed in Debian's headless Chromium
(docs/img/status-page.png, kept under 150 KB). The CLI reference is click's own ``--help`` of
every command, so new options appear by re-running this script; the Kubernetes manifests of
docs/deploy/kubernetes/ are copied whole into docs/kubernetes.md by the same group. Nothing here touches a shared
broker, and everything started is stopped again.

The block parsing (markers, fenced blocks marked ``<!-- test: NAME -->``) is also what
tests/integration/test_docs.py and tests/integration/test_docs_getting_started.py use, so pages, script and tests
agree on one format.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
EXAMPLE = re.compile(r"(<!-- example: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /example -->)", re.DOTALL)
TESTED = re.compile(r"<!-- test: (?P<name>[\w.-]+) -->\n```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)
RUN_TIMEOUT = 60.0  # a probe run ends within its deadline + 1 s; this only guards a stuck start
WORKER_NAME = "worker1@%h"
MAIL_HEADERS = ("Subject", "From", "To")


# -- pure helpers, shared with the tests ----------------------------------------------------


def tested_blocks(text: str) -> dict[str, str]:
    """The fenced blocks a page marks with ``<!-- test: NAME -->``, by name."""
    return {m["name"]: m["body"] for m in TESTED.finditer(text)}


def example_names(text: str) -> list[str]:
    return [m["name"] for m in EXAMPLE.finditer(text)]


def example_bodies(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in EXAMPLE.finditer(text)}


def fill_examples(text: str, outputs: Mapping[str, str]) -> str:
    """``text`` with the body of every known example replaced; unknown ones are left alone."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in outputs:
            return match.group(0)
        return f"{match.group(1)}{outputs[name].rstrip()}\n{match.group(4)}"

    return EXAMPLE.sub(replace, text)


def cron_command(cron_block: str) -> str:
    """The shell command of the first schedule line of a crontab block (five time fields off)."""
    for line in cron_block.splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and not line.lstrip().startswith("#") and "=" not in fields[0]:
            return fields[5]
    raise ValueError("no schedule line in the crontab block")


def fenced(text: str, lang: str = "text") -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def transcript(shown: str, output: str, code: int | None) -> str:
    """A shell session as the operator sees it: prompt, output, and the exit code."""
    lines = [f"$ {shown}", output.rstrip()] if output.strip() else [f"$ {shown}"]
    if code is not None:
        lines += ["$ echo $?", str(code)]
    return fenced("\n".join(lines), "console")


# -- the CLI reference: click's own help ----------------------------------------------------


def cli_reference() -> str:
    """``--help`` of the group and of every command, in click's words."""
    from click.testing import CliRunner

    from celery_probe.cli.main import all_commands, cli

    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "100"})
    parts = []

    def helptext(*args: str) -> str:
        result = runner.invoke(cli, [*args, "--help"], prog_name="celery-probe", terminal_width=100)
        if result.exit_code != 0:
            raise RuntimeError(f"celery-probe {' '.join(args)} --help failed: {result.output}")
        return result.output

    parts.append(fenced(f"$ celery-probe --help\n{helptext()}", "console"))
    for name in sorted(all_commands()):
        parts.append(f"### `celery-probe {name}`\n\n{fenced(f'$ celery-probe {name} --help' + chr(10) + helptext(name), 'console')}")
    return "\n\n".join(parts)


# Files under docs/ shown whole on a page, by example name: the page shows the file as it is.
SHIPPED_FILES = {
    "k8s-worker-deployment": "deploy/kubernetes/worker-deployment.yaml",
    "k8s-serve-deployment": "deploy/kubernetes/serve-deployment.yaml",
}


def shipped_files() -> dict[str, str]:
    """Each file of :data:`SHIPPED_FILES` as a fenced block, so page and file never differ."""
    return {name: fenced((DOCS / path).read_text(), "yaml") for name, path in SHIPPED_FILES.items()}


def settings_table() -> str:
    """One row per setting, from its declaration: flag, variable, pyproject.toml key, default, help."""
    from celery_probe.config.settings import SPECS

    rows = ["| flag | environment | `pyproject.toml` key | default | what it sets |", "|---|---|---|---|---|"]
    for spec in SPECS:
        shown = "–" if spec.default in (None, (), "") else f"`{spec.show(spec.default)}`"
        what = spec.help_text.replace("|", "\\|")
        rows.append(f"| {', '.join(f'`{flag}`' for flag in spec.flags)} | `{spec.variable}` | "
                    f"`{spec.key}` | {shown} | {what} |")
    return "\n".join(rows)


def pytest_options_table() -> str:
    """The plugin's option for each setting it offers, beside the ``celery-probe run`` flag."""
    from celery_probe.config.settings import SPECS

    rows = ["| pytest option | `celery-probe run` flag |", "|---|---|"]
    rows += [f"| `{spec.pytest}` | `{spec.flags[-1]}` |" for spec in SPECS if spec.pytest]
    return "\n".join(rows)


# -- real processes -------------------------------------------------------------------------


@dataclass
class Shell:
    """Runs ``celery-probe`` as an operator would: by name, in a folder, with plain output."""

    cwd: Path
    env: dict[str, str]

    def run(self, command: str, *, env: Mapping[str, str] | None = None) -> tuple[str, int]:
        proc = subprocess.run(
            ["bash", "-c", command], check=False, cwd=self.cwd, env={**self.env, **(env or {})}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        return proc.stdout, proc.returncode

    def example(self, command: str, *, show: str | None = None,
                env: Mapping[str, str] | None = None) -> tuple[str, int]:
        output, code = self.run(command, env=env)
        return transcript(show or command, output, code), code


class Mailbox:
    """aiosmtpd on a loopback port; what it accepted, as parsed messages."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        from celery_probe.testing import free_port

        self.port = free_port()
        self.messages: list[Any] = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mailbox.messages.append(message_from_bytes(envelope.content, policy=default_policy))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> Self:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def wait(self, count: int, timeout: float = 15.0) -> None:
        from celery_probe.testing import wait_until

        wait_until(lambda: len(self.messages) >= count, timeout=timeout, what=f"{count} mail(s)")


class Hooks:
    """A webhook receiver on a loopback port: the JSON bodies it was sent."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies: list[bytes] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def show_mail(message: Any) -> str:
    head = "\n".join(f"{name}: {message[name]}" for name in MAIL_HEADERS)
    return fenced(f"{head}\n\n{message.get_content().replace(chr(13) + chr(10), chr(10)).rstrip()}", "text")


def http_get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read().decode()
    finally:
        conn.close()


def show_http(port: int, path: str, headers: tuple[str, ...]) -> tuple[str, int]:
    status, got, body = http_get(port, path)
    lines = [f"$ curl -si http://127.0.0.1:{port}{path}", f"HTTP/1.1 {status} {http.client.responses[status]}"]
    lines += [f"{name}: {got[name]}" for name in headers if name in got]
    return fenced("\n".join([*lines, "", body.rstrip()]), "console"), status


@contextmanager
def serve(env: dict[str, str], cwd: Path, *args: str) -> Iterator[int]:
    """``celery-probe serve`` on a free port; yields the port once /healthz answers."""
    from celery_probe.testing import GroupProcess, free_port, wait_until

    port = free_port()
    log = cwd / "serve.log"
    server = GroupProcess()  # its own session: serve's probe processes go with it
    with open(log, "wb") as out:
        server.proc = subprocess.Popen(["celery-probe", "serve", "--port", str(port), *args], cwd=cwd, env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_until(lambda: _answers(port), timeout=30, what="celery-probe serve answering")
        yield port
    finally:
        server.stop(timeout=15)


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/healthz")[0] in (200, 503)
    except OSError:
        return False


def wait_status(port: int, status: str, timeout: float = 40.0) -> None:
    from celery_probe.testing import wait_until

    def reached() -> bool:
        return json.loads(http_get(port, "/api/interactions/health/celery")[2]).get("status") == status

    wait_until(reached, timeout=timeout, interval=0.2, what=f"serve verdict {status}")


def expect(code: int, wanted: int, what: str) -> None:
    """A capture that did not do what the page says is an error, not an example."""
    if code != wanted:
        raise SystemExit(f"capture_examples: {what}: exit {code}, wanted {wanted}")


def docs_project(stack: ExitStack) -> tuple[Path, dict[str, str], dict[str, str]]:
    """A temporary folder holding the getting-started page's ``proj.py``, the environment an
    operator's shell has there (plain output, the venv's commands first), and the page's blocks."""
    blocks = tested_blocks((DOCS / "getting-started.md").read_text())
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celery-probe-docs-")))
    (work / "proj.py").write_text(blocks["proj.py"])
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(work),
           "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")])}
    env.pop("FORCE_COLOR", None)
    return work, env, blocks


def started_redis(stack: ExitStack) -> Any:
    """A private redis-server on a free port, stopped when ``stack`` closes."""
    from celery_probe.testing import RedisServer

    redis = RedisServer()
    stack.callback(redis.close)
    redis.start()
    return redis


def capture_runs(outputs: dict[str, str]) -> None:
    """Every example that needs a broker, a worker, a mail server or ``serve``."""
    from celery_probe.testing import CeleryWorker, wait_until

    with ExitStack() as stack:
        work, env, blocks = docs_project(stack)
        redis = started_redis(stack)
        env.update(CELERY_BROKER_URL=redis.url(0), CELERY_RESULT_BACKEND=redis.url(1))
        shell = Shell(work, env)

        def start_worker(**kwargs: Any) -> CeleryWorker:
            worker = CeleryWorker("proj", name=WORKER_NAME, env=env, pythonpath=[work], **kwargs)
            stack.callback(worker.close)
            return worker.start(timeout=40)

        worker = start_worker(pool="prefork", concurrency=1)
        first = blocks["first-run"].strip()
        outputs["gs-run-healthy"], code = shell.example(first)
        expect(code, 0, first)
        outputs["verdict-json"], code = shell.example(f"{first} --format json")
        expect(code, 0, "--format json")
        outputs["cli-nagios"], code = shell.example(f"{first} --format nagios")
        expect(code, 0, "--format nagios")
        gate, code = shell.example(f"{first} --fail-on degraded --junitxml reports/celery-probe.xml")
        expect(code, 0, "the CI gate")
        junit, code = shell.example("cat reports/celery-probe.xml")
        outputs["ci-gate"] = f"{gate}\n\n{junit}"
        probes = work / "ops" / "probes"
        probes.mkdir(parents=True)
        (probes / "test_task_registered.py").write_text((DOCS / "examples" / "test_task_registered.py").read_text())
        outputs["custom-probe-run"], code = shell.example(f"{first} --probes ops/probes/")
        expect(code, 3, "the custom probe example (proj has no myapp.sync_chats)")
        outputs["custom-probe-reason"] = fenced(compact_json(reason(work / "reports", "myapp_task_not_registered")),
                                                "json")
        outputs["config-error"], code = shell.example(
            f"CELERY_PROBE_DEADLINE=abc {first}")
        expect(code, 64, "a bad CELERY_PROBE_DEADLINE")

        with Mailbox() as mailbox, serve(env, work, "-A", "proj", "--expect-workers", "1",
                                          "--interval", "5") as port:
            wait_status(port, "healthy")
            outputs["healthz-healthy"], status = show_http(port, "/healthz", ("content-type", "x-celery-probe-status"))
            expect(status, 200, "/healthz healthy")
            outputs["metrics-scrape"] = fenced(
                f"$ curl -s http://127.0.0.1:{port}/metrics\n{http_get(port, '/metrics')[2]}", "console")

            cron = cron_command(blocks["crontab"])
            cron = cron.replace("cd /srv/proj && .venv/bin/", "").replace(
                "--smtp localhost", f"--smtp 127.0.0.1:{mailbox.port}")
            cron_env = {"HOME": str(work)}
            _, code = shell.run(cron, env=cron_env)
            expect(code, 0, "the cron line, worker up")

            worker.stop()
            outputs["ts-worker-down"], code = shell.example(first)
            expect(code, 2, "worker stopped")
            _, code = shell.run(cron, env=cron_env)
            expect(code, 2, "the cron line, worker down")
            mailbox.wait(1)
            outputs["gs-alert-mail"] = show_mail(mailbox.messages[0])
            wait_status(port, "down")
            outputs["healthz-down"], status = show_http(port, "/healthz", ("content-type", "x-celery-probe-status"))
            expect(status, 503, "/healthz down")
            with Hooks() as hooks:
                check = (f"celery-probe check http://127.0.0.1:{port}/api/interactions/health/celery "
                         f"--email oncall@example.com --smtp 127.0.0.1:{mailbox.port} "
                         f"--webhook http://127.0.0.1:{hooks.port}/hook --label prod-eu")
                outputs["check-down"], code = shell.example(check)
                expect(code, 2, "check while down")
                wait_until(lambda: hooks.bodies, timeout=15, what="the webhook")
                payload = json.loads(hooks.bodies[0])
                outputs["webhook-generic"] = fenced(json.dumps(payload, indent=1), "json")

        # A backlog: the only pool process is busy with a long task, so messages pile up behind it.
        worker = start_worker(pool="prefork", concurrency=1)
        shell.run("python -c 'import proj; proj.render_report.delay(30); "
                  "[proj.render_report.delay(0) for _ in range(40)]'")
        wait_until(lambda: redis.client(0).llen("celery") >= 30, timeout=15, what="a backlog")
        outputs["ts-high-queue"], code = shell.example(f"{first} --queue-threshold 20")
        expect(code, 3, "a backlog")
        worker.kill()
        redis.client(0).flushall()

        start_worker(pool="prefork", concurrency=1)
        redis.freeze()
        try:
            outputs["ts-frozen-broker"], code = shell.example(f"{first} --deadline 3")
        finally:
            redis.thaw()
        expect(code, 2, "a frozen broker")


def verdict_of(reports: Path) -> dict[str, Any]:
    return json.loads((reports / "verdict.json").read_text())


def reason(reports: Path, code: str) -> dict[str, Any]:
    """The reason with ``code`` in the verdict the last run wrote."""
    found = [r for r in verdict_of(reports)["reasons"] if r["code"] == code]
    if not found:
        raise SystemExit(f"capture_examples: no {code} in {reports / 'verdict.json'}")
    return found[0]


def compact_json(document: Any) -> str:
    """Each key of ``document`` on a line of its own, and each item of a list value too."""
    if not isinstance(document, dict):
        return json.dumps(document)

    def value(item: Any) -> str:
        if isinstance(item, list) and item and all(isinstance(x, dict) for x in item):
            return "[\n" + ",\n".join(f"  {json.dumps(x)}" for x in item) + "\n ]"
        return json.dumps(item)

    body = ",\n".join(f" {json.dumps(key)}: {value(item)}" for key, item in document.items())
    return f"{{\n{body}\n}}"


def sla_excerpt(verdict: dict[str, Any]) -> str:
    """The verdict's SLA keys: the queue's round trip against its SLA, and the events window
    with one line per task type (the queue's other keys are left out)."""
    queue = {key: verdict["queues"]["celery"][key] for key in ("roundtrip_ms", "sla_ms", "sla_breach")}
    window = dict(verdict["task_runtimes"])
    tasks = window.pop("tasks")
    head = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in window.items())
    rows = ",\n".join(f"   {json.dumps(name)}: {json.dumps(entry)}" for name, entry in tasks.items())
    return (f'{{\n "queues": {{"celery": {json.dumps(queue)}}},\n "task_runtimes": {{\n  {head},\n'
            f'  "tasks": {{\n{rows}\n  }}\n }}\n}}')


RESTART_SCRIPT = """#!/bin/sh
# Stands in for `sudo -n systemctl restart celery-worker` on this demo machine.
echo "celery is $CELERY_PROBE_STATUS since $CELERY_PROBE_DOWN_SINCE ($CELERY_PROBE_CODES): starting a worker"
exec celery -A proj worker -n worker1@%h --detach --pidfile "$PWD/worker.pid" --logfile "$PWD/worker.log"
"""
BEAT_APP = """from celery import Celery

from celery_probe.beat import install_beat_tick

app = Celery("beatproj")
install_beat_tick(app, interval=60)
"""
SENDER = """import sys, time
import proj
for _ in range(int(sys.argv[1])):
    proj.render_report.delay(0.3)
    proj.app.send_task("celery.accumulate", args=("fast",))
    time.sleep(0.1)
"""
FLOWER_USER, FLOWER_PASSWORD = "ops", "s3cret-flower"
SCREENSHOT = DOCS / "img" / "status-page.png"
SCREENSHOT_MAX_BYTES = 150_000
CHROMIUM = Path("/usr/bin/chromium")


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop_pidfile(path: Path) -> None:
    """SIGTERM the process a ``--pidfile`` names and wait (bounded) until it is gone."""
    import signal

    from celery_probe.testing import wait_until

    if not path.exists():
        return
    pid = int(path.read_text().split()[0])
    try:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: pid_gone(pid), timeout=20, what=f"process {pid} to stop")
    except ProcessLookupError:
        pass


@contextmanager
def flower(env: dict[str, str], cwd: Path) -> Iterator[int]:
    """``celery -A proj flower`` behind basic authentication on a free port; yields the port."""
    from celery_probe.testing import GroupProcess, free_port, wait_until

    port = free_port()
    with open(cwd / "flower.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "proj", "flower", "--address=127.0.0.1", f"--port={port}",
             f"--basic_auth={FLOWER_USER}:{FLOWER_PASSWORD}"],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)

    def up() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"capture_examples: flower exited: {(cwd / 'flower.log').read_text()[-1000:]}")
        try:
            return http_get(port, "/healthcheck")[0] == 200
        except OSError:
            return False

    try:
        wait_until(up, timeout=40, interval=0.2, what="flower listening")
        yield port
    finally:
        process = GroupProcess()
        process.proc = proc
        process.stop(timeout=10)


def flower_page(port: int, url: str) -> int:
    """The status of a Flower page the verdict links to, asked through celery-probe's own HTTP
    client with the password as Basic auth."""
    import base64
    from urllib.parse import urlsplit

    from celery_probe.net.http import request

    token = base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()
    page = f"http://127.0.0.1:{port}{urlsplit(url).path or '/'}"
    return request("GET", page, timeout=15, max_body=5_000_000, headers={"Authorization": f"Basic {token}"}).status


def screenshot(page: Path, shot: Path) -> str:
    """A PNG of ``page`` in headless Chromium (Debian's), kept under SCREENSHOT_MAX_BYTES."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"capture_examples: {CHROMIUM} is missing: run scripts/install-test-deps")
    shot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        try:
            tab = browser.new_page(viewport={"width": 1000, "height": 900})
            tab.goto(page.as_uri(), wait_until="load")
            for height in (None, 1400, 1000, 700):
                clip = None if height is None else {"x": 0, "y": 0, "width": 1000, "height": height}
                tab.screenshot(path=str(shot), full_page=True, clip=clip)
                if shot.stat().st_size <= SCREENSHOT_MAX_BYTES:
                    break
        finally:
            browser.close()
    if shot.stat().st_size > SCREENSHOT_MAX_BYTES:
        raise SystemExit(f"capture_examples: {shot} is {shot.stat().st_size} bytes even clipped")
    return str(shot.relative_to(ROOT))


def capture_features(outputs: dict[str, str]) -> None:
    """SLA tracking, task events, Flower links, auto-remediation, beat's tick and the status page.

    One report folder collects every run, in this order, so the status page at the end shows
    a real history: degraded runs over SLA, a down stretch, a restart by ``--on-down``.
    """
    from celery_probe.testing import CeleryWorker, wait_until

    with ExitStack() as stack:
        work, env, blocks = docs_project(stack)
        redis = started_redis(stack)
        env.update(CELERY_BROKER_URL=redis.url(0), CELERY_RESULT_BACKEND=redis.url(1))
        shell = Shell(work, env)
        reports = work / "reports"
        first = blocks["first-run"].strip()

        def start_worker(app: str = "proj", **kwargs: Any) -> CeleryWorker:
            worker = CeleryWorker(app, name=WORKER_NAME, env=env, pythonpath=[work], **kwargs)
            stack.callback(worker.close)
            return worker.start(timeout=40)

        # -- SLA tracking: a worker with -E, a slow and a fast task type sent throughout the window
        worker = start_worker(pool="threads", concurrency=4, extra=("-E",))
        _, code = shell.run("python -c 'import proj; proj.render_report.delay(0).get(timeout=20)'")
        expect(code, 0, "a first task through the -E worker")
        (work / "send_tasks.py").write_text(SENDER)
        sender = subprocess.Popen([sys.executable, "send_tasks.py", "80"], cwd=work, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(lambda: sender.poll() is None and sender.kill())
        try:
            sla = (f"{first} --deadline 8 --events-window 3 --task-sla 'proj.render_report=250ms' "
                   "--task-sla 'celery.*=1s' --sla celery=2s")
            outputs["sla-run"], code = shell.example(sla)
            expect(code, 3, "task runtimes over their SLA")
        finally:
            sender.wait(timeout=30)
        outputs["sla-verdict"] = fenced(sla_excerpt(verdict_of(reports)), "json")
        outputs["sla-queue-breach"], code = shell.example(f"{first} --sla celery=1ms")
        expect(code, 3, "a queue round trip over a 1 ms SLA")

        # -- the same window over a worker without -E: a note, still healthy
        worker.stop()
        worker = start_worker(pool="prefork", concurrency=1)
        outputs["sla-events-missing"], code = shell.example(
            f"{first} --events-window 2 --task-sla 'proj.*=2m'")
        expect(code, 0, "an events window over workers without -E")

        # -- Flower links: the worker killed, three messages left in its queue
        worker.kill()
        shell.run("python -c 'import proj; [proj.render_report.delay(0) for _ in range(3)]'")
        with flower(env, work) as port:
            url = f"http://{FLOWER_USER}:{FLOWER_PASSWORD}@127.0.0.1:{port}/"
            outputs["flower-run"], code = shell.example(f'{first} --flower-url "$FLOWER_URL"',
                                                        env={"FLOWER_URL": url})
            expect(code, 2, "worker down, with Flower links")
            if FLOWER_PASSWORD in outputs["flower-run"] + (reports / "latest.json").read_text():
                raise SystemExit("capture_examples: the Flower password reached the output or the report")
            verdict = verdict_of(reports)
            linked = [r for r in verdict["reasons"] if r.get("link")]
            for link in {verdict["links"]["flower"], *(r["link"] for r in linked)}:
                expect(flower_page(port, link), 200, f"Flower page {link}")
            outputs["flower-verdict"] = fenced(compact_json(
                {"links": verdict["links"], "reasons": [{k: r[k] for k in ("code", "link")} for r in linked]}),
                "json")
            ingested, code = shell.run("celery-probe ingest reports/latest.json")
            expect(code, 2, "ingest of the run with Flower links")
            if FLOWER_PASSWORD in ingested:
                raise SystemExit("capture_examples: the Flower password reached the ops-alerts document")
            alerts = json.loads(ingested)["alerts"]
            alert_links = {a["link"] for a in alerts if "link" in a}
            if not alert_links:
                raise SystemExit("capture_examples: no ops alert links to Flower")
            for link in alert_links:
                expect(flower_page(port, link), 200, f"Flower page {link} of an ops alert")
            outputs["flower-ops-alerts"] = fenced(compact_json({"alerts": alerts}), "json")

        # -- auto-remediation: a real command brings the killed worker back
        script = work / "restart-worker.sh"
        script.write_text(RESTART_SCRIPT)
        script.chmod(0o755)
        stack.callback(stop_pidfile, work / "worker.pid")
        remediate = f"{first} --on-down ./restart-worker.sh --on-down-after 0s --on-down-every 30m"
        outputs["remediation-ran"], code = shell.example(remediate)
        expect(code, 2, "the run that restarts the worker (the verdict stays down)")
        wait_until(lambda: shell.run(remediate)[1] == 0, timeout=60, interval=0.5, what="the restarted worker")
        outputs["remediation-healthy"], code = shell.example(remediate)
        expect(code, 0, "healthy after the restart")
        actions = [json.loads(line) for line in (reports / "history.jsonl").read_text().splitlines()
                   if '"event":"remediation"' in line]
        if len(actions) != 1:
            raise SystemExit(f"capture_examples: {len(actions)} remediation lines in history.jsonl, wanted 1")
        outputs["remediation-history"] = fenced(compact_json(actions[0]), "json")
        stop_pidfile(work / "worker.pid")
        outputs["remediation-rate-limited"], code = shell.example(remediate)
        expect(code, 2, "down again within --on-down-every")
        outputs["remediation-dry-run"], code = shell.example(
            f"{first} --on-down ./restart-worker.sh --on-down-after 0s --on-down-dry-run")
        expect(code, 2, "a dry run")

        # -- beat's tick, as a worker of an app with install_beat_tick stores it
        (work / "beatproj.py").write_text(BEAT_APP)
        beat_worker = start_worker("beatproj")
        _, code = shell.run("python -c 'import beatproj; beatproj.app.send_task(\"celery_probe.beat_tick\", "
                            "kwargs={\"key\": \"celery-probe:beat:last-tick\", \"interval\": 60.0})'")
        expect(code, 0, "sending a beat tick")
        wait_until(lambda: redis.client(0).get("celery-probe:beat:last-tick"), timeout=20, what="the beat tick")
        outputs["beat-tick"] = fenced(json.dumps(json.loads(redis.client(0).get("celery-probe:beat:last-tick"))),
                                      "json")
        beat_worker.stop()

        # -- the status page of all of the above, and healthy runs to end it
        start_worker(pool="prefork", concurrency=1)
        for _ in range(3):
            _, code = shell.run(first)
            expect(code, 0, "healthy runs for the status page")
        outputs["status-page-report"], code = shell.example("celery-probe report --html --report-dir reports")
        expect(code, 0, "celery-probe report --html")
        outputs["status-page-shot"] = f"![The status page of these runs]({Path(screenshot(reports / 'index.html', SCREENSHOT)).relative_to('docs')})"


def capture_targets(outputs: dict[str, str]) -> None:
    """Two targets, a Redis and a worker each: the history line that gives each its own series.

    Two healthy runs, then one with the ``reports`` worker stopped, so the line shown has a
    target without a round trip.
    """
    from celery_probe.testing import CeleryWorker

    with ExitStack() as stack:
        work, env, _blocks = docs_project(stack)
        tables, workers = [], []
        for name in ("main", "reports"):
            redis = started_redis(stack)
            tables.append(f'[targets.{name}]\nbroker = "{redis.url(0)}"\nbackend = "{redis.url(1)}"\n'
                          "expect-workers = 1\n")
            worker_env = {**env, "CELERY_BROKER_URL": redis.url(0), "CELERY_RESULT_BACKEND": redis.url(1)}
            worker = CeleryWorker("proj", name=f"{name}@%h", env=worker_env, pythonpath=[work])
            stack.callback(worker.close)
            workers.append(worker.start(timeout=40))
        (work / "targets.toml").write_text("\n".join(tables))
        shell = Shell(work, env)
        run = "celery-probe run --targets targets.toml"
        for _ in range(2):
            _, code = shell.run(run)
            expect(code, 0, "two healthy targets")
        workers[1].stop()
        _, code = shell.run(run)
        expect(code, 2, "the reports target without its worker")
        line = (work / "reports" / "history.jsonl").read_text().splitlines()[-1]
        outputs["status-page-targets-line"] = fenced(compact_json(json.loads(line)), "json")
        outputs["status-page-targets-report"], code = shell.example("celery-probe report --html --report-dir reports")
        expect(code, 0, "celery-probe report --html of two targets")


def capture_doctor(outputs: dict[str, str]) -> None:
    """``celery-probe doctor`` on the getting-started ``proj`` with problems of its own: a Redis that
    may evict, a worker holding a two-hour countdown task and consuming a queue proj does not know."""
    from celery_probe.testing import CeleryWorker, RedisServer, wait_until

    with ExitStack() as stack:
        work, env, _blocks = docs_project(stack)
        redis = RedisServer(extra=["--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"])
        stack.callback(redis.close)
        redis.start()
        env.update(CELERY_BROKER_URL=redis.url(0), CELERY_RESULT_BACKEND=redis.url(1))
        shell = Shell(work, env)
        worker = CeleryWorker("proj", name=WORKER_NAME, env=env, pythonpath=[work], queues=("celery", "reports-v1"))
        stack.callback(worker.close)
        worker.start(timeout=40)
        shell.run("python -c 'import proj; proj.render_report.apply_async((0,), countdown=7200)'")
        wait_until(lambda: redis.client(0).hlen("unacked") == 1, timeout=20, what="the worker holding the countdown task")
        outputs["doctor-text"], code = shell.example("celery-probe doctor -A proj")
        expect(code, 2, "doctor on proj with a critical finding")


CAPTURES: dict[str, Callable[[dict[str, str]], None]] = {
    "cli": lambda out: out.update({"cli-reference": cli_reference(), "settings-table": settings_table(),
                                   "pytest-options": pytest_options_table(), **shipped_files()}),
    "runs": capture_runs,
    "features": capture_features,
    "targets": capture_targets,
    "doctor": capture_doctor,
}


def write(outputs: Mapping[str, str]) -> list[str]:
    """Fill every page under docs/ (and the README); the names of the files that changed."""
    changed = []
    for path in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]:
        text = path.read_text()
        new = fill_examples(text, outputs)
        if new != text:
            path.write_text(new)
            changed.append(str(path.relative_to(ROOT)))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(CAPTURES), action="append",
                        help="capture only these groups (repeatable); default all")
    args = parser.parse_args(argv)
    outputs: dict[str, str] = {}
    started = time.monotonic()
    for name in args.only or sorted(CAPTURES):
        CAPTURES[name](outputs)
    changed = write(outputs)
    wanted = {name for path in DOCS.rglob("*.md") for name in example_names(path.read_text())}
    missing = sorted(wanted - set(outputs)) if not args.only else []
    print(f"captured {len(outputs)} examples in {time.monotonic() - started:.1f}s; "
          f"updated: {', '.join(changed) or 'nothing'}")
    if missing:
        print(f"no capture for: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/getting-started.md, run as written: a first run, the cron line, and the alert mail.

The page's blocks marked ``<!-- test: NAME -->`` are executed with bash against a private
redis-server, a real worker of the page's own ``proj.py`` and a real SMTP server (aiosmtpd).
The only substitutions are the ones an operator makes for their own machine, each named here:
the broker URLs (the page's ``localhost:6379`` is the shared Redis, which tests never use),
the app folder ``/srv/proj`` (a temporary folder with ``.venv`` linked to this interpreter's
environment) and the mail server ``localhost`` (the SMTP server's free port).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from celery_probe.testing import CeleryWorker, wait_until
from tests.support.environment import ROOT

sys.path.insert(0, str(ROOT / "docs"))
import capture_examples  # docs/ is not a package; the marker format lives there

PAGE = ROOT / "docs" / "getting-started.md"
RUN_TIMEOUT = 60.0


def bash(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL, check=False)


def documented_subject(text: str) -> str:
    mail = capture_examples.example_bodies(text)["gs-alert-mail"]
    match = re.search(r"^Subject: (.+)$", mail, flags=re.MULTILINE)
    assert match, "the page shows no alert mail: run docs/capture_examples.py"
    return match.group(1)


@pytest.fixture
def page_blocks() -> dict[str, str]:
    blocks = capture_examples.tested_blocks(PAGE.read_text())
    assert {"proj.py", "first-run", "crontab"} <= set(blocks), sorted(blocks)
    return blocks


def test_the_documented_subject_is_the_down_alert():
    assert documented_subject(PAGE.read_text()) == "[celery-probe CRITICAL] Celery worker DOWN"


def test_install_first_run_cron_and_the_alert_mail(page_blocks, redis_server, smtp, tmp_path):
    app_dir = tmp_path / "srv-proj"
    home = tmp_path / "home"
    app_dir.mkdir()
    home.mkdir()
    (app_dir / "proj.py").write_text(page_blocks["proj.py"])
    (app_dir / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(app_dir),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "CELERY_BROKER_URL": redis_server.url(0), "CELERY_RESULT_BACKEND": redis_server.url(1)}
    for key in ("NO_COLOR", "FORCE_COLOR"):
        env.pop(key, None)

    crontab = page_blocks["crontab"]
    assert {line.split("=", 1)[0] for line in crontab.splitlines() if "=" in line.split(" ", 1)[0]} == {
        "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}, "the cron block sets other variables than this test"
    cron = capture_examples.cron_command(crontab)
    assert "cd /srv/proj && " in cron and "--smtp localhost " in cron
    cron = cron.replace("cd /srv/proj", f"cd {app_dir}").replace("--smtp localhost", f"--smtp 127.0.0.1:{smtp.port}")

    worker = CeleryWorker("proj", name="worker1@%h", env=env, pythonpath=[app_dir])
    try:
        worker.start(timeout=40)

        first = bash(page_blocks["first-run"], env, app_dir)
        assert first.returncode == 0, first.stdout + first.stderr
        assert first.stdout.startswith("celery-probe: HEALTHY  app proj"), first.stdout

        healthy = bash(cron, env, app_dir)
        assert healthy.returncode == 0, (home / "celery-probe.log").read_text()
        assert smtp.received == []  # healthy from the first run on: nothing to say

        worker.stop()
        down = bash(cron, env, app_dir)
        assert down.returncode == 2, (home / "celery-probe.log").read_text()
    finally:
        worker.close()

    wait_until(lambda: smtp.received, timeout=15, what="the alert mail")
    mail = smtp.received[0]
    assert mail.subject == documented_subject(PAGE.read_text())
    assert mail.rcpt_tos == ["oncall@example.com"]
    assert "celery_worker_down [critical]" in mail.body
    log = (home / "celery-probe.log").read_text()
    assert "celery-probe: DOWN" in log and "alert sent: [celery-probe CRITICAL] Celery worker DOWN" in log
    assert (home / "celery-probe" / "history.jsonl").read_text().count("\n") == 2


def _code_lines(source: str) -> list[str]:
    """The statements of a Python source, without its docstring, comments and blank lines."""
    import ast

    tree = ast.parse(source)
    if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant):
        tree.body = tree.body[1:]
    return ast.unparse(tree).splitlines()


def test_the_django_set_up_is_the_tested_projects(page_blocks):
    """The page's proj/celery.py is the one tests/test_app_loading.py runs a real worker of."""
    tested = (ROOT / "tests" / "apps" / "djproj" / "proj" / "celery.py").read_text()
    assert _code_lines(page_blocks["django-celery.py"]) == _code_lines(tested)
